"""How many training masks per second does the corruption recipe make on one CPU process?

Runs :class:`qg_lightning.quality.CorruptionSampler` (the whole METHOD.md mix: category draw, corruptions,
Dice targets) on batches of float32 masks with ``torch.set_num_threads(1)`` at 64, 128 and 224 px, on

* masks of the embedded synthetic generator (``qg_lightning.data.synthetic``; random ellipses if missing),
* Kvasir-SEG polyp masks from ``--kvasir ROOT`` (``ROOT/masks/*.png``), skipped with a note if absent.

Baseline: :class:`NumpyOpenCVBaseline`, a straightforward per-sample NumPy/OpenCV implementation of the same
mix, is timed on alternating batches in the same process, so both see the same machine load (the development
machine is shared; absolute numbers move by 2-3x with the load, the ratio much less). For reference, such an
implementation was measured at about 2,200 masks/s at 224 px and 5,100 at 128 px on a quieter machine.

``--device cuda`` times the batched torch path on a GPU instead (the path training takes there: the quality
data module corrupts masks on the training device); the masks and the generator live on the device, each
timed call ends with a synchronisation, and the per-sample baseline still runs on the CPU beside it.
``--backend torch`` times that batched torch path on the CPU (the sampler's ``backend`` argument; default
``auto``: OpenCV / NumPy per mask on the CPU).

``--per-corruption`` adds a table (stderr) and a JSON entry with the time of every registry corruption on one
batch; ``--call-cost`` splits each corruption's call into a fixed cost and a per-mask cost (calls on 1 and 8
masks). The last line printed is one JSON object, also written to ``benchmarks/results/corruptions.json``.

Usage:
    python benchmarks/corruptions.py [--kvasir ROOT] [--batch-size 64] [--per-corruption] [--call-cost]
        [--no-baseline] [--sizes 64 128 224] [--datasets synthetic kvasir_seg] [--device cuda]
        [--backend {auto,opencv,torch}]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from _paths import shared_dataset

from qg_lightning.quality import (
    BLOB,
    CATASTROPHIC,
    CATEGORY_PROBS,
    HEAVY,
    MAIN,
    CorruptionSampler,
)
from qg_lightning.quality.corruptions import BACKENDS

REFERENCE_MASKS_PER_S = {"224": 2200.0, "128": 5100.0}
CPU = torch.device("cpu")


def _resize(masks: list[np.ndarray], size: int) -> torch.Tensor:
    out = [
        cv2.resize((m > 127).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) for m in masks
    ]
    return torch.from_numpy(np.stack(out)).float().unsqueeze(1)


def _synthetic_masks(n: int, size: int, seed: int) -> tuple[torch.Tensor, str]:
    try:
        from qg_lightning.data.synthetic import synthetic_sample
    except ImportError:
        synthetic_sample = None
    if synthetic_sample is not None:
        masks = [synthetic_sample(i, image_size=size, seed=seed)[1] for i in range(n)]
        return _resize(masks, size), "qg_lightning.data.synthetic"
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        m = np.zeros((size, size), np.uint8)
        centre = tuple(int(v) for v in rng.uniform(0.3, 0.7, 2) * size)
        axes = tuple(int(v) for v in rng.uniform(0.05, 0.3, 2) * size)
        cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        masks.append(m)
    return _resize(masks, size), "random ellipses (qg_lightning.data.synthetic not importable)"


def _kvasir_masks(root: Path, n: int) -> list[np.ndarray] | None:
    files = sorted((root / "masks").glob("*.png"))[:n]
    if not files:
        return None
    return [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]


# ----------------------------------------------------------------------------------------------------------
# the reference: a straightforward per-sample NumPy/OpenCV implementation of the same recipe
# ----------------------------------------------------------------------------------------------------------


def _odd(k: float) -> int:
    r = max(1, int(round((k - 1) / 2)))
    return 2 * r + 1


class NumpyOpenCVBaseline:
    """Per-sample NumPy/OpenCV version of the METHOD.md mix (same categories, registries and weights).

    Written the way research code usually is: one mask at a time, OpenCV for morphology, blur, warps, drawing,
    contours and components; sizes scaled by ``H / 224``. Used only to time our batched sampler against it
    under the same machine load.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.probs = np.array(list(CATEGORY_PROBS.values()))
        self.categories = list(CATEGORY_PROBS)
        self.registries = {"single": MAIN, "heavy": HEAVY, "catastrophic": CATASTROPHIC, "blob": BLOB}
        self.chain = [n for n, s in MAIN.items() if s.family != "blob" and n not in BLOB]

    def _draw(self, registry, names=None) -> str:
        names = list(registry) if names is None else names
        w = np.array([registry[n].weight for n in names])
        return names[self.rng.choice(len(names), p=w / w.sum())]

    def _point(self, m: np.ndarray) -> tuple[int, int]:
        ys, xs = np.nonzero(m)
        if len(ys) == 0:
            return int(self.rng.integers(m.shape[0])), int(self.rng.integers(m.shape[1]))
        i = self.rng.integers(len(ys))
        return int(ys[i]), int(xs[i])

    def _warp(self, m: np.ndarray, angle: float, scale: float, centre, shift=(0.0, 0.0)) -> np.ndarray:
        mat = cv2.getRotationMatrix2D((float(centre[1]), float(centre[0])), angle, scale)
        mat[:, 2] += (shift[1], shift[0])
        return cv2.warpAffine(m, mat, (m.shape[1], m.shape[0]), flags=cv2.INTER_NEAREST)

    def _centroid(self, m: np.ndarray) -> tuple[float, float]:
        mo = cv2.moments(m, binaryImage=True)
        if mo["m00"] == 0:
            return (m.shape[0] - 1) / 2, (m.shape[1] - 1) / 2
        return mo["m01"] / mo["m00"], mo["m10"] / mo["m00"]

    def _largest_contour(self, m: np.ndarray):
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        return max(contours, key=cv2.contourArea) if contours else None

    def corrupt(self, m: np.ndarray, spec) -> np.ndarray:  # noqa: C901 - one branch per corruption, on purpose
        h, w = m.shape
        s = h / 224
        fn, p = spec.fn.__name__, dict(spec.params)
        out = m.copy()
        if fn in ("erosion", "dilation", "opening", "closing", "jagged_band"):
            k = _odd(p["kernel"] * s)
            ker = np.ones((k, k), np.uint8)
            if fn == "erosion":
                return cv2.erode(m, ker)
            if fn == "dilation":
                return cv2.dilate(m, ker)
            if fn == "opening":
                return cv2.morphologyEx(m, cv2.MORPH_OPEN, ker)
            if fn == "closing":
                return cv2.morphologyEx(m, cv2.MORPH_CLOSE, ker)
            band = cv2.dilate(m, ker) > cv2.erode(m, ker)
            out[band] = self.rng.random(int(band.sum())) < 0.5
            return out
        if fn == "smoothing":
            k = _odd(p["kernel"] * s)
            return (cv2.GaussianBlur(m.astype(np.float32), (k, k), 0) > 0.5).astype(np.uint8)
        if fn == "elastic_warp":
            a, sig = p["alpha"] * s, p["sigma"] * s
            dx = cv2.GaussianBlur(self.rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sig) * a
            dy = cv2.GaussianBlur(self.rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sig) * a
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            return cv2.remap(m, gx + dx, gy + dy, cv2.INTER_NEAREST, borderValue=0)
        if fn == "grid_distortion":
            n, lim = p["num_steps"], p["distort_limit"]

            def axis(size):
                steps = 1 + self.rng.uniform(-lim, lim, n)
                nodes = np.concatenate([[0], np.cumsum(steps)]) / steps.sum() * size
                return np.interp(np.arange(size), np.linspace(0, size, n + 1), nodes).astype(np.float32)

            gx, gy = np.meshgrid(axis(w), axis(h))
            return cv2.remap(m, gx, gy, cv2.INTER_NEAREST, borderValue=0)
        if fn in ("holes", "islands", "holes_and_islands"):
            lo, hi = p["radius"]
            n_holes = p.get("count", 0) if fn == "holes" else p.get("holes", 0)
            n_islands = p.get("count", 0) if fn == "islands" else p.get("islands", 0)
            for _ in range(n_holes):
                y, x = self._point(m)
                cv2.circle(out, (x, y), int(round(self.rng.uniform(lo, hi) * s)), 0, -1)
            edge = m - cv2.erode(m, np.ones((3, 3), np.uint8))
            for _ in range(n_islands):
                y, x = self._point(edge)
                r = self.rng.uniform(lo, hi) * s
                d, t = self.rng.uniform(0, 2) * r, self.rng.uniform(0, 2 * np.pi)
                cv2.circle(out, (int(x + d * np.cos(t)), int(y + d * np.sin(t))), int(round(r)), 1, -1)
            return out
        if fn in ("keep_largest_component", "drop_random_component"):
            count, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
            if count <= 1:
                return out
            if fn == "keep_largest_component":
                return (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
            if count > 2:
                out[labels == 1 + int(self.rng.integers(count - 1))] = 0
            return out
        if fn == "rectangular_dropout":
            y, x = self._point(m)
            fh, fw = self.rng.uniform(*p["fraction"], 2)
            cv2.rectangle(
                out,
                (int(x - fw * w / 2), int(y - fh * h / 2)),
                (int(x + fw * w / 2), int(y + fh * h / 2)),
                0,
                -1,
            )
            return out
        if fn == "shift":
            f = p["max_fraction"]
            return self._warp(m, 0.0, 1.0, (0, 0), tuple(np.round(self.rng.uniform(-f, f, 2) * (h, w))))
        if fn == "scale":
            return self._warp(m, 0.0, self.rng.uniform(*p["factor"]), self._centroid(m))
        if fn == "rotate":
            return self._warp(m, self.rng.uniform(-1, 1) * p["max_degrees"], 1.0, self._centroid(m))
        if fn == "random_affine":
            t = self.rng.uniform(-1, 1, 2) * p["max_shift"] * (h, w)
            centre = ((h - 1) / 2, (w - 1) / 2)
            return self._warp(
                m, self.rng.uniform(-1, 1) * p["max_degrees"], self.rng.uniform(*p["scale"]), centre, t
            )
        if fn in ("gaussian_blob", "circle"):
            area = int(m.sum())
            if area == 0:
                return out
            cy, cx = self._centroid(m)
            out[:] = 0
            if fn == "circle":
                cv2.circle(out, (int(round(cx)), int(round(cy))), int(round(np.sqrt(area / np.pi))), 1, -1)
                return out
            ys, xs = np.nonzero(m)
            sy, sx = ys.std() + 0.5, xs.std() + 0.5
            gy, gx = np.mgrid[0:h, 0:w]
            g = np.exp(-(((gy - cy) / sy) ** 2 + ((gx - cx) / sx) ** 2) / (2 * p["std_factor"] ** 2))
            k = min(h * w, int(area * p["std_factor"] ** 2))
            thr = np.partition(g.ravel(), h * w - k)[h * w - k]
            return (g >= thr).astype(np.uint8)
        if fn in ("fitted_ellipse", "polygon_approximation", "convex_hull"):
            c = self._largest_contour(m)
            if c is None:
                return out
            out[:] = 0
            if fn == "fitted_ellipse":
                if len(c) >= 5:
                    cv2.ellipse(out, cv2.fitEllipse(c), 1, -1)
                else:
                    cv2.fillPoly(out, [c], 1)
            elif fn == "convex_hull":
                cv2.fillPoly(out, [cv2.convexHull(c)], 1)
            else:
                lo, hi = 0.0, cv2.arcLength(c, True)
                poly = c
                for _ in range(10):  # bisect epsilon until at most `vertices` corners remain
                    mid = (lo + hi) / 2
                    poly = cv2.approxPolyDP(c, mid, True)
                    lo, hi = (mid, hi) if len(poly) > p["vertices"] else (lo, mid)
                cv2.fillPoly(out, [cv2.approxPolyDP(c, hi, True)], 1)
            return out
        if fn == "bounding_box":
            ys, xs = np.nonzero(m)
            if len(ys):
                out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = 1
            return out
        if fn == "inverted":
            return 1 - m
        if fn == "empty":
            return np.zeros_like(m)
        if fn == "full":
            return np.ones_like(m)
        if fn == "random_noise":
            return (self.rng.random(m.shape) < 0.5).astype(np.uint8)
        raise KeyError(fn)

    def __call__(self, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = (masks[:, 0] > 0.5).numpy().astype(np.uint8)
        areas = arrays.reshape(len(arrays), -1).sum(1)
        outs, quality = [], []
        for i, m in enumerate(arrays):
            cat = self.categories[self.rng.choice(len(self.probs), p=self.probs)]
            if cat == "identity":
                out = m.copy()
            elif cat == "cross_image":
                order = np.argsort(np.abs(areas - areas[i]))
                order = order[order != i][: max(1, int(np.ceil(0.2 * (len(arrays) - 1))))]
                out = arrays[self.rng.choice(order)].copy()
            elif cat == "chained":
                out = m
                weights = np.array([MAIN[n].weight for n in self.chain])
                size = int(self.rng.integers(2, 4))
                names = self.rng.choice(self.chain, size=size, replace=False, p=weights / weights.sum())
                for name in names:
                    out = self.corrupt(out, MAIN[name])
            else:
                registry = self.registries[cat]
                out = self.corrupt(m, registry[self._draw(registry)])
            inter, total = float((out & m).sum()), float(out.sum() + m.sum())
            quality.append(1.0 if total == 0 else 2 * inter / total)
            outs.append(out)
        return torch.from_numpy(np.stack(outs)).float().unsqueeze(1), torch.tensor(quality)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer around a call measures the call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_device(parser: argparse.ArgumentParser, name: str) -> torch.device:
    """``--device NAME`` as a torch device; a name torch does not know, or cuda on a machine without a GPU,
    stops the script with a parser error before any work."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        parser.error(f"--device {name!r} is not a torch device ({error}); use e.g. cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {name}: torch sees no CUDA device on this machine; use --device cpu")
    return device


def _throughput(
    masks: torch.Tensor,
    batch_size: int,
    min_seconds: float,
    seed: int,
    baseline: bool,
    device: torch.device = CPU,
    backend: str = "auto",
) -> tuple[float, float | None]:
    """Masks per second of the sampler (on ``device``, with ``backend``) and (optionally) of the baseline (on
    the CPU), timed on alternating batches so that both see the same machine load."""
    sampler = CorruptionSampler(backend=backend)
    reference = NumpyOpenCVBaseline(seed) if baseline else None
    generator = torch.Generator(device=device).manual_seed(seed)
    batches = [masks[i : i + batch_size] for i in range(0, len(masks) - batch_size + 1, batch_size)]
    on_device = [batch.to(device) for batch in batches]
    sampler(on_device[0], generator=generator)  # warm-up
    sync(device)
    if reference is not None:
        reference(batches[0])
    done, ours, theirs = 0, 0.0, 0.0
    while ours + theirs < min_seconds or done == 0:
        for batch, batch_on_device in zip(batches, on_device, strict=True):
            start = time.perf_counter()
            sampler(batch_on_device, generator=generator)
            sync(device)
            ours += time.perf_counter() - start
            if reference is not None:
                start = time.perf_counter()
                reference(batch)
                theirs += time.perf_counter() - start
            done += len(batch)
    return done / ours, (done / theirs if reference is not None else None)


def _binary_specs() -> dict:
    """Every registry corruption that applies to binary masks (the multi-class registry's need two classes)."""
    return {**MAIN, **HEAVY, **CATASTROPHIC, **BLOB}


def _per_corruption(
    masks: torch.Tensor,
    batch_size: int,
    repeats: int,
    seed: int,
    device: torch.device = CPU,
    backend: str = "auto",
) -> dict[str, float]:
    """Microseconds per mask of every registry corruption on one uint8 batch (as the sampler calls them)."""
    batch = (masks[:batch_size] > 0.5).to(torch.uint8).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    result = {}
    for name, spec in _binary_specs().items():
        spec(batch, generator=generator, backend=backend)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            spec(batch, generator=generator, backend=backend)
        sync(device)
        result[name] = (time.perf_counter() - start) / repeats / len(batch) * 1e6
    return result


def _call_cost(
    masks: torch.Tensor, repeats: int, seed: int, backend: str = "auto"
) -> dict[str, dict[str, float]]:
    """Fixed and per-mask microseconds of one call of every registry corruption, from calls on 1 and on 8
    uint8 masks (``fixed = t1 - per_mask``, ``per_mask = (t8 - t1) / 7``): what a call costs before it does
    any pixel work. The sampler pays about that once per group of samples that share a kernel (a little less:
    it skips the public function's checks and dtype conversions)."""
    batch = (masks[:8] > 0.5).to(torch.uint8)
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for name, spec in _binary_specs().items():
        seconds = []
        for n in (1, 8):
            sub = batch[:n].contiguous()
            spec(sub, generator=generator, backend=backend)
            start = time.perf_counter()
            for _ in range(repeats * (8 // n)):  # the same number of masks for both
                spec(sub, generator=generator, backend=backend)
            seconds.append((time.perf_counter() - start) / (repeats * (8 // n)))
        per_mask = (seconds[1] - seconds[0]) / 7
        result[name] = {"fixed": (seconds[0] - per_mask) * 1e6, "per_mask": per_mask * 1e6}
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--kvasir", type=Path, default=shared_dataset("kvasir_seg"), help="Kvasir-SEG root with masks/*.png"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=["synthetic", "kvasir_seg"],
        default=["synthetic", "kvasir_seg"],
        help="mask sources to time (the per-corruption table uses kvasir_seg when present)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-masks", type=int, default=256, help="masks per dataset and size")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per dataset and size")
    parser.add_argument("--per-corruption", action="store_true", help="also time every corruption on its own")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per corruption for --per-corruption")
    parser.add_argument(
        "--call-cost",
        action="store_true",
        help="also split every corruption's call into a fixed and a per-mask cost (largest size)",
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the per-sample NumPy/OpenCV baseline timed alongside"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        default="cpu",
        help="device of the sampler's masks: cpu (OpenCV / NumPy per mask) or e.g. cuda (the batched torch path)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="where the corruptions do their pixel work: auto (OpenCV / NumPy on the CPU, torch elsewhere), "
        "opencv, or torch (the batched path, also on the CPU)",
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent / "results" / "corruptions.json"
    )
    args = parser.parse_args(argv)
    device = parse_device(parser, args.device)
    if args.call_cost and device.type != "cpu":
        parser.error("--call-cost splits CPU call overheads; run it with --device cpu")
    if args.backend == "opencv" and device.type != "cpu":
        parser.error(f"--backend opencv works on CPU masks only; use --backend auto with --device {device}")

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load_start = os.getloadavg()[0]
    n = max(args.n_masks, args.batch_size)

    datasets: dict[str, dict[int, torch.Tensor]] = {}
    notes: dict[str, str] = {}
    if "synthetic" in args.datasets:
        datasets["synthetic"] = {}
        for size in args.sizes:
            datasets["synthetic"][size], notes["synthetic"] = _synthetic_masks(n, size, args.seed)
    if "kvasir_seg" in args.datasets:
        kvasir = _kvasir_masks(args.kvasir, n)
        if kvasir is None:
            notes["kvasir_seg"] = f"skipped: no masks/*.png under {args.kvasir}"
        else:
            notes["kvasir_seg"] = f"{len(kvasir)} masks from {args.kvasir / 'masks'}, resized (nearest)"
            datasets["kvasir_seg"] = {size: _resize(kvasir, size) for size in args.sizes}
    if not datasets:
        parser.error(f"no masks to time: {notes}. Pass --kvasir ROOT or add `synthetic` to --datasets.")

    results: dict[str, dict[str, float]] = {}
    baseline: dict[str, dict[str, float]] = {}
    speedup: dict[str, dict[str, float]] = {}
    for name, by_size in datasets.items():
        results[name], baseline[name], speedup[name] = {}, {}, {}
        for size, masks in by_size.items():
            rate, ref = _throughput(
                masks,
                args.batch_size,
                args.min_seconds,
                args.seed,
                not args.no_baseline,
                device,
                args.backend,
            )
            results[name][str(size)] = round(rate, 1)
            line = f"{name:>11s} {size:4d} px: {rate:9.1f} masks/s"
            if ref is not None:
                baseline[name][str(size)] = round(ref, 1)
                speedup[name][str(size)] = round(rate / ref, 2)
                line += f"   baseline {ref:9.1f} masks/s   speed-up x{rate / ref:.2f}"
            print(line, file=sys.stderr)

    report: dict = {
        "benchmark": "corruptions",
        "what": "CorruptionSampler (full METHOD.md mix + Dice targets), float32 masks, masks/second",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "backend": args.backend,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "masks_per_second": results,
        "baseline_numpy_opencv_masks_per_second": baseline if not args.no_baseline else "skipped",
        "speedup_vs_baseline": speedup if not args.no_baseline else "skipped",
        "datasets": notes,
        "reference_numpy_opencv_masks_per_second": REFERENCE_MASKS_PER_S,
        "load_average_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": " ".join(
            ["python", "benchmarks/corruptions.py", *(sys.argv[1:] if argv is None else argv)]
        ),
    }
    if "kvasir_seg" in results:
        report["speedup_vs_reference_numbers"] = {
            size: round(results["kvasir_seg"][size] / ref, 2)
            for size, ref in REFERENCE_MASKS_PER_S.items()
            if size in results["kvasir_seg"]
        }
    if args.per_corruption:
        source = "kvasir_seg" if "kvasir_seg" in datasets else "synthetic"
        table = {}
        for size in args.sizes:
            timings = _per_corruption(
                datasets[source][size], args.batch_size, args.repeats, args.seed, device, args.backend
            )
            table[str(size)] = {k: round(v, 1) for k, v in timings.items()}
        report["per_corruption_us_per_mask"] = {"masks": source, **table}
        header = f"{'corruption':<22s}" + "".join(f"{s:>9d}px" for s in args.sizes)
        print(f"\nmicroseconds per mask ({source}, batch {args.batch_size}, uint8 input)", file=sys.stderr)
        print(header, file=sys.stderr)
        names = sorted(table[str(args.sizes[-1])], key=lambda k: -table[str(args.sizes[-1])][k])
        for name in names:
            row = "".join(f"{table[str(s)][name]:11.1f}" for s in args.sizes)
            print(f"{name:<22s}{row}", file=sys.stderr)

    if args.call_cost:
        source = "kvasir_seg" if "kvasir_seg" in datasets else "synthetic"
        size = max(args.sizes)
        costs = _call_cost(datasets[source][size], 4 * args.repeats, args.seed, args.backend)
        report["call_cost_us"] = {
            "masks": source,
            "size": size,
            **{k: {part: round(v, 1) for part, v in c.items()} for k, c in costs.items()},
        }
        print(f"\nmicroseconds per call ({source}, {size} px, uint8): fixed + per mask", file=sys.stderr)
        for name in sorted(costs, key=lambda k: -costs[k]["fixed"]):
            print(f"{name:<22s}{costs[name]['fixed']:9.1f}{costs[name]['per_mask']:9.1f}", file=sys.stderr)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()

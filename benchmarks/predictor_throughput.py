"""Training samples per second of the quality predictor: data side alone, and end to end.

Data side: gathering cached images, joint spatial augmentation, the corruption recipe, snapshot candidates (when
``--snapshots`` is given), Dice targets and photometric augmentation: everything
:class:`qg_lightning.quality.QualityDataModule` does per batch, on one CPU process (``torch.set_num_threads(1)``).
End to end: the same plus the :class:`QualityPredictor` forward and backward and an optimiser step (ResNet-18,
threads = ``--threads``), so we can see which side is the bottleneck; ``--e2e-batches 0`` skips it.
OpenCV is limited to one thread for the data side too (``cv2.setNumThreads(1)``).

Reference: a per-sample pipeline that re-reads and re-augments each image makes about 300 samples/s at 224 px on
one process of the development machine; the target for the data side is 900 samples/s at 224 px, 3x that. The
machine's speed moves by about a third between runs, so on a folder dataset (Kvasir) the script also times such a
pipeline, :class:`PerSamplePipeline`, on alternating batches in the same process and reports the ratio
(``--no-baseline`` skips it). That pipeline is slower than the one behind the 300 figure (about 100 samples/s at
224 px here: its float32 photometric jitter and Gaussian noise alone take about 4 ms per image), so its ratio shows
only that the lead does not depend on the machine's load; the 900 target stays an absolute figure. The machine's
load average is recorded with the results.

``--device cuda`` runs the data module's batch work where a GPU fit runs it, on the training device (the loader
still gathers the cached ``uint8`` images on the CPU; warps, corruptions, snapshots and jitter run on the GPU), and
the end-to-end step there too, with ``--precision bf16-mixed`` or ``16-mixed`` (autocast) and
``--channels-last``. Every timed batch ends with a synchronisation. The per-sample pipeline stays on the CPU.

``--repeats N`` times the data side N times in one invocation and reports the median (every run is kept under
``runs``). The last line printed is one JSON object, also written to
``benchmarks/results/predictor_throughput.json``.

Usage:
    python benchmarks/predictor_throughput.py [--root ../shared/data/kvasir_seg] [--sizes 128 224] [--repeats 5]
        [--no-baseline] [--device cuda --precision bf16-mixed --channels-last]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from _paths import shared_dataset
from corruptions import NumpyOpenCVBaseline, parse_device, sync  # the sibling script's helpers
from lightning.fabric.utilities.apply_func import move_data_to_device

from qg_lightning.quality import QualityDataModule, QualityPredictor

CPU = torch.device("cpu")
REFERENCE_SAMPLES_PER_S_224 = 300.0
TARGET_DATA_SAMPLES_PER_S_224 = 900.0


def _batches(dm: QualityDataModule, device: torch.device = CPU) -> Iterator[dict[str, torch.Tensor]]:
    """Training batches forever (the loader restarts at the end of an epoch), seeded like a fit: the loader's
    ``uint8`` batch is moved to ``device`` and made into a training batch there, as in a fit on that device."""
    g = torch.Generator(device=device).manual_seed(0)
    loader = dm.train_dataloader()
    while True:
        for index, raw in enumerate(loader):  # the index schedules the noise bank, as in a fit
            raw = move_data_to_device(raw, device)  # as Lightning moves it in a fit; a no-op on the CPU
            batch = dm.make_training_batch(raw, generator=g, batch_index=index)
            sync(device)
            yield batch


def _samples_per_s(step: Callable[[], int], n_steps: int) -> float:
    """Time ``n_steps`` calls of ``step`` (which returns its sample count) after one warm-up call."""
    step()
    done, start = 0, time.perf_counter()
    for _ in range(n_steps):
        done += step()
    return done / (time.perf_counter() - start)


try:  # minor page faults of this process (Unix); elsewhere they are not recorded
    import resource
except ImportError:
    resource = None


def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is missing, e.g. Windows)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource is not None else 0


class PerSamplePipeline:
    """A straightforward per-sample pipeline for the same kind of training batches, timed beside ours.

    Per sample, written the way research code usually is: decode the image and mask files again
    (``cv2.imread``), resize them (area / nearest), flip and rotate them jointly (``cv2.warpAffine``, up to 20
    degrees), then NumPy photometric jitter (brightness, contrast, saturation, Gaussian noise with the ranges of
    :func:`qg_lightning.quality.photometric`); the batch's masks go through the sibling script's
    :class:`NumpyOpenCVBaseline` (the METHOD.md mix, one mask at a time, with Dice targets). Samples come in a
    fresh random order every pass over the images. Used only to time our data side against it under the same
    machine load.
    """

    def __init__(
        self, images: list[Path], masks: list[Path], size: int, batch_size: int, seed: int = 0
    ) -> None:
        self.images, self.masks = [str(p) for p in images], [str(p) for p in masks]
        self.size, self.batch_size = size, batch_size
        self.rng = np.random.default_rng(seed)
        self.corrupt = NumpyOpenCVBaseline(seed)
        self.order: list[int] = []

    def _sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        size = self.size
        image = cv2.cvtColor(cv2.imread(self.images[i], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        mask = cv2.imread(self.masks[i], cv2.IMREAD_GRAYSCALE)
        mask = (cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST) > 127).astype(np.uint8)
        if self.rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        mat = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), self.rng.uniform(-20, 20), 1.0)
        image = cv2.warpAffine(np.ascontiguousarray(image), mat, (size, size), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(np.ascontiguousarray(mask), mat, (size, size), flags=cv2.INTER_NEAREST)
        return image, mask

    def _photometric(self, image: np.ndarray) -> np.ndarray:
        b, c, s = 1 + 0.2 * (2 * self.rng.random(3) - 1)
        x = image.astype(np.float32) / 255 * b
        mean = x.mean()
        x = c * (x - mean) + mean
        gray = x.mean(-1, keepdims=True)
        x = s * (x - gray) + gray
        x += self.rng.uniform(0, 0.03) * self.rng.standard_normal(x.shape, dtype=np.float32)
        return np.clip(x, 0, 1).transpose(2, 0, 1)

    def __call__(self) -> dict[str, torch.Tensor]:
        """The next training batch: ``image``, ``candidate``, ``quality``."""
        if len(self.order) < self.batch_size:
            self.order += self.rng.permutation(len(self.images)).tolist()
        picks, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        images, masks = zip(*(self._sample(i) for i in picks), strict=True)
        candidate, quality = self.corrupt(torch.from_numpy(np.stack(masks)).float().unsqueeze(1))
        image = torch.from_numpy(np.stack([self._photometric(im) for im in images]))
        return {"image": image, "candidate": candidate, "quality": quality}


def _data_side(
    dms: dict[str, QualityDataModule],
    n_batches: int,
    baseline: PerSamplePipeline | None = None,
    device: torch.device = CPU,
) -> tuple[dict[str, float], dict[str, float | None]]:
    """Samples per second of each data module's batches (and of ``baseline``'s, as ``"baseline"``), timed on
    alternating batches (same machine load), and the minor page faults per batch (fresh memory the C
    allocator had to map: a sign that it handed freed batch buffers back to the system)."""
    streams: dict = {name: _batches(dm, device) for name, dm in dms.items()}
    if baseline is not None:
        streams["baseline"] = iter(baseline, None)
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    seconds = dict.fromkeys(streams, 0.0)
    samples = dict.fromkeys(streams, 0)
    faults = dict.fromkeys(streams, 0)
    try:
        for stream in streams.values():
            next(stream)  # warm-up
        for _ in range(n_batches):
            for name, stream in streams.items():
                before = _minor_faults()
                start = time.perf_counter()
                samples[name] += next(stream)["image"].shape[0]
                seconds[name] += time.perf_counter() - start
                after = _minor_faults()
                faults[name] += after - before
    finally:
        cv2.setNumThreads(cv_threads)
    per_batch = {name: (faults[name] / n_batches if resource is not None else None) for name in streams}
    return {name: samples[name] / seconds[name] for name in streams}, per_batch


AUTOCAST = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _end_to_end(
    dm: QualityDataModule,
    n_batches: int,
    threads: int,
    device: torch.device = CPU,
    precision: str = "32",
    channels_last: bool = False,
) -> float:
    """Samples per second of whole training steps: the data module's batch, then the predictor's forward and
    backward (autocast at ``precision``; fp16 with a gradient scaler, as Lightning's ``16-mixed``) and an AdamW
    step, on ``device``."""
    torch.set_num_threads(threads)
    model = QualityPredictor(
        backbone="resnet18",
        in_channels=dm.hparams.in_channels,
        num_classes=dm.hparams.num_classes,
        channels_last=channels_last,
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    dtype = AUTOCAST[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    model.train()
    batches = _batches(dm, device)

    def step() -> int:
        batch = next(batches)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            q = model(batch["image"], batch["candidate"])
        loss = torch.nn.functional.smooth_l1_loss(q.float(), batch["quality"])
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sync(device)
        return batch["image"].shape[0]

    return _samples_per_s(step, n_batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", default=str(shared_dataset("kvasir_seg")), help="standard-layout folder (kvasir_seg)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-batches", type=int, default=30)
    parser.add_argument(
        "--repeats", type=int, default=1,
        help="time the data side this many times (--data-batches each) and report the median of the runs, "
        "with every run's figure under 'runs'",
    )  # fmt: skip
    parser.add_argument("--e2e-batches", type=int, default=5, help="0 skips the end-to-end measurement")
    parser.add_argument("--threads", type=int, default=2, help="threads for the end-to-end measurement")
    parser.add_argument(
        "--noise-reuse", type=int, default=8,
        help="QualityDataModule(noise_reuse=...) for the main figures (8, the default); the data side is also "
        "timed with fresh noise per batch (noise_reuse 1) on alternating batches",
    )  # fmt: skip
    parser.add_argument(
        "--image-padding", default="zeros", choices=["zeros", "border"],
        help="QualityDataModule(image_padding=...); before session 7 the only choice was border",
    )  # fmt: skip
    parser.add_argument(
        "--device", default="cpu",
        help="where the data module's batch work and the end-to-end step run: cpu, or e.g. cuda (as in a GPU fit)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", default="32", choices=sorted(AUTOCAST),
        help="autocast of the end-to-end step (Lightning's names; 16-mixed uses a gradient scaler)",
    )  # fmt: skip
    parser.add_argument(
        "--channels-last", action="store_true", help="channels-last predictor in the end-to-end step"
    )
    parser.add_argument("--snapshots", nargs="*", default=None, help="snapshot files/folders (p_weak 0.5)")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the per-sample reference pipeline (PerSamplePipeline)",
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results" / "predictor_throughput.json")
    )
    args = parser.parse_args()
    device = parse_device(parser, args.device)
    if args.precision == "16-mixed" and device.type == "cpu":
        parser.error("--precision 16-mixed needs a GPU (--device cuda); on the CPU use 32 or bf16-mixed")

    datasets = {"synthetic": None}
    if Path(args.root, "images").is_dir():
        datasets["kvasir_seg"] = args.root
    results: dict = {}
    for name, root in datasets.items():
        for size in args.sizes:
            torch.set_num_threads(1)
            dms = {}
            for reuse in (args.noise_reuse, 1):
                dms[reuse] = QualityDataModule(
                    root=root, image_size=size, batch_size=args.batch_size, samples_per_image=50,
                    p_weak=0.5 if args.snapshots else 0.0, snapshots=args.snapshots, snapshot_policy="all",
                    noise_reuse=reuse, image_padding=args.image_padding,
                )  # fmt: skip
                dms[reuse].setup("fit")
            dm = dms[args.noise_reuse]
            baseline = None
            if root is not None and not args.no_baseline:
                index = dm.source.index
                baseline = PerSamplePipeline(
                    [index.image_paths[i] for i in dm.train_ids],
                    [index.mask_paths[i] for i in dm.train_ids],
                    size,
                    args.batch_size,
                )
            runs = [_data_side(dms, args.data_batches, baseline, device) for _ in range(max(1, args.repeats))]
            e2e = None
            if args.e2e_batches > 0:
                e2e = _end_to_end(
                    dm, args.e2e_batches, args.threads, device, args.precision, args.channels_last
                )

            faults = [f[args.noise_reuse] for _, f in runs]

            def median(key, runs=runs) -> float:
                return round(statistics.median(data[key] for data, _ in runs), 1)

            row = results.setdefault(name, {})[str(size)] = {
                "data_samples_per_s": median(args.noise_reuse),
                "data_samples_per_s_fresh_noise": median(1),
                "data_page_faults_per_batch": None if resource is None else statistics.median(faults),
                "end_to_end_samples_per_s": round(e2e, 1) if e2e is not None else None,
            }
            if baseline is not None:
                ratios = [data[args.noise_reuse] / data["baseline"] for data, _ in runs]
                fresh = [data[1] / data["baseline"] for data, _ in runs]
                row["baseline_per_sample_samples_per_s"] = median("baseline")
                row["speedup_vs_baseline"] = round(statistics.median(ratios), 2)
                row["speedup_vs_baseline_fresh_noise"] = round(statistics.median(fresh), 2)
            if len(runs) > 1:
                row["runs"] = [
                    {str(k): round(v, 1) for k, v in data.items()} for data, _ in runs
                ]  # keys: noise_reuse values and "baseline"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {
        "benchmark": "predictor_throughput",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "end_to_end_precision": args.precision,
        "end_to_end_channels_last": args.channels_last,
        "data_side_threads": 1,
        "end_to_end_threads": args.threads,
        "batch_size": args.batch_size,
        "noise_reuse": args.noise_reuse,
        "data_batches": args.data_batches,
        "repeats": max(1, args.repeats),
        "image_padding": args.image_padding,
        "snapshots": bool(args.snapshots),
        "results": results,
        "reference_data_samples_per_s_224": REFERENCE_SAMPLES_PER_S_224,
        "target_data_samples_per_s_224": TARGET_DATA_SAMPLES_PER_S_224,
        "load_average_1_5_15_min": [round(x, 2) for x in load] if load else None,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "command": "python benchmarks/predictor_throughput.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()

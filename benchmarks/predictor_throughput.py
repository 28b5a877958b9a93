"""Training samples per second of the quality predictor: data side alone, and end to end.

Data side: gathering cached images, joint spatial augmentation, the corruption recipe, snapshot candidates (when
``--snapshots`` is given), Dice targets and photometric augmentation: everything
:class:`qg_lightning.quality.QualityDataModule` does per batch, on one CPU process (``torch.set_num_threads(1)``).
End to end: the same plus the :class:`QualityPredictor` forward and backward and an optimiser step (ResNet-18,
threads = ``--threads``), so we can see which side is the bottleneck; ``--e2e-batches 0`` skips it.
OpenCV is limited to one thread for the data side too (``cv2.setNumThreads(1)``).

Reference: a per-sample pipeline that re-reads and re-augments each image makes about 300 samples/s at 224 px on
one process of the development machine; the target for the data side is 900 samples/s at 224 px. The machine's
load average is recorded with the results (the numbers scale with the CPU share the process gets).

The last line printed is one JSON object, also written to ``benchmarks/results/predictor_throughput.json``.

Usage:
    python benchmarks/predictor_throughput.py [--root ../shared/data/kvasir_seg] [--sizes 128 224]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import torch

from qg_lightning.quality import QualityDataModule, QualityPredictor

REFERENCE_SAMPLES_PER_S_224 = 300.0
TARGET_DATA_SAMPLES_PER_S_224 = 900.0


def _default_kvasir() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "kvasir_seg"


def _batches(dm: QualityDataModule) -> Iterator[dict[str, torch.Tensor]]:
    """Training batches forever (the loader restarts at the end of an epoch), seeded like a fit."""
    g = torch.Generator().manual_seed(0)
    loader = dm.train_dataloader()
    while True:
        for index, raw in enumerate(loader):  # the index schedules the noise bank, as in a fit
            yield dm.make_training_batch(raw, generator=g, batch_index=index)


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


def _data_side(
    dms: dict[str, QualityDataModule], n_batches: int
) -> tuple[dict[str, float], dict[str, float | None]]:
    """Samples per second of each data module's batches, timed on alternating batches (same machine load),
    and the minor page faults per batch (fresh memory the C allocator had to map: a sign that it handed
    freed batch buffers back to the system)."""
    streams = {name: _batches(dm) for name, dm in dms.items()}
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    seconds = dict.fromkeys(dms, 0.0)
    samples = dict.fromkeys(dms, 0)
    faults = dict.fromkeys(dms, 0)
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
    per_batch = {name: (faults[name] / n_batches if resource is not None else None) for name in dms}
    return {name: samples[name] / seconds[name] for name in dms}, per_batch


def _end_to_end(dm: QualityDataModule, n_batches: int, threads: int) -> float:
    torch.set_num_threads(threads)
    model = QualityPredictor(
        backbone="resnet18", in_channels=dm.hparams.in_channels, num_classes=dm.hparams.num_classes
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    model.train()
    batches = _batches(dm)

    def step() -> int:
        batch = next(batches)
        loss = torch.nn.functional.smooth_l1_loss(model(batch["image"], batch["candidate"]), batch["quality"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return batch["image"].shape[0]

    return _samples_per_s(step, n_batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(_default_kvasir()), help="standard-layout folder (kvasir_seg)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-batches", type=int, default=30)
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
    parser.add_argument("--snapshots", nargs="*", default=None, help="snapshot files/folders (p_weak 0.5)")
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results" / "predictor_throughput.json")
    )
    args = parser.parse_args()

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
            data, faults = _data_side(dms, args.data_batches)
            dm = dms[args.noise_reuse]
            e2e = _end_to_end(dm, args.e2e_batches, args.threads) if args.e2e_batches > 0 else None
            results.setdefault(name, {})[str(size)] = {
                "data_samples_per_s": round(data[args.noise_reuse], 1),
                "data_samples_per_s_fresh_noise": round(data[1], 1),
                "data_page_faults_per_batch": faults[args.noise_reuse],
                "end_to_end_samples_per_s": round(e2e, 1) if e2e is not None else None,
            }
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {
        "benchmark": "predictor_throughput",
        "data_side_threads": 1,
        "end_to_end_threads": args.threads,
        "batch_size": args.batch_size,
        "noise_reuse": args.noise_reuse,
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

"""Is the quality predictor's data side faster than at an earlier commit? Both versions, alternating batches, one process.

This machine's speed moves by 1.5x or more between runs, so absolute samples/s from two separate runs cannot
show a 20% change. This script extracts ``qg_lightning/`` at ``--old-ref`` (``git archive``) into a temporary
folder, renames the package to ``qg_old`` there, imports it beside the working copy's ``qg_lightning`` and
times the two :class:`QualityDataModule` data sides on alternating batches (same seeds, same arguments as
``benchmarks/predictor_throughput.py``: batch 32, no snapshots, one thread), once with the default noise bank
and once with fresh noise per batch (``noise_reuse`` 1).

The last line printed is one JSON object, also written to ``benchmarks/results/compare_data_side.json``.

Usage:
    python benchmarks/compare_data_side.py --old-ref 01472bd [--sizes 128 224] [--batches 40]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cv2
import torch
from _paths import REPO, shared_dataset

import qg_lightning
from qg_lightning.quality import QualityDataModule


def _import_old(ref: str, workdir: Path) -> ModuleType:
    """``qg_lightning`` at git ``ref``, renamed ``qg_old`` and imported from ``workdir``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "qg_lightning"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: refuse links and absolute paths
            tar.extractall(workdir, filter="data")
        else:  # our own git archive of one folder
            tar.extractall(workdir)
    pkg = workdir / "qg_old"
    (workdir / "qg_lightning").rename(pkg)
    for path in pkg.rglob("*.py"):
        path.write_text(re.sub(r"\bqg_lightning\b", "qg_old", path.read_text()))
    spec = importlib.util.spec_from_file_location(
        "qg_old", pkg / "__init__.py", submodule_search_locations=[str(pkg)]
    )
    if spec is None or spec.loader is None:
        raise RuntimeError(f"could not import the package extracted from {ref!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["qg_old"] = module  # its own absolute imports (qg_old.x) resolve through this entry
    spec.loader.exec_module(module)
    return importlib.import_module("qg_old.quality")


def _stream(dm_class: type, root: str, size: int, noise_reuse: int) -> Iterator[int]:
    dm = dm_class(
        root=root, image_size=size, batch_size=32, samples_per_image=50, p_weak=0.0, noise_reuse=noise_reuse
    )
    dm.setup("fit")
    g = torch.Generator().manual_seed(0)
    while True:
        for index, raw in enumerate(dm.train_dataloader()):
            yield dm.make_training_batch(raw, generator=g, batch_index=index)["image"].shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old-ref", required=True, help="git commit or tag to compare against, e.g. 01472bd")
    parser.add_argument(
        "--root", default=str(shared_dataset("kvasir_seg")), help="standard-layout folder (kvasir_seg)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--batches", type=int, default=40, help="timed batches per version and setting")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "compare_data_side.json"))
    args = parser.parse_args()
    if not Path(args.root, "images").is_dir():
        parser.error(f"--root {args.root} has no images/ folder; point it at a standard-layout dataset")

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = _import_old(args.old_ref, Path(tmp))
        versions = {"old": old.QualityDataModule, "new": QualityDataModule}
        for size in args.sizes:
            for noise_reuse in (8, 1):
                streams = {name: _stream(cls, args.root, size, noise_reuse) for name, cls in versions.items()}
                for stream in streams.values():
                    next(stream)  # warm-up
                seconds = dict.fromkeys(streams, 0.0)
                samples = dict.fromkeys(streams, 0)
                for _ in range(args.batches):
                    for name, stream in streams.items():
                        start = time.perf_counter()
                        samples[name] += next(stream)
                        seconds[name] += time.perf_counter() - start
                rate = {name: samples[name] / seconds[name] for name in streams}
                results.setdefault(str(size), {})[f"noise_reuse_{noise_reuse}"] = {
                    "old_samples_per_s": round(rate["old"], 1),
                    "new_samples_per_s": round(rate["new"], 1),
                    "speedup": round(rate["new"] / rate["old"], 3),
                }
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()  # fmt: skip
    report = {
        "benchmark": "compare_data_side",
        "old_ref": args.old_ref,
        "new": f"working copy at {commit} ({Path(qg_lightning.__file__).parent})",
        "data": args.root,
        "threads": 1,
        "batch_size": 32,
        "results": results,
        "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "command": "python benchmarks/compare_data_side.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()

"""Does the quality predictor still judge real masks on images from an endoscope system it never saw?

Kvasir-SEG comes from one centre, but not from one acquisition system: its ``manifest.csv`` records each
image's original size, and the sizes fall into groups that look different (see benchmarks/RESULTS.md):
607 of the 640 images here are 332-627 px wide (standard definition; 576 of them 550-627), 11 are 720x576 (PAL
video, most with a scope-position inset) and 22 are 1205-1920 px wide (high definition, brighter and pinker,
with a plain octagonal frame).
This script holds every image of the rare systems (original width >= ``--min-width``, 700 by default)
out of training, so the snapshots, the evaluation segmenters and the predictor all learn from the
standard-definition images only, and then compares the predictor on held-out images of the same system with
the predictor on the other systems. It is a real acquisition shift, unlike ``appearance_shift.py``'s
synthetic one, but not another centre: same hospital, patients and annotators.

Two steps:

``splits``
    Writes three split files to ``--out-dir``, all with the same train / val ids (a seeded split of the
    standard-definition images, 448 / 96 by default, like the seeded split of the other runs):
    ``split_train.json`` (test: both groups), ``split_test_same.json`` (test: the held-out
    standard-definition images) and ``split_test_other.json`` (test: every image of the other systems).
    Train with ``python benchmarks/predictor_quality.py --split-file OUT/split_train.json ...``.

``evaluate``
    Runs ``qg-lightning evaluate-predictor`` for one predictor (or the mean of several) on each test group
    (same segmenters, same options; ``--tta`` passes through) and prints one JSON line with each group's
    real-candidate figures and 95% intervals from an image bootstrap, and the difference other - same with
    its interval (the groups hold different images, so this bootstrap resamples each group on its own). A
    report already in ``--out-dir`` is reused, not recomputed: use a new ``--out-dir`` for another predictor
    or segmenter set.

Usage:
    python benchmarks/acquisition_shift.py splits --root ../shared/data/kvasir_seg --out-dir /tmp/acq
    python benchmarks/predictor_quality.py --root ../shared/data/kvasir_seg --split-file /tmp/acq/split_train.json \\
        --out-dir /tmp/acq/run --variants ours_errmap ...
    python benchmarks/acquisition_shift.py evaluate --root ../shared/data/kvasir_seg --splits /tmp/acq \\
        --predictor /tmp/acq/run/predictor_ours_errmap/calibrated.ckpt \\
        --segmenter /tmp/acq/run/eval_segmenters/*.pt --tta --out-dir results/acquisition_shift/NAME
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
from _paths import shared_dataset
from appearance_shift import _read_candidates  # the sibling scripts' candidates reader and metrics
from compare_predictors import _metrics

from qg_lightning.cli_evaluate import evaluate_predictor_cli
from qg_lightning.data.splits import Split, make_split

GROUPS = ("same", "other")


def acquisition_groups(manifest: Path, min_width: int) -> dict[str, list[str]]:
    """``{"same": ids, "other": ids}`` from a ``manifest.csv`` with ``id`` and ``orig_width`` columns: images at
    least ``min_width`` px wide in the original are "other"."""
    if not manifest.is_file():
        raise SystemExit(
            f"{manifest} not found: this benchmark needs the dataset's manifest.csv (columns id, orig_width) to "
            "tell the acquisition systems apart."
        )
    groups: dict[str, list[str]] = {"same": [], "other": []}
    with manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"id", "orig_width"} - set(reader.fieldnames or [])
        if missing:
            raise SystemExit(f"{manifest} lacks the column(s) {sorted(missing)}; it needs id and orig_width.")
        for row in reader:
            groups["other" if int(row["orig_width"]) >= min_width else "same"].append(row["id"])
    if not groups["other"] or not groups["same"]:
        raise SystemExit(
            f"--min-width {min_width} puts {len(groups['other'])} image(s) in the held-out group and "
            f"{len(groups['same'])} in the training group; both need some."
        )
    return groups


def write_splits(args) -> None:
    groups = acquisition_groups(Path(args.root) / "manifest.csv", args.min_width)
    same = groups["same"]
    n = len(same)
    if args.n_val + args.n_test >= n:
        raise SystemExit(f"--n-val {args.n_val} + --n-test {args.n_test} leave no training images of {n}.")
    base = make_split(same, seed=args.seed, val_fraction=args.n_val / n, test_fraction=args.n_test / n)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tests = {"train": base.test + groups["other"], "test_same": base.test, "test_other": groups["other"]}
    for name, test in tests.items():
        Split(train=base.train, val=base.val, test=sorted(test)).save(out / f"split_{name}.json")
    info = {
        "min_width": args.min_width, "seed": args.seed, "n_train": len(base.train), "n_val": len(base.val),
        "n_test_same": len(base.test), "n_test_other": len(groups["other"]),
        "files": sorted(f"split_{name}.json" for name in tests),
    }  # fmt: skip
    (out / "groups.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))


def _real_by_image(path: Path) -> dict[str, np.ndarray]:
    """``(n, 2)`` (pred, true) of the real-model candidates of a ``*_candidates.csv``, per image id."""
    real = _read_candidates(path).get("real")
    if real is None:
        return {}
    pairs = np.stack([real["pred"], real["true"]], axis=1)
    return {i: pairs[real["id"] == i] for i in np.unique(real["id"]).tolist()}


def _bootstrap(
    by_image: dict[str, np.ndarray], rng: np.random.Generator, resamples: int
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Figures on all candidates, and on ``resamples`` image resamples (all candidates of a drawn image go
    together)."""
    ids = sorted(by_image)
    blocks = [by_image[i] for i in ids]
    full = np.concatenate(blocks)
    draws = []
    for _ in range(resamples):
        pick = rng.integers(0, len(ids), len(ids))
        got = np.concatenate([blocks[j] for j in pick])
        draws.append(_metrics(got[:, 0], got[:, 1]))
    return _metrics(full[:, 0], full[:, 1]), draws


def _interval(values: list[float]) -> list[float]:
    finite = [v for v in values if math.isfinite(v)]
    return [round(float(np.percentile(finite, q)), 4) for q in (2.5, 97.5)] if finite else [math.nan] * 2


def evaluate(args) -> None:
    splits, out = Path(args.splits), Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    result: dict = {
        "benchmark": "acquisition_shift",
        "predictor": args.predictor[0] if len(args.predictor) == 1 else args.predictor,
        "tta": args.tta,
        "groups": {},
    }
    draws: dict[str, list[dict[str, float]]] = {}
    for group in GROUPS:
        split_file = splits / f"split_test_{group}.json"
        if not split_file.is_file():
            raise SystemExit(
                f"{split_file} not found: run `acquisition_shift.py splits --out-dir {splits}` first."
            )
        report = out / f"report_{group}.json"
        if not report.exists():
            evaluate_predictor_cli(["--predictor", *args.predictor, "--out", str(report), "--data.root", args.root,
                                    "--data.split_file", str(split_file), "--subset", "test",
                                    "--candidates-per-image", str(args.candidates_per_image),
                                    "--segmenter", *args.segmenter, *(["--tta"] if args.tta else [])])  # fmt: skip
        data = json.loads(report.read_text())
        real = data.get("by_source", {}).get("real", {})
        by_image = _real_by_image(report.with_name(report.stem + "_candidates.csv"))
        figures, draws[group] = _bootstrap(by_image, rng, args.resamples)
        result["groups"][group] = {
            "n_images": len(by_image), "n_real": sum(map(len, by_image.values())),
            **{k: round(v, 4) for k, v in figures.items()},
            **{f"{k}_ci95": _interval([d[k] for d in draws[group]]) for k in figures},
            "constant_baseline_mae": real.get("constant_baseline_mae"),
            "mean_pred": real.get("mean_pred"), "mean_true": real.get("mean_true"),
            "failure_auroc": ((real.get("failure_detection") or {}).get("predictor") or {}).get("auroc"),
            "failure_rate": ((real.get("failure_detection") or {}).get("predictor") or {}).get("failure_rate"),
            "synthetic": {k: data.get("by_source", {}).get("synthetic", {}).get(k) for k in ("pearson", "mae")},
        }  # fmt: skip
    result["other_minus_same"] = {
        k: {
            "value": round(result["groups"]["other"][k] - result["groups"]["same"][k], 4),
            "ci95": _interval([o[k] - s[k] for o, s in zip(draws["other"], draws["same"], strict=True)]),
        }
        for k in ("pearson", "spearman", "mae")
    }
    result["command"] = "python benchmarks/acquisition_shift.py " + " ".join(args.argv)
    (out / "acquisition_shift.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    sp = sub.add_parser("splits", help="write the split files")
    sp.add_argument("--root", default=str(shared_dataset("kvasir_seg")))
    sp.add_argument("--out-dir", required=True)
    sp.add_argument(
        "--min-width", type=int, default=700, help="original width (px) from which an image is 'other'"
    )
    sp.add_argument("--n-val", type=int, default=96)
    sp.add_argument("--n-test", type=int, default=63, help="held-out images of the training system")
    sp.add_argument("--seed", type=int, default=0)
    ev = sub.add_parser("evaluate", help="evaluate a predictor on each test group")
    ev.add_argument("--root", default=str(shared_dataset("kvasir_seg")))
    ev.add_argument("--splits", required=True, help="the --out-dir of the splits step")
    ev.add_argument("--predictor", nargs="+", required=True, help="several: their mean (an ensemble)")
    ev.add_argument("--segmenter", nargs="+", required=True)
    ev.add_argument("--tta", action="store_true")
    ev.add_argument("--candidates-per-image", type=int, default=5)
    ev.add_argument("--resamples", type=int, default=2000)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    args.argv = argv
    write_splits(args) if args.step == "splits" else evaluate(args)


if __name__ == "__main__":
    main()

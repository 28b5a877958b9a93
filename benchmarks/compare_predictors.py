"""Is predictor B really better than predictor A on the same candidates? A paired bootstrap over images.

Reads two ``*_candidates.csv`` files written by ``qg-lightning evaluate-predictor`` on the same images and
segmenters (rows are matched by ``id`` and ``source``), keeps the real-model candidates (``--source real``,
every source other than ``synthetic``; or ``synthetic``, or ``all``), and resamples *images* with replacement
(all candidates of a drawn image go together), so the interval reflects which test images happened to be
drawn. It does not reflect training-seed variation: for that, train replicates (``predictor_quality.py
--train-seed``).

Prints one JSON line: Pearson, Spearman and MAE of A and B, B - A, and the 95% percentile intervals.

Several B files make B their row-wise mean prediction: an ensemble of those predictors, as ``qg-lightning
evaluate-predictor --predictor B1 B2`` computes it (the two agree to the CSVs' 6 decimals).

Usage:
    python benchmarks/compare_predictors.py A_candidates.csv B_candidates.csv [B2_candidates.csv ...]
        [--source real] [--resamples 2000]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr


def _read(path: Path, source: str) -> dict[tuple[str, str], tuple[float, float]]:
    rows = {}
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            real = r["source"] != "synthetic"
            if source == "all" or (source == "real") == real:
                key = (r["id"], r["source"] + "/" + r.get("corruption", ""))
                rows[key] = (float(r["pred"]), float(r["true"]))
    return rows


def _metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    return {
        "pearson": float(np.corrcoef(pred, true)[0, 1]),
        "spearman": float(spearmanr(pred, true).statistic),
        "mae": float(np.abs(pred - true).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path, help="candidates CSV of predictor A")
    parser.add_argument(
        "b",
        type=Path,
        nargs="+",
        help="candidates CSV of predictor B; several: B is their mean (an ensemble)",
    )
    parser.add_argument("--source", choices=["real", "synthetic", "all"], default="real")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    a = _read(args.a, args.source)
    members = []
    for path in args.b:
        b = _read(path, args.source)
        if not a or set(a) != set(b):
            only = sorted(set(a) ^ set(b))[:3]
            raise SystemExit(
                f"{args.a} and {path} must hold the same {args.source} candidates (same images and segmenters); "
                f"{len(a)} vs {len(b)} rows, e.g. unmatched {only}. Evaluate both predictors with the same "
                "--data.root, --subset and --segmenter."
            )
        if any(abs(b[k][1] - a[k][1]) > 1e-5 for k in a):
            raise SystemExit(f"{args.a} and {path} give different true Dice for the same candidate.")
        members.append(b)
    b = {k: (float(np.mean([m[k][0] for m in members])), a[k][1]) for k in a}
    keys = sorted(a)
    ids = np.array([k[0] for k in keys])
    true = np.array([a[k][1] for k in keys])
    pa, pb = np.array([a[k][0] for k in keys]), np.array([b[k][0] for k in keys])
    images = np.unique(ids)
    rows_of = [np.flatnonzero(ids == i) for i in images]
    rng = np.random.default_rng(args.seed)
    draws: dict[str, list[float]] = {}
    for _ in range(args.resamples):
        rows = np.concatenate([rows_of[i] for i in rng.integers(0, len(images), len(images))])
        ma, mb = _metrics(pa[rows], true[rows]), _metrics(pb[rows], true[rows])
        for name in ma:
            draws.setdefault(f"a_{name}", []).append(ma[name])
            draws.setdefault(f"b_{name}", []).append(mb[name])
            draws.setdefault(f"diff_{name}", []).append(mb[name] - ma[name])
    ma, mb = _metrics(pa, true), _metrics(pb, true)
    result = {
        "benchmark": "compare_predictors",
        "a": str(args.a),
        "b": str(args.b[0]) if len(args.b) == 1 else [str(path) for path in args.b],
        "source": args.source,
        "n_candidates": len(keys),
        "n_images": len(images),
        "resamples": args.resamples,
        "a_metrics": ma,
        "b_metrics": mb,
        "b_minus_a": {name: mb[name] - ma[name] for name in ma},
        "ci95": {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()},
        "share_b_not_better": {
            "pearson": float(np.mean(np.array(draws["diff_pearson"]) <= 0)),
            "spearman": float(np.mean(np.array(draws["diff_spearman"]) <= 0)),
            "mae": float(np.mean(np.array(draws["diff_mae"]) >= 0)),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

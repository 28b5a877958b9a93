"""Does a quality predictor trained at one centre judge masks at another, and does recalibration on a few of
the new centre's labeled images help?

The predictor (e.g. the study's, trained on Kvasir-SEG with the library's recipe) and the segmenters (e.g. the
study's final models, trained on Kvasir-SEG: a model moved to a new hospital) never saw the new centre's
images. The new centre's labeled images (``--root``, e.g. ``../shared/data/neopolyp``) are shuffled once
(``--seed``) into a fixed test set of ``--n-test`` images and a pool; the first N images of the pool, for each
N of ``--calibration-sizes`` (nested: the 10 are among the 25), are the labeled images a user would spend on
recalibration. For each N the predictor is evaluated on those N images, a monotone calibration is fitted on
their candidates (``qg-lightning calibrate-predictor``'s fit) and the recalibrated predictor is evaluated on
the same test set as the predictor as it is. A monotone map can fix the level (MAE) but cannot reorder
candidates, so Spearman stays where it was by construction; only the MAE and the calibration plot can move.

Prints one JSON line (also written to ``--out-dir/cross_centre.json``): for the predictor as is and after each
recalibration, the real candidates' MAE, Pearson, Spearman with 95% intervals from an image bootstrap, the
constant baseline, failure-detection AUROC of the predictor and of the segmenters' own confidence, and the
synthetic candidates' Pearson. Reports already in ``--out-dir`` are reused.

``--fine-tune-sizes N ...`` adds the fourth option: for each N, the predictor is fine-tuned on the first N pool
images (three quarters train it, the last quarter validates and calibrates it): the library's recipe
(``PredictorRecipe(init_from=PREDICTOR)``, ``--image-size``, ``--fine-tune-epochs``, snapshot epochs scaled to
the few images) through ``train_predictor``, then judged on the same test set (``fine_tuned_nN``).

``--two-centre-folder`` writes the third option instead: a folder of links to both centres' pairs with a split
that trains a predictor on the first centre's training split plus ``--n-pool`` of the new centre's pool images
(the same images the recalibrations spend), keeping both test sets out; train it with ``qg-lightning
train-predictor --data.root OUT/two_centre`` and evaluate it with this script like any other predictor.

Usage:
    python benchmarks/cross_centre.py --root ../shared/data/neopolyp --predictor PRED.ckpt \\
        --segmenter SEG1.ckpt SEG2.ckpt --tta --out-dir /tmp/cross_centre [--fine-tune-sizes 25 100]
    python benchmarks/cross_centre.py --two-centre-folder --home-split STUDY/split.json --out-dir /tmp/cross_centre
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from _paths import shared_dataset
from acquisition_shift import _bootstrap, _interval, _real_by_image

from qg_lightning.cli_evaluate import evaluate_predictor_cli
from qg_lightning.data.folder import scan_folder
from qg_lightning.data.splits import Split
from qg_lightning.quality.calibration import calibrate_checkpoint, read_candidates
from qg_lightning.quality.recipe import PredictorData, PredictorRecipe
from qg_lightning.quality.training import train_predictor


def test_and_pool(root: str, n_test: int, n_pool: int, seed: int) -> tuple[list[str], list[str]]:
    """The new centre's fixed test ids (sorted) and its pool of labeled ids, in the seeded order in which they
    are spent (the first N are the N calibration images)."""
    ids = sorted(scan_folder(root, check=False).ids)
    if n_test + n_pool >= len(ids):
        raise SystemExit(
            f"--n-test {n_test} + the largest --calibration-sizes {n_pool} must leave at least one of the "
            f"{len(ids)} images of {root} out (the split files need a training id); lower one of them."
        )
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return sorted(order[:n_test]), order[n_test:]


def write_splits(root: str, out: Path, n_test: int, sizes: list[int], seed: int) -> dict[str, Path]:
    """One split file per calibration size (``val``: the calibration images, ``test``: the fixed test set) and
    ``split_test.json``; returns them by name."""
    test, pool = test_and_pool(root, n_test, max(sizes), seed)
    files = {}
    for n in [0, *sizes]:
        calib = sorted(pool[:n]) if n else sorted(pool[: max(sizes)])  # n=0: any val list (unused)
        path = out / (f"split_n{n}.json" if n else "split_test.json")
        Split(train=sorted(set(pool) - set(calib)), val=calib, test=test).save(path)
        files[f"n{n}" if n else "test"] = path
    return files


def write_two_centre_folder(args) -> Path:
    """``--out-dir/two_centre``: links to the home centre's pairs (``--home-root``) and to the new centre's
    ``--n-pool`` first pool images, with a ``split.json`` that trains on the home training split plus three
    quarters of those pool images, validates on the home validation split plus the last quarter, and keeps both
    centres' test images (the home split's ``test`` and this benchmark's fixed test set) out."""
    home = Split.from_dict(json.loads(Path(args.home_split).read_text()), source=args.home_split)
    test, pool = test_and_pool(args.root, args.n_test, args.n_pool, args.seed)
    pool = pool[: args.n_pool]
    n_train = round(0.75 * len(pool))
    folder = Path(args.out_dir) / "two_centre"
    for root in (args.home_root, args.root):
        index = scan_folder(root, check=False)
        for kind, paths in (("images", index.image_paths), ("masks", index.mask_paths)):
            (folder / kind).mkdir(parents=True, exist_ok=True)
            for path in paths.values():
                link = folder / kind / Path(path).name
                if not link.exists():
                    link.symlink_to(Path(path).resolve())
    split = Split(
        train=sorted(home.train + pool[:n_train]),
        val=sorted(home.val + pool[n_train:]),
        test=sorted(home.test + test),
    )
    split.save(folder / "split.json")
    return folder


def fine_tune(args, n: int) -> Path:
    """The predictor fine-tuned on the first ``n`` pool images of the new centre (``OUT/fine_tune_nN``); returns
    its final checkpoint. Three quarters of them train it, the last quarter validates and calibrates it."""
    test, pool = test_and_pool(args.root, args.n_test, n, args.seed)
    n_train = round(0.75 * n)
    folder = Path(args.out_dir) / f"fine_tune_n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    split = Split(train=sorted(pool[:n_train]), val=sorted(pool[n_train:n]), test=test).save(
        folder / "split.json"
    )
    recipe = PredictorRecipe(image_size=args.image_size, max_epochs=args.fine_tune_epochs,
                             init_from=str(Path(args.predictor).resolve()))  # fmt: skip
    # the weak models train on a few images: as many steps as in the measured setting (their masks stay real)
    recipe = recipe.replace(snapshot_epochs=recipe.scaled_to(n_train).snapshot_epochs)
    data = PredictorData(root=args.root, split_file=str(split))
    return train_predictor(recipe, data, folder / "run").checkpoint


def _evaluate(args, predictor: str, split: Path, subset: str, report: Path) -> dict:
    if not report.exists():
        evaluate_predictor_cli(["--predictor", predictor, "--out", str(report), "--data.root", args.root,
                                "--data.split_file", str(split), "--subset", subset,
                                "--candidates-per-image", str(args.candidates_per_image),
                                "--segmenter", *args.segmenter, *(["--tta"] if args.tta else [])])  # fmt: skip
    return json.loads(report.read_text())


def _figures(report: Path, data: dict, rng: np.random.Generator, resamples: int) -> dict:
    real = data.get("by_source", {}).get("real", {})
    by_image = _real_by_image(report.with_name(report.stem + "_candidates.csv"))
    figures, draws = _bootstrap(by_image, rng, resamples)
    detection = data.get("failure_detection", {}).get("baselines") or real.get("failure_detection") or {}
    return {
        "n_images": len(by_image), "n_real": sum(map(len, by_image.values())),
        **{k: round(v, 4) for k, v in figures.items()},
        **{f"{k}_ci95": _interval([d[k] for d in draws]) for k in figures},
        "constant_baseline_mae": real.get("constant_baseline_mae"),
        "mean_pred": real.get("mean_pred"), "mean_true": real.get("mean_true"),
        "failure_auroc": {name: v.get("auroc") for name, v in detection.items() if isinstance(v, dict)},
        "failure_rate": (detection.get("predictor") or {}).get("failure_rate"),
        "by_segmenter": {
            name: {k: v.get(k) for k in ("n", "pearson", "spearman", "mae", "mean_pred", "mean_true")}
            for name, v in (data.get("by_segmenter") or {}).items()
        },
        "synthetic_pearson": data.get("by_source", {}).get("synthetic", {}).get("pearson"),
        "calibration_png": Path(data["calibration_png"]).name if data.get("calibration_png") else None,
    }  # fmt: skip


def run(args) -> dict:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = write_splits(args.root, out, args.n_test, args.calibration_sizes, args.seed)
    root = os.path.relpath(
        Path(args.root).resolve(), out.resolve()
    )  # results store paths relative to their folder
    result: dict = {"benchmark": "cross_centre", "root": root, "tta": args.tta, "n_test": args.n_test}
    report = out / "test_as_is.json"
    result["as_is"] = _figures(report, _evaluate(args, args.predictor, splits["test"], "test", report),
                               np.random.default_rng(args.seed), args.resamples)  # fmt: skip
    for n in args.calibration_sizes:
        calib_report = out / f"calibration_n{n}.json"
        _evaluate(args, args.predictor, splits[f"n{n}"], "val", calib_report)
        pred, true = read_candidates(
            calib_report.with_name(calib_report.stem + "_candidates.csv"), args.source
        )
        ckpt = out / f"recalibrated_n{n}.ckpt"
        if not ckpt.exists():
            calibrate_checkpoint(
                args.predictor, pred, true, ckpt, details={"n_images": n, "source": args.source}
            )
        report = out / f"test_recalibrated_n{n}.json"
        figures = _figures(report, _evaluate(args, str(ckpt), splits[f"n{n}"], "test", report),
                           np.random.default_rng(args.seed), args.resamples)  # fmt: skip
        result[f"recalibrated_n{n}"] = {"n_calibration_candidates": int(pred.numel()), **figures}
    for n in args.fine_tune_sizes:
        ckpt = fine_tune(args, n)
        report = out / f"test_fine_tuned_n{n}.json"
        result[f"fine_tuned_n{n}"] = {
            "epochs": args.fine_tune_epochs,
            **_figures(report, _evaluate(args, str(ckpt), splits["test"], "test", report),
                       np.random.default_rng(args.seed), args.resamples),
        }  # fmt: skip
    result["command"] = "python benchmarks/cross_centre.py " + " ".join(args.argv)
    (out / "cross_centre.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", default=str(shared_dataset("neopolyp")), help="the new centre's labeled folder"
    )
    parser.add_argument("--predictor", help="quality predictor checkpoint trained elsewhere")
    parser.add_argument("--segmenter", nargs="+", help="segmentation checkpoints (real masks)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--calibration-sizes", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--source", choices=("real", "synthetic", "all"), default="real",
                        help="candidates the recalibration is fitted on")  # fmt: skip
    parser.add_argument("--candidates-per-image", type=int, default=5)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--resamples", type=int, default=1000, help="image bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fine-tune-sizes", type=int, nargs="*", default=[],
                        help="also fine-tune the predictor on this many new-centre pool images (each N)")  # fmt: skip
    parser.add_argument("--fine-tune-epochs", type=int, default=28, help="predictor epochs of a fine-tuning")
    parser.add_argument("--image-size", type=int, default=64,
                        help="image size of a fine-tuning (the predictor's own training size)")  # fmt: skip
    parser.add_argument("--two-centre-folder", action="store_true",
                        help="instead: write --out-dir/two_centre (links and split.json) for a predictor trained on "
                             "both centres, and print its path")  # fmt: skip
    parser.add_argument("--home-root", default=str(shared_dataset("kvasir_seg")),
                        help="with --two-centre-folder: the first centre's labeled folder")  # fmt: skip
    parser.add_argument("--home-split", help="with --two-centre-folder: the first centre's split.json")
    parser.add_argument("--n-pool", type=int, default=100,
                        help="with --two-centre-folder: the new centre's labeled images it uses")  # fmt: skip
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.calibration_sizes):
        parser.error("--calibration-sizes must be >= 1")
    if any(n < 8 for n in args.fine_tune_sizes):
        parser.error("--fine-tune-sizes must be >= 8 (a quarter of them validates)")
    args.argv = argv
    if not args.two_centre_folder and not (args.predictor and args.segmenter):
        parser.error("--predictor and --segmenter are required (unless --two-centre-folder)")
    if args.two_centre_folder:
        if not args.home_split:
            parser.error("--two-centre-folder needs --home-split (the first centre's split.json)")
        print(write_two_centre_folder(args))
        return
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()

"""How much does a quality predictor lose when the images look different? A stand-in for another centre.

For each named appearance shift, the script writes a copy of a split's images with that shift applied (masks
unchanged) to a working folder outside the project. It then runs ``qg-lightning evaluate-predictor`` on each copy
with the same segmenters, so the real candidates are the segmenters' predictions on the shifted images. Each
shift is compared with the unshifted copy (``none``) by a paired bootstrap over images.

Shifts (deterministic, on 8-bit RGB):

* ``none``: the images as they are; reproduces ``evaluate-predictor --subset test`` on the original folder.
* ``colour``: gamma 0.8, then channel gains R 1.15, G 0.95, B 0.85 (a brighter, warmer light source).
* ``lowres``: down to 35 % of each side (area averaging) and back up (bilinear): a lower-resolution sensor.
* ``jpeg``: a JPEG round trip at quality 20.
* ``combined``: ``colour``, then ``lowres``, then ``jpeg``.

This is not another centre: a second centre also brings other patients, other devices, other annotators and
other artefacts (text overlays, black borders, instruments). It shows how much of the predictor's skill rests
on the look of the training centre's images.

The last line printed is one JSON object (also ``--out-dir/summary.json``): per shift, Pearson, Spearman and MAE
for real and synthetic candidates, the constant-baseline MAE, and the change from ``none`` with its 95 %
interval. Each shift's report JSON, candidates CSV and calibration PNG are copied to ``--out-dir`` (the
worst-cases PNG, which shows the images, stays in the working folder).

Usage:
    python benchmarks/appearance_shift.py --predictor CKPT --segmenter S1.pt S2.pt [--tta]
        [--root ../shared/data/kvasir_seg] [--split-file benchmarks/results/predictor_quality/split.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from _paths import shared_dataset
from compare_predictors import _metrics  # the sibling script's Pearson, Spearman and MAE

from qg_lightning.cli_evaluate import evaluate_predictor_cli

_BENCH = Path(__file__).resolve().parent


def _colour(img: np.ndarray) -> np.ndarray:
    gains = np.array([0.85, 0.95, 1.15], np.float32)  # OpenCV's channel order: B, G, R
    x = np.power(img.astype(np.float32) / 255, np.float32(0.8)) * gains
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def _lowres(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * 0.35)), max(1, round(h * 0.35))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _jpeg(img: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 20])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG.")
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


SHIFTS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], ...]] = {
    "none": (),
    "colour": (_colour,),
    "lowres": (_lowres,),
    "jpeg": (_jpeg,),
    "combined": (_colour, _lowres, _jpeg),
}


def _pairs(root: Path, split_file: Path, subset: str) -> list[tuple[Path, Path]]:
    """The (image, mask) files of ``subset`` in ``split_file``; every problem is reported before any work."""
    for folder in (root / "images", root / "masks"):
        if not folder.is_dir():
            raise FileNotFoundError(f"--root '{root}' has no '{folder.name}/' folder (standard layout).")
    try:
        ids = json.loads(split_file.read_text())[subset]
    except FileNotFoundError:
        raise FileNotFoundError(f"--split-file '{split_file}' does not exist.") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(
            f"--split-file '{split_file}' must be a JSON object with a list '{subset}' of ids."
        ) from None
    images, masks = (
        {f.stem: f for f in sorted((root / sub).iterdir()) if f.is_file()} for sub in ("images", "masks")
    )
    pairs, missing = [], []
    for i in map(str, ids):
        image, mask = images.get(i), masks.get(i)
        if image is None or mask is None:
            missing.append(i)
        else:
            pairs.append((image, mask))
    if missing or not pairs:
        raise FileNotFoundError(
            f"--root '{root}' lacks images or masks for {len(missing)} of the {len(ids)} '{subset}' ids in "
            f"'{split_file}' (e.g. {missing[:3]}). Use the split file of this folder."
        )
    return pairs


def _write_shifted(pairs: list[tuple[Path, Path]], shift: str, folder: Path) -> None:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for image_path, mask_path in pairs:
        img = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"OpenCV cannot read '{image_path}'.")
        for step in SHIFTS[shift]:
            img = step(img)
        cv2.imwrite(str(folder / "images" / f"{image_path.stem}.png"), img)
        shutil.copyfile(mask_path, folder / "masks" / mask_path.name)


def _read_candidates(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per source group (``real``, ``synthetic``): image ids, predictions and true Dice of each candidate."""
    groups: dict[str, dict[str, list]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            group = groups.setdefault("synthetic" if row["source"] == "synthetic" else "real", {})
            for key, value in (("id", row["id"]), ("pred", float(row["pred"])), ("true", float(row["true"]))):
                group.setdefault(key, []).append(value)
    return {name: {k: np.asarray(v) for k, v in g.items()} for name, g in groups.items()}


def paired_change(
    base: dict[str, np.ndarray], shifted: dict[str, np.ndarray], *, resamples: int, seed: int
) -> dict[str, dict[str, float | list[float]]]:
    """Change of each metric from ``base`` to ``shifted``, with a 95 % interval from resampling images.

    Both sides keep their own candidates and true Dice (the segmenters' masks differ on shifted images); a
    drawn image brings all its candidates on both sides.
    """
    images = np.unique(base["id"])
    rows = [{i: np.flatnonzero(side["id"] == i) for i in images} for side in (base, shifted)]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        pick = images[rng.integers(0, len(images), len(images))]
        a, b = (np.concatenate([r[i] for i in pick]) for r in rows)
        ma, mb = _metrics(base["pred"][a], base["true"][a]), _metrics(shifted["pred"][b], shifted["true"][b])
        for name in ma:
            draws.setdefault(name, []).append(mb[name] - ma[name])
    ma, mb = _metrics(base["pred"], base["true"]), _metrics(shifted["pred"], shifted["true"])
    return {
        name: {
            "change": mb[name] - ma[name],
            "ci95": [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))],
        }
        for name, v in draws.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predictor", type=Path, required=True, help="quality predictor checkpoint")
    parser.add_argument("--segmenter", type=Path, nargs="*", default=[], help="real candidates' models")
    parser.add_argument("--root", type=Path, default=shared_dataset("kvasir_seg"))
    parser.add_argument(
        "--split-file", type=Path, default=_BENCH / "results" / "predictor_quality" / "split.json"
    )
    parser.add_argument("--subset", default="test", help="which id list of --split-file to shift")
    parser.add_argument("--shifts", nargs="+", choices=list(SHIFTS), default=list(SHIFTS))
    parser.add_argument("--tta", action="store_true", help="evaluate-predictor --tta (mean over four flips)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--work-dir", type=Path, help="keep the shifted folders and full reports here "
                        "(default: a temporary folder, deleted at the end)")  # fmt: skip
    parser.add_argument("--out-dir", type=Path, default=_BENCH / "results" / "appearance_shift")
    args = parser.parse_args()

    missing = [f"--predictor '{args.predictor}'"] if not args.predictor.is_file() else []
    missing += [f"--segmenter '{s}'" for s in args.segmenter if not s.is_file()]
    if missing:
        raise SystemExit("Not found: " + "; ".join(missing) + ". Check the paths.")
    if args.resamples < 1:
        raise SystemExit(f"--resamples must be >= 1, got {args.resamples}.")
    shifts = ["none", *(s for s in dict.fromkeys(args.shifts) if s != "none")]  # the baseline always runs
    pairs = _pairs(args.root, args.split_file, args.subset)
    if args.work_dir is not None and args.work_dir.exists() and any(args.work_dir.iterdir()):
        raise SystemExit(f"--work-dir '{args.work_dir}' is not empty; give a new or empty folder.")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        reports, candidates = {}, {}
        for shift in shifts:
            start = time.perf_counter()
            _write_shifted(pairs, shift, work / shift)
            report = work / f"report_{shift}.json"
            evaluate_predictor_cli(["--predictor", str(args.predictor), "--out", str(report), "--data.root",
                                    str(work / shift), "--subset", "all",
                                    *(["--segmenter", *map(str, args.segmenter)] if args.segmenter else []),
                                    *(["--tta"] if args.tta else [])])  # fmt: skip
            for suffix in (".json", "_candidates.csv", "_calibration.png"):
                shutil.copyfile(
                    report.with_name(report.stem + suffix), args.out_dir / f"report_{shift}{suffix}"
                )
            reports[shift] = json.loads(report.read_text())
            reports[shift]["minutes"] = round((time.perf_counter() - start) / 60, 1)
            candidates[shift] = _read_candidates(report.with_name(report.stem + "_candidates.csv"))

    keys = ("n", "pearson", "spearman", "mae", "constant_baseline_mae", "mean_pred", "mean_true")
    summary = {
        "benchmark": "appearance_shift",
        "predictor": str(args.predictor),
        "segmenters": [s.name for s in args.segmenter],
        "root": str(args.root),
        "split_file": str(args.split_file),
        "subset": args.subset,
        "n_images": len(pairs),
        "tta": args.tta,
        "resamples": args.resamples,
        "shifts": {},
    }
    for shift in shifts:
        entry: dict = {"minutes": reports[shift]["minutes"]}
        for group, stats in reports[shift]["by_source"].items():
            entry[group] = {k: stats[k] for k in keys if k in stats}
            if shift != "none" and group in candidates["none"]:
                entry[group]["change_from_none"] = paired_change(
                    candidates["none"][group],
                    candidates[shift][group],
                    resamples=args.resamples,
                    seed=args.seed,
                )
        summary["shifts"][shift] = entry
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""``qg-lightning evaluate-predictor``: evaluate a quality predictor on a folder's test split.

The command line of :mod:`qg_lightning.quality.evaluation`: it reads a folder (or the predictor's recorded
training data), makes synthetic candidates with the corruption recipe and real candidates with
``--segmenter`` checkpoints (:func:`~qg_lightning.quality.candidates.make_candidate_set`), scores the predictor
(:func:`~qg_lightning.quality.evaluation.evaluate_candidate_set`) and writes the JSON report, the PNGs and the
per-candidate CSV.

Example:
    >>> _build_parser().parse_args(["--predictor", "g.ckpt", "--out", "r.json"]).subset
    'auto'
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from qg_lightning.checkpoint import load_checkpoint
from qg_lightning.data.folder import check_mask_folder
from qg_lightning.quality.candidates import (
    SYNTHETIC,
    load_evaluation_images,
    load_segmenter,
    make_candidate_set,
)
from qg_lightning.quality.evaluation import evaluate_candidate_set
from qg_lightning.quality.report import format_value, json_safe

__all__ = ["evaluate_predictor_cli"]

log = logging.getLogger(__name__)


def _checkpoint_context(path: str | os.PathLike) -> dict[str, Any]:
    """What a Lightning predictor checkpoint recorded about its training data (hyper-parameters, split)."""
    ckpt = load_checkpoint(path, what="quality predictor checkpoint")
    data_hp = ckpt.get("datamodule_hyper_parameters")
    data_hp = dict(data_hp) if isinstance(data_hp, Mapping) else {}
    split = None
    for value in ckpt.values():
        if isinstance(value, Mapping) and isinstance(value.get("split"), Mapping):
            if isinstance(value["split"].get("test"), list):
                split = {k: list(v) for k, v in value["split"].items() if isinstance(v, list)}
    return {"data": data_hp, "split": split}


def _segmenter_names(paths: Sequence[str]) -> list[str]:
    names = [Path(p).stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{Path(p).parent.name}/{Path(p).stem}" for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    return names


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qg-lightning evaluate-predictor",
        description=(
            "Evaluate a quality predictor on a folder's test split (or on every image when the folder has no "
            "split file): synthetic candidates from the corruption recipe and, with --segmenter, real "
            "models' predictions. Writes a JSON report, a calibration PNG, a worst-cases PNG and a "
            "per-candidate CSV."
        ),
    )
    p.add_argument(
        "--predictor",
        required=True,
        nargs="+",
        help="quality predictor checkpoint (.ckpt); several: their mean is evaluated (an ensemble, e.g. of "
        "seeds), with the first one's recorded data settings",
    )
    p.add_argument("--out", required=True, help="report JSON path; PNGs/CSV are written next to it")
    p.add_argument(
        "--data.root",
        dest="root",
        default=None,
        help="dataset folder (standard layout); default: the predictor's training data, else the "
        "embedded synthetic data",
    )
    p.add_argument(
        "--data.split_file", dest="split_file", default=None, help="split JSON (default ROOT/split.json)"
    )
    p.add_argument(
        "--data.mask_dir",
        dest="mask_dir",
        default=None,
        help="mask sub-folder of the dataset folder, e.g. masks_3class (default: the predictor's, else masks)",
    )
    p.add_argument(
        "--data.image_size",
        dest="image_size",
        type=int,
        default=None,
        help="evaluation size (default: the predictor's training size, else 128)",
    )
    p.add_argument(
        "--data.in_channels", dest="in_channels", type=int, default=None, help="must match the predictor"
    )
    p.add_argument(
        "--data.num_classes", dest="num_classes", type=int, default=None, help="must match the predictor"
    )
    p.add_argument("--data.labeled_fraction", dest="labeled_fraction", type=float, default=None)
    p.add_argument("--data.n_labeled", dest="n_labeled", type=int, default=None)
    p.add_argument("--data.val_fraction", dest="val_fraction", type=float, default=None)
    p.add_argument("--data.test_fraction", dest="test_fraction", type=float, default=None)
    p.add_argument("--data.seed", dest="data_seed", type=int, default=None, help="seed of a generated split")
    p.add_argument("--data.synthetic_images", dest="synthetic_images", type=int, default=None)
    p.add_argument("--data.synthetic_size", dest="synthetic_size", type=int, default=None)
    p.add_argument("--data.skip_bad", dest="skip_bad", action="store_true", help="skip unreadable files")
    p.add_argument(
        "--subset",
        choices=("auto", "test", "val", "all"),
        default="auto",
        help="auto: the split file's test split; else the test split recorded in the predictor checkpoint "
        "when "
        "this is its training folder; else every image. test: always a test split (split file, recorded, "
        "or the seeded split from --data.*). val: the validation split, likewise (e.g. to fit a calibration "
        "with `qg-lightning calibrate-predictor`). all: every image.",
    )
    p.add_argument("--all-images", action="store_true", help="same as --subset all")
    p.add_argument(
        "--segmenter", nargs="+", default=[], help="segmentation checkpoint(s) for real candidates"
    )
    p.add_argument("--candidates-per-image", type=int, default=5, help="synthetic candidates per image")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic candidates and the shuffle check"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--tta",
        action="store_true",
        help="average the predictor over 4 flips of image and mask (4x the cost)",
    )
    p.add_argument("--worst", type=int, default=16, help="cases in the worst-predicted PNG")
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda:0', ...")
    return p


def evaluate_predictor_cli(argv: Sequence[str]) -> int:
    """``qg-lightning evaluate-predictor``: see ``--help``. Returns the exit code (0)."""
    from qg_lightning.data import SemiSupervisedDataModule
    from qg_lightning.quality.network import load_quality_networks

    ns = _build_parser().parse_args(list(argv))
    if ns.all_images:
        ns.subset = "all"
    if ns.candidates_per_image < 0:
        raise ValueError(f"`--candidates-per-image` must be >= 0, got {ns.candidates_per_image}.")
    if ns.candidates_per_image == 0 and not ns.segmenter:
        raise ValueError("Nothing to evaluate: --candidates-per-image is 0 and no --segmenter was given.")
    missing = [f"--predictor '{path}'" for path in ns.predictor if not Path(path).is_file()]
    missing += [f"--segmenter '{s}'" for s in ns.segmenter if not Path(s).is_file()]
    if ns.root is not None and not Path(ns.root).expanduser().is_dir():
        missing.append(f"--data.root '{ns.root}' (folder)")
    if ns.split_file is not None and not Path(ns.split_file).expanduser().is_file():
        missing.append(f"--data.split_file '{ns.split_file}'")
    if missing:
        raise FileNotFoundError("Not found: " + "; ".join(missing) + ". Check the paths.")
    out = Path(ns.out)
    if out.suffix.lower() != ".json":
        raise ValueError(f"`--out` must be a .json file path, got '{ns.out}'.")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if ns.device == "auto" else ns.device

    ctx = _checkpoint_context(ns.predictor[0])
    if len(ns.predictor) > 1 and ns.image_size is None:
        sizes = [ctx["data"].get("image_size")]
        sizes += [_checkpoint_context(path)["data"].get("image_size") for path in ns.predictor[1:]]
        if len(set(sizes)) > 1:
            log.warning(
                "The predictors were trained at different image sizes (%s); evaluating at the first one's. "
                "Pass --data.image_size to choose.",
                ", ".join(f"{path}: {size}" for path, size in zip(ns.predictor, sizes, strict=True)),
            )
    predictor = load_quality_networks(
        ns.predictor, in_channels=ns.in_channels, num_classes=ns.num_classes, map_location=device, tta=ns.tta
    )
    in_channels, num_classes = predictor.in_channels, predictor.num_classes
    segmenter_names = _segmenter_names(ns.segmenter)
    segmenters = {
        name: load_segmenter(path, in_channels=in_channels, num_classes=num_classes, map_location=device)
        for name, path in zip(segmenter_names, ns.segmenter, strict=True)
    }
    recorded = ctx["data"]

    def pick(value: Any, key: str, default: Any) -> Any:
        return value if value is not None else recorded.get(key, default)

    image_size = pick(ns.image_size, "image_size", 128)
    for name, net in segmenters.items():
        divisor = getattr(net, "divisor", 1)
        if image_size % divisor:
            raise ValueError(
                f"--data.image_size {image_size} is not divisible by {divisor}, which segmenter '{name}' "
                "needs. "
                f"Use a multiple of {divisor}."
            )
    root = ns.root if ns.root is not None else recorded.get("root")
    if root is not None and not Path(root).expanduser().is_dir():
        raise FileNotFoundError(
            f"The predictor was trained on data.root='{root}', which does not exist from here (a relative "
            "path "
            "is relative to where training ran). Pass --data.root."
        )
    mask_dir = pick(ns.mask_dir, "mask_dir", "masks")
    check_mask_folder(root, mask_dir, option="--data.mask_dir", root_option="--data.root")
    dm = SemiSupervisedDataModule(
        root=root,
        mask_dir=mask_dir,
        synthetic_images=pick(ns.synthetic_images, "synthetic_images", 300),
        synthetic_size=pick(ns.synthetic_size, "synthetic_size", 128),
        split_file=ns.split_file,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        val_fraction=pick(ns.val_fraction, "val_fraction", 0.15),
        test_fraction=pick(ns.test_fraction, "test_fraction", 0.15),
        n_labeled=ns.n_labeled
        if ns.n_labeled is not None or ns.labeled_fraction is not None
        else recorded.get("n_labeled"),
        labeled_fraction=ns.labeled_fraction
        if ns.n_labeled is not None or ns.labeled_fraction is not None
        else recorded.get("labeled_fraction"),
        use_unlabeled=False,
        seed=pick(ns.data_seed, "seed", 0),
        skip_bad=ns.skip_bad,
    )
    dm.setup()
    index = dm.index
    assert index is not None and dm.split is not None
    has_file = not dm.split_source.startswith("make_split")
    rec_split = ctx["split"]
    rec_ok = rec_split is not None and set().union(*rec_split.values()) <= set(index.ids)
    if ns.subset == "all":
        ids, subset = list(index.ids), "all images (--subset all)"
    elif ns.subset == "val":
        if not has_file and rec_ok and rec_split.get("val"):
            ids, subset = list(rec_split["val"]), "val split recorded in the predictor checkpoint"
        else:
            ids, subset = list(dm.split.val), f"val split of {dm.split_source}"
    elif has_file:
        ids, subset = list(dm.split.test), f"test split of {dm.split_source}"
    elif rec_ok:
        ids, subset = list(rec_split["test"]), "test split recorded in the predictor checkpoint"
    elif ns.subset == "test":
        ids, subset = list(dm.split.test), f"test split of {dm.split_source}"
    else:
        ids, subset = list(index.ids), "all images (the folder has no split file)"
    if not ids:
        raise ValueError(
            f"The evaluation set is empty ({subset}). Use --subset all or a split with test ids."
        )

    images_u8, truth = load_evaluation_images(
        index, ids, image_size=image_size, in_channels=in_channels, num_classes=num_classes
    )
    n = len(ids)
    candidate_set = make_candidate_set(
        images_u8,
        truth,
        ids,
        segmenters=segmenters,
        num_classes=num_classes,
        candidates_per_image=ns.candidates_per_image,
        seed=ns.seed,
        batch_size=min(ns.batch_size, 32),
    )
    report = evaluate_candidate_set(
        predictor,
        candidate_set,
        batch_size=ns.batch_size,
        out_prefix=out.with_suffix(""),
        n_worst=ns.worst,
        seed=ns.seed,
    )
    members = [
        {"predictor": str(path), **figures}
        for path, figures in zip(ns.predictor, report.get("members", []), strict=False)
    ]
    report = {
        **report,
        "predictor": str(ns.predictor[0]),
        "predictors": [str(path) for path in ns.predictor],
        **({"members": members} if members else {}),
        "data": {
            "root": str(index.root),
            "mask_dir": mask_dir,
            "subset": subset,
            "n_images": n,
            "image_size": image_size,
            "candidates_per_image": ns.candidates_per_image,
            "seed": ns.seed,
        },
        "tta": bool(ns.tta),
        "segmenters": dict(zip(segmenter_names, ns.segmenter, strict=True)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(report), indent=2))

    ensemble = f" with the mean of {len(ns.predictor)} predictors" if len(ns.predictor) > 1 else ""
    lines = [
        f"Evaluated {report['n']} candidates on {n} images ({subset}) at {image_size} px{ensemble}.",
        f"  all:       MAE {format_value(report['mae'])}  Pearson {format_value(report['pearson'])}  Spearman "
        f"{format_value(report['spearman'])}  (constant baseline MAE {format_value(report['constant_baseline_mae'])})",
    ]
    for name, c in (report.get("per_class") or {}).items():
        lines.append(
            f"  {name + ':':<10} MAE {format_value(c['mae'])}  Pearson {format_value(c['pearson'])}  Spearman "
            f"{format_value(c['spearman'])}  (n={c['n']} with the class in truth or candidate; "
            f"{c['n_both_empty']} both-empty left out, mean prediction there {format_value(c['mean_pred_both_empty'])})"
        )
    for label in (SYNTHETIC, "real"):
        s = report["by_source"][label]
        if s.get("n"):
            lines.append(
                f"  {label + ':':<10} MAE {format_value(s['mae'])}  Pearson {format_value(s['pearson'])}  Spearman "
                f"{format_value(s['spearman'])}  (constant baseline MAE {format_value(s['constant_baseline_mae'])}, "
                f"n={s['n']})"
            )
    for i, member in enumerate(report.get("members", [])):
        figures = member["real"] if member["real"]["n"] else member["all"]
        lines.append(
            f"  member {i + 1} alone ({'real' if member['real']['n'] else 'all'}): MAE {format_value(figures['mae'])}  "
            f"Pearson {format_value(figures['pearson'])}  Spearman {format_value(figures['spearman'])}  ({member['predictor']})"
        )
    dep = report["image_dependence"]
    lines.append(
        f"  image dependence: Pearson with blacked-out images {format_value(dep['pearson_blackout'])}, shuffled "
        f"{format_value(dep['pearson_shuffled'])}"
        + ("  WARNING: ignores the image" if dep["ignores_image"] else "")
    )
    lines += [
        f"Report:      {out}",
        f"Calibration: {report['calibration_png']}",
        f"Worst cases: {report['worst_png']}",
        f"Candidates:  {report['candidates_csv']}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0

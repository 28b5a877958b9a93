"""How well does the quality predictor judge masks, synthetic and from real segmentation models, at CPU scale?

Each variant is a :class:`~qg_lightning.quality.recipe.PredictorRecipe` trained by the library's
:func:`~qg_lightning.quality.training.train_predictor` (the code path of ``qg-lightning train-predictor``); this
script only chooses the recipes, trains the evaluation segmenters and prints JSON. Every stage is cached in
``--out-dir`` and skipped when rerun.

1. **Cross-fitted weak models** (snapshot masks), shared by every variant (``--out-dir/snapshots``): the
   labeled training images are cut into ``--folds`` folds; for each fold a U-Net (random-init ResNet-18;
   ``--snapshot-archs`` adds other architectures) trains on the other folds and saves snapshots after
   ``--snapshot-epochs``. Its masks on the held-out fold carry honest errors, not memorised ones.
2. **Evaluation segmenters** the predictor never sees: an FPN (random-init ResNet-34) trained on half of the
   training split, saved after ``--eval-epochs``. Their predictions on the *test* images are the "real"
   candidates of the evaluation.
3. **Predictors** (``--backbone``, ResNet-18 by default), one per variant (``--out-dir/<variant>``):
   ``recipe`` (alias ``ours_errmap``): ``PredictorRecipe()``, the best recipe measured (p_weak 0.5, held-out
   snapshots binarised at a threshold drawn from [0.2, 0.8], error-map loss at weight 0.5; runs 1-18 used
   weight 1 under the name ``ours_errmap``);
   ``ours``: the recipe without the error-map loss; ``heldout``: also without the threshold (hard snapshot masks);
   ``release``: ``PredictorRecipe.release()``, p_weak 0.05, snapshots used on every image (as the authors' release).
4. **Calibration** (``--calibrate``, default on): fitted on the snapshot masks of the validation images (no
   snapshot and no predictor trained on them).
5. The predictor, calibrated and with TTA (mean over four flips), evaluated on the test split with synthetic
   candidates and the evaluation segmenters' masks as real candidates.

The last line printed is one JSON object (also ``--out-dir/summary.json``) with MAE, Pearson and Spearman per
variant for synthetic and real candidates and the constant-baseline MAE.

Usage:
    python benchmarks/predictor_quality.py --root ../shared/data/kvasir_seg [--minutes 12] [--variants recipe release]
        [--p-weak 0.75] [--error-map-weight 1] [--snapshot-label-fraction 0.33] [--split-file split.json]
        [--backbone mobilenetv3_large_100] [--train-seed 1]

``--split-file`` replaces the seeded split in every stage (snapshot folds, evaluation segmenters, predictor,
calibration and evaluation), e.g. with ``acquisition_shift.py``'s split that keeps some acquisition systems
out of training. The options of runs 11, 12, 14 and 17 (``--gamma``, ``--channel-gain``,
``--snapshot-appearance``, ``--snapshot-flips``, ``--extra-snapshots``) helped nothing and are not recipe
fields; they ran with the script as of those runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
from _paths import shared_dataset

from qg_lightning.data import SemiSupervisedDataModule
from qg_lightning.methods import SupervisedSegmenter
from qg_lightning.quality.backbones import BACKBONES
from qg_lightning.quality.evaluation import (
    evaluate_candidate_set,
    load_evaluation_images,
    load_segmenter,
    make_candidate_set,
)
from qg_lightning.quality.predictor import load_quality_predictors
from qg_lightning.quality.recipe import PredictorData, PredictorRecipe
from qg_lightning.quality.snapshots import SnapshotCallback, find_snapshots
from qg_lightning.quality.training import train_predictor

log = logging.getLogger("predictor_quality")

#: name -> the recipe of each predictor variant (before the command line's overrides)
VARIANTS: dict[str, PredictorRecipe] = {
    "recipe": PredictorRecipe(),
    "ours": PredictorRecipe(error_map_weight=0.0),
    "heldout": PredictorRecipe(error_map_weight=0.0, snapshot_threshold=None),
    "release": PredictorRecipe.release(),
}
_ALIASES = {"ours_errmap": "recipe"}
_KEYS = ("n", "mae", "pearson", "spearman", "mean_pred", "mean_true", "constant_baseline_mae")


def _trainer(root_dir: Path, **kw) -> L.Trainer:
    base = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, default_root_dir=str(root_dir), num_sanity_val_steps=0)  # fmt: skip
    base.update(kw)
    return L.Trainer(**base)


def variant_recipe(args: argparse.Namespace, variant: str) -> PredictorRecipe:
    """``VARIANTS[variant]`` with the command line's settings (which apply to every variant)."""
    changes = {"snapshot_folds": args.folds, "snapshot_models": tuple(args.snapshot_archs),
               "snapshot_epochs": tuple(args.snapshot_epochs), "snapshot_label_fraction": args.snapshot_label_fraction,
               "image_size": args.image_size, "backbone": args.backbone, "samples_per_image": args.samples_per_image,
               "channels_last": args.channels_last,
               "calibration": "logit" if args.calibrate else "none", "seed": args.seed}  # fmt: skip
    if args.max_epochs is not None:
        changes["max_epochs"] = args.max_epochs
    if args.minutes is not None:
        changes["max_minutes"] = args.minutes
    if args.train_seed is not None:  # another predictor seed on the same split and snapshots: a replicate
        changes.update(seed=args.train_seed, snapshot_seed=args.seed)
    for name in ("p_weak", "error_map_weight"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    return VARIANTS[_ALIASES.get(variant, variant)].replace(**changes)


def eval_segmenters(args, out: Path) -> list[Path]:
    seg_dir = out / "eval_segmenters"
    done = out / "eval_segmenters.done"
    if not done.exists():
        L.seed_everything(1234, verbose=False)
        dm = SemiSupervisedDataModule(root=args.root, image_size=args.image_size, use_unlabeled=False, batch_size=16,
                                      seed=args.seed, fold=1, n_folds=2, split_file=args.split_file)  # fmt: skip
        model = SupervisedSegmenter(arch="FPN", encoder_name="resnet34", lr=1e-3)
        cb = SnapshotCallback(epochs=args.eval_epochs, dirpath=str(seg_dir))
        _trainer(out / "evalseg", max_epochs=max(args.eval_epochs), limit_val_batches=0, callbacks=[cb]).fit(
            model, datamodule=dm
        )
        done.touch()
    return find_snapshots(seg_dir)


def _evaluate(
    args: argparse.Namespace, checkpoint: Path, report_path: Path, candidates, *, tta: bool = False
) -> dict:
    """The predictor at ``checkpoint`` on the test candidates (cached in ``report_path``)."""
    if not report_path.exists():
        predictor = load_quality_predictors([str(checkpoint)], tta=tta)
        report = evaluate_candidate_set(predictor, candidates, out_prefix=report_path.with_suffix(""), seed=0)
        report_path.write_text(json.dumps({**report, "predictor": str(checkpoint), "tta": tta}, indent=2))
    return json.loads(report_path.read_text())


def candidates_of_test_split(args: argparse.Namespace, segmenters: list[Path], image_size: int):
    """Synthetic candidates and the evaluation segmenters' masks of the test images."""
    dm = SemiSupervisedDataModule(root=args.root, image_size=image_size, use_unlabeled=False, seed=args.seed,
                                  split_file=args.split_file)  # fmt: skip
    dm.setup()
    ids = list(dm.split.test)
    images, truths = load_evaluation_images(
        dm.index, ids, image_size=image_size, in_channels=3, num_classes=2
    )
    nets = {path.stem: load_segmenter(path, in_channels=3, num_classes=2) for path in segmenters}
    return make_candidate_set(images, truths, ids, segmenters=nets, candidates_per_image=5, seed=0)


def _figures(report: dict) -> dict:
    by = report.get("by_source", {})
    return {src: {k: by.get(src, {}).get(k) for k in _KEYS} for src in ("synthetic", "real")}


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """A command line that reruns with ``args``: a flag that is on as itself, a default-on flag that is off as
    ``--no-x``, options that are unset (``None``) or off left out."""
    words = ["python benchmarks/predictor_quality.py"]
    for action in parser._actions:
        value, flag = getattr(args, action.dest, None), (action.option_strings or [""])[0]
        if not flag.startswith("--") or value is None or value is False and action.default is False:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif value is True:
            words.append(flag)
        else:
            words += [flag, *(map(str, value) if isinstance(value, list) else [str(value)])]
    return " ".join(words)


def main() -> None:
    recipe = PredictorRecipe()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(shared_dataset("kvasir_seg")))
    parser.add_argument(
        "--out-dir", default=str(Path(__file__).resolve().parent / "results" / "predictor_quality")
    )
    parser.add_argument("--image-size", type=int, default=recipe.image_size)
    parser.add_argument("--folds", type=int, default=recipe.snapshot_folds)
    parser.add_argument("--snapshot-epochs", type=int, nargs="+", default=list(recipe.snapshot_epochs))
    parser.add_argument(
        "--snapshot-archs", nargs="+", default=list(recipe.snapshot_models),
        help="ARCH:ENCODER of the cross-fitted weak models (smp names, random init); several give snapshot "
        "masks from several architectures, e.g. Unet:resnet18 DeepLabV3Plus:resnet18",
    )  # fmt: skip
    parser.add_argument("--eval-epochs", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument(
        "--minutes", type=float, default=None,
        help="training time limit per predictor (default: the recipe's, none: it trains its epochs)",
    )  # fmt: skip
    parser.add_argument(
        "--max-epochs", type=int, default=None,
        help=f"epochs per predictor (default: the recipe's, {recipe.max_epochs})",
    )  # fmt: skip
    parser.add_argument("--samples-per-image", type=int, default=recipe.samples_per_image)
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=recipe.channels_last
    )
    parser.add_argument(
        "--variants", nargs="+", default=["recipe", "ours", "heldout", "release"],
        choices=sorted([*VARIANTS, *_ALIASES]),
    )  # fmt: skip
    parser.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=0, help="split, snapshots, segmenters and predictor seed")
    parser.add_argument(
        "--split-file", default=None,
        help="JSON split file used by every stage instead of the seeded split (e.g. from acquisition_shift.py)",
    )  # fmt: skip
    parser.add_argument(
        "--train-seed", type=int, default=None,
        help="another seed for the predictors only (initialisation, batches), on --seed's split and snapshots",
    )  # fmt: skip
    parser.add_argument(
        "--p-weak", type=float, default=None,
        help="override the share of snapshot masks (p_weak) of every chosen variant, e.g. 0.75",
    )  # fmt: skip
    parser.add_argument(
        "--error-map-weight", type=float, default=None,
        help="override the error-map loss weight of every chosen variant, e.g. 1 (recipe: 0.5)",
    )  # fmt: skip
    parser.add_argument(
        "--snapshot-label-fraction", type=float, default=None,
        help="train the snapshot models on this share of the labeled images only (then on the other folds of "
        "it); each snapshot may then serve every image it did not train on. Default: all labeled images",
    )  # fmt: skip
    parser.add_argument(
        "--backbone", default=recipe.backbone, choices=sorted(BACKBONES),
        help="the predictor backbone of every variant, random init (paper: resnet18)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    try:
        recipes = {variant: variant_recipe(args, variant) for variant in args.variants}
        data = PredictorData(root=args.root, split_file=args.split_file, split_seed=args.seed)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    segmenters = eval_segmenters(args, out)
    candidates = None
    summary: dict = {"benchmark": "predictor_quality", "root": args.root, "image_size": args.image_size,
                     "backbone": args.backbone, "pretrained": False, "folds": args.folds,
                     "minutes_per_predictor": args.minutes, "segmenters": [p.name for p in segmenters],
                     "variants": {}}  # fmt: skip
    # a replicate (--train-seed) has folders of its own and shares the snapshots and evaluation segmenters
    suffix = "" if args.train_seed is None else f"_seed{args.train_seed}"
    for variant, recipe in recipes.items():
        name = variant + suffix
        trained = train_predictor(recipe, data, out / name, accelerator="cpu", snapshot_dir=out / "snapshots")
        if candidates is None:
            candidates = candidates_of_test_split(args, segmenters, recipe.image_size)
        predictor = trained.paths["predictor"]
        report = _evaluate(args, predictor, out / f"report_{name}.json", candidates)
        entry = summary["variants"][variant] = {
            "recipe": recipe.to_dict(),
            "train": trained.report["predictor"],
            **_figures(report),
            "failure_detection_real": report.get("by_source", {}).get("real", {}).get("failure_detection"),
            "image_dependence": report.get("image_dependence"),
        }
        if args.calibrate:
            calibrated = trained.checkpoint
            entry["calibration"] = trained.report["calibration"]
            cal = _evaluate(args, calibrated, out / f"report_{name}_calibrated.json", candidates)
            entry["calibrated"] = _figures(cal)
            tta = _evaluate(
                args, calibrated, out / f"report_{name}_calibrated_tta.json", candidates, tta=True
            )
            entry["calibrated_tta"] = _figures(tta)
    summary["wall_minutes"] = round((time.perf_counter() - t0) / 60, 1)
    summary["command"] = _command(parser, args)
    (out / f"summary{suffix}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

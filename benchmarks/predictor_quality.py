"""How well does the quality predictor judge masks, synthetic and from real segmentation models, at CPU scale?

Pipeline (every stage is cached in ``--out-dir`` and skipped when rerun):

1. **Cross-fitted weak models** (snapshot masks): the training split is cut into ``--folds`` folds; for each fold a
   U-Net (random-init ResNet-18; ``--snapshot-archs`` adds other architectures) trains on the other folds and
   saves snapshots after ``--snapshot-epochs``. Its masks on the held-out fold carry honest errors, not
   memorised ones. ``--extra-snapshots`` adds another run's snapshot folders (held-out policy too).
2. **Evaluation segmenters** the predictor never sees: an FPN (random-init ResNet-34) trained on half of the
   training split, saved after ``--eval-epochs``. Their predictions on the *test* images are the "real"
   candidates of the evaluation.
3. **Predictors** (``--backbone``, ResNet-18 by default), each trained for ``--max-epochs`` (at most
   ``--minutes``) on the training split (128 px, no pretrained weights):
   ``release``: p_weak 0.05, snapshots used on every image (as the authors' release);
   ``heldout``: p_weak 0.5, cross-fitted snapshots on held-out images only;
   ``ours``: as ``heldout``, each snapshot mask binarised at a threshold drawn uniformly from [0.2, 0.8];
   ``ours_errmap``: as ``ours`` plus the auxiliary error-map loss (``error_map_weight`` 1).
4. **Calibration** (``--calibrate``, default on): ``evaluate-predictor --subset val`` with the cross-fitted
   snapshots as segmenters (no snapshot and no predictor trained on the validation images), then
   ``calibrate-predictor`` on those real candidates; the calibrated copy is evaluated on the test split too,
   plain and with ``--tta`` (mean over four flips).
5. ``qg-lightning evaluate-predictor`` on the test split, with the evaluation segmenters as real candidates.

The last line printed is one JSON object (also ``--out-dir/summary.json``) with MAE, Pearson and Spearman per
variant for synthetic and real candidates and the constant-baseline MAE.

Usage:
    python benchmarks/predictor_quality.py --root ../shared/data/kvasir_seg [--minutes 12] [--variants ours release]
        [--p-weak 0.75] [--gamma 0.2 --channel-gain 0.1 [--snapshot-appearance 2]] [--snapshot-flips]
        [--snapshot-label-fraction 0.33] [--split-file split.json] [--backbone mobilenetv3_large_100]
        [--extra-snapshots OTHER_RUN/snapshots]

``--split-file`` replaces the seeded split in every stage (snapshot folds, evaluation segmenters, predictor,
calibration and evaluation), e.g. with ``acquisition_shift.py``'s split that keeps some acquisition systems
out of training.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import lightning as L
import torch

from qg_lightning.data import SemiSupervisedDataModule
from qg_lightning.methods import SupervisedSegmenter
from qg_lightning.quality.augment import check_appearance
from qg_lightning.quality.backbones import BACKBONES
from qg_lightning.quality.calibration import calibrate_cli
from qg_lightning.quality.datamodule import QualityDataModule
from qg_lightning.quality.evaluation import evaluate_predictor_cli
from qg_lightning.quality.predictor import QualityPredictor
from qg_lightning.quality.snapshots import SnapshotCallback, find_snapshots

log = logging.getLogger("predictor_quality")

_SOFT = {"p_weak": 0.5, "snapshot_policy": "heldout", "snapshot_threshold": [0.2, 0.8]}
#: name -> QualityDataModule and QualityPredictor arguments of each predictor variant
VARIANTS: dict[str, dict[str, dict]] = {
    "release": {"data": {"p_weak": 0.05, "snapshot_policy": "all"}, "model": {}},
    "heldout": {"data": {"p_weak": 0.5, "snapshot_policy": "heldout"}, "model": {}},
    "ours": {"data": _SOFT, "model": {}},
    "ours_errmap": {"data": _SOFT, "model": {"error_map_weight": 1.0}},
}
_KEYS = ("n", "mae", "pearson", "spearman", "mean_pred", "mean_true", "constant_baseline_mae")


def _default_kvasir() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "kvasir_seg"


def _trainer(root_dir: Path, **kw) -> L.Trainer:
    base = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, default_root_dir=str(root_dir), num_sanity_val_steps=0)  # fmt: skip
    base.update(kw)
    return L.Trainer(**base)


def _snapshot_models(spec: str) -> tuple[str, str]:
    """``"ARCH:ENCODER"`` (``--snapshot-archs``) -> ``(arch, encoder)``."""
    arch, sep, encoder = spec.partition(":")
    if not sep or not arch or not encoder:
        raise SystemExit(f"--snapshot-archs takes ARCH:ENCODER items (e.g. Unet:resnet18), got {spec!r}.")
    return arch, encoder


def weak_models(args, out: Path) -> list[Path]:
    """Cross-fitted snapshots of every ``--snapshot-archs`` model, one folder each (the first is ``snapshots``)."""
    folders = []
    for index, spec in enumerate(args.snapshot_archs):
        arch, encoder = _snapshot_models(spec)
        name = "snapshots" if index == 0 else f"snapshots_{arch}_{encoder}"
        snap_dir, done = out / name, out / f"{name}.done"
        folders.append(snap_dir)
        if done.exists():
            continue
        for fold in range(args.folds):
            L.seed_everything(100 + fold + 1000 * index, verbose=False)
            dm = SemiSupervisedDataModule(root=args.root, image_size=args.image_size, use_unlabeled=False,
                                          batch_size=16, seed=args.seed, fold=fold, n_folds=args.folds,
                                          split_file=args.split_file,
                                          labeled_fraction=args.snapshot_label_fraction)  # fmt: skip
            model = SupervisedSegmenter(arch=arch, encoder_name=encoder, lr=1e-3)
            cb = SnapshotCallback(epochs=args.snapshot_epochs, dirpath=str(snap_dir))
            _trainer(out / f"weak_{name}", max_epochs=max(args.snapshot_epochs), limit_val_batches=0,
                     callbacks=[cb]).fit(model, datamodule=dm)  # fmt: skip
            log.info("%s fold %d snapshots done", spec, fold)
        done.touch()
    return folders


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


def train_predictor(args, out: Path, variant: str, snap_dirs: list[Path]) -> Path:
    vdir = out / f"predictor_{variant}"
    best = vdir / "best.ckpt"
    if best.exists():
        return best
    seed = args.seed if args.train_seed is None else args.train_seed
    split = {}
    if args.split_file is not None:
        split = {"split_file": args.split_file}
    elif seed != args.seed:
        # another training seed on the same split (the snapshots and segmenters were made for it)
        split_path = out / f"split_seed{args.seed}.json"
        source = QualityDataModule(
            root=args.root, image_size=args.image_size, p_weak=0.0, seed=args.seed
        ).source
        source.setup()
        source.split.save(split_path)
        split = {"split_file": str(split_path)}
    L.seed_everything(seed, verbose=False)
    dm = QualityDataModule(root=args.root, image_size=args.image_size, samples_per_image=args.samples_per_image,
                           batch_size=32, snapshots=[str(d) for d in snap_dirs], seed=seed, noise_reuse=args.noise_reuse,
                           image_padding=args.image_padding, gamma=args.gamma, channel_gain=args.channel_gain,
                           snapshot_appearance=args.snapshot_appearance, snapshot_flips=args.snapshot_flips,
                           **split, **VARIANTS[variant]["data"])  # fmt: skip
    model = QualityPredictor(backbone=args.backbone, pretrained=False, channels_last=args.channels_last,
                             **VARIANTS[variant]["model"])  # fmt: skip
    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=str(vdir), filename="best", monitor="val/loss", mode="min"
    )
    trainer = _trainer(vdir, max_time={"minutes": args.minutes}, max_epochs=args.max_epochs, gradient_clip_val=1.0,
                       enable_checkpointing=True, callbacks=[ckpt],
                       logger=L.pytorch.loggers.CSVLogger(str(vdir), name="log"))  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    info = {"variant": variant, "backbone": args.backbone, **VARIANTS[variant],
            "samples_seen": trainer.global_step * 32, "epochs": trainer.current_epoch,
            "minutes": round((time.perf_counter() - start) / 60, 1),
            "best_val_loss": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None}  # fmt: skip
    (vdir / "train_info.json").write_text(json.dumps(info, indent=2))
    if not ckpt.best_model_path:
        raise RuntimeError(
            f"Predictor '{variant}' saved no checkpoint ({info['samples_seen']} samples seen): raise "
            "--samples-per-image or --max-epochs so that at least one epoch with validation completes."
        )
    return Path(ckpt.best_model_path)


def _split_args(args) -> list[str]:
    return [] if args.split_file is None else ["--data.split_file", args.split_file]


def _evaluate(args, predictor: Path, report_path: Path, segmenters: list[Path], *extra: str) -> dict:
    if not report_path.exists():
        evaluate_predictor_cli(["--predictor", str(predictor), "--out", str(report_path), "--data.root", args.root,
                                *_split_args(args), "--subset", "test", "--segmenter", *map(str, segmenters),
                                *extra])  # fmt: skip
    return json.loads(report_path.read_text())


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(_default_kvasir()))
    parser.add_argument(
        "--out-dir", default=str(Path(__file__).resolve().parent / "results" / "predictor_quality")
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--snapshot-epochs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--snapshot-archs", nargs="+", default=["Unet:resnet18"],
        help="ARCH:ENCODER of the cross-fitted weak models (smp names, random init); several give snapshot "
        "masks from several architectures, e.g. Unet:resnet18 DeepLabV3Plus:resnet18",
    )  # fmt: skip
    parser.add_argument("--eval-epochs", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--minutes", type=float, default=45.0, help="training time limit per predictor")
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=30,
        help="epochs per predictor (30 ends the second cosine cycle: t0 10, t_mult 2)",
    )
    parser.add_argument("--samples-per-image", type=int, default=4)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["ours_errmap", "ours", "heldout", "release"],
        choices=sorted(VARIANTS),
    )
    parser.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--noise-reuse", type=int, default=8,
        help="QualityDataModule(noise_reuse=...); run 2 predated it and drew fresh noise per batch (1)",
    )  # fmt: skip
    parser.add_argument(
        "--image-padding", default="zeros", choices=["zeros", "border"],
        help="QualityDataModule(image_padding=...); runs 1-7 predated it and repeated the edge pixels (border)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="split, snapshots, segmenters and predictor seed")
    parser.add_argument(
        "--split-file", default=None,
        help="JSON split file used by every stage instead of the seeded split (e.g. from acquisition_shift.py)",
    )  # fmt: skip
    parser.add_argument(
        "--train-seed", type=int, default=None,
        help="another seed for the predictors only (initialisation, batches), on --seed's split: a replicate",
    )  # fmt: skip
    parser.add_argument(
        "--p-weak", type=float, default=None,
        help="override the share of snapshot masks (p_weak) of every chosen variant, e.g. 0.75",
    )  # fmt: skip
    parser.add_argument(
        "--error-map-weight", type=float, default=None,
        help="override QualityPredictor(error_map_weight=...) of every chosen variant, e.g. 3 (ours_errmap: 1)",
    )  # fmt: skip
    parser.add_argument(
        "--gamma", type=float, default=0.0,
        help="QualityDataModule(gamma=...): random image exponent in [1/(1+x), 1+x] (0, the default, is off)",
    )  # fmt: skip
    parser.add_argument(
        "--channel-gain", type=float, default=0.0,
        help="QualityDataModule(channel_gain=...): random gain per colour channel in [1-x, 1+x] (0 is off)",
    )  # fmt: skip
    parser.add_argument(
        "--snapshot-appearance", type=int, default=0,
        help="QualityDataModule(snapshot_appearance=...): colour-cast copies of each image that the snapshots "
        "also predict (needs --gamma or --channel-gain; 0, the default, is off)",
    )  # fmt: skip
    parser.add_argument(
        "--snapshot-label-fraction", type=float, default=None,
        help="train the snapshot models on this share of the labeled images only (then on the other folds of "
        "it); each snapshot may then serve every image it did not train on. Default: all labeled images",
    )  # fmt: skip
    parser.add_argument(
        "--snapshot-flips", action="store_true",
        help="QualityDataModule(snapshot_flips=True): the snapshots also predict three flips of each image "
        "(flipped back), four test-time variants of every snapshot mask",
    )  # fmt: skip
    parser.add_argument(
        "--extra-snapshots", nargs="+", default=None, metavar="DIR",
        help="also serve the snapshots in these folders (e.g. another run's, trained on another label budget); "
        "the held-out policy applies to them too",
    )  # fmt: skip
    parser.add_argument(
        "--backbone", default="resnet18", choices=sorted(BACKBONES),
        help="QualityPredictor(backbone=...) of every predictor, random init (paper: resnet18)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    try:
        check_appearance(args.gamma, args.channel_gain)
    except ValueError as err:
        parser.error(str(err).replace("`gamma`", "--gamma").replace("`channel_gain`", "--channel-gain"))
    if args.snapshot_appearance < 0 or (args.snapshot_appearance and not (args.gamma or args.channel_gain)):
        parser.error(
            f"--snapshot-appearance must be >= 0 and needs --gamma or --channel-gain above 0 (the ranges its casts "
            f"are drawn from), got --snapshot-appearance {args.snapshot_appearance} with --gamma {args.gamma} and "
            f"--channel-gain {args.channel_gain}."
        )
    if args.snapshot_label_fraction is not None and not 0 < args.snapshot_label_fraction <= 1:
        parser.error(f"--snapshot-label-fraction must be in (0, 1], got {args.snapshot_label_fraction}")
    if args.p_weak is not None:
        if not 0.0 <= args.p_weak <= 1.0:
            parser.error(f"--p-weak must be in [0, 1], got {args.p_weak}")
        for name in args.variants:
            VARIANTS[name] = {**VARIANTS[name], "data": {**VARIANTS[name]["data"], "p_weak": args.p_weak}}
    if args.error_map_weight is not None:
        if args.error_map_weight < 0:
            parser.error(f"--error-map-weight must be >= 0, got {args.error_map_weight}")
        for name in args.variants:
            model = {**VARIANTS[name]["model"], "error_map_weight": args.error_map_weight}
            VARIANTS[name] = {**VARIANTS[name], "model": model}
    for folder in args.extra_snapshots or []:
        try:
            find_snapshots(folder)
        except FileNotFoundError as err:
            parser.error(f"--extra-snapshots: {err}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    snap_dirs = weak_models(args, out) + [Path(d) for d in args.extra_snapshots or []]
    segmenters = eval_segmenters(args, out)
    summary: dict = {"benchmark": "predictor_quality", "root": args.root, "image_size": args.image_size,
                     "backbone": args.backbone, "pretrained": False, "folds": args.folds,
                     "minutes_per_predictor": args.minutes, "extra_snapshots": args.extra_snapshots,
                     "segmenters": [p.name for p in segmenters], "variants": {}}  # fmt: skip
    for variant in args.variants:
        best = train_predictor(args, out, variant, snap_dirs)
        report = _evaluate(args, best, out / f"report_{variant}.json", segmenters)
        by = report.get("by_source", {})
        info = out / f"predictor_{variant}" / "train_info.json"
        entry = summary["variants"][variant] = {
            "train": json.loads(info.read_text()) if info.exists() else None,
            **{src: {k: by.get(src, {}).get(k) for k in _KEYS} for src in ("synthetic", "real")},
            "failure_detection_real": report.get("by_source", {}).get("real", {}).get("failure_detection"),
            "image_dependence": report.get("image_dependence"),
        }
        if args.calibrate:
            calibrated = out / f"predictor_{variant}" / "calibrated.ckpt"
            if not calibrated.exists():
                val_report = out / f"val_{variant}.json"
                evaluate_predictor_cli(["--predictor", str(best), "--out", str(val_report), "--data.root", args.root,
                                        *_split_args(args), "--subset", "val", "--candidates-per-image", "0",
                                        "--segmenter", *map(str, find_snapshots(snap_dirs))])  # fmt: skip
                calibrate_cli(["--predictor", str(best), "--candidates",
                               str(val_report.with_name(val_report.stem + "_candidates.csv")),
                               "--out", str(calibrated)])  # fmt: skip
            cal = _evaluate(args, calibrated, out / f"report_{variant}_calibrated.json", segmenters)
            entry["calibration"] = json.loads(calibrated.with_suffix(".calibration.json").read_text())
            entry["calibrated"] = {
                src: {k: cal.get("by_source", {}).get(src, {}).get(k) for k in _KEYS}
                for src in ("synthetic", "real")
            }
            tta = _evaluate(
                args, calibrated, out / f"report_{variant}_calibrated_tta.json", segmenters, "--tta"
            )
            entry["calibrated_tta"] = {
                src: {k: tta.get("by_source", {}).get(src, {}).get(k) for k in _KEYS}
                for src in ("synthetic", "real")
            }
    summary["wall_minutes"] = round((time.perf_counter() - t0) / 60, 1)
    summary["command"] = _command(parser, args)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

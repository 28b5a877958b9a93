"""Train a :class:`~qg_lightning.quality.recipe.PredictorRecipe` end to end: :func:`train_predictor`.

Stages, each cached in the output folder and skipped when rerun with the same settings:

1. ``split``: the split in use (the given split file, ``ROOT/split.json`` or a seeded split), written to
   ``OUT/split.json``; every later stage reads it, so the predictor trains on its labeled images only.
2. ``snapshots``: cross-fitted weak models (:class:`~qg_lightning.methods.SupervisedSegmenter`, one per fold
   of the labeled images and snapshot model) saved by :class:`~qg_lightning.quality.SnapshotCallback` under
   ``OUT/snapshots/<ARCH>_<ENCODER>/``.
3. ``predictor``: a :class:`~qg_lightning.quality.QualityPredictor` on
   :class:`~qg_lightning.quality.QualityDataModule` candidates, the checkpoint with the lowest validation loss
   kept as ``OUT/predictor/predictor.ckpt`` (weights and hyper-parameters only).
4. ``calibration``: the predictor evaluated on the validation images' synthetic candidates and snapshot masks
   (``OUT/calibration/val_uncalibrated*``), a calibration fitted on the snapshot masks, and the final
   predictor ``OUT/quality_predictor.ckpt``.
5. ``report``: the final predictor evaluated on the same candidates, plainly and with flip TTA; the headline
   figures of every evaluation in ``OUT/report.json``.

A stage's marker (``OUT/<stage>.json``) records the settings it depends on; rerunning with other settings
raises :class:`CacheMismatchError` naming the fields that differ.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from typing_extensions import override

from qg_lightning.checkpoint import atomic_save, load_checkpoint
from qg_lightning.data import SemiSupervisedDataModule, Split, derive_seed, load_split
from qg_lightning.quality.cache import CacheMismatchError, StageCache, read_json, relative_path, write_json
from qg_lightning.quality.recipe import STAGES, PredictorData, PredictorRecipe, stage_fields

__all__ = [
    "CacheMismatchError",
    "ProgressEvent",
    "TrainedPredictor",
    "check_init_from",
    "check_output",
    "train_predictor",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[["ProgressEvent"], None]

#: A fitted calibration slope below this flattens the predictor to a near-constant quality (or inverts it):
#: such a calibration is refused and the uncalibrated predictor kept.
MIN_CALIBRATION_SCALE = 0.1
_REPORT_KEYS = ("n", "mae", "pearson", "spearman", "mean_pred", "mean_true", "constant_baseline_mae")


@dataclass(frozen=True)
class ProgressEvent:
    """What :func:`train_predictor` is doing, for a progress display.

    Attributes:
        stage: ``"split"``, ``"snapshots"``, ``"predictor"``, ``"calibration"`` or ``"report"``.
        message: one human-readable line.
        done: work units finished in this stage (epochs), when counted.
        total: work units of the stage, when counted.
        metrics: the last logged figures (e.g. ``val/loss``).
    """

    stage: str
    message: str
    done: int | None = None
    total: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainedPredictor:
    """What :func:`train_predictor` made.

    Attributes:
        checkpoint: the final predictor (calibrated unless the recipe says ``calibration: none``); pass it as
            is to ``QualityReweightCallback(predictor=...)``, ``--trainer.callbacks.predictor`` or
            :func:`~qg_lightning.quality.load_quality_predictor`.
        report: the contents of ``OUT/report.json`` (headline figures of each evaluation, the calibration,
            the training summary, the recipe and the data).
        paths: every file and folder written, by name (``split``, ``snapshots``, ``predictor``,
            ``checkpoint``, ``report``, and the evaluation reports, PNGs and CSVs).
        recipe: the recipe trained.
        data: the data it trained on.
    """

    checkpoint: Path
    report: dict[str, Any]
    paths: dict[str, Path]
    recipe: PredictorRecipe
    data: PredictorData


class _EpochProgress(L.Callback):
    """Reports each finished training epoch to ``emit``."""

    def __init__(self, stage: str, label: str, total: int, emit: Callable[[ProgressEvent], None]) -> None:
        self.stage, self.label, self.total, self.emit = stage, label, total, emit

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k in ("train/loss_epoch", "val/loss", "val/mae", "val/pearson") and v.numel() == 1
        }
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        epoch = trainer.current_epoch + 1
        message = f"{self.label}: epoch {epoch}/{self.total}" + (f" ({shown})" if shown else "")
        self.emit(ProgressEvent(self.stage, message, done=epoch, total=self.total, metrics=metrics))


def _emitter(progress: ProgressCallback | None) -> Callable[[ProgressEvent], None]:
    def emit(event: ProgressEvent) -> None:
        log.info("[%s] %s", event.stage, event.message)
        if progress is not None:
            progress(event)

    return emit


def _seed_everything(seed: int, *keys: int) -> None:
    """Seed Python, NumPy and torch for one training (weight initialisation) from ``(seed, *keys)``."""
    L.seed_everything(derive_seed(seed, *keys) % 2**32, workers=True, verbose=False)


def _device(accelerator: str) -> str:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _trainer(accelerator: str, precision: str | None, root: Path, **kwargs: Any) -> L.Trainer:
    base: dict[str, Any] = dict(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                                default_root_dir=str(root))  # fmt: skip
    if precision is not None:
        base["precision"] = precision
    base.update(kwargs)
    return L.Trainer(**base)


# ------------------------------------------------------------------------------------------------ stages
def _split_stage(
    stage: StageCache, recipe: PredictorRecipe, data: PredictorData, out: Path, emit: Any
) -> dict[str, Any]:
    info = stage.cached()
    if info is not None:
        return info
    emit(ProgressEvent("split", "building the split"))
    dm = SemiSupervisedDataModule(**data.datamodule_kwargs(recipe.image_size), use_unlabeled=False)
    dm.setup()
    split = dm.split
    if split is None:  # setup always sets it
        raise RuntimeError("SemiSupervisedDataModule.setup() set no split.")
    split.save(out / "split.json")
    info = {"source": dm.split_source, **{k: len(v) for k, v in split.to_dict().items()}}
    emit(
        ProgressEvent("split", f"{info['labeled']} labeled training, {info['val']} val, {info['test']} test")
    )
    return stage.done(info)


def _snapshot_split(recipe: PredictorRecipe, out: Path) -> Path:
    """``OUT/split.json``, or with ``snapshot_label_fraction`` a copy whose labeled list is a seeded subset."""
    path = out / "split.json"
    if recipe.snapshot_label_fraction is None:
        return path
    split = load_split(path)
    labeled = sorted(split.labeled or [])
    n = max(recipe.snapshot_folds, round(recipe.snapshot_label_fraction * len(labeled)))
    rng = np.random.default_rng(derive_seed(recipe.weak_model_seed, 31))
    subset = sorted(rng.permutation(labeled)[:n].tolist())
    sub = Split(train=split.train, val=split.val, test=split.test, labeled=subset)
    return sub.save(out / "snapshot_split.json")


def _snapshot_stage(
    stage: StageCache, recipe: PredictorRecipe, data: PredictorData, out: Path, folder: Path, accelerator: str,
    precision: str | None, emit: Any,
) -> dict[str, Any]:  # fmt: skip
    from qg_lightning.methods import SupervisedSegmenter
    from qg_lightning.quality.snapshots import SnapshotCallback

    info = stage.cached()
    if info is not None:
        return info
    split_file = _snapshot_split(recipe, out)
    kwargs = {**data.datamodule_kwargs(recipe.image_size), "split_file": str(split_file)}
    kwargs.update(labeled_fraction=None, n_labeled=None, seed=recipe.weak_model_seed)
    epochs = max(recipe.snapshot_epochs)
    saved: list[str] = []
    start = time.perf_counter()
    for m, (arch, encoder) in enumerate(recipe.snapshot_specs):
        target = folder / f"{arch}_{encoder}"
        for fold in range(recipe.snapshot_folds):
            fold_stage = StageCache(
                "snapshots", target / f"fold{fold}.done.json", {**stage.settings, "model": m, "fold": fold}
            )
            fold_info = fold_stage.cached()
            if fold_info is None:
                _seed_everything(recipe.weak_model_seed, 41, m, fold)
                dm = SemiSupervisedDataModule(**kwargs, use_unlabeled=False, batch_size=recipe.snapshot_batch_size,
                                              fold=fold, n_folds=recipe.snapshot_folds)  # fmt: skip
                model = SupervisedSegmenter(arch=arch, encoder_name=encoder, encoder_weights=None,
                                            in_channels=data.in_channels, num_classes=data.num_classes,
                                            lr=recipe.snapshot_lr)  # fmt: skip
                callback = SnapshotCallback(epochs=recipe.snapshot_epochs, dirpath=str(target), fold=fold)
                label = f"{arch}:{encoder} fold {fold + 1}/{recipe.snapshot_folds}"
                trainer = _trainer(accelerator, precision, target / f"fold{fold}", max_epochs=epochs,
                                   limit_val_batches=0,
                                   callbacks=[callback, _EpochProgress("snapshots", label, epochs, emit)])  # fmt: skip
                trainer.fit(model, datamodule=dm)
                fold_info = fold_stage.done({"snapshots": sorted(relative_path(p, folder) for p in callback.saved),
                                             "n_train": len(dm.training_labeled_ids)})  # fmt: skip
            saved += fold_info["snapshots"]
    minutes = (time.perf_counter() - start) / 60
    return stage.done({"snapshots": saved, "minutes": round(minutes, 2), "run": uuid.uuid4().hex[:12]})


def _snapshot_key(out: Path, folder: Path | None) -> str | None:
    """How the predictor stage names its snapshots: ``"OUT/snapshots"`` (wherever OUT is), another folder by
    its absolute path, or None without snapshots."""
    if folder is None:
        return None
    return "OUT/snapshots" if folder.resolve() == (out / "snapshots").resolve() else str(folder.resolve())


def _compact(best: Path, target: Path) -> None:
    """A small weights-only predictor file: ``state_dict``, hyper-parameters, data hyper-parameters."""
    ckpt = load_checkpoint(best, what="quality predictor checkpoint")
    keep = ("state_dict", "hyper_parameters", "datamodule_hyper_parameters", "epoch", "global_step")
    atomic_save({k: ckpt[k] for k in keep if k in ckpt}, target)


def _predictor_stage(
    stage: StageCache, recipe: PredictorRecipe, data: PredictorData, out: Path, snapshots: Path | None, accelerator: str,
    precision: str | None, emit: Any,
) -> dict[str, Any]:  # fmt: skip
    from qg_lightning.quality.datamodule import QualityDataModule
    from qg_lightning.quality.predictor import QualityPredictor, predictor_from_checkpoint

    info = stage.cached()
    if info is not None:
        return info
    folder = out / "predictor"
    shutil.rmtree(folder, ignore_errors=True)  # a stale, unfinished run
    threshold = recipe.snapshot_threshold
    kwargs = {**data.datamodule_kwargs(recipe.image_size), "split_file": str(out / "split.json")}
    kwargs.update(labeled_fraction=None, n_labeled=None, seed=recipe.seed)
    _seed_everything(recipe.seed, 51)
    dm = QualityDataModule(
        **kwargs,
        samples_per_image=recipe.samples_per_image,
        batch_size=recipe.batch_size,
        p_weak=recipe.p_weak,
        snapshots=[str(snapshots)] if recipe.p_weak > 0 and snapshots is not None else None,
        snapshot_policy=recipe.snapshot_policy,
        snapshot_threshold=list(threshold) if isinstance(threshold, tuple) else threshold,
    )
    hparams = {"backbone": recipe.backbone, "in_channels": data.in_channels, "num_classes": data.num_classes,
               "channels_last": recipe.channels_last, "error_map_weight": float(recipe.error_map_weight)}  # fmt: skip
    if recipe.init_from is not None:  # fine-tuning: the weights (and image statistics) of another predictor
        model = predictor_from_checkpoint(recipe.init_from, **hparams)
    else:
        model = QualityPredictor(pretrained=recipe.pretrained, **hparams)
    dm.setup()
    if len(dm.train_ids) * recipe.samples_per_image < recipe.batch_size:
        raise ValueError(
            f"One predictor epoch has no full batch: {len(dm.train_ids)} labeled training images x "
            f"`samples_per_image` {recipe.samples_per_image} < `batch_size` {recipe.batch_size}. Raise "
            "samples_per_image or lower batch_size."
        )
    best = ModelCheckpoint(
        dirpath=str(folder / "checkpoints"), filename="best", monitor="val/loss", mode="min", save_top_k=1
    )
    callbacks: list[L.Callback] = [best, _EpochProgress("predictor", "predictor", recipe.max_epochs, emit)]
    if recipe.patience is not None:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=recipe.patience))
    limits: dict[str, Any] = {"max_time": {"minutes": recipe.max_minutes}} if recipe.max_minutes else {}
    trainer = _trainer(accelerator, precision, folder, max_epochs=recipe.max_epochs, gradient_clip_val=1.0,
                       enable_checkpointing=True, callbacks=callbacks,
                       logger=CSVLogger(str(folder), name="log", version=""), **limits)  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    if not best.best_model_path:
        raise RuntimeError(
            f"The predictor saved no checkpoint ({trainer.global_step} steps): raise `max_epochs` or "
            "`max_minutes` so that at least one epoch with validation completes."
        )
    checkpoint = folder / "predictor.ckpt"
    _compact(Path(best.best_model_path), checkpoint)
    shutil.rmtree(folder / "checkpoints")
    info = {
        "checkpoint": relative_path(checkpoint, out),
        "best_val_loss": float(best.best_model_score) if best.best_model_score is not None else None,
        "epochs": int(trainer.current_epoch),
        "samples_seen": int(trainer.global_step) * recipe.batch_size,
        "n_train_images": len(dm.train_ids),
        "n_snapshots": len(dm.snapshot_info),
        "minutes": round((time.perf_counter() - start) / 60, 2),
    }
    emit(
        ProgressEvent("predictor", f"best val/loss {info['best_val_loss']:.4f} after {info['epochs']} epochs")
    )
    return stage.done(info)


def _candidate_set(recipe: PredictorRecipe, data: PredictorData, out: Path, subset: str,
                   snapshots: list[str], device: str) -> Any:  # fmt: skip
    from qg_lightning.quality.evaluation import load_evaluation_images, load_segmenter, make_candidate_set

    kwargs = {**data.datamodule_kwargs(recipe.image_size), "split_file": str(out / "split.json")}
    dm = SemiSupervisedDataModule(**kwargs, use_unlabeled=False)
    dm.setup()
    if dm.split is None or dm.index is None:  # setup always sets them
        raise RuntimeError("SemiSupervisedDataModule.setup() set no split.")
    ids = list(dm.split.val if subset == "val" else dm.split.test)
    if not ids:
        raise ValueError(
            f"The {subset} split of '{out / 'split.json'}' is empty; the report needs {subset} images."
        )
    images, truths = load_evaluation_images(
        dm.index,
        ids,
        image_size=recipe.image_size,
        in_channels=data.in_channels,
        num_classes=data.num_classes,
    )
    segmenters = {
        f"{Path(p).parent.name}/{Path(p).stem}": load_segmenter(
            p, in_channels=data.in_channels, num_classes=data.num_classes, map_location=device
        )
        for p in snapshots
    }
    return make_candidate_set(images, truths, ids, segmenters=segmenters, num_classes=data.num_classes,
                              candidates_per_image=recipe.eval_candidates_per_image,
                              seed=recipe.seed)  # fmt: skip


def _headline(report: Mapping[str, Any]) -> dict[str, Any]:
    by = report.get("by_source") or {}
    out = {"all": {k: report.get(k) for k in _REPORT_KEYS}}
    for source in ("synthetic", "real"):
        out[source] = {k: (by.get(source) or {}).get(k) for k in _REPORT_KEYS}
    out["failure_detection_real"] = (by.get("real") or {}).get("failure_detection")
    out["image_dependence"] = report.get("image_dependence")
    return out


def _evaluate(path: Path, candidates: Any, prefix: Path, *, data: PredictorData, device: str,
              tta: bool, seed: int) -> dict[str, Any]:  # fmt: skip
    from qg_lightning.quality.evaluation import evaluate_candidate_set
    from qg_lightning.quality.predictor import load_quality_predictors

    predictor = load_quality_predictors(
        [str(path)], in_channels=data.in_channels, num_classes=data.num_classes, map_location=device, tta=tta
    )
    report = evaluate_candidate_set(predictor, candidates, out_prefix=prefix, seed=seed)
    report = {**report, "predictor": str(path), "tta": tta}
    write_json(prefix.with_suffix(".json"), report)
    return report


def _calibration_stage(
    stage: StageCache, recipe: PredictorRecipe, data: PredictorData, out: Path, predictor: Path, snapshots: list[str],
    subset: str, device: str, emit: Any,
) -> dict[str, Any]:  # fmt: skip
    from qg_lightning.quality.calibration import calibrate_checkpoint, read_candidates

    info = stage.cached()
    if info is not None:
        return info
    emit(ProgressEvent("calibration", f"evaluating the predictor on the {subset} images"))
    folder = out / "calibration"
    candidates = _candidate_set(recipe, data, out, subset, snapshots, device)
    prefix = folder / f"{subset}_uncalibrated"
    report = _evaluate(predictor, candidates, prefix, data=data, device=device, tta=False, seed=recipe.seed)
    final = out / "quality_predictor.ckpt"
    info: dict[str, Any] = {"uncalibrated_report": relative_path(prefix.with_suffix(".json"), out),
                            "checkpoint": relative_path(final, out)}  # fmt: skip
    info["uncalibrated"] = _headline(report)
    if recipe.calibration == "none" or not snapshots:
        shutil.copyfile(predictor, final)
        info["calibration"] = None
    else:
        # fitted on the snapshot masks of the validation images: neither the predictor nor the snapshots
        # trained on them (the recipe's honest real masks)
        val_csv = report["candidates_csv"]
        if subset != "val":
            val_candidates = _candidate_set(recipe.replace(eval_candidates_per_image=0), data, out, "val",
                                            snapshots, device)  # fmt: skip
            val_prefix = folder / "val_uncalibrated"
            val = _evaluate(predictor, val_candidates, val_prefix, data=data, device=device, tta=False,
                            seed=recipe.seed)  # fmt: skip
            val_csv = val["candidates_csv"]
        pred, true = read_candidates(val_csv, "real")
        details = {"candidates": val_csv, "source": "real (snapshot masks of the validation images)"}
        fitted = calibrate_checkpoint(predictor, pred, true, final, details=details)
        scale = float(fitted["calibration"][0])
        if scale < MIN_CALIBRATION_SCALE:
            # A (near-)zero or negative slope maps every mask to about the same quality: guidance would weight
            # every pseudolabel alike (or invert the ranking), silently. Keep the uncalibrated predictor.
            shutil.copyfile(predictor, final)
            final.with_suffix(".calibration.json").unlink(missing_ok=True)
            fitted["applied"] = False
            fitted["refused"] = (
                f"fitted slope {scale:.3g} < {MIN_CALIBRATION_SCALE}: the predictor does not rank the validation "
                "images' snapshot masks (Pearson "
                f"{fitted['before'].get('pearson', float('nan')):.3f}), so the calibration would flatten it to a "
                "constant; the uncalibrated predictor is kept"
            )
            log.warning("Calibration refused: %s.", fitted["refused"])
            emit(ProgressEvent("calibration", f"calibration refused: {fitted['refused']}"))
        else:
            fitted["applied"] = True
            emit(ProgressEvent("calibration", f"[scale, shift] = {fitted['calibration']}"))
        info["calibration"] = fitted
    return stage.done(info)


def _report_stage(
    stage: StageCache, recipe: PredictorRecipe, data: PredictorData, out: Path, final: Path, snapshots: list[str], subset: str,
    device: str, emit: Any, done: Mapping[str, Any],
) -> dict[str, Any]:  # fmt: skip
    info = stage.cached()
    if info is not None:
        return read_json(out / "report.json")
    emit(ProgressEvent("report", f"evaluating the final predictor on the {subset} images"))
    folder = out / "report"
    candidates = _candidate_set(recipe, data, out, subset, snapshots, device)
    calibrated = (
        recipe.calibration != "none"
        and bool(snapshots)
        and bool((done["calibration"].get("calibration") or {}).get("applied", True))
    )
    name = "calibrated" if calibrated else "final"
    evaluations = {"uncalibrated": done["calibration"]["uncalibrated"]}
    files = {"uncalibrated": done["calibration"]["uncalibrated_report"]}
    variants = [(name, False)] if calibrated else []
    variants += [(f"{name}_tta", True)] if recipe.tta else []
    for label, tta in variants:
        prefix = folder / f"{subset}_{label}"
        report = _evaluate(final, candidates, prefix, data=data, device=device, tta=tta, seed=recipe.seed)
        evaluations[label] = _headline(report)
        files[label] = relative_path(prefix.with_suffix(".json"), out)
    summary = {
        "checkpoint": relative_path(final, out),
        "paths": "relative to this file's folder",
        "subset": subset,
        "note": "real = masks of the cross-fitted snapshot models; the calibration was fitted on the real masks "
        "of the validation images, so calibrated MAE on the validation split is in-sample",
        "evaluations": evaluations,
        "reports": files,
        "calibration": done["calibration"].get("calibration"),
        "split": done["split"],
        "snapshots": {"n": len(snapshots), "minutes": done["snapshots"].get("minutes")},
        "predictor": done["predictor"],
        "recipe": recipe.to_dict(),
        "data": data.to_dict(),
        "recipe_fingerprint": recipe.fingerprint,
    }
    write_json(out / "report.json", summary)
    stage.done({"report": str(out / "report.json")})
    return summary


def _stage(
    name: str, recipe: PredictorRecipe, data: PredictorData, out: Path, folder: Path, subset: str,
    snapshots_run: str | None,
) -> StageCache:  # fmt: skip
    """The cached stage ``name``: its marker and the settings it depends on."""
    extra: dict[str, Any] = {}
    if name in ("predictor", "calibration", "report"):
        # which snapshots: the folder, and which training of it (a retrained snapshot stage outdates the rest)
        extra["snapshot_dir"] = _snapshot_key(out, folder if recipe.needs_snapshots else None)
        extra["snapshots_run"] = snapshots_run
    if name in ("calibration", "report"):
        extra["report_subset"] = subset
    marker = (folder if name == "snapshots" else out) / f"{name}.done.json"
    settings = stage_fields(name, recipe, data, extra)
    # the split file counts by its content (hashed in the settings), not by where it lies
    same = ("data.split_file",) if "data.split_file_sha256" in settings else ()
    return StageCache(name, marker, settings, interchangeable=same)


def _names(recipe: PredictorRecipe) -> list[str]:
    return [name for name in STAGES if name != "snapshots" or recipe.needs_snapshots]


def check_output(
    recipe: PredictorRecipe,
    data: PredictorData,
    out: str | Path,
    *,
    snapshot_dir: str | Path | None = None,
    report_subset: Literal["val", "test"] = "val",
) -> list[str]:
    """Check, without training anything, that the stages cached in ``out`` (and ``snapshot_dir``) were made
    with ``recipe`` and ``data``; return the names of the stages already done (in order, up to the first
    stage to do: every later one is redone too).

    Raises:
        CacheMismatchError: a cached stage was made with other settings (the message names the fields).
    """
    out = Path(out)
    folder = Path(snapshot_dir) if snapshot_dir is not None else out / "snapshots"
    done: list[str] = []
    run = None
    for name in _names(recipe):  # in pipeline order, so the first stage that differs is named
        stage = _stage(name, recipe, data, out, folder, report_subset, run)
        info = stage.cached()
        if info is None:
            if name == "snapshots":  # the finished folds of an unfinished snapshot stage
                for marker in sorted(folder.glob("*/fold*.done.json")):
                    saved = read_json(marker).get("settings", {})
                    key = {"model": saved.get("model"), "fold": saved.get("fold")}
                    StageCache("snapshots", marker, {**stage.settings, **key}).cached()
            break
        run = info.get("run", run)
        done.append(name)
    return done


def check_init_from(recipe: PredictorRecipe, data: PredictorData) -> None:
    """Check, without training, that ``recipe.init_from`` is a quality predictor checkpoint that fits ``data``
    and ``recipe.backbone``.

    Raises:
        FileNotFoundError: no file there.
        ValueError: it does not fit; the message names the file, the field and the fix.
    """
    from qg_lightning.quality.predictor import predictor_from_checkpoint

    path = recipe.init_checkpoint()
    try:
        predictor_from_checkpoint(path, backbone=recipe.backbone, in_channels=data.in_channels,
                                  num_classes=data.num_classes)  # fmt: skip
    except ValueError as err:
        raise ValueError(f"`init_from`: {err}") from None


# -------------------------------------------------------------------------------------------------- API
def train_predictor(
    recipe: PredictorRecipe,
    data: PredictorData,
    out: str | Path,
    *,
    accelerator: str = "auto",
    precision: str | None = None,
    snapshot_dir: str | Path | None = None,
    report_subset: Literal["val", "test"] = "val",
    progress: ProgressCallback | None = None,
) -> TrainedPredictor:
    """Train ``recipe`` on ``data`` end to end; every stage is cached in ``out`` (see the module docstring).

    Args:
        recipe: how to train (:class:`PredictorRecipe`; ``PredictorRecipe()`` is the best recipe measured).
        data: the images (:class:`PredictorData`): folder, split and labeled subset.
        out: output folder (created); rerunning with the same settings skips the finished stages.
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``); evaluation runs on CUDA when
            it is available and ``accelerator`` is not ``"cpu"``.
        precision: Lightning ``precision`` of the trainings (``None``: Lightning's default, 32-bit).
        snapshot_dir: where the snapshot stage is cached (default ``OUT/snapshots``); several runs that differ
            only after the snapshot stage (e.g. ``p_weak``) can share one.
        report_subset: the split the report evaluates on: ``"val"`` (default; the test images stay unseen) or
            ``"test"``. The calibration is always fitted on the validation images.
        progress: called with a :class:`ProgressEvent` at each stage and epoch (also logged at INFO level).

    Returns:
        :class:`TrainedPredictor`: the final checkpoint, the report and every path written.

    Raises:
        CacheMismatchError: ``out`` (or ``snapshot_dir``) holds a stage made with other settings.
        ValueError: ``report_subset`` or ``accelerator`` is not allowed, the split has no validation images, or
            ``recipe.init_from`` does not fit ``data`` / ``recipe.backbone``.
        FileNotFoundError: ``recipe.init_from`` names no file.

    Example:
        >>> import tempfile
        >>> recipe = PredictorRecipe(snapshot_folds=2, snapshot_models=("Unet:resnet18",), snapshot_epochs=(1,),
        ...     image_size=32, samples_per_image=1, max_epochs=1, eval_candidates_per_image=1, tta=False)
        >>> with tempfile.TemporaryDirectory() as tmp:  # doctest: +SKIP
        ...     trained = train_predictor(recipe, PredictorData(synthetic_images=16, synthetic_size=32), tmp)
        ...     trained.checkpoint.name
        'quality_predictor.ckpt'
    """
    if not isinstance(recipe, PredictorRecipe):
        raise TypeError(f"`recipe` must be a PredictorRecipe, got {type(recipe).__name__}.")
    if not isinstance(data, PredictorData):
        raise TypeError(f"`data` must be a PredictorData, got {type(data).__name__}.")
    if report_subset not in ("val", "test"):
        raise ValueError(f"`report_subset` must be 'val' or 'test', got {report_subset!r}.")
    if accelerator not in ("auto", "cpu", "gpu", "cuda", "mps"):
        raise ValueError(f"`accelerator` must be 'auto', 'cpu', 'gpu', 'cuda' or 'mps', got {accelerator!r}.")
    out = Path(out)
    if recipe.init_from is not None:  # before any work: the starting weights exist and fit this data
        check_init_from(recipe, data)
    check_output(recipe, data, out, snapshot_dir=snapshot_dir, report_subset=report_subset)
    out.mkdir(parents=True, exist_ok=True)
    emit = _emitter(progress)
    device = _device(accelerator)
    folder = Path(snapshot_dir) if snapshot_dir is not None else out / "snapshots"
    done: dict[str, Any] = {}

    def stage(name: str) -> StageCache:
        """The stage's cache; when it has to run, the markers of every later stage in ``out`` go (redone)."""
        run = done.get("snapshots", {}).get("run")
        cache = _stage(name, recipe, data, out, folder, report_subset, run)
        if not cache.marker.is_file() and name != "split":  # the split is the same whenever it is made
            for later in _names(recipe)[_names(recipe).index(name) + 1 :]:
                (out / f"{later}.done.json").unlink(missing_ok=True)
        return cache

    done["split"] = _split_stage(stage("split"), recipe, data, out, emit)
    if recipe.needs_snapshots:
        done["snapshots"] = _snapshot_stage(stage("snapshots"), recipe, data, out, folder, accelerator, precision,
                                            emit)  # fmt: skip
    else:
        done["snapshots"] = {"snapshots": []}
    snapshots = [str(folder / p) for p in done["snapshots"]["snapshots"]]
    used = folder if recipe.needs_snapshots else None
    done["predictor"] = _predictor_stage(
        stage("predictor"), recipe, data, out, used, accelerator, precision, emit
    )
    predictor = out / done["predictor"]["checkpoint"]
    done["calibration"] = _calibration_stage(
        stage("calibration"), recipe, data, out, predictor, snapshots, report_subset, device, emit
    )
    final = out / done["calibration"]["checkpoint"]
    report = _report_stage(
        stage("report"), recipe, data, out, final, snapshots, report_subset, device, emit, done
    )
    paths = {"out": out, "split": out / "split.json", "predictor": predictor, "checkpoint": final,
             "report": out / "report.json"}  # fmt: skip
    if recipe.needs_snapshots:
        paths["snapshots"] = folder
    for label, path in report["reports"].items():
        paths[f"report_{label}"] = out / path
    emit(ProgressEvent("report", f"done: {final}"))
    return TrainedPredictor(checkpoint=final, report=report, paths=paths, recipe=recipe, data=data)

"""The study's stages before the runs: split, snapshot models, quality predictor and its evaluation."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger

from qg_lightning.callbacks import ModelCheckpoint
from qg_lightning.checkpoint import atomic_save, load_checkpoint
from qg_lightning.data import SemiSupervisedDataModule
from qg_lightning.methods import SupervisedSegmenter
from qg_lightning.quality.datamodule import QUALITY_CATEGORIES, QualityDataModule
from qg_lightning.quality.predictor import QualityPredictor, load_quality_predictor
from qg_lightning.quality.snapshots import SnapshotCallback
from qg_lightning.study._common import _free_memory, _now, _precision, _read_json, _write_json
from qg_lightning.study.config import StudyConfig

log = logging.getLogger(__name__)


def _data_kwargs(config: StudyConfig, split_file: str | None) -> dict[str, Any]:
    preset = config.study_preset
    kwargs: dict[str, Any] = {
        "root": config.root,
        "synthetic_images": preset.synthetic_images,
        "synthetic_size": preset.synthetic_size,
        "split_file": split_file,
        "num_classes": config.num_classes,
        "in_channels": config.in_channels,
        "image_size": preset.image_size,
        "val_fraction": config.val_fraction,
        "test_fraction": config.test_fraction,
        "unlabeled_root": config.unlabeled_root,
        "mask_dir": config.mask_dir,
    }
    if split_file is None:
        kwargs.update(config.labeled)
    return kwargs


def _make_split(config: StudyConfig, path: Path) -> dict[str, Any]:
    """Build the study's split once and write it to ``path``; return the data description."""
    dm = SemiSupervisedDataModule(**_data_kwargs(config, None), use_unlabeled=True, seed=config.split_seed)
    dm.setup()
    assert dm.split is not None
    dm.split.save(path)
    return dm.describe()


def _describe_data(config: StudyConfig, split_file: Path) -> dict[str, Any]:
    dm = SemiSupervisedDataModule(
        **_data_kwargs(config, str(split_file)), use_unlabeled=True, seed=config.split_seed
    )
    dm.setup()
    return dm.describe()


def _train_snapshots(config: StudyConfig, out: Path, fold: int) -> dict[str, Any]:
    """Train the weak model of one fold and save its snapshots under ``out / "snapshots"``."""
    preset = config.study_preset
    folder = out / "snapshots"
    work = folder / f"fold{fold}"
    L.seed_everything(config.split_seed + 1000 * (fold + 1), workers=True, verbose=False)
    dm = SemiSupervisedDataModule(
        **_data_kwargs(config, str(out / "split.json")),
        use_unlabeled=False,
        batch_size=preset.snapshot_batch_size,
        seed=config.split_seed,
        fold=fold,
        n_folds=preset.snapshot_folds,
        num_workers=config.num_workers,
    )
    model = SupervisedSegmenter(
        arch=preset.snapshot_arch,
        encoder_name=preset.snapshot_encoder,
        encoder_weights=None,
        in_channels=config.in_channels,
        num_classes=config.num_classes,
        lr=preset.snapshot_lr,
        min_lr=preset.snapshot_lr * 0.01,
    )
    callback = SnapshotCallback(epochs=preset.snapshot_epochs, dirpath=str(folder), fold=fold)
    trainer = L.Trainer(
        accelerator=config.accelerator,
        devices=1,
        precision=_precision(preset, config.accelerator),
        max_epochs=max(preset.snapshot_epochs),
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        default_root_dir=str(work),
        log_every_n_steps=preset.log_every_n_steps,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    info = {
        "fold": fold,
        "n_train": len(dm.training_labeled_ids),
        "epochs": max(preset.snapshot_epochs),
        "steps": int(trainer.global_step),
        "snapshots": sorted(callback.saved),
        "wall_time_s": time.perf_counter() - start,
        "finished_at": _now(),
    }
    _write_json(work / "done.json", info, base=out)
    del trainer, model, dm
    _free_memory()
    return info


def _compact_predictor(best: Path, target: Path) -> None:
    """Write a small weights-only predictor file (``state_dict``, hyper-parameters, data hyper-parameters)."""
    ckpt = load_checkpoint(best, what="quality predictor checkpoint")
    keep = {
        k: ckpt[k]
        for k in ("state_dict", "hyper_parameters", "datamodule_hyper_parameters", "epoch", "global_step")
        if k in ckpt
    }
    atomic_save(keep, target)


@contextlib.contextmanager
def _device_predictor(path: Path, config: StudyConfig) -> Iterator[Any]:
    device = "cuda" if config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
    model = load_quality_predictor(
        str(path), in_channels=config.in_channels, num_classes=config.num_classes, map_location=device
    )
    try:
        yield model
    finally:
        del model


def _predict_test_candidates(config: StudyConfig, qdm: Any, path: Path) -> Path:
    """Predicted vs true quality of the quality data module's fixed test candidates -> CSV."""
    rows = []
    with _device_predictor(path, config) as model, torch.no_grad():
        device = next(model.parameters()).device
        for raw in qdm.test_dataloader():
            batch = qdm.on_after_batch_transfer({k: v.to(device) for k, v in raw.items()}, 0)
            pred = model(batch["image"], batch["candidate"]).float().mean(1).cpu()
            true = batch["quality"].float().mean(1).cpu()
            cats = batch["category"].cpu()
            for p, t, c in zip(pred.tolist(), true.tolist(), cats.tolist(), strict=True):
                rows.append((p, t, QUALITY_CATEGORIES[int(c)]))
    target = path.parent / "test_predictions.csv"
    with target.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pred", "true", "source", "category"])
        for p, t, c in rows:
            writer.writerow([f"{p:.6f}", f"{t:.6f}", "synthetic", c])
    return target


def _train_predictor(config: StudyConfig, out: Path) -> dict[str, Any]:
    """Train the quality predictor on the labeled split with held-out snapshot masks; test it."""
    preset = config.study_preset
    folder = out / "predictor"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    L.seed_everything(config.split_seed, workers=True, verbose=False)
    data = _data_kwargs(config, str(out / "split.json"))
    data = {k: v for k, v in data.items() if k not in ("unlabeled_root", "mask_dir")}  # labeled images only
    snapshots = [str(out / "snapshots")] if preset.p_weak > 0 else None
    qdm = QualityDataModule(
        **data,
        samples_per_image=preset.predictor_samples_per_image,
        batch_size=preset.predictor_batch_size,
        p_weak=preset.p_weak,
        snapshots=snapshots,
        snapshot_policy="heldout",
        seed=config.split_seed,
    )
    model = QualityPredictor(
        backbone=preset.predictor_backbone,
        in_channels=config.in_channels,
        num_classes=config.num_classes,
        pretrained=config.encoder_weights is not None,
    )
    checkpoint = ModelCheckpoint(
        dirpath=str(folder / "checkpoints"),
        monitor="val/loss",
        mode="min",
        save_top_k=1,
        filename="best-{epoch:03d}",
    )
    callbacks: list[Any] = [checkpoint]
    if preset.predictor_patience is not None:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=preset.predictor_patience))
    trainer = L.Trainer(
        accelerator=config.accelerator,
        devices=1,
        precision=_precision(preset, config.accelerator),
        max_epochs=preset.predictor_epochs,
        gradient_clip_val=1.0,
        num_sanity_val_steps=0,
        logger=CSVLogger(save_dir=str(folder), name="", version=""),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(folder),
        log_every_n_steps=preset.log_every_n_steps,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=qdm)
    fit_time = time.perf_counter() - start
    best = Path(checkpoint.best_model_path)
    tested = trainer.test(model, datamodule=qdm, ckpt_path=str(best), verbose=False, weights_only=True)
    metrics = {
        k.split("/", 1)[1]: float(v)
        for k, v in (tested[0] if tested else {}).items()
        if k.startswith("test/")
    }
    compact = folder / "quality_predictor.ckpt"
    _compact_predictor(best, compact)
    predictions = _predict_test_candidates(config, qdm, compact)
    info = {
        "checkpoint": str(compact),
        "best_epoch_checkpoint": best.name,
        "best_val_loss": float(checkpoint.best_model_score)
        if checkpoint.best_model_score is not None
        else None,
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "backbone": preset.predictor_backbone,
        "pretrained": config.encoder_weights is not None,
        "p_weak": preset.p_weak,
        "n_snapshots": len(qdm.snapshot_info),
        "n_train_images": len(qdm.train_ids),
        "test_synthetic": metrics,
        "test_predictions_csv": str(predictions),
        "fit_time_s": fit_time,
        "wall_time_s": time.perf_counter() - start,
        "finished_at": _now(),
    }
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    _write_json(folder / "predictor.json", info, base=out)
    del trainer, model, qdm
    _free_memory()
    return info


def _last_snapshots(out: Path) -> list[str]:
    """The last-epoch snapshot of each fold (real segmentation models for the predictor evaluation)."""
    by_fold: dict[str, Path] = {}
    for path in sorted((out / "snapshots").glob("snapshot_fold*_epoch*.pt")):
        fold = path.name.split("_epoch")[0]
        by_fold[fold] = path  # sorted: the last epoch wins
    return [str(p) for _, p in sorted(by_fold.items())]


def _evaluate_predictor(config: StudyConfig, out: Path, predictor: Path) -> dict[str, Any]:
    """Run ``qg-lightning evaluate-predictor`` on the test split (synthetic + weak-model candidates)."""
    folder = out / "predictor"
    target = folder / "evaluation.json"
    preset = config.study_preset
    try:
        from qg_lightning.quality.evaluation import evaluate_predictor_cli
    except ImportError as err:  # TODO(issue 5): drop once qg_lightning.quality.evaluation is always present
        log.warning("Predictor evaluation skipped: qg_lightning.quality.evaluation is unavailable (%s).", err)
        return {"status": "unavailable", "reason": str(err)}
    argv = [
        "--predictor",
        str(predictor),
        "--out",
        str(target),
        "--data.split_file",
        str(out / "split.json"),
        "--data.image_size",
        str(preset.image_size),
        "--data.in_channels",
        str(config.in_channels),
        "--data.num_classes",
        str(config.num_classes),
        "--subset",
        "test",
        "--seed",
        str(config.split_seed),
        "--device",
        "cuda" if config.accelerator != "cpu" and torch.cuda.is_available() else "cpu",
    ]
    if config.root is not None:
        argv += ["--data.root", str(config.root)]
    else:
        argv += [
            "--data.synthetic_images",
            str(preset.synthetic_images),
            "--data.synthetic_size",
            str(preset.synthetic_size),
        ]
    segmenters = _last_snapshots(out)
    if segmenters:
        argv += ["--segmenter", *segmenters]
    buffer = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(buffer):
            evaluate_predictor_cli(argv)
    except Exception as err:  # an optional stage: record the failure, keep the study going
        log.warning(
            "Predictor evaluation failed (%s: %s); the study continues without it.", type(err).__name__, err
        )
        return {"status": "failed", "reason": f"{type(err).__name__}: {err}", "argv": argv}
    for line in buffer.getvalue().splitlines():
        log.info("  %s", line)
    report = _read_json(target)
    return {
        "status": "done",
        "report": str(target),
        "argv": argv,
        "wall_time_s": time.perf_counter() - start,
        "summary": _evaluation_summary(report),
    }


def _evaluation_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of an evaluation report (all / synthetic / real candidates)."""
    keys = ("n", "mae", "pearson", "spearman", "constant_baseline_mae")
    out: dict[str, Any] = {"all": {k: report.get(k) for k in keys}}
    for source in ("synthetic", "real"):
        figures = (report.get("by_source") or {}).get(source) or {}
        out[source] = {k: figures.get(k) for k in keys}
    dependence = report.get("image_dependence") or {}
    out["image_dependence"] = {
        k: dependence.get(k) for k in ("pearson_blackout", "pearson_shuffled", "ignores_image")
    }
    out["calibration_png"] = report.get("calibration_png")
    out["candidates_csv"] = report.get("candidates_csv")
    return out

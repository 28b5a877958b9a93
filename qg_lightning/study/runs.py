"""One study run: build the host, its data and guidance, train, test, and return the result dict."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from qg_lightning import methods
from qg_lightning.callbacks import ModelCheckpoint
from qg_lightning.data import SemiSupervisedDataModule
from qg_lightning.data.datamodule import SegmentationDataset
from qg_lightning.data.folder import scan_folder
from qg_lightning.data.transforms import build_transforms
from qg_lightning.guidance import QualityReweightCallback
from qg_lightning.study._common import _KEPT_KEY, RESULT_FORMAT, _free_memory, _now, _precision, _read_json
from qg_lightning.study.config import StudyConfig
from qg_lightning.study.methods import MethodSpec
from qg_lightning.study.presets import RunSchedule
from qg_lightning.study.stages import _data_kwargs

log = logging.getLogger(__name__)


def _host_class(spec: MethodSpec) -> type:
    cls = getattr(methods, spec.host, None)
    if not isinstance(cls, type):
        raise ValueError(
            f"Method {spec.name!r}: host {spec.host!r} is not a class in qg_lightning.methods "
            f"(available: {sorted(n for n in methods.__all__ if n.endswith('Segmenter'))})."
        )
    return cls


def host_kwargs(spec: MethodSpec, config: StudyConfig, schedule: RunSchedule) -> dict[str, Any]:
    """Constructor arguments of a method's host: shared settings, the step schedule, then the method's own."""
    preset = config.study_preset
    cls = _host_class(spec)
    params = inspect.signature(cls.__init__).parameters
    shared = {
        "arch": preset.arch,
        "encoder_name": preset.encoder_name,
        "encoder_weights": config.encoder_weights,
        "in_channels": config.in_channels,
        "num_classes": config.num_classes,
        "lr": preset.lr,
        "weight_decay": preset.weight_decay,
        "min_lr": min(preset.min_lr, preset.lr),
        "schedule_unit": "step",
        "unsup_warmup": float(schedule.unsup_warmup),
        "unsup_ramp": float(schedule.unsup_ramp),
        "ema_decay": preset.ema_decay,
        "ema_warmup_steps": schedule.ema_warmup_steps,
    }
    kwargs = {k: v for k, v in shared.items() if k in params}
    unknown = sorted(set(spec.host_kwargs) - set(params))
    if unknown:
        raise ValueError(f"Method {spec.name!r}: {spec.host} has no argument(s) {unknown}.")
    kwargs.update(spec.host_kwargs)
    return kwargs


def guidance_kwargs(
    spec: MethodSpec, config: StudyConfig, schedule: RunSchedule, predictor: str, unsup_weight: float
) -> dict[str, Any] | None:
    """``QualityReweightCallback`` arguments of a guided method (``None`` for a plain one)."""
    if spec.guidance is None:
        return None
    return {
        "predictor": predictor,
        "mechanisms": [spec.guidance],
        "tau": 0.5,
        "temperature": 2.0,
        "qw_weight": float(unsup_weight),
        "qw_warmup": float(schedule.unsup_warmup),
        "qw_ramp": float(schedule.unsup_ramp),
        "qar_weight": config.study_preset.qar_weight,
        "qar_warmup": float(schedule.qar_warmup),
        "qar_ramp": float(schedule.qar_ramp),
        "schedule_unit": "step",
        "check_alignment": True,
        "class_reduction": spec.class_reduction,
    }


def _read_metrics_csv(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Columns of a CSVLogger ``metrics.csv`` as ``{key: [(step, value), ...]}`` (empty cells skipped)."""
    out: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return out
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            step = row.get("step")
            if step in (None, ""):
                continue
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                out.setdefault(key, []).append((int(float(step)), number))
    return out


def _curve(series: Sequence[tuple[int, float]]) -> dict[str, list]:
    return {"step": [s for s, _ in series], "value": [v for _, v in series]}


def _test_metrics(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return _read_json(path).get("metrics")


def _extra_loader(folder: str, config: StudyConfig) -> DataLoader:
    """Every image/mask pair of another labeled folder, at the study's image size."""
    index = scan_folder(
        folder, num_classes=config.num_classes, in_channels=config.in_channels, mask_dir=config.mask_dir
    )
    dataset = SegmentationDataset(
        [index.image_paths[i] for i in index.ids],
        [index.mask_paths[i] for i in index.ids],
        ids=index.ids,
        in_channels=config.in_channels,
        num_classes=config.num_classes,
        transform=build_transforms("none", config.study_preset.image_size, in_channels=config.in_channels),
    )
    return DataLoader(dataset, batch_size=16, shuffle=False, num_workers=config.num_workers)


def _test_extra(
    trainer: L.Trainer,
    model: L.LightningModule,
    loaders: dict[str, DataLoader],
    run_dir: Path,
    which: str,
    ckpt: str | None = None,
) -> dict[str, Any]:
    """Test the model's current weights (``ckpt`` None) or a checkpoint on each extra folder; one report each."""
    out: dict[str, Any] = {}
    for name, loader in loaders.items():
        model.test_tag = f"extra_{name}_{which}"
        kwargs = {"ckpt_path": ckpt, "weights_only": True} if ckpt else {}
        trainer.test(model, dataloaders=loader, verbose=False, **kwargs)
        out[name] = _test_metrics(run_dir / f"test_metrics_extra_{name}_{which}.json")
    return out


def execute_run(
    spec: MethodSpec,
    seed: int,
    config: StudyConfig,
    schedule: RunSchedule,
    run_dir: Path,
    split_file: Path,
    predictor: str | None,
    true_masks: bool = False,
) -> dict[str, Any]:
    """Train one method with one seed, test the last weights and the best-validation checkpoint, and return
    the result dict (also written to ``run_dir / "result.json"`` by the caller).

    The seed sets model initialisation (``seed_everything``), data order and augmentation (the data module's
    ``seed``); the split is the study's ``split.json``. With ``true_masks`` the unlabeled batches carry the
    hidden masks of their images for analysis (PL-oracle's weights, the ``diag/*`` pseudolabel diagnostics);
    no other loss reads them. Each folder of ``config.extra_test`` is tested as well (all of its images).
    """
    preset = config.study_preset
    run_dir.mkdir(parents=True, exist_ok=True)
    kwargs = host_kwargs(spec, config, schedule)
    L.seed_everything(seed, workers=True, verbose=False)
    model = _host_class(spec)(**kwargs)
    unsup_weight = float(model.hparams.get("unsup_weight", 0.0))
    guide = None
    if spec.needs_true_masks and not true_masks:
        raise ValueError(
            f"Method {spec.name!r} needs the hidden masks of the unlabeled images, but this study's unlabeled "
            "images have none (external or ROOT/unlabeled images, or diagnostics=False)."
        )
    if spec.guidance is not None:
        if predictor is None:
            raise ValueError(f"Method {spec.name!r} needs a quality predictor, but the study has none.")
        guide = guidance_kwargs(spec, config, schedule, predictor, unsup_weight)
    dm = SemiSupervisedDataModule(
        **_data_kwargs(config, str(split_file)),
        use_unlabeled=spec.use_unlabeled,
        batch_size=preset.batch_size,
        unlabeled_batch_size=preset.unlabeled_batch_size,
        unlabeled_views=spec.unlabeled_views,
        unlabeled_true_masks=bool(true_masks and spec.use_unlabeled),
        seed=seed,
        num_workers=config.num_workers,
    )
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        monitor="val/dice",
        mode="max",
        save_top_k=1,
        save_last=False,
        save_weights_only=True,
        filename="best-{step:06d}",
    )
    callbacks: list[Any] = [checkpoint]
    if schedule.patience is not None:
        callbacks.append(EarlyStopping(monitor="val/dice", mode="max", patience=schedule.patience))
    if guide is not None:
        callbacks.append(QualityReweightCallback(**guide))
    trainer = L.Trainer(
        accelerator=config.accelerator,
        devices=1,
        precision=_precision(preset, config.accelerator),
        max_steps=schedule.max_steps,
        max_epochs=-1,
        val_check_interval=schedule.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        gradient_clip_val=preset.gradient_clip_val,
        logger=CSVLogger(save_dir=str(run_dir), name="", version=""),
        callbacks=callbacks,
        log_every_n_steps=preset.log_every_n_steps,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_time = time.perf_counter() - start
    if trainer.interrupted:
        raise KeyboardInterrupt(f"Run {spec.name} seed {seed} was interrupted.")
    steps = int(trainer.global_step)
    test_start = time.perf_counter()
    loaders = {Path(folder).name: _extra_loader(folder, config) for folder in config.extra_test}
    model.test_tag = "last"
    trainer.test(model, datamodule=dm, verbose=False)
    extra_last = _test_extra(trainer, model, loaders, run_dir, "last")  # before any checkpoint is loaded
    best_path = checkpoint.best_model_path
    extra_best: dict[str, Any] = {}
    if best_path:
        model.test_tag = "best"
        trainer.test(model, datamodule=dm, ckpt_path=best_path, verbose=False, weights_only=True)
        extra_best = _test_extra(trainer, model, loaders, run_dir, "best", best_path)
    extra = {
        name: {"n_images": len(loader.dataset), "last": extra_last[name], "best": extra_best.get(name)}
        for name, loader in loaders.items()
    }
    model.test_tag = ""
    test_time = time.perf_counter() - test_start
    series = _read_metrics_csv(run_dir / "metrics.csv")
    val = series.get("val/dice", [])
    best_step = None
    if val:
        best_value = max(v for _, v in val)
        best_step = next(s for s, v in val if v == best_value)
    result = {
        "format": RESULT_FORMAT,
        "method": spec.name,
        "seed": seed,
        "status": "done",
        "host": spec.host,
        "host_kwargs": kwargs,
        "guidance": guide,
        "data": {
            "use_unlabeled": spec.use_unlabeled,
            "unlabeled_views": spec.unlabeled_views,
            "batch_size": preset.batch_size,
            "unlabeled_batch_size": preset.unlabeled_batch_size,
            "seed": seed,
            "split": str(split_file),
            **dm.describe(),
        },
        "schedule": dataclasses.asdict(schedule),
        "pretrained": config.encoder_weights is not None,
        "steps": steps,
        "stopped_early": steps < schedule.max_steps,
        "best": {
            "step": best_step,
            "val_dice": float(checkpoint.best_model_score)
            if checkpoint.best_model_score is not None
            else None,
        },
        "test_best": _test_metrics(run_dir / "test_metrics_best.json"),
        "test_last": _test_metrics(run_dir / "test_metrics_last.json"),
        "extra_test": extra,
        "true_masks": bool(true_masks and spec.use_unlabeled),
        "diagnostics_curves": {
            key.split("/", 1)[1]: _curve(values) for key, values in series.items() if key.startswith("diag/")
        },
        "val_dice_curve": _curve(val),
        "kept_fraction_curve": _curve(series[_KEPT_KEY]) if _KEPT_KEY in series else None,
        "quality_alignment_curve": _curve(series["val/quality_alignment"])
        if "val/quality_alignment" in series
        else None,
        "fit_time_s": fit_time,
        "test_time_s": test_time,
        "finished_at": _now(),
    }
    if not config.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    del trainer, model, dm
    _free_memory()
    return result

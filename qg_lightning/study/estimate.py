"""Measured wall-time estimate of a study on this machine (``qg-lightning study --estimate``)."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from qg_lightning.data import SemiSupervisedDataModule
from qg_lightning.guidance import QualityReweightCallback
from qg_lightning.methods import SupervisedSegmenter
from qg_lightning.quality.estimate import estimate_predictor_time
from qg_lightning.quality.predictor import QualityPredictor
from qg_lightning.study._common import _free_memory, _json_safe, _now, _precision, _quiet
from qg_lightning.study.config import StudyConfig
from qg_lightning.study.methods import METHODS, MethodSpec
from qg_lightning.study.pipeline import _check_methods
from qg_lightning.study.presets import resolve_schedule, steps_per_epoch
from qg_lightning.study.runs import _host_class, guidance_kwargs, host_kwargs
from qg_lightning.study.stages import _data_kwargs, _make_split, study_predictor_data, study_recipe

log = logging.getLogger(__name__)


class _StepTimer(L.Callback):
    """Records the wall time and the process CPU time at the end of every training batch."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.times.append(time.perf_counter())
        self.cpu_times.append(time.process_time())


def _per_step(times: Sequence[float], warmup: int) -> float:
    gaps = np.diff(np.asarray(times))[warmup:]
    return float(np.median(gaps)) if gaps.size else math.nan


def estimate_study(
    config: StudyConfig,
    *,
    timed_steps: int = 4,
    warmup_steps: int = 2,
    target_s: float | None = None,
    registry: Mapping[str, MethodSpec] = METHODS,
) -> dict[str, Any]:
    """Measure step times on this machine and project the wall time of the whole study (nothing is kept).

    Each selected method trains ``warmup_steps + timed_steps + 1`` steps with its unsupervised and QAR weights
    on from the first step (an untrained predictor stands in for guided variants: the cost does not depend on
    its weights); the median time between batches after the warm-up is its step time. Every step of a run is
    projected at that time, although the hosts skip the unsupervised passes during the schedule's warm-up
    (``unsup_warmup`` steps, a tenth of a ``cpu`` run): the projection errs long by at most that share. One
    validation pass and one test pass (with HD95) of the supervised model, a few weak-model and predictor steps
    and one predictor validation pass are timed too. The projection:

    * runs: ``seeds x sum over methods of (max_steps x step time + validations x validation time + 2 x test
      time + setup)``;
    * the quality predictor: :func:`~qg_lightning.quality.estimate.estimate_predictor_time` of the study's
      recipe (snapshots, predictor, calibration and report).

    Process CPU times are recorded beside wall times (``*_cpu_s``): on a machine shared with other jobs the
    wall times are inflated, while single-threaded CPU seconds stay close to the work done.

    Args:
        config: the study to estimate.
        timed_steps: steps timed per method (after ``warmup_steps``).
        warmup_steps: untimed first steps.
        target_s: when given, also return ``suggested_budget``: the largest budget (in the preset's unit,
            for ``--budget``, which scales the schedule with :meth:`StudyPreset.scaled`) whose projection fits
            in ``target_s`` seconds (None when even the fixed costs do not fit).
        registry: method registry.

    Returns:
        ``{"per_method": {name: {"step_s", "step_cpu_s", "run_s", "run_cpu_s"}}, "validation_s", "test_s",
        "snapshots_s", "predictor_s", "runs_s", "runs_cpu_s", "total_s", "suggested_budget", "schedule",
        "data", ...}``.
    """
    import tempfile

    specs = _check_methods(config.methods, registry)
    preset = config.study_preset
    n = warmup_steps + timed_steps + 1
    setup_overhead_s = 5.0  # data set-up (folder check, decoding), model and trainer construction
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        tmp_path = Path(tmp)
        split = tmp_path / "split.json"
        data = _make_split(config, split)
        n_unlabeled = data["n_unlabeled_train"] + data["n_unlabeled_extra"]
        spe = steps_per_epoch(data["n_labeled"], n_unlabeled, preset.batch_size, preset.unlabeled_batch_size)
        schedule = resolve_schedule(preset, spe)
        predictor = QualityPredictor(
            backbone=preset.recipe.backbone, in_channels=config.in_channels, num_classes=config.num_classes
        )
        predictor_path = tmp_path / "predictor.ckpt"
        torch.save(
            {"state_dict": predictor.state_dict(), "hyper_parameters": dict(predictor.hparams)},
            predictor_path,
        )
        fake_config = dataclasses.replace(config, out=str(tmp_path))

        def trainer(max_steps: int, callbacks: list[Any], **extra: Any) -> Any:
            return L.Trainer(
                accelerator=config.accelerator,
                devices=1,
                precision=_precision(preset, config.accelerator),
                max_steps=max_steps,
                max_epochs=-1,
                limit_val_batches=0,
                num_sanity_val_steps=0,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=callbacks,
                default_root_dir=tmp,
                **extra,
            )

        # time the steps of a run past its warm-ups: the hosts skip the unsupervised forward passes (and the
        # predictor's) while the unsupervised weight is 0, so warm-up steps cost about a supervised step
        timed = dataclasses.replace(schedule, unsup_warmup=0, unsup_ramp=0, qar_warmup=0, qar_ramp=0)
        per_method: dict[str, dict[str, float]] = {}
        for spec in specs:
            L.seed_everything(0, workers=True, verbose=False)
            model = _host_class(spec)(**host_kwargs(spec, fake_config, timed))
            dm = SemiSupervisedDataModule(
                **_data_kwargs(config, str(split)),
                use_unlabeled=spec.use_unlabeled,
                batch_size=preset.batch_size,
                unlabeled_batch_size=preset.unlabeled_batch_size,
                unlabeled_views=spec.unlabeled_views,
                seed=0,
                num_workers=config.num_workers,
            )
            timer = _StepTimer()
            callbacks: list[Any] = [timer]
            guide = guidance_kwargs(spec, fake_config, timed, str(predictor_path), 0.25)
            if guide is not None:
                callbacks.append(QualityReweightCallback(**guide))
            trainer(n, callbacks).fit(model, datamodule=dm)
            step = _per_step(timer.times, warmup_steps)
            per_method[spec.name] = {"step_s": step, "step_cpu_s": _per_step(timer.cpu_times, warmup_steps)}
            log.info("[estimate] %s: %.3f s per step", spec.name, step)
            del model, dm
            _free_memory()

        dm = SemiSupervisedDataModule(
            **_data_kwargs(config, str(split)), use_unlabeled=False, batch_size=preset.batch_size, seed=0
        )
        model = SupervisedSegmenter(
            arch=preset.arch,
            encoder_name=preset.encoder_name,
            in_channels=config.in_channels,
            num_classes=config.num_classes,
        )
        t = L.Trainer(
            accelerator=config.accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp,
        )
        start, cpu = time.perf_counter(), time.process_time()
        t.validate(model, datamodule=dm, verbose=False)
        validation_s, validation_cpu_s = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        t.test(model, datamodule=dm, verbose=False)
        test_s, test_cpu_s = time.perf_counter() - start, time.process_time() - cpu

        # the quality predictor's recipe (snapshots, predictor, calibration and report), measured by the library
        need_predictor = any(s.guidance is not None for s in specs) and config.predictor is None
        phase1 = (
            estimate_predictor_time(
                study_recipe(config, max(1, data["n_labeled"])),
                study_predictor_data(config, split),
                accelerator=config.accelerator,
            )
            if need_predictor
            else None
        )

    n_seeds = len(config.seeds)
    runs_s = runs_cpu_s = 0.0
    per_step_sum = fixed_per_seed = 0.0  # total(S) = fixed + S * per_step_sum (for the suggested budget)
    for spec in specs:
        figures = per_method[spec.name]
        figures["run_s"] = (
            schedule.max_steps * figures["step_s"]
            + schedule.n_validations * validation_s
            + 2 * test_s
            + setup_overhead_s
        )
        figures["run_cpu_s"] = (
            schedule.max_steps * figures["step_cpu_s"]
            + schedule.n_validations * validation_cpu_s
            + 2 * test_cpu_s
            + setup_overhead_s
        )
        runs_s += figures["run_s"] * n_seeds
        runs_cpu_s += figures["run_cpu_s"] * n_seeds
        # --budget scales the validation interval too, so the number of validations stays the same
        per_step_sum += n_seeds * figures["step_s"]
        fixed_per_seed += n_seeds * (schedule.n_validations * validation_s + 2 * test_s + setup_overhead_s)
    phase1_s = phase1.seconds if phase1 is not None else 0.0
    total = runs_s + phase1_s
    suggested = None
    if target_s is not None:
        steps = int((target_s - phase1_s - fixed_per_seed) / per_step_sum)
        factor = schedule.steps_per_epoch if preset.unit == "epoch" else 1
        suggested = round(steps / factor, 2) if steps >= schedule.n_validations else None
    return _json_safe(
        {
            "per_method": per_method,
            "validation_s": validation_s,
            "validation_cpu_s": validation_cpu_s,
            "test_s": test_s,
            "test_cpu_s": test_cpu_s,
            "runs_cpu_s": runs_cpu_s,
            "target_s": target_s,
            "suggested_budget": suggested,
            "snapshots_s": phase1.stages.get("snapshots", 0.0) if phase1 is not None else 0.0,
            "predictor_s": (phase1_s - phase1.stages.get("snapshots", 0.0)) if phase1 is not None else 0.0,
            "predictor_estimate": phase1.describe() if phase1 is not None else None,
            "runs_s": runs_s,
            "total_s": total,
            "schedule": dataclasses.asdict(schedule),
            "data": data,
            "seeds": list(config.seeds),
            "methods": list(config.methods),
            "preset": preset.name,
            "torch_threads": torch.get_num_threads(),
            "measured_at": _now(),
        }
    )

"""The quality-guidance study: one command that measures, honestly, what quality guidance buys on your data.

``qg-lightning study`` (or ``python benchmarks/ssl_study.py``) runs the whole QG-SSL pipeline on a folder in
the standard layout (or the embedded synthetic data) and compares every selected semi-supervised method with
and without quality guidance, beside the supervised-only floor (METHOD.md, "Evaluation protocol"):

1. **split**: one seeded train / val / test split with a labeled subset of train, written to
   ``OUT/split.json`` and used by every later stage (a ``ROOT/split.json`` is respected; the labeled subset
   is drawn from its train ids);
2. **snapshots**: cross-fitted weak models, one :class:`~qg_lightning.methods.SupervisedSegmenter` per fold
   of the labeled set, saving snapshots (:class:`~qg_lightning.quality.snapshots.SnapshotCallback`);
3. **predictor**: a :class:`~qg_lightning.quality.predictor.QualityPredictor` trained on the labeled split
   only (:class:`~qg_lightning.quality.datamodule.QualityDataModule`, held-out snapshot masks), selected on
   validation loss;
4. **predictor evaluation**: test-split MAE / Pearson / Spearman on synthetic candidates and on the masks of
   the weak models (real candidates), via :mod:`qg_lightning.quality.evaluation` when it is installed;
5. **runs**: every method x seed, one at a time (to fit in memory): same seeds, data order and step budget
   for all methods; a guided variant differs from its plain host only by the
   :class:`~qg_lightning.guidance.QualityReweightCallback`. Each run tests the best-validation checkpoint
   and the last weights;
6. **summary**: ``OUT/summary.json``, ``OUT/results.md`` (one row per method, mean +- std over seeds,
   paired comparisons of each guided variant with its plain host) and PNG plots.

Every finished stage leaves a marker (``OUT/runs/<method>/seed<k>/result.json`` for runs), so rerunning the
same command resumes: finished stages are skipped, an interrupted run is redone from scratch. Seeds and
methods may be added to a finished study; other settings must stay the same (``OUT/study.json``).

Model selection uses the validation split only; the test split is only ever read by ``trainer.test``.

Example:
    >>> sorted(PRESETS)
    ['cpu', 'paper', 'smoke']
    >>> [m for m in DEFAULT_METHODS]
    ['SUP', 'PL-T', 'PL-C', 'PL-QW', 'QAR', 'MT', 'MT-QW', 'FixMatch', 'FixMatch-QW']
    >>> resolve_schedule(PRESETS["paper"], steps_per_epoch=25).max_steps
    5000
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import gc
import inspect
import io
import json
import logging
import math
import os
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger

from qg_lightning import methods
from qg_lightning.callbacks import ModelCheckpoint
from qg_lightning.checkpoint import atomic_save, load_checkpoint
from qg_lightning.data import SemiSupervisedDataModule
from qg_lightning.guidance import QualityReweightCallback
from qg_lightning.methods import SupervisedSegmenter
from qg_lightning.quality.datamodule import QUALITY_CATEGORIES, QualityDataModule
from qg_lightning.quality.predictor import QualityPredictor, load_quality_predictor
from qg_lightning.quality.snapshots import SnapshotCallback

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "PAIRS",
    "PRESETS",
    "MethodSpec",
    "RunSchedule",
    "StudyConfig",
    "StudyPreset",
    "estimate_study",
    "execute_run",
    "format_mean_std",
    "guidance_kwargs",
    "host_kwargs",
    "paired_comparison",
    "plot_study",
    "resolve_schedule",
    "run_study",
    "steps_per_epoch",
    "study_cli",
    "summarize_study",
    "write_results_markdown",
]

log = logging.getLogger(__name__)

RESULT_FORMAT = "qg_lightning.study.run/1"
SUMMARY_FORMAT = "qg_lightning.study.summary/1"
Guidance = Literal["qw", "qar"]
Views = Literal["weak", "weak_strong"]
Unit = Literal["step", "epoch"]
_KEPT_KEY = "train/frac_q_above_tau"
_NOISY_WARNINGS = (
    ".*does not have many workers.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
    ".*The number of training batches.*is smaller than the logging interval.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*You called `self.log\\(.*\\)` but have no logger configured.*",
    ".*Experiment logs directory .* exists and is not empty.*",
)


# ================================================================================================ methods
@dataclass(frozen=True)
class MethodSpec:
    """How one method of the study is built: a host from :mod:`qg_lightning.methods`, its settings, and the
    quality guidance (if any) attached through :class:`~qg_lightning.guidance.QualityReweightCallback`.

    Attributes:
        name: the method's name in tables (``"PL-QW"``).
        host: class name in :mod:`qg_lightning.methods` (``"PseudoLabelSegmenter"``).
        host_kwargs: host arguments specific to the method (e.g. ``{"weighting": "confidence"}``); the study
            adds the shared ones (architecture, optimiser, schedules).
        guidance: ``None`` (plain), ``"qw"`` (quality-weighted unsupervised loss) or ``"qar"`` (QAR).
        use_unlabeled: ``False`` for the supervised-only floor.
        unlabeled_views: ``"weak"`` or ``"weak_strong"`` (FixMatch / Mean Teacher students see a strong view).
        description: one line for the results.
    """

    name: str
    host: str
    host_kwargs: Mapping[str, Any] = field(default_factory=dict)
    guidance: Guidance | None = None
    use_unlabeled: bool = True
    unlabeled_views: Views = "weak"
    description: str = ""

    def __post_init__(self) -> None:
        if self.guidance not in (None, *get_args(Guidance)):
            raise ValueError(
                f"`guidance` of method {self.name!r} must be None, 'qw' or 'qar', got {self.guidance!r}."
            )
        if self.unlabeled_views not in get_args(Views):
            raise ValueError(
                f"`unlabeled_views` of method {self.name!r} must be 'weak' or 'weak_strong', "
                f"got {self.unlabeled_views!r}."
            )


def _spec(
    name: str,
    host: str,
    description: str,
    guidance: Guidance | None = None,
    views: Views = "weak",
    use_unlabeled: bool = True,
    **host_kwargs: Any,
) -> MethodSpec:
    return MethodSpec(
        name, host, MappingProxyType(dict(host_kwargs)), guidance, use_unlabeled, views, description
    )


#: The method registry (read-only). Pass your own mapping to :func:`run_study` to add methods.
METHODS: Mapping[str, MethodSpec] = MappingProxyType(
    {
        "SUP": _spec(
            "SUP", "SupervisedSegmenter", "supervised only (labeled images), the floor", use_unlabeled=False
        ),
        "PL": _spec(
            "PL",
            "PseudoLabelSegmenter",
            "EMA-teacher pseudolabels, every pseudolabel counts",
            weighting="none",
        ),
        "PL-T": _spec(
            "PL-T",
            "PseudoLabelSegmenter",
            "pseudolabels, pixels with teacher confidence >= 0.9",
            weighting="threshold",
        ),
        "PL-C": _spec(
            "PL-C",
            "PseudoLabelSegmenter",
            "pseudolabels weighted by mean teacher confidence",
            weighting="confidence",
        ),
        "PL-QW": _spec(
            "PL-QW",
            "PseudoLabelSegmenter",
            "pseudolabels weighted by predicted quality (the method)",
            guidance="qw",
            weighting="none",
        ),
        "QAR": _spec(
            "QAR",
            "QARSegmenter",
            "supervised + quality-aware regularisation on unlabeled images",
            guidance="qar",
            unsup_weight=0.0,
        ),
        "MT": _spec(
            "MT",
            "MeanTeacherSegmenter",
            "Mean Teacher consistency (weak -> strong view)",
            views="weak_strong",
        ),
        "MT-QW": _spec(
            "MT-QW",
            "MeanTeacherSegmenter",
            "Mean Teacher, consistency weighted by predicted quality",
            guidance="qw",
            views="weak_strong",
        ),
        "FixMatch": _spec(
            "FixMatch", "FixMatchSegmenter", "FixMatch weak-to-strong pseudolabels", views="weak_strong"
        ),
        "FixMatch-QW": _spec(
            "FixMatch-QW",
            "FixMatchSegmenter",
            "FixMatch, pseudolabels weighted by predicted quality",
            guidance="qw",
            views="weak_strong",
        ),
        "CPS": _spec("CPS", "CPSSegmenter", "cross pseudo supervision (two networks)"),
        "CPS-QW": _spec(
            "CPS-QW", "CPSSegmenter", "CPS, pseudolabels weighted by predicted quality", guidance="qw"
        ),
    }
)

#: The default method set of the study (issue 5): the floor, three pseudo-labelling baselines, the two
#: mechanisms, and two more hosts with and without quality weights.
DEFAULT_METHODS: tuple[str, ...] = (
    "SUP",
    "PL-T",
    "PL-C",
    "PL-QW",
    "QAR",
    "MT",
    "MT-QW",
    "FixMatch",
    "FixMatch-QW",
)

#: ``(plain host, guided variant)`` pairs compared over seeds; PL-C -> PL-QW is the key comparison.
PAIRS: tuple[tuple[str, str], ...] = (
    ("PL-C", "PL-QW"),
    ("PL-T", "PL-QW"),
    ("PL", "PL-QW"),
    ("SUP", "QAR"),
    ("MT", "MT-QW"),
    ("FixMatch", "FixMatch-QW"),
    ("CPS", "CPS-QW"),
)


# ================================================================================================ presets
@dataclass(frozen=True)
class StudyPreset:
    """Scale of a study: image size, networks, step budget, schedules, snapshot and predictor training.

    Time quantities of the SSL runs (``budget``, ``val_every``, ``unsup_*``, ``qar_*``) are in ``unit``:
    ``"step"`` (optimizer steps) or ``"epoch"`` (passes over the longer of the labeled and unlabeled loaders,
    as in the paper); :func:`resolve_schedule` turns them into steps, so every method, the supervised floor
    included, trains for the same number of optimizer steps.

    Attributes:
        name: preset name.
        description: one line for the results.
        image_size: network input side in pixels.
        arch: smp architecture of the segmenters. encoder_name: its encoder.
        batch_size: labeled batch size. unlabeled_batch_size: unlabeled batch size.
        lr, weight_decay, min_lr: AdamW and the cosine floor of the segmenters.
        precision: Lightning precision on a GPU (a CPU always runs ``"32-true"``).
        gradient_clip_val: gradient clipping (1.0 in the paper).
        unit: time unit of the SSL schedule fields below.
        budget: training length. val_every: validation interval.
        patience: early stopping after this many validations without a better validation Dice (None = off).
        unsup_warmup, unsup_ramp: the hosts' unsupervised-weight ramp (and the logged PL-QW weight).
        qar_weight, qar_warmup, qar_ramp: the QAR weight schedule.
        ema_decay: final EMA teacher decay. ema_warmup_steps: optimizer steps of its ramp from 0.5.
        log_every_n_steps: training-metric logging interval (kept-fraction curve resolution).
        snapshot_folds: cross-fitted weak models (folds of the labeled set).
        snapshot_epochs: epochs after which each weak model is saved; it trains for the largest.
        snapshot_batch_size, snapshot_lr, snapshot_arch, snapshot_encoder: weak-model training (METHOD.md:
            U-Net, ResNet-18, Adam 1e-3, batch 16).
        predictor_backbone: quality predictor backbone.
        predictor_epochs: maximum predictor epochs. predictor_patience: early stopping on validation loss.
        predictor_samples_per_image: candidates per labeled image per epoch (K).
        predictor_batch_size: predictor batch size. p_weak: probability of a snapshot mask.
        synthetic_images, synthetic_size: the embedded synthetic dataset used with ``root=None``.
        default_labeled_fraction: labeled fraction when neither ``n_labeled`` nor a fraction is given.
    """

    name: str
    description: str
    image_size: int
    arch: str = "Unet"
    encoder_name: str = "resnet18"
    batch_size: int = 8
    unlabeled_batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    min_lr: float = 1e-5
    precision: str = "32-true"
    gradient_clip_val: float = 1.0
    unit: Unit = "step"
    budget: float = 140
    val_every: float = 20
    patience: int | None = None
    unsup_warmup: float = 28
    unsup_ramp: float = 28
    qar_weight: float = 0.01
    qar_warmup: float = 42
    qar_ramp: float = 28
    ema_decay: float = 0.99
    ema_warmup_steps: int = 28
    log_every_n_steps: int = 5
    snapshot_folds: int = 3
    snapshot_epochs: tuple[int, ...] = (1, 3, 5, 10, 15, 20)
    snapshot_batch_size: int = 8
    snapshot_lr: float = 1e-3
    snapshot_arch: str = "Unet"
    snapshot_encoder: str = "resnet18"
    predictor_backbone: str = "resnet18"
    predictor_epochs: int = 8
    predictor_patience: int | None = None
    predictor_samples_per_image: int = 20
    predictor_batch_size: int = 32
    p_weak: float = 0.5
    synthetic_images: int = 300
    synthetic_size: int = 128
    default_labeled_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "batch_size",
            "unlabeled_batch_size",
            "log_every_n_steps",
            "snapshot_folds",
            "snapshot_batch_size",
            "predictor_epochs",
            "predictor_samples_per_image",
            "predictor_batch_size",
            "synthetic_images",
            "synthetic_size",
            "ema_warmup_steps",
        ):
            value = getattr(self, name)
            low = 2 if name == "snapshot_folds" else (0 if name == "ema_warmup_steps" else 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`StudyPreset.{name}` must be an integer >= {low}, got {value!r}.")
        if self.unit not in get_args(Unit):
            raise ValueError(f"`StudyPreset.unit` must be 'step' or 'epoch', got {self.unit!r}.")
        for name in ("budget", "val_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"`StudyPreset.{name}` must be a number > 0, got {value!r}.")
        for name in (
            "unsup_warmup",
            "unsup_ramp",
            "qar_weight",
            "qar_warmup",
            "qar_ramp",
            "lr",
            "min_lr",
            "weight_decay",
            "gradient_clip_val",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"`StudyPreset.{name}` must be a number >= 0, got {value!r}.")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"`StudyPreset.ema_decay` must be in [0, 1), got {self.ema_decay!r}.")
        if not 0 <= self.p_weak <= 1:
            raise ValueError(f"`StudyPreset.p_weak` must be in [0, 1], got {self.p_weak!r}.")
        if not self.snapshot_epochs or min(self.snapshot_epochs) < 1:
            raise ValueError(
                f"`StudyPreset.snapshot_epochs` must be epochs >= 1, got {self.snapshot_epochs!r}."
            )
        if not 0 < self.default_labeled_fraction <= 1:
            raise ValueError(
                "`StudyPreset.default_labeled_fraction` must be in (0, 1], got "
                f"{self.default_labeled_fraction!r}."
            )
        for name in ("patience", "predictor_patience"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`StudyPreset.{name}` must be None or an integer >= 1, got {value!r}.")

    def replace(self, **changes: Any) -> StudyPreset:
        """A copy with some fields changed (validated again).

        Example:
            >>> PRESETS["cpu"].replace(budget=60, val_every=20).budget
            60
        """
        names = sorted(f.name for f in dataclasses.fields(self))
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ValueError(f"Unknown preset field(s) {unknown}; valid fields: {names}.")
        return dataclasses.replace(self, **changes)

    def scaled(self, budget: float) -> StudyPreset:
        """A copy with a new ``budget`` and every other schedule length (validation interval, warm-ups,
        ramps, EMA warm-up) scaled by the same factor, so the schedule keeps its shape.

        Example:
            >>> p = PRESETS["cpu"].scaled(280)
            >>> p.budget, p.val_every, p.unsup_warmup, p.ema_warmup_steps
            (280, 40.0, 56.0, 56)
        """
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
            raise ValueError(f"`budget` must be a number > 0, got {budget!r}.")
        f = budget / self.budget
        return self.replace(
            budget=budget,
            val_every=self.val_every * f,
            unsup_warmup=self.unsup_warmup * f,
            unsup_ramp=self.unsup_ramp * f,
            qar_warmup=self.qar_warmup * f,
            qar_ramp=self.qar_ramp * f,
            ema_warmup_steps=int(round(self.ema_warmup_steps * f)),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        out = dataclasses.asdict(self)
        out["snapshot_epochs"] = list(self.snapshot_epochs)
        return out


#: Scale presets. ``smoke`` is for the test suite (seconds), ``cpu`` for a 2-core machine (about 90 minutes
#: for the default methods x 3 seeds on Kvasir-SEG; see ``estimate_study``), ``paper`` for a GPU (METHOD.md).
PRESETS: Mapping[str, StudyPreset] = MappingProxyType(
    {
        "smoke": StudyPreset(
            name="smoke",
            description="tiny end-to-end check (32 px, 3 steps per run); numbers mean nothing",
            image_size=32,
            encoder_name="mobilenet_v2",
            snapshot_encoder="mobilenet_v2",
            batch_size=2,
            unlabeled_batch_size=2,
            budget=3,
            val_every=3,
            unsup_warmup=0,
            unsup_ramp=0,
            qar_warmup=0,
            qar_ramp=0,
            ema_warmup_steps=1,
            log_every_n_steps=1,
            snapshot_folds=2,
            snapshot_epochs=(1,),
            snapshot_batch_size=2,
            predictor_epochs=1,
            predictor_samples_per_image=2,
            predictor_batch_size=8,
            synthetic_images=24,
            synthetic_size=32,
            default_labeled_fraction=0.25,
        ),
        "cpu": StudyPreset(
            name="cpu",
            description="2-core CPU scale: 96 px, U-Net/ResNet-18 from scratch, 140 optimizer steps per run",
            image_size=96,
            batch_size=8,
            unlabeled_batch_size=8,
            budget=140,
            val_every=20,
            unsup_warmup=28,
            unsup_ramp=28,
            qar_warmup=42,
            qar_ramp=28,
            ema_decay=0.99,
            ema_warmup_steps=28,
            snapshot_folds=3,
            snapshot_epochs=(1, 3, 5, 10, 15, 20),
            predictor_epochs=24,
            predictor_samples_per_image=20,
        ),
        "paper": StudyPreset(
            name="paper",
            description="paper scale for a GPU: 224 px, U-Net++/ResNet-34, 200 epochs, batches 32 + 64",
            image_size=224,
            arch="UnetPlusPlus",
            encoder_name="resnet34",
            batch_size=32,
            unlabeled_batch_size=64,
            lr=1e-4,
            weight_decay=1e-4,
            min_lr=1e-6,
            precision="16-mixed",
            unit="epoch",
            budget=200,
            val_every=1,
            patience=30,
            unsup_warmup=15,
            unsup_ramp=30,
            qar_warmup=30,
            qar_ramp=40,
            ema_decay=0.999,
            ema_warmup_steps=1000,
            log_every_n_steps=10,
            snapshot_folds=5,
            snapshot_batch_size=16,
            predictor_epochs=150,
            predictor_patience=25,
            predictor_samples_per_image=50,
        ),
    }
)


@dataclass(frozen=True)
class RunSchedule:
    """A preset's SSL schedule in optimizer steps (what every run of a study uses).

    Attributes:
        max_steps: optimizer steps per run (a multiple of ``val_every``).
        val_every: validation interval in steps.
        patience: early stopping patience in validations (None = off).
        unsup_warmup, unsup_ramp: unsupervised-weight ramp in steps.
        qar_warmup, qar_ramp: QAR-weight ramp in steps.
        ema_warmup_steps: EMA decay ramp in steps.
        steps_per_epoch: steps of one pass over the longer training loader (for reference).
    """

    max_steps: int
    val_every: int
    patience: int | None
    unsup_warmup: int
    unsup_ramp: int
    qar_warmup: int
    qar_ramp: int
    ema_warmup_steps: int
    steps_per_epoch: int

    @property
    def n_validations(self) -> int:
        """Validations per run (without early stopping)."""
        return self.max_steps // self.val_every


def steps_per_epoch(n_labeled: int, n_unlabeled: int, batch_size: int, unlabeled_batch_size: int) -> int:
    """Optimizer steps of one training epoch of ``SemiSupervisedDataModule`` (``max_size_cycle``: the longer
    loader sets the length; a loader drops its last partial batch when it has more samples than one batch).

    Example:
        >>> steps_per_epoch(45, 403, 8, 16)
        25
    """

    def batches(n: int, bs: int) -> int:
        return n // bs if n > bs else (1 if n > 0 else 0)

    return max(1, batches(n_labeled, batch_size), batches(n_unlabeled, unlabeled_batch_size))


def resolve_schedule(preset: StudyPreset, steps_per_epoch: int) -> RunSchedule:
    """Turn a preset's schedule into optimizer steps.

    Args:
        preset: the study preset.
        steps_per_epoch: steps of one epoch of the SSL data (see :func:`steps_per_epoch`); only used when
            ``preset.unit == "epoch"``.

    Example:
        >>> s = resolve_schedule(PRESETS["cpu"], steps_per_epoch=50)
        >>> s.max_steps, s.val_every, s.unsup_warmup, s.n_validations
        (140, 20, 28, 7)
    """
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"`steps_per_epoch` must be an integer >= 1, got {steps_per_epoch!r}.")
    f = steps_per_epoch if preset.unit == "epoch" else 1

    def steps(value: float) -> int:
        return int(round(value * f))

    val_every = max(1, steps(preset.val_every))
    max_steps = max(val_every, int(math.ceil(preset.budget * f / val_every)) * val_every)
    return RunSchedule(
        max_steps=max_steps,
        val_every=val_every,
        patience=preset.patience,
        unsup_warmup=steps(preset.unsup_warmup),
        unsup_ramp=steps(preset.unsup_ramp),
        qar_warmup=steps(preset.qar_warmup),
        qar_ramp=steps(preset.qar_ramp),
        ema_warmup_steps=preset.ema_warmup_steps,
        steps_per_epoch=steps_per_epoch,
    )


# ================================================================================================ config
@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study.

    Attributes:
        out: results folder (created; reused to resume).
        root: dataset folder in the standard layout, or ``None`` for the embedded synthetic data.
        n_labeled: labeled training images (not with ``labeled_fraction``).
        labeled_fraction: labeled fraction of the training split; with neither set,
            ``preset.default_labeled_fraction``.
        seeds: run seeds; seed ``k`` sets model initialisation, data order and augmentation of every method.
        preset: the :class:`StudyPreset` (or its name).
        methods: method names from the registry, run in this order.
        split_seed: seed of the split, the snapshot folds and the predictor data (the same for every run).
        val_fraction, test_fraction: fractions of a generated split.
        in_channels, num_classes: image channels and classes (K, background included).
        encoder_weights: segmenter encoder weights (``None`` = random init, the default; e.g.
            ``"imagenet"`` if cached). The predictor backbone is pretrained exactly when this is set.
        predictor: an existing quality predictor checkpoint to use instead of training one (skips snapshots,
            predictor training and its evaluation).
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``).
        num_workers: DataLoader workers of the segmentation runs.
        keep_checkpoints: keep each run's ``checkpoints/`` (best and last; large) after testing.
    """

    out: str
    root: str | None = None
    n_labeled: int | None = None
    labeled_fraction: float | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    preset: StudyPreset | str = "cpu"
    methods: tuple[str, ...] = DEFAULT_METHODS
    split_seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    in_channels: int = 3
    num_classes: int = 2
    encoder_weights: str | None = None
    predictor: str | None = None
    accelerator: str = "auto"
    num_workers: int = 0
    keep_checkpoints: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.preset, str):
            if self.preset not in PRESETS:
                raise ValueError(
                    f"`preset` must be one of {sorted(PRESETS)} or a StudyPreset, got {self.preset!r}."
                )
            object.__setattr__(self, "preset", PRESETS[self.preset])
        elif not isinstance(self.preset, StudyPreset):
            raise TypeError(
                f"`preset` must be a preset name or a StudyPreset, got {type(self.preset).__name__}."
            )
        if self.n_labeled is not None and self.labeled_fraction is not None:
            raise ValueError(
                f"Set only one of `n_labeled` ({self.n_labeled}) and `labeled_fraction` "
                f"({self.labeled_fraction})."
            )
        if self.n_labeled is not None and (
            isinstance(self.n_labeled, bool) or not isinstance(self.n_labeled, int) or self.n_labeled < 1
        ):
            raise ValueError(f"`n_labeled` must be an integer >= 1, got {self.n_labeled!r}.")
        if self.labeled_fraction is not None and not 0 < self.labeled_fraction <= 1:
            raise ValueError(f"`labeled_fraction` must be in (0, 1], got {self.labeled_fraction!r}.")
        seeds = tuple(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
            raise ValueError(f"`seeds` must be a non-empty list of integers, got {self.seeds!r}.")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"`seeds` has duplicates: {list(seeds)}.")
        object.__setattr__(self, "seeds", seeds)
        methods = tuple(self.methods)
        if not methods or len(set(methods)) != len(methods):
            raise ValueError(f"`methods` must be a non-empty list without duplicates, got {list(methods)}.")
        object.__setattr__(self, "methods", methods)
        if self.root is not None and not Path(self.root).expanduser().is_dir():
            raise FileNotFoundError(
                f"Dataset folder `root`='{self.root}' does not exist. Pass a folder in the standard layout "
                "(images/, masks/) or use the embedded synthetic data (root=None / --synthetic)."
            )
        if self.predictor is not None and not Path(self.predictor).is_file():
            raise FileNotFoundError(
                f"Quality predictor checkpoint `predictor`='{self.predictor}' does not exist."
            )

    @property
    def study_preset(self) -> StudyPreset:
        """The resolved preset."""
        assert isinstance(self.preset, StudyPreset)  # resolved in __post_init__
        return self.preset

    @property
    def labeled(self) -> dict[str, Any]:
        """``{"n_labeled": ..., "labeled_fraction": ...}`` as used for the split."""
        if self.n_labeled is None and self.labeled_fraction is None:
            return {"n_labeled": None, "labeled_fraction": self.study_preset.default_labeled_fraction}
        return {"n_labeled": self.n_labeled, "labeled_fraction": self.labeled_fraction}

    def fingerprint(self) -> dict[str, Any]:
        """Settings that must not change when a study is resumed (seeds and methods may grow)."""
        return {
            "root": str(Path(self.root).expanduser().resolve()) if self.root is not None else None,
            **self.labeled,
            "split_seed": self.split_seed,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "encoder_weights": self.encoder_weights,
            "predictor": str(Path(self.predictor).resolve()) if self.predictor is not None else None,
            "preset": self.study_preset.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (what ``OUT/study.json`` holds)."""
        return {
            "fingerprint": self.fingerprint(),
            "seeds": list(self.seeds),
            "methods": list(self.methods),
            "accelerator": self.accelerator,
            "num_workers": self.num_workers,
            "keep_checkpoints": self.keep_checkpoints,
        }


# ================================================================================================ helpers
def _environment() -> dict[str, Any]:
    """Machine and library versions, recorded with the results."""
    import platform

    import lightning

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # 0-d tensors
        return _json_safe(obj.item())
    return obj


def _write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Lightning's chatty info logs and known harmless warnings inside a stage."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _NOISY_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _precision(preset: StudyPreset, accelerator: str) -> str:
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return preset.precision if on_gpu else "32-true"


class _Progress:
    """One log line per finished stage, with the elapsed time and an ETA from the runs finished so far."""

    def __init__(self, total_runs: int) -> None:
        self.start = time.perf_counter()
        self.total_runs = total_runs
        self.done_runs = 0
        self.durations: dict[str, list[float]] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self, remaining: Sequence[str]) -> float | None:
        all_durations = [d for ds in self.durations.values() for d in ds]
        if not all_durations:
            return None
        fallback = float(np.mean(all_durations))
        return float(sum(np.mean(self.durations[m]) if m in self.durations else fallback for m in remaining))

    def stage(self, message: str, remaining: Sequence[str] = ()) -> None:
        eta = self.eta(remaining) if remaining else (0.0 if self.done_runs >= self.total_runs else None)
        log.info("[study %s] %s | ETA %s", _fmt_duration(self.elapsed()), message, _fmt_duration(eta))

    def run_finished(self, method: str, seconds: float | None) -> None:
        self.done_runs += 1
        if seconds is not None:
            self.durations.setdefault(method, []).append(seconds)


# ================================================================================================ stages
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
    _write_json(work / "done.json", info)
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
    _write_json(folder / "predictor.json", info)
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


# ================================================================================================ runs
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


def execute_run(
    spec: MethodSpec,
    seed: int,
    config: StudyConfig,
    schedule: RunSchedule,
    run_dir: Path,
    split_file: Path,
    predictor: str | None,
) -> dict[str, Any]:
    """Train one method with one seed, test the last weights and the best-validation checkpoint, and return
    the result dict (also written to ``run_dir / "result.json"`` by the caller).

    The seed sets model initialisation (``seed_everything``), data order and augmentation (the data module's
    ``seed``); the split is the study's ``split.json``.
    """
    preset = config.study_preset
    run_dir.mkdir(parents=True, exist_ok=True)
    kwargs = host_kwargs(spec, config, schedule)
    L.seed_everything(seed, workers=True, verbose=False)
    model = _host_class(spec)(**kwargs)
    unsup_weight = float(model.hparams.get("unsup_weight", 0.0))
    guide = None
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
    model.test_tag = "last"
    trainer.test(model, datamodule=dm, verbose=False)
    best_path = checkpoint.best_model_path
    if best_path:
        model.test_tag = "best"
        trainer.test(model, datamodule=dm, ckpt_path=best_path, verbose=False, weights_only=True)
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


# ================================================================================================ pipeline
def _check_methods(names: Sequence[str], registry: Mapping[str, MethodSpec]) -> list[MethodSpec]:
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; available: {list(registry)}.")
    return [registry[n] for n in names]


def _check_resume(out: Path, config: StudyConfig) -> None:
    path = out / "study.json"
    if not path.is_file():
        return
    stored = _read_json(path).get("fingerprint")
    current = _json_safe(config.fingerprint())
    if stored != current:
        changed = sorted(
            k for k in set(stored or {}) | set(current) if (stored or {}).get(k) != current.get(k)
        )
        raise ValueError(
            f"'{out}' holds a study with other settings (differing: {changed}). Resume it with the same "
            "settings (seeds and methods may be added), or choose another --out folder."
        )


def run_study(
    config: StudyConfig,
    *,
    registry: Mapping[str, MethodSpec] = METHODS,
    pairs: Sequence[tuple[str, str]] = PAIRS,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) a study and return its summary (see :func:`summarize_study`).

    Args:
        config: the study settings.
        registry: method registry (default :data:`METHODS`).
        pairs: ``(plain, guided)`` pairs compared over seeds (default :data:`PAIRS`).
        command: the command line that started the study, recorded in ``study.json`` and ``results.md``.

    Returns:
        The summary dict, with ``"execution"``: counts of runs ``done`` (this call), ``skipped`` (finished
        before), ``redone`` (interrupted before, trained again) and ``failed`` (with their errors).

    Raises:
        ValueError: unknown methods, or ``config.out`` holds a study with other settings.
    """
    specs = _check_methods(config.methods, registry)
    out = Path(config.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, config)
    record = config.to_dict()
    record["environment"] = _environment()
    if command is not None:
        record["command"] = command
    if (out / "study.json").is_file():  # a resumed study may add seeds and methods
        stored = _read_json(out / "study.json")
        record["seeds"] = sorted(set(stored.get("seeds", [])) | set(record["seeds"]))
        record["methods"] = list(dict.fromkeys([*stored.get("methods", []), *record["methods"]]))
    _write_json(out / "study.json", {**record, "updated_at": _now()})
    preset = config.study_preset
    plan = [(seed, spec) for seed in config.seeds for spec in specs]  # seed-major: complete pairs first
    progress = _Progress(total_runs=len(plan))
    need_predictor = any(s.guidance is not None for s in specs)

    with _quiet():
        split_path = out / "split.json"
        if split_path.is_file():
            data = _describe_data(config, split_path)
            progress.stage(f"split: reusing {split_path}")
        else:
            data = _make_split(config, split_path)
            progress.stage(
                f"split: {data['n_train']} train ({data['n_labeled']} labeled, {data['n_unlabeled_train']} "
                f"unlabeled + {data['n_unlabeled_extra']} extra), {data['n_val']} val, {data['n_test']} test "
                f"-> {split_path}"
            )
        n_unlabeled = data["n_unlabeled_train"] + data["n_unlabeled_extra"]
        spe = steps_per_epoch(data["n_labeled"], n_unlabeled, preset.batch_size, preset.unlabeled_batch_size)
        schedule = resolve_schedule(preset, spe)

        predictor_path: str | None = config.predictor
        if need_predictor and predictor_path is None:
            for fold in range(preset.snapshot_folds):
                done = out / "snapshots" / f"fold{fold}" / "done.json"
                if done.is_file():
                    progress.stage(f"snapshots fold {fold + 1}/{preset.snapshot_folds}: already done")
                    continue
                for stale in (out / "snapshots").glob(f"snapshot_fold{fold}_epoch*.pt"):
                    stale.unlink()
                info = _train_snapshots(config, out, fold)
                progress.stage(
                    f"snapshots fold {fold + 1}/{preset.snapshot_folds}: weak model on {info['n_train']} "
                    f"images, {info['steps']} steps, {len(info['snapshots'])} snapshots in "
                    f"{_fmt_duration(info['wall_time_s'])}"
                )
            info_path = out / "predictor" / "predictor.json"
            if info_path.is_file():
                info = _read_json(info_path)
                progress.stage(f"predictor: already trained ({info['checkpoint']})")
            else:
                info = _train_predictor(config, out)
                t = info["test_synthetic"]
                progress.stage(
                    f"predictor: {info['epochs']} epochs in {_fmt_duration(info['wall_time_s'])}; test "
                    f"(synthetic candidates) MAE {t.get('mae', math.nan):.3f}, Pearson "
                    f"{t.get('pearson', math.nan):.3f}, Spearman {t.get('spearman', math.nan):.3f}"
                )
            predictor_path = info["checkpoint"]
            eval_path = out / "predictor" / "evaluation_status.json"
            if not eval_path.is_file() or _read_json(eval_path).get("status") != "done":
                status = _evaluate_predictor(config, out, Path(predictor_path))
                _write_json(eval_path, status)
                progress.stage(f"predictor evaluation: {status['status']}")
            else:
                progress.stage("predictor evaluation: already done")

        execution: dict[str, Any] = {"done": 0, "skipped": 0, "redone": 0, "failed": []}
        for index, (seed, spec) in enumerate(plan):
            run_dir = out / "runs" / spec.name / f"seed{seed}"
            remaining = [
                s.name
                for k, s in plan[index + 1 :]
                if not (out / "runs" / s.name / f"seed{k}" / "result.json").is_file()
            ]
            result_path = run_dir / "result.json"
            if result_path.is_file():
                execution["skipped"] += 1
                progress.run_finished(spec.name, None)
                continue
            if run_dir.exists():
                shutil.rmtree(run_dir)  # an interrupted or failed run: redo from scratch
                execution["redone"] += 1
            start = time.perf_counter()
            try:
                result = execute_run(spec, seed, config, schedule, run_dir, split_path, predictor_path)
            except KeyboardInterrupt:
                raise
            except Exception as err:  # one failing method must not lose the others; recorded and reported
                log.error("Run %s seed %d failed: %s", spec.name, seed, err, exc_info=True)
                _write_json(
                    run_dir / "error.json",
                    {
                        "method": spec.name,
                        "seed": seed,
                        "error": repr(err),
                        "traceback": traceback.format_exc(),
                        "at": _now(),
                    },
                )
                execution["failed"].append({"method": spec.name, "seed": seed, "error": repr(err)})
                progress.run_finished(spec.name, time.perf_counter() - start)
                continue
            result["wall_time_s"] = time.perf_counter() - start
            _write_json(result_path, result)
            execution["done"] += 1
            progress.run_finished(spec.name, result["wall_time_s"])
            best = (result["test_best"] or {}).get("dice", {}).get("mean", math.nan)
            last = (result["test_last"] or {}).get("dice", {}).get("mean", math.nan)
            progress.stage(
                f"run {progress.done_runs}/{progress.total_runs} {spec.name} seed {seed}: test Dice "
                f"{best:.3f} (best val) / {last:.3f} (last), {result['steps']} steps in "
                f"{_fmt_duration(result['wall_time_s'])}",
                remaining,
            )
        if execution["skipped"]:
            progress.stage(f"runs: {execution['skipped']} finished run(s) skipped (resumed study)")

        summary = summarize_study(out, methods=record["methods"], pairs=pairs)
    summary["execution"] = execution
    summary["elapsed_s"] = progress.elapsed()
    _write_json(out / "summary.json", summary)
    progress.stage(f"summary: {out / 'results.md'}")
    return summary


# ================================================================================================ summary
def format_mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``"0.812 ± 0.011"``; the std is ``n/a`` when undefined (one seed), the mean ``n/a`` when missing.

    Example:
        >>> format_mean_std(0.81234, 0.0111), format_mean_std(12.345, None, digits=1)
        ('0.812 ± 0.011', '12.3 ± n/a')
    """
    if mean is None or not math.isfinite(mean):
        return "n/a"
    s = "n/a" if std is None or not math.isfinite(std) else f"{std:.{digits}f}"
    return f"{mean:.{digits}f} ± {s}"


def _stats(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    return {
        "mean": float(arr.mean()) if n else None,
        "std": float(arr.std(ddof=1)) if n > 1 else None,
        "n": n,
        "values": [float(v) for v in arr],
    }


def paired_comparison(guided: Mapping[int, float], plain: Mapping[int, float]) -> dict[str, Any]:
    """Paired comparison over the seeds both methods finished: guided minus plain.

    Returns ``seeds``, ``diffs`` (per seed), ``mean_diff``, ``std_diff``, ``p_value`` (two-sided paired
    t-test, ``scipy.stats.ttest_rel``; None with fewer than 2 seeds or zero variance), ``better`` /
    ``worse`` / ``ties`` (sign count).

    Example:
        >>> r = paired_comparison({0: 0.80, 1: 0.82, 2: 0.79}, {0: 0.78, 1: 0.80, 2: 0.80})
        >>> round(r["mean_diff"], 4), r["better"], r["worse"], r["p_value"] is not None
        (0.01, 2, 1, True)
    """
    seeds = sorted(set(guided) & set(plain))
    diffs = [float(guided[s] - plain[s]) for s in seeds]
    p_value = None
    if len(seeds) >= 2:
        from scipy.stats import ttest_rel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = ttest_rel([guided[s] for s in seeds], [plain[s] for s in seeds])
        p = float(result.pvalue)
        p_value = p if math.isfinite(p) else None
    return {
        "seeds": seeds,
        "diffs": diffs,
        "mean_diff": float(np.mean(diffs)) if diffs else None,
        "std_diff": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
        "p_value": p_value,
        "better": sum(d > 0 for d in diffs),
        "worse": sum(d < 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
    }


def _metric(result: Mapping[str, Any], which: str, name: str) -> float | None:
    block = result.get(which) or {}
    value = (block.get(name) or {}).get("mean")
    return float(value) if value is not None else None


def _load_results(out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted((out / "runs").glob("*/seed*/result.json")):
        result = _read_json(path)
        if result.get("status") != "done":
            continue
        results.setdefault(result["method"], {})[int(result["seed"])] = result
    return results


def _mean_curve(curves: Sequence[Mapping[str, list] | None]) -> dict[str, list] | None:
    """Mean over seeds at the steps every seed logged."""
    curves = [c for c in curves if c and c.get("step")]
    if not curves:
        return None
    maps = [dict(zip(c["step"], c["value"], strict=True)) for c in curves]
    steps = sorted(set.intersection(*(set(m) for m in maps)))
    return {
        "step": steps,
        "value": [float(np.mean([m[s] for m in maps])) for s in steps],
        "n_seeds": len(maps),
    }


def summarize_study(
    out: str | os.PathLike,
    *,
    methods: Sequence[str] | None = None,
    pairs: Sequence[tuple[str, str]] = PAIRS,
    plots: bool = True,
) -> dict[str, Any]:
    """Aggregate the finished runs of a study folder into ``summary.json``, ``results.md`` and plots.

    Per method (in ``methods`` order, then any other method found): Dice / IoU / HD95 of the best-validation
    checkpoint and of the last weights, as mean +- std over seeds of the per-run test means; mean validation
    Dice and kept-fraction curves; wall time. Per pair ``(plain, guided)`` with both present: the paired
    comparison of test Dice (best-validation checkpoint) over common seeds.

    Args:
        out: the study folder.
        methods: method order of the table (default: ``study.json``'s, else alphabetical).
        pairs: ``(plain, guided)`` pairs to compare.
        plots: also write the PNG plots.

    Returns:
        The summary dict (also written to ``OUT/summary.json``).
    """
    out = Path(out).expanduser()
    study = _read_json(out / "study.json") if (out / "study.json").is_file() else {}
    results = _load_results(out)
    order = list(methods) if methods is not None else list(study.get("methods", []))
    order += sorted(m for m in results if m not in order)
    rows = []
    for name in order:
        runs = results.get(name, {})
        row: dict[str, Any] = {"method": name, "seeds": sorted(runs), "n_seeds": len(runs)}
        for which, tag in (("test_best", "best"), ("test_last", "last")):
            for metric in ("dice", "iou", "hd95"):
                row[f"{metric}_{tag}"] = _stats([_metric(r, which, metric) for r in runs.values()])
        any_run = next(iter(runs.values()), None)
        row["guided"] = bool(any_run and any_run.get("guidance"))
        row["host"] = any_run.get("host") if any_run else None
        row["wall_time_s"] = _stats([r.get("wall_time_s") for r in runs.values()])
        row["steps"] = _stats([r.get("steps") for r in runs.values()])
        row["val_dice_curve"] = _mean_curve([r.get("val_dice_curve") for r in runs.values()])
        row["kept_fraction_curve"] = _mean_curve([r.get("kept_fraction_curve") for r in runs.values()])
        row["best_val_dice"] = _stats([(r.get("best") or {}).get("val_dice") for r in runs.values()])
        rows.append(row)
    present = {r["method"] for r in rows if r["n_seeds"]}
    comparisons = []
    for plain, guided in pairs:
        if plain not in present or guided not in present:
            continue
        for which in ("test_best", "test_last"):
            g = {s: _metric(r, which, "dice") for s, r in results[guided].items()}
            p = {s: _metric(r, which, "dice") for s, r in results[plain].items()}
            g = {s: v for s, v in g.items() if v is not None}
            p = {s: v for s, v in p.items() if v is not None}
            comparisons.append(
                {
                    "guided": guided,
                    "plain": plain,
                    "checkpoint": which.split("_")[1],
                    "metric": "dice",
                    **paired_comparison(g, p),
                }
            )
    all_results = [r for runs in results.values() for r in runs.values()]
    ssl_results = [r for r in all_results if (r.get("data") or {}).get("use_unlabeled")]
    any_result = (ssl_results or all_results or [None])[0]
    stage_times = [r.get("wall_time_s") or 0.0 for r in all_results]
    stage_times += [
        _read_json(p).get("wall_time_s") or 0.0 for p in sorted((out / "snapshots").glob("fold*/done.json"))
    ]
    predictor = (
        _read_json(out / "predictor" / "predictor.json")
        if (out / "predictor" / "predictor.json").is_file()
        else None
    )
    evaluation = (
        _read_json(out / "predictor" / "evaluation_status.json")
        if (out / "predictor" / "evaluation_status.json").is_file()
        else None
    )
    summary = {
        "format": SUMMARY_FORMAT,
        "out": str(out),
        "study": study,
        "data": {
            k: v
            for k, v in (any_result or {}).get("data", {}).items()
            if k.startswith("n_") or k in ("root", "label_ratio", "split")
        },
        "schedule": (any_result or {}).get("schedule"),
        "pretrained": bool((study.get("fingerprint") or {}).get("encoder_weights")),
        "methods": rows,
        "comparisons": comparisons,
        "predictor": predictor,
        "predictor_evaluation": evaluation,
        "compute_time_s": float(
            sum(stage_times)
            + ((predictor or {}).get("wall_time_s") or 0.0)
            + ((evaluation or {}).get("wall_time_s") or 0.0)
        ),
        "failed_runs": sorted(
            str(p.parent.relative_to(out))
            for p in (out / "runs").glob("*/seed*/error.json")
            if not (p.parent / "result.json").is_file()
        ),
        "updated_at": _now(),
    }
    if plots:
        summary["plots"] = plot_study(out, summary)
    write_results_markdown(out / "results.md", summary)
    _write_json(out / "summary.json", summary)
    return summary


def _comparison_cell(comparisons: Sequence[Mapping[str, Any]], method: str) -> str:
    parts = []
    for c in comparisons:
        if c["guided"] != method or c["checkpoint"] != "best" or c["mean_diff"] is None:
            continue
        p = f"p={c['p_value']:.2f}" if c["p_value"] is not None else "p n/a"
        parts.append(f"{c['mean_diff']:+.3f} vs {c['plain']} ({p}; {c['better']}↑ {c['worse']}↓)")
    return "<br>".join(parts)


def write_results_markdown(path: str | os.PathLike, summary: Mapping[str, Any]) -> Path:
    """Write ``results.md``: the table (first column the method, second its mean test Dice) and the paired
    comparisons.

    Returns:
        The path written.
    """
    path = Path(path)
    fp = (summary.get("study") or {}).get("fingerprint") or {}
    preset = fp.get("preset") or {}
    data = summary.get("data") or {}
    sched = summary.get("schedule") or {}
    lines = ["# Quality-guidance study: results", ""]
    root = fp.get("root") or "embedded synthetic data"
    lines.append(
        f"- **Data**: {root}; {data.get('n_train', '?')} train images ({data.get('n_labeled', '?')} labeled, "
        f"{data.get('n_unlabeled_used', '?')} unlabeled used), {data.get('n_val', '?')} validation, "
        f"{data.get('n_test', '?')} test; split `split.json` (seed {fp.get('split_seed', '?')})."
    )
    lines.append(
        f"- **Preset**: `{preset.get('name', '?')}` ({preset.get('description', '')}): "
        f"{preset.get('image_size')} px, {preset.get('arch')}/{preset.get('encoder_name')}, "
        f"{sched.get('max_steps', '?')} optimizer steps per run (batch {preset.get('batch_size')} labeled + "
        f"{preset.get('unlabeled_batch_size')} unlabeled), validation every {sched.get('val_every', '?')} "
        "steps."
    )
    weights = fp.get("encoder_weights")
    lines.append(
        "- **Encoders**: "
        + (
            f"pretrained (`{weights}`)."
            if weights
            else "randomly initialised (no pretrained weights; the paper "
            "uses ImageNet weights, so absolute numbers are lower than published)."
        )
    )
    seeds = sorted({s for r in summary.get("methods", []) for s in r.get("seeds", [])})
    lines.append(
        f"- **Seeds**: {', '.join(map(str, seeds)) or 'none'}. Test figures: per-image mean over the test "
        "split for each run, then mean ± std over seeds. Model selection (best checkpoint) on validation "
        "Dice only."
    )
    study = summary.get("study") or {}
    env = study.get("environment") or {}
    if env:
        lines.append(
            f"- **Machine**: {env.get('platform')}, {env.get('cpu_count')} CPUs ({env.get('torch_threads')} "
            f"torch threads), GPU: {env.get('cuda') or 'none'}; torch {env.get('torch')}, lightning "
            f"{env.get('lightning')}."
        )
    if study.get("command"):
        lines.append(f"- **Command**: `{study['command']}`")
    lines.append(
        f"- **Compute time** (sum of all stages, resumed sessions included): "
        f"{_fmt_duration(summary.get('compute_time_s'))}."
    )
    predictor = summary.get("predictor")
    if predictor:
        t = predictor.get("test_synthetic") or {}
        lines.append(
            f"- **Quality predictor**: {predictor.get('backbone')}, {predictor.get('epochs')} epochs on the "
            f"labeled split; test on synthetic candidates: MAE {t.get('mae', math.nan):.3f}, Pearson "
            f"{t.get('pearson', math.nan):.3f}, Spearman {t.get('spearman', math.nan):.3f}."
        )
    evaluation = summary.get("predictor_evaluation") or {}
    if evaluation.get("status") == "done":
        s = evaluation.get("summary") or {}
        real, syn = s.get("real") or {}, s.get("synthetic") or {}

        def fig(block: Mapping[str, Any], key: str) -> str:
            value = block.get(key)
            return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"

        lines.append(
            f"- **Predictor evaluation** (test split): synthetic candidates MAE {fig(syn, 'mae')}, Spearman "
            f"{fig(syn, 'spearman')}; weak-model (real) candidates MAE {fig(real, 'mae')}, Spearman "
            f"{fig(real, 'spearman')} (constant-guess MAE {fig(real, 'constant_baseline_mae')})."
        )
    elif evaluation:
        lines.append(
            f"- **Predictor evaluation**: {evaluation.get('status')} ({evaluation.get('reason', '')})."
        )
    lines += [
        "",
        "| Method | Dice | IoU | HD95 (px) | Dice (last) | IoU (last) | HD95 (last) | Guided − plain host "
        "(Dice, paired over seeds) | Seeds | Time per run |",
        "|" + "---|" * 10,
    ]
    comparisons = summary.get("comparisons", [])
    for row in summary.get("methods", []):
        if not row["n_seeds"]:
            continue

        def cell(key: str, digits: int = 3, row: Mapping[str, Any] = row) -> str:
            return format_mean_std(row[key]["mean"], row[key]["std"], digits)

        lines.append(
            f"| {row['method']} | {cell('dice_best')} | {cell('iou_best')} | {cell('hd95_best', 1)} | "
            f"{cell('dice_last')} | {cell('iou_last')} | {cell('hd95_last', 1)} | "
            f"{_comparison_cell(comparisons, row['method'])} | {row['n_seeds']} | "
            f"{_fmt_duration(row['wall_time_s']['mean'])} |"
        )
    best = [c for c in comparisons if c["checkpoint"] == "best"]
    if best:
        lines += [
            "",
            "## Paired comparisons (test Dice, best-validation checkpoint)",
            "",
            "| Guided | Plain host | Mean difference | Per-seed differences | Paired t-test p | "
            "Guided better / worse / tied | Mean difference, last weights |",
            "|" + "---|" * 7,
        ]
        last = {(c["guided"], c["plain"]): c for c in comparisons if c["checkpoint"] == "last"}
        for c in best:
            diffs = ", ".join(f"{d:+.3f}" for d in c["diffs"])
            p = f"{c['p_value']:.3f}" if c["p_value"] is not None else "n/a (< 2 seeds)"
            lc = last.get((c["guided"], c["plain"]))
            ld = f"{lc['mean_diff']:+.3f}" if lc and lc["mean_diff"] is not None else "n/a"
            md = f"{c['mean_diff']:+.3f}" if c["mean_diff"] is not None else "n/a"
            lines.append(
                f"| {c['guided']} | {c['plain']} | {md} | {diffs} | {p} | {c['better']} / {c['worse']} / "
                f"{c['ties']} | {ld} |"
            )
    plots = summary.get("plots") or {}
    if plots:
        lines += ["", "## Plots", ""]
        for key, title in (
            ("dice", "Test Dice per method"),
            ("quality", "Predicted vs true quality"),
            ("val_curves", "Validation Dice during training"),
            ("kept_fraction", "Unlabeled samples kept (q >= tau)"),
        ):
            if plots.get(key):
                lines.append(f"![{title}]({Path(plots[key]).name})")
    failed = summary.get("failed_runs") or []
    if failed:
        lines += [
            "",
            f"**Failed runs** (see their error.json; rerun the command to retry): {', '.join(failed)}",
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# ================================================================================================ plots
def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path)
    return str(path)


def _quality_points(
    out: Path, summary: Mapping[str, Any]
) -> tuple[list[float], list[float], list[str]] | None:
    """(pred, true, source) from the evaluation's candidates CSV, else the predictor's test predictions."""
    evaluation = (summary.get("predictor_evaluation") or {}).get("summary") or {}
    candidates = [
        evaluation.get("candidates_csv"),
        (summary.get("predictor") or {}).get("test_predictions_csv"),
    ]
    for path in candidates:
        if not path or not Path(path).is_file():
            continue
        pred, true, source = [], [], []
        with Path(path).open(newline="") as fh:
            for row in csv.DictReader(fh):
                pred.append(float(row["pred"]))
                true.append(float(row["true"]))
                source.append(
                    "synthetic" if row.get("source", "synthetic") == "synthetic" else "real (weak models)"
                )
        if pred:
            return pred, true, source
    return None


def plot_study(out: str | os.PathLike, summary: Mapping[str, Any]) -> dict[str, str | None]:
    """Write the study's PNG plots into ``out`` and return their paths (None when there is nothing to plot).

    ``dice_per_method.png`` (mean test Dice with std error bars and per-seed points),
    ``quality_pred_vs_true.png`` (predictor evaluation), ``val_dice_curves.png`` (validation Dice, mean over
    seeds) and ``kept_fraction.png`` (fraction of unlabeled samples with q >= tau, guided "-QW" runs).
    """
    out = Path(out)
    rows = [r for r in summary.get("methods", []) if r["n_seeds"]]
    paths: dict[str, str | None] = {"dice": None, "quality": None, "val_curves": None, "kept_fraction": None}
    if rows:
        fig = _figure(max(5.0, 0.75 * len(rows) + 2), 3.8)
        ax = fig.add_subplot()
        x = np.arange(len(rows))
        means = [r["dice_best"]["mean"] if r["dice_best"]["mean"] is not None else np.nan for r in rows]
        stds = [r["dice_best"]["std"] or 0.0 for r in rows]
        colors = [
            "tab:orange"
            if r["guided"]
            else ("tab:gray" if r["host"] == "SupervisedSegmenter" else "tab:blue")
            for r in rows
        ]
        ax.bar(x, means, yerr=stds, color=colors, capsize=4, alpha=0.85)
        for i, r in enumerate(rows):
            values = r["dice_best"]["values"]
            ax.scatter(np.full(len(values), x[i]), values, color="black", s=10, zorder=3)
        ax.set_xticks(x, [r["method"] for r in rows], rotation=35, ha="right")
        ax.set_ylabel("test Dice (best-val checkpoint)")
        finite = [m for m in means if np.isfinite(m)]
        if finite:
            ax.set_ylim(max(0.0, min(finite) - 0.15), min(1.0, max(finite) + 0.1))
        ax.set_title("Test Dice (mean ± std over seeds)")
        paths["dice"] = _save(fig, out / "dice_per_method.png")

    points = _quality_points(out, summary)
    if points is not None:
        pred, true, source = points
        fig = _figure(4.6, 4.4)
        ax = fig.add_subplot()
        src = np.asarray(source)
        for label, color in (("synthetic", "tab:blue"), ("real (weak models)", "tab:red")):
            sel = src == label
            if sel.any():
                ax.scatter(
                    np.asarray(true)[sel], np.asarray(pred)[sel], s=6, alpha=0.5, color=color, label=label
                )
        ax.plot([0, 1], [0, 1], color="black", lw=0.8)
        ax.set_xlabel("true Dice of the candidate")
        ax.set_ylabel("predicted quality")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title("Quality predictor on the test split")
        paths["quality"] = _save(fig, out / "quality_pred_vs_true.png")

    curves = [r for r in rows if r.get("val_dice_curve")]
    if curves:
        fig = _figure(6.4, 4.0)
        ax = fig.add_subplot()
        for r in curves:
            c = r["val_dice_curve"]
            ax.plot(
                c["step"], c["value"], label=r["method"], ls="-" if r["guided"] else "--", marker=".", ms=3
            )
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("validation Dice (mean over seeds)")
        ax.legend(fontsize=7, ncol=2)
        ax.set_title("Validation Dice during training")
        paths["val_curves"] = _save(fig, out / "val_dice_curves.png")

    kept = [r for r in rows if r.get("kept_fraction_curve")]
    if kept:
        fig = _figure(6.4, 3.6)
        ax = fig.add_subplot()
        for r in kept:
            c = r["kept_fraction_curve"]
            values = np.asarray(c["value"], dtype=np.float64)
            window = max(1, len(values) // 20)
            smooth = (
                np.convolve(values, np.ones(window) / window, mode="valid")
                if values.size >= window
                else values
            )
            ax.plot(c["step"][window - 1 :], smooth, label=r["method"])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("fraction with q >= tau")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        ax.set_title("Unlabeled samples kept by quality weighting (mean over seeds)")
        paths["kept_fraction"] = _save(fig, out / "kept_fraction.png")
    return paths


# ================================================================================================ estimate
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

    Each selected method trains ``warmup_steps + timed_steps + 1`` steps (an untrained predictor stands in for
    guided variants: the cost does not depend on its weights); the median time between batches after the
    warm-up is its step time. One validation pass and one test pass (with HD95) of the supervised model, a
    few weak-model and predictor steps and one predictor validation pass are timed too. The projection:

    * runs: ``seeds x sum over methods of (max_steps x step time + validations x validation time + 2 x test
      time + setup)``;
    * snapshots: ``folds x epochs x steps per epoch x weak-model step time``;
    * predictor: ``epochs x (steps per epoch x step time + validation time)`` plus its evaluation (~ one
      validation).

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
            backbone=preset.predictor_backbone, in_channels=config.in_channels, num_classes=config.num_classes
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

        per_method: dict[str, dict[str, float]] = {}
        for spec in specs:
            L.seed_everything(0, workers=True, verbose=False)
            model = _host_class(spec)(**host_kwargs(spec, fake_config, schedule))
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
            guide = guidance_kwargs(spec, fake_config, schedule, str(predictor_path), 0.25)
            if guide is not None:
                callbacks.append(QualityReweightCallback(**{**guide, "qw_warmup": 0.0, "qar_warmup": 0.0}))
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

        # weak models (snapshots)
        timer = _StepTimer()
        snap_dm = SemiSupervisedDataModule(
            **_data_kwargs(config, str(split)),
            use_unlabeled=False,
            batch_size=preset.snapshot_batch_size,
            seed=config.split_seed,
            fold=0,
            n_folds=preset.snapshot_folds,
        )
        snap_model = SupervisedSegmenter(
            arch=preset.snapshot_arch,
            encoder_name=preset.snapshot_encoder,
            in_channels=config.in_channels,
            num_classes=config.num_classes,
        )
        trainer(n, [timer]).fit(snap_model, datamodule=snap_dm)
        snap_step = _per_step(timer.times, warmup_steps)
        n_fold_train = len(snap_dm.training_labeled_ids)
        snap_spe = steps_per_epoch(n_fold_train, 0, preset.snapshot_batch_size, 1)
        snapshots_s = preset.snapshot_folds * (
            max(preset.snapshot_epochs) * snap_spe * snap_step + setup_overhead_s
        )

        # predictor (synthetic candidates only: snapshot masks are precomputed, so cost about the same)
        timer = _StepTimer()
        qdm = QualityDataModule(
            **_data_kwargs(config, str(split)),
            samples_per_image=preset.predictor_samples_per_image,
            batch_size=preset.predictor_batch_size,
            p_weak=0.0,
            seed=config.split_seed,
        )
        start = time.perf_counter()
        qdm.setup("fit")
        qdm_setup_s = time.perf_counter() - start
        trainer(n, [timer], gradient_clip_val=1.0).fit(predictor, datamodule=qdm)
        pred_step = _per_step(timer.times, warmup_steps)
        tv = L.Trainer(
            accelerator=config.accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp,
        )
        start = time.perf_counter()
        tv.validate(predictor, datamodule=qdm, verbose=False)
        pred_val_s = time.perf_counter() - start
        pred_spe = max(
            1, data["n_labeled"] * preset.predictor_samples_per_image // preset.predictor_batch_size
        )
        # training epochs, set-up, test, and the evaluation (candidates, weak models, image-dependence checks)
        evaluation_s = 4 * pred_val_s + preset.snapshot_folds * test_s
        predictor_s = (
            preset.predictor_epochs * (pred_spe * pred_step + pred_val_s)
            + qdm_setup_s
            + pred_val_s
            + evaluation_s
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
    need_predictor = any(s.guidance is not None for s in specs) and config.predictor is None
    phase1_s = snapshots_s + predictor_s if need_predictor else 0.0
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
            "snapshot_step_s": snap_step,
            "snapshots_s": snapshots_s if need_predictor else 0.0,
            "predictor_step_s": pred_step,
            "predictor_validation_s": pred_val_s,
            "predictor_s": predictor_s if need_predictor else 0.0,
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


# ================================================================================================ command
def _parse_override(text: str, preset: StudyPreset) -> tuple[str, Any]:
    """``"FIELD=VALUE"`` -> ``(field, typed value)`` for :meth:`StudyPreset.replace` (``--set``).

    Example:
        >>> cpu = PRESETS["cpu"]
        >>> _parse_override("val_every=12.5", cpu), _parse_override("patience=none", cpu)
        (('val_every', 12.5), ('patience', None))
    """
    if "=" not in text:
        raise ValueError(f"`--set` expects FIELD=VALUE, got {text!r}.")
    key, raw = text.split("=", 1)
    fields = {f.name: f for f in dataclasses.fields(preset)}
    if key not in fields:
        raise ValueError(f"`--set {text}`: unknown preset field {key!r}; valid fields: {sorted(fields)}.")
    kind = str(fields[key].type)
    try:
        if key == "snapshot_epochs":
            return key, tuple(int(v) for v in raw.replace(",", " ").split())
        if raw.lower() in ("none", "null") and "None" in kind:
            return key, None
        if kind.startswith("int"):
            return key, int(raw)
        if kind.startswith("float"):
            return key, float(raw)
    except ValueError:
        raise ValueError(f"`--set {text}`: {key} must be of type {kind}, got {raw!r}.") from None
    return key, raw


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qg-lightning study",
        description="Run the quality-guidance study: split, cross-fitted snapshots, quality predictor and "
        "its evaluation, then every method x seed (plain and quality-guided, same seeds and budget), with a "
        "results table, summary JSON and plots in --out. Rerun the same command to resume.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--root", help="dataset folder in the standard layout (images/, masks/, optional unlabeled/)"
    )
    src.add_argument("--synthetic", action="store_true", help="use the embedded synthetic dataset")
    lab = p.add_mutually_exclusive_group()
    lab.add_argument("--n-labeled", type=int, default=None, help="number of labeled training images")
    lab.add_argument(
        "--labeled-fraction",
        type=float,
        default=None,
        help="labeled fraction of the training split (default: the preset's, 0.1 for cpu/paper)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help=f"from {list(METHODS)}")
    p.add_argument("--out", required=True, help="results folder (reuse it to resume)")
    p.add_argument(
        "--split-seed", type=int, default=0, help="seed of the split, snapshot folds and predictor data"
    )
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument(
        "--encoder-weights",
        default=None,
        help="e.g. imagenet (must be in your local cache); default: random init",
    )
    p.add_argument(
        "--predictor", default=None, help="use this quality predictor checkpoint instead of training one"
    )
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each run's best/last checkpoints")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a preset field, e.g. --set budget=600 --set image_size=128 (repeatable)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="training length per run in the preset's unit (steps for cpu/smoke, epochs for paper); the "
        "validation interval and all warm-ups and ramps are scaled with it",
    )
    p.add_argument(
        "--target-minutes",
        type=float,
        default=None,
        help="with --estimate: also suggest the --budget whose projected wall time fits this many minutes",
    )
    p.add_argument(
        "--estimate",
        action="store_true",
        help="only measure step times and print the projected wall time (nothing is written to --out)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def study_cli(argv: Sequence[str]) -> int:
    """``qg-lightning study``: see ``--help``. Prints one JSON line (the outcome) on stdout; returns the exit
    code (1 when a run failed)."""
    ns = _build_parser().parse_args(list(argv))
    if not ns.quiet and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    preset = PRESETS[ns.preset]
    if ns.budget is not None:
        preset = preset.scaled(ns.budget)
    if ns.overrides:
        preset = preset.replace(**dict(_parse_override(o, preset) for o in ns.overrides))
    config = StudyConfig(
        out=ns.out,
        root=ns.root,
        n_labeled=ns.n_labeled,
        labeled_fraction=ns.labeled_fraction,
        seeds=tuple(ns.seeds),
        preset=preset,
        methods=tuple(ns.methods),
        split_seed=ns.split_seed,
        val_fraction=ns.val_fraction,
        test_fraction=ns.test_fraction,
        in_channels=ns.in_channels,
        num_classes=ns.num_classes,
        encoder_weights=ns.encoder_weights,
        predictor=ns.predictor,
        accelerator=ns.accelerator,
        num_workers=ns.num_workers,
        keep_checkpoints=ns.keep_checkpoints,
    )
    if ns.estimate:
        target = ns.target_minutes * 60 if ns.target_minutes is not None else None
        estimate = estimate_study(config, target_s=target)
        for name, figures in estimate["per_method"].items():
            log.info(
                "[estimate] %-12s %.3f s/step -> %s per run",
                name,
                figures["step_s"],
                _fmt_duration(figures["run_s"]),
            )
        log.info(
            "[estimate] snapshots %s, predictor %s, runs %s (%d seeds): total %s",
            _fmt_duration(estimate["snapshots_s"]),
            _fmt_duration(estimate["predictor_s"]),
            _fmt_duration(estimate["runs_s"]),
            len(config.seeds),
            _fmt_duration(estimate["total_s"]),
        )
        if estimate["suggested_budget"] is not None:
            log.info(
                "[estimate] to fit %.0f minutes: --budget %g (%s)",
                ns.target_minutes,
                estimate["suggested_budget"],
                "epochs" if preset.unit == "epoch" else "steps",
            )
        sys.stdout.write(json.dumps({"estimate": estimate}) + "\n")
        return 0
    summary = run_study(config, command=" ".join(["qg-lightning", "study", *argv]))
    line = {
        "out": str(Path(config.out)),
        "results": str(Path(config.out) / "results.md"),
        "execution": summary["execution"],
        "elapsed_s": round(summary["elapsed_s"], 1),
        "dice": {r["method"]: r["dice_best"]["mean"] for r in summary["methods"] if r["n_seeds"]},
        "comparisons": [
            {k: c[k] for k in ("guided", "plain", "mean_diff", "p_value", "better", "worse")}
            for c in summary["comparisons"]
            if c["checkpoint"] == "best"
        ],
    }
    sys.stdout.write(json.dumps(_json_safe(line)) + "\n")
    return 1 if summary["execution"]["failed"] else 0

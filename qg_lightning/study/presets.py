"""Study scale presets (``smoke``, ``cpu``, ``paper``) and their schedules in optimizer steps."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from qg_lightning._validation import check_fraction, check_int, check_number
from qg_lightning.quality.recipe import PredictorRecipe

log = logging.getLogger(__name__)

Unit = Literal["step", "epoch"]


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
        recipe: the quality predictor's :class:`~qg_lightning.quality.recipe.PredictorRecipe` (default: the
            library's best); the study trains it at ``image_size`` on its own labeled images.
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
    recipe: PredictorRecipe = field(default_factory=PredictorRecipe)
    synthetic_images: int = 300
    synthetic_size: int = 128
    default_labeled_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "batch_size",
            "unlabeled_batch_size",
            "log_every_n_steps",
            "synthetic_images",
            "synthetic_size",
            "ema_warmup_steps",
        ):
            value = getattr(self, name)
            check_int(value, f"StudyPreset.{name}", minimum=0 if name == "ema_warmup_steps" else 1)
        if self.unit not in get_args(Unit):
            raise ValueError(f"`StudyPreset.unit` must be 'step' or 'epoch', got {self.unit!r}.")
        for name in ("budget", "val_every"):
            check_number(getattr(self, name), f"StudyPreset.{name}", low=0, low_open=True)
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
            check_number(getattr(self, name), f"StudyPreset.{name}", low=0)
        check_number(self.ema_decay, "StudyPreset.ema_decay", low=0, high=1, high_open=True)
        if not isinstance(self.recipe, PredictorRecipe):
            raise TypeError(
                f"`StudyPreset.recipe` must be a PredictorRecipe, got {type(self.recipe).__name__}."
            )
        check_fraction(self.default_labeled_fraction, "StudyPreset.default_labeled_fraction")
        check_int(self.patience, "StudyPreset.patience", minimum=1, optional=True)

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
            >>> p = PRESETS["cpu"].scaled(800)
            >>> p.budget, p.val_every, p.unsup_warmup, p.ema_warmup_steps
            (800, 50.0, 80.0, 80)
        """
        check_number(budget, "budget", low=0, low_open=True)
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
        out["recipe"] = self.recipe.to_dict()
        return out


#: Scale presets. ``smoke`` is for the test suite (seconds), ``cpu`` for a 2-core machine (its budget is where
#: supervised-only plateaus on Kvasir-SEG with 10% labels at 64 px; ``qg-lightning study --estimate`` measures
#: the wall time of a study on your machine), ``paper`` for a GPU (METHOD.md).
PRESETS: Mapping[str, StudyPreset] = MappingProxyType(
    {
        "smoke": StudyPreset(
            name="smoke",
            description="tiny end-to-end check (32 px, 3 steps per run); numbers mean nothing",
            image_size=32,
            encoder_name="mobilenet_v2",
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
            recipe=PredictorRecipe(
                snapshot_folds=2,
                snapshot_models=("Unet:mobilenet_v2",),
                snapshot_epochs=(1,),
                snapshot_batch_size=2,
                samples_per_image=2,
                batch_size=8,
                max_epochs=1,
                eval_candidates_per_image=1,
                tta=False,
            ),
            synthetic_images=24,
            synthetic_size=32,
            default_labeled_fraction=0.25,
        ),
        "cpu": StudyPreset(
            name="cpu",
            description="2-core CPU scale: 64 px, U-Net/ResNet-18 from scratch, 400 optimizer steps per run "
            "(where supervised-only plateaus on Kvasir-SEG with 10% labels)",
            image_size=64,
            batch_size=8,
            unlabeled_batch_size=8,
            budget=400,
            val_every=25,
            unsup_warmup=40,
            unsup_ramp=80,
            qar_warmup=80,
            qar_ramp=80,
            ema_decay=0.99,
            ema_warmup_steps=40,
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
            recipe=PredictorRecipe(
                snapshot_folds=5, samples_per_image=50, max_epochs=150, patience=25, channels_last=True
            ),
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
        (400, 25, 40, 16)
    """
    check_int(steps_per_epoch, "steps_per_epoch", minimum=1)
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

"""Loss-weight schedules for quality guidance (warm-up, linear ramp, hold).

METHOD.md, Phase 2 [0]: PL-QW uses lambda 0 for 15 epochs, then a linear ramp over 30 epochs to 0.25; QAR uses
lambda 0 for 30 epochs, then a linear ramp over 40 epochs to 0.01. Both are :class:`RampSchedule` instances.

[0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation", 2026.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qg_lightning._validation import is_number

__all__ = ["RampSchedule", "QW_SCHEDULE", "QAR_SCHEDULE", "schedule_milestones", "describe_schedule"]


@dataclass(frozen=True)
class RampSchedule:
    """Zero until ``warmup``, then linear up to ``max_value`` over ``ramp``, then held.

    The time unit (epochs or optimizer steps) is whatever the caller passes to :meth:`value`; the schedule
    itself is unit-free. ``ramp == 0`` gives a step from 0 to ``max_value`` at ``t == warmup``.

    Attributes:
        max_value: value reached at the end of the ramp and held afterwards (>= 0).
        warmup: time before which the value is 0 (>= 0).
        ramp: duration of the linear increase (>= 0).

    Raises:
        ValueError: a field is negative, not finite, or not a number.

    Example:
        >>> schedule = RampSchedule(max_value=0.25, warmup=15, ramp=30)
        >>> [schedule.value(t) for t in (0, 15, 30, 45, 100)]
        [0.0, 0.0, 0.125, 0.25, 0.25]
        >>> RampSchedule(1.0, warmup=2, ramp=0).value(2)
        1.0
    """

    max_value: float
    warmup: float
    ramp: float

    def __post_init__(self) -> None:
        for name in ("max_value", "warmup", "ramp"):
            _check_field(getattr(self, name), f"RampSchedule.{name}")

    @classmethod
    def from_args(
        cls,
        max_value: float,
        warmup: float,
        ramp: float,
        *,
        names: tuple[str, str, str] = ("max_value", "warmup", "ramp"),
        hint: str = "",
    ) -> RampSchedule:
        """Build a schedule from a caller's own arguments; errors name those arguments (``names``).

        Use it in constructors the CLI exposes, so that a bad value in a config names the config key
        (``unsup_weight``, ``qw_ramp``, ...) instead of ``RampSchedule.max_value``.

        Args:
            max_value: value reached at the end of the ramp (>= 0).
            warmup: time before which the value is 0 (>= 0).
            ramp: duration of the linear increase (>= 0).
            names: the caller's argument names of ``max_value``, ``warmup`` and ``ramp``.
            hint: appended to an error message (e.g. where to set the value).

        Raises:
            ValueError: a value is negative, not finite, or not a number; the message names it.

        Example:
            >>> RampSchedule.from_args(0.25, 15, 30, names=("qw_weight", "qw_warmup", "qw_ramp")).value(45)
            0.25
            >>> RampSchedule.from_args(0.25, -1, 30, names=("qw_weight", "qw_warmup", "qw_ramp"))
            ... # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: `qw_warmup` must be a finite number >= 0, got -1. ...
        """
        for value, name in zip((max_value, warmup, ramp), names, strict=True):
            _check_field(value, name, hint)
        return cls(max_value=max_value, warmup=warmup, ramp=ramp)

    def value(self, t: float) -> float:
        """Scheduled value at time ``t`` (epochs or steps; fractional values allowed).

        Example:
            >>> RampSchedule(0.01, warmup=30, ramp=40).value(50)
            0.005
        """
        if t < self.warmup:
            return 0.0
        if self.ramp == 0 or t >= self.warmup + self.ramp:
            return float(self.max_value)
        return float(self.max_value) * (t - self.warmup) / self.ramp

    def __call__(self, t: float) -> float:
        """Alias of :meth:`value`.

        Example:
            >>> RampSchedule(1.0, 0, 4)(1)
            0.25
        """
        return self.value(t)


def schedule_milestones(schedule: RampSchedule) -> tuple[int | None, int | None]:
    """``(start, full)``: the first whole time (epoch or step) with a value > 0, and the first at full strength.

    Times are whole numbers because the callback evaluates schedules at ``trainer.current_epoch`` or
    ``trainer.global_step``. ``(None, None)`` when ``max_value`` is 0 (never active).

    Example:
        >>> schedule_milestones(RampSchedule(0.25, warmup=15, ramp=30))
        (16, 45)
        >>> schedule_milestones(RampSchedule(0.01, warmup=30, ramp=0))  # a step change at 30
        (30, 30)
    """
    if schedule.max_value == 0:
        return None, None
    start = math.ceil(schedule.warmup) if schedule.ramp == 0 else math.floor(schedule.warmup) + 1
    full = max(start, math.ceil(schedule.warmup + schedule.ramp))
    return start, full


def describe_schedule(
    schedule: RampSchedule,
    *,
    unit: str,
    total_steps: int | None,
    steps_per_epoch: int | None,
    name: str = "lambda",
) -> tuple[str, bool]:
    """One line saying when ``schedule`` starts and reaches full strength in optimizer steps, and whether it
    never becomes active within ``total_steps``.

    Args:
        schedule: the ramp.
        unit: ``"epoch"`` or ``"step"``, the unit of the schedule's times.
        total_steps: the run's optimizer-step budget (``None``: unlimited or unknown).
        steps_per_epoch: optimizer steps per epoch (``None``: unknown; epoch times are then not converted).
        name: how the line names the value.

    Returns:
        ``(line, never_active)``.

    Example:
        >>> describe_schedule(RampSchedule(0.01, 30, 40), unit="epoch", total_steps=400, steps_per_epoch=100)
        ('lambda is 0 until epoch 31 (step 3100), then rises to 0.01 at epoch 70 (step 7000); this run ends at step 400', True)
        >>> describe_schedule(RampSchedule(0.25, 60, 90), unit="step", total_steps=300, steps_per_epoch=11)[0]
        'lambda is 0 until step 61, then rises to 0.25 at step 150'
    """
    start, full = schedule_milestones(schedule)
    if start is None or full is None:
        return f"{name} stays 0 (its weight is 0)", True

    def at(t: int) -> tuple[str, int | None]:
        if unit == "step":
            return f"step {t}", t
        if steps_per_epoch is None:
            return f"epoch {t}", None
        return f"epoch {t} (step {t * steps_per_epoch})", t * steps_per_epoch

    start_text, start_step = at(start)
    full_text, full_step = at(full)
    value = f"{schedule.max_value:g}"
    if start == full == 0:
        line = f"{name} is {value} from the start"
    elif start == full:
        line = f"{name} is 0 until {start_text}, then {value}"
    else:
        line = f"{name} is 0 until {start_text}, then rises to {value} at {full_text}"
    if total_steps is None:
        return line, False
    last = total_steps - 1
    if start_step is not None and start_step > last:
        return f"{line}; this run ends at step {total_steps}", True
    if full_step is not None and full_step > last:
        if unit == "step":
            reached = schedule.value(float(last))
        else:
            reached = schedule.value(float(last // steps_per_epoch)) if steps_per_epoch else 0.0
        return (
            f"{line}; this run ends at step {total_steps}, at {reached:.3g} ({reached / schedule.max_value:.0%})",
            False,
        )
    return line, False


def _check_field(value: object, name: str, hint: str = "") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a finite real number >= 0."""
    suffix = f" {hint}" if hint else ""
    if not is_number(value):
        raise ValueError(f"`{name}` must be a number, got {value!r} ({type(value).__name__}).{suffix}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a finite number >= 0, got {value!r}. "
            f"Use warmup=0 to start at once and ramp=0 for a step change.{suffix}"
        )


QW_SCHEDULE = RampSchedule(max_value=0.25, warmup=15.0, ramp=30.0)
"""PL-QW weight schedule of [0]: 0 for 15 epochs, linear over 30 epochs to 0.25, then held."""

QAR_SCHEDULE = RampSchedule(max_value=0.01, warmup=30.0, ramp=40.0)
"""QAR weight schedule of [0]: 0 for 30 epochs, linear over 40 epochs to 0.01, then held."""

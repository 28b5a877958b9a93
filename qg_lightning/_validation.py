"""Argument checks shared by every module: one wording for "must be an integer >= 1, got ...".

Each ``check_*`` function raises :class:`ValueError` naming the argument (in backticks, as the user typed
it), what it must be, and the value it got, and returns the value, so a check can sit in an assignment.
``hint`` appends a sentence on how to fix it. ``bool`` is never a number here, although Python makes
``True`` an ``int``: ``batch_size=True`` is a mistake, not ``1``. NumPy scalars are not numbers either
(convert them with ``int()`` / ``float()`` first), so what passes serialises to JSON and YAML as it is.

Example:
    >>> check_int(4, "batch_size", minimum=1)
    4
    >>> check_int(None, "patience", minimum=1, optional=True) is None
    True
    >>> check_number(0.1, "dropout", low=0.0, high=1.0, high_open=True)
    0.1
    >>> check_fraction(1, "labeled_fraction")
    1.0
    >>> check_int(True, "batch_size", minimum=1)
    Traceback (most recent call last):
        ...
    ValueError: `batch_size` must be an integer >= 1, got True.
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

__all__ = [
    "check_bool",
    "check_fraction",
    "check_in_channels",
    "check_int",
    "check_number",
    "is_int",
    "is_number",
]


def is_int(value: object) -> bool:
    """Whether ``value`` is a Python ``int`` and not a ``bool``.

    Example:
        >>> is_int(3), is_int(True), is_int(3.0)
        (True, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether ``value`` is a Python ``int`` or ``float`` and not a ``bool`` (NaN and infinities included).

    Example:
        >>> is_number(0.5), is_number(2), is_number(False), is_number("1")
        (True, True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _suffix(optional: bool, hint: str) -> tuple[str, str]:
    return (" or None" if optional else ""), (f" {hint}" if hint else "")


@overload
def check_int(
    value: Any, name: str, *, minimum: int | None = ..., optional: Literal[False] = ..., hint: str = ...
) -> int: ...
@overload
def check_int(
    value: Any, name: str, *, minimum: int | None = ..., optional: bool, hint: str = ...
) -> int | None: ...
def check_int(
    value: Any, name: str, *, minimum: int | None = None, optional: bool = False, hint: str = ""
) -> int | None:
    """Return ``value`` if it is an integer (not a bool) ``>= minimum``, else raise a ValueError naming ``name``.

    Args:
        value: what the caller passed.
        name: the argument's name, as the user spells it (``"batch_size"``, ``"StudyPreset.budget"``).
        minimum: the smallest allowed value; ``None`` allows any integer.
        optional: also allow ``None`` (returned as it is).
        hint: a sentence appended to the message, e.g. what the argument means or how to fix it.

    Example:
        >>> check_int(0, "num_workers", minimum=0)
        0
        >>> check_int(1, "num_classes", minimum=2, hint="It counts the background class.")
        Traceback (most recent call last):
            ...
        ValueError: `num_classes` must be an integer >= 2, got 1. It counts the background class.
        >>> check_int(2.0, "patience", minimum=1, optional=True)
        Traceback (most recent call last):
            ...
        ValueError: `patience` must be an integer >= 1 or None, got 2.0.
    """
    if optional and value is None:
        return None
    if not is_int(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        none, hint = _suffix(optional, hint)
        raise ValueError(f"`{name}` must be an integer{bound}{none}, got {value!r}.{hint}")
    return value


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    """`` in [0, 1)``, `` > 0``, `` <= 1`` or nothing: the bounds of :func:`check_number` as words."""
    has_low, has_high = low != -math.inf, high != math.inf
    if has_low and has_high:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if has_low:
        return f" {'>' if low_open else '>='} {low}"
    if has_high:
        return f" {'<' if high_open else '<='} {high}"
    return ""


@overload
def check_number(
    value: Any,
    name: str,
    *,
    low: float = ...,
    high: float = ...,
    low_open: bool = ...,
    high_open: bool = ...,
    finite: bool = ...,
    optional: Literal[False] = ...,
    hint: str = ...,
) -> float: ...
@overload
def check_number(
    value: Any,
    name: str,
    *,
    low: float = ...,
    high: float = ...,
    low_open: bool = ...,
    high_open: bool = ...,
    finite: bool = ...,
    optional: bool,
    hint: str = ...,
) -> float | None: ...
def check_number(
    value: Any,
    name: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = False,
    optional: bool = False,
    hint: str = "",
) -> float | None:
    """Return ``float(value)`` if it is a number (int or float, not a bool) between ``low`` and ``high``.

    The bounds are closed unless ``low_open`` / ``high_open``; NaN never passes, infinities pass unless
    ``finite`` (or a bound excludes them). Otherwise raise a ValueError naming ``name`` and the range.

    Args:
        value: what the caller passed.
        name: the argument's name, as the user spells it.
        low: the lower bound (``-inf``: none).
        high: the upper bound (``inf``: none).
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.
        finite: refuse infinities as well.
        optional: also allow ``None`` (returned as it is).
        hint: a sentence appended to the message, e.g. what the argument means or how to fix it.

    Example:
        >>> check_number(3, "lr", low=0.0, low_open=True)
        3.0
        >>> check_number(1.0, "dropout", low=0.0, high=1.0, high_open=True)
        Traceback (most recent call last):
            ...
        ValueError: `dropout` must be a number in [0.0, 1.0), got 1.0.
        >>> check_number(float("inf"), "eps", low=0, low_open=True, finite=True)
        Traceback (most recent call last):
            ...
        ValueError: `eps` must be a finite number > 0, got inf.
    """
    if optional and value is None:
        return None
    ok = is_number(value) and not math.isnan(value) and (math.isfinite(value) or not finite)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        kind = "a finite number" if finite else "a number"
        none, hint = _suffix(optional, hint)
        raise ValueError(
            f"`{name}` must be {kind}{_interval(low, high, low_open, high_open)}{none}, got {value!r}.{hint}"
        )
    return float(value)


@overload
def check_fraction(value: Any, name: str, *, optional: Literal[False] = ..., hint: str = ...) -> float: ...
@overload
def check_fraction(value: Any, name: str, *, optional: bool, hint: str = ...) -> float | None: ...
def check_fraction(value: Any, name: str, *, optional: bool = False, hint: str = "") -> float | None:
    """:func:`check_number` for a share of something, in ``(0, 1]``: some of it, or all of it.

    Example:
        >>> check_fraction(0.25, "labeled_fraction")
        0.25
        >>> check_fraction(0, "labeled_fraction", optional=True)
        Traceback (most recent call last):
            ...
        ValueError: `labeled_fraction` must be a number in (0, 1] or None, got 0.
    """
    return check_number(value, name, low=0, high=1, low_open=True, optional=optional, hint=hint)


def check_bool(value: Any, name: str, *, hint: str = "") -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (not ``0`` / ``1``, not a string), else raise a ValueError.

    Example:
        >>> check_bool(False, "skip_bad")
        False
        >>> check_bool("no", "skip_bad")
        Traceback (most recent call last):
            ...
        ValueError: `skip_bad` must be true or false (a bool), got 'no'.
    """
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be true or false (a bool), got {value!r}.{_suffix(False, hint)[1]}")
    return value


def check_in_channels(value: Any, name: str = "in_channels", *, hint: str = "") -> int:
    """Return ``value`` if it is 1 (grayscale) or 3 (RGB), the image channels every model here takes.

    Example:
        >>> check_in_channels(3)
        3
        >>> check_in_channels(4)
        Traceback (most recent call last):
            ...
        ValueError: `in_channels` must be 1 (grayscale) or 3 (RGB), got 4.
    """
    if not is_int(value) or value not in (1, 3):
        raise ValueError(
            f"`{name}` must be 1 (grayscale) or 3 (RGB), got {value!r}.{_suffix(False, hint)[1]}"
        )
    return value

"""The shared argument checks (qg_lightning._validation) and the modules that re-export or wrap them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qg_lightning._validation import check_bool, check_fraction, check_int, check_number, is_int, is_number


def test_predicates_refuse_bools_and_numpy_scalars():
    assert is_int(0) and is_int(-3) and not is_int(True) and not is_int(2.0) and not is_int(np.int64(2))
    assert is_number(0.5) and is_number(2) and is_number(math.nan)
    assert (
        not is_number(False) and not is_number("1") and not is_number(None) and not is_number(np.float32(1))
    )


@pytest.mark.parametrize("value", [0, 1, 10**12])
def test_check_int_returns_the_value(value):
    assert check_int(value, "n", minimum=0) == value


@pytest.mark.parametrize("bad", [-1, 2.0, True, False, "3", None, np.int64(3)])
def test_check_int_refuses(bad):
    with pytest.raises(ValueError, match=r"^`batch_size` must be an integer >= 0, got "):
        check_int(bad, "batch_size", minimum=0)


def test_check_int_without_minimum_and_optional():
    assert check_int(-7, "seed") == -7
    with pytest.raises(ValueError, match=r"^`seed` must be an integer, got 'a'\.$"):
        check_int("a", "seed")
    assert check_int(None, "patience", minimum=1, optional=True) is None
    with pytest.raises(ValueError, match=r"^`patience` must be an integer >= 1 or None, got 0\.$"):
        check_int(0, "patience", minimum=1, optional=True)


def test_check_int_appends_the_hint():
    with pytest.raises(ValueError, match=r"got 1\. It counts the background class\.$"):
        check_int(1, "num_classes", minimum=2, hint="It counts the background class.")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"low": 0, "high": 1}, "a number in [0, 1]"),
        ({"low": 0, "high": 1, "low_open": True}, "a number in (0, 1]"),
        ({"low": 0.0, "high": 1.0, "high_open": True}, "a number in [0.0, 1.0)"),
        ({"low": 0}, "a number >= 0"),
        ({"low": 0, "low_open": True, "finite": True}, "a finite number > 0"),
        ({"high": 5, "high_open": True}, "a number < 5"),
        ({"high": 5}, "a number <= 5"),
        ({}, "a number"),
    ],
)
def test_check_number_words_the_range(kwargs, words):
    with pytest.raises(ValueError) as info:
        check_number("x", "lr", **kwargs)
    assert str(info.value) == f"`lr` must be {words}, got 'x'."


def test_check_number_bounds():
    assert check_number(1, "p", low=0, high=1) == 1.0 and isinstance(
        check_number(1, "p", low=0, high=1), float
    )
    assert check_number(0, "p", low=0, high=1) == 0.0
    for value, kwargs in [
        (1.0, {"low": 0, "high": 1, "high_open": True}),
        (0.0, {"low": 0, "high": 1, "low_open": True}),
        (-0.1, {"low": 0}),
        (math.nan, {}),
        (math.inf, {"low": 0, "finite": True}),
        (True, {}),
    ]:
        with pytest.raises(ValueError, match="`p` must be"):
            check_number(value, "p", **kwargs)
    assert check_number(math.inf, "p", low=0) == math.inf  # infinities pass unless `finite`


def test_check_number_optional_and_hint():
    assert check_number(None, "max_minutes", low=0, optional=True) is None
    with pytest.raises(
        ValueError, match=r"^`max_minutes` must be a number > 0 or None, got 0\. Or leave it\.$"
    ):
        check_number(0, "max_minutes", low=0, low_open=True, optional=True, hint="Or leave it.")


def test_check_fraction():
    assert check_fraction(1, "labeled_fraction") == 1.0
    assert check_fraction(None, "labeled_fraction", optional=True) is None
    for bad in (0, 1.5, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match=r"`labeled_fraction` must be a number in \(0, 1\]"):
            check_fraction(bad, "labeled_fraction")


def test_check_bool():
    assert check_bool(True, "tta") is True and check_bool(False, "tta") is False
    for bad in (0, 1, "true", None):
        with pytest.raises(ValueError, match=r"^`tta` must be true or false \(a bool\), got "):
            check_bool(bad, "tta")


def test_old_import_paths_still_work():
    from qg_lightning.quality import network

    assert network.check_int is check_int and network.check_number is check_number

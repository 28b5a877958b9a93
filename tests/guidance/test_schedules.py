from __future__ import annotations

import pytest

from qg_lightning.guidance.schedules import QAR_SCHEDULE, QW_SCHEDULE, RampSchedule


def test_key_points() -> None:
    s = RampSchedule(max_value=1.0, warmup=2.0, ramp=4.0)
    assert [s.value(t) for t in (-1, 0, 1.999, 2, 3, 4, 6, 100)] == [0.0, 0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    assert s(5) == s.value(5) == 0.75


def test_zero_ramp_is_a_step() -> None:
    s = RampSchedule(0.5, warmup=3, ramp=0)
    assert (s.value(2.9), s.value(3), s.value(10)) == (0.0, 0.5, 0.5)


def test_paper_defaults() -> None:
    assert QW_SCHEDULE == RampSchedule(0.25, 15, 30)
    assert QAR_SCHEDULE == RampSchedule(0.01, 30, 40)
    assert QW_SCHEDULE.value(14) == 0.0 and QW_SCHEDULE.value(30) == 0.125 and QW_SCHEDULE.value(45) == 0.25
    assert QAR_SCHEDULE.value(29) == 0.0 and QAR_SCHEDULE.value(70) == 0.01


@pytest.mark.parametrize("field", ["max_value", "warmup", "ramp"])
@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", True])
def test_validation_names_field(field: str, bad: object) -> None:
    kwargs = {"max_value": 1.0, "warmup": 1.0, "ramp": 1.0, field: bad}
    with pytest.raises(ValueError, match=f"RampSchedule.{field}"):
        RampSchedule(**kwargs)


def test_frozen() -> None:
    s = RampSchedule(1.0, 0.0, 1.0)
    with pytest.raises(AttributeError):
        s.max_value = 2.0  # type: ignore[misc]

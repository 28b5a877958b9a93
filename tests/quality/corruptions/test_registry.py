"""Tests for qg_lightning.quality.corruptions.registry."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from qg_lightning.quality.corruptions import engine
from qg_lightning.quality.corruptions import functional as F
from qg_lightning.quality.corruptions.registry import (
    BLOB,
    CATASTROPHIC,
    HEAVY,
    MAIN,
    MULTICLASS,
    CorruptionSpec,
    get_corruption,
)

EXPECTED_MAIN = {
    "erosion_5": 1.0, "erosion_7": 1.0, "erosion_9": 0.8, "dilation_5": 1.0, "dilation_7": 1.0,
    "dilation_9": 0.8, "opening_5": 0.5, "closing_5": 0.5, "ellipse": 1.0, "polygon_3": 0.5,
    "polygon_5": 0.8, "polygon_8": 0.8, "convex_hull": 1.0, "bbox_fill": 0.5, "jagged_3": 1.0,
    "jagged_5": 1.0, "smooth_11": 0.8, "smooth_15": 0.8, "elastic_30": 1.0, "elastic_60": 0.8,
    "grid_5": 1.0, "grid_8": 0.7, "holes_small": 1.0, "holes_large": 0.8, "islands": 1.0,
    "holes_islands": 1.0, "keep_largest": 0.8, "drop_component": 0.5, "rect_dropout": 0.8,
    "shift_10": 1.0, "shift_20": 0.8, "shift_30": 0.5, "scale_down": 1.0, "scale_up": 1.0,
    "rotate_15": 1.0, "rotate_30": 0.7, "affine": 0.8, "gaussian_blob": 1.0, "gaussian_blob_large": 0.7,
    "circle": 0.8,
}  # fmt: skip


def test_main_registry_matches_method() -> None:
    assert {name: spec.weight for name, spec in MAIN.items()} == EXPECTED_MAIN
    assert dict(MAIN["erosion_9"].params) == {"kernel": 9}
    assert dict(MAIN["polygon_8"].params) == {"vertices": 8}
    assert dict(MAIN["elastic_60"].params) == {"alpha": 60.0, "sigma": 5.0}
    assert dict(MAIN["grid_8"].params) == {"num_steps": 8, "distort_limit": 0.4}
    assert dict(MAIN["holes_large"].params) == {"count": 3, "radius": (8.0, 15.0)}
    assert dict(MAIN["holes_islands"].params) == {"holes": 2, "islands": 2, "radius": (5.0, 15.0)}
    assert dict(MAIN["scale_up"].params) == {"factor": (1.1, 1.25)}
    assert dict(MAIN["affine"].params) == {"scale": (0.9, 1.1), "max_shift": 0.1, "max_degrees": 15.0}
    assert dict(MAIN["gaussian_blob_large"].params) == {"std_factor": 1.2}
    assert {spec.family for spec in MAIN.values()} == {
        "morphology", "shape", "boundary", "structure", "geometry", "blob",
    }  # fmt: skip


def test_other_registries_match_method() -> None:
    assert {n: s.weight for n, s in HEAVY.items()} == dict.fromkeys(HEAVY, 1.0)
    assert len(HEAVY) == 7
    assert dict(HEAVY["scale_shrink"].params) == {"factor": (0.5, 0.7)}
    assert dict(HEAVY["grid_12"].params) == {"num_steps": 12, "distort_limit": 0.6}
    assert dict(HEAVY["holes_heavy"].params) == {"count": 5, "radius": (10.0, 20.0)}
    assert {n: s.weight for n, s in CATASTROPHIC.items()} == {
        "inverted": 1.0, "empty": 0.5, "full": 0.5, "random": 0.3,
    }  # fmt: skip
    assert set(BLOB) == {"gaussian_blob", "gaussian_blob_large", "circle", "convex_hull", "bbox_fill"}
    assert all(BLOB[name] is MAIN[name] for name in BLOB)
    assert set(MULTICLASS) == {"class_swap"}
    for registry in (MAIN, HEAVY, CATASTROPHIC, BLOB, MULTICLASS):
        assert all(name == spec.name for name, spec in registry.items())
        assert all(spec.fn in engine.PLANS or spec.fn.__module__ == F.__name__ for spec in registry.values())


def test_registries_are_read_only() -> None:
    with pytest.raises(TypeError):
        MAIN["mine"] = MAIN["erosion_5"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        MAIN["erosion_5"].weight = 2.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        MAIN["erosion_5"].params["kernel"] = 3  # type: ignore[index]


def test_user_extension_without_mutation() -> None:
    def speckle(masks: torch.Tensor, *, generator: torch.Generator | None = None, amount: float = 0.1):
        return masks

    extended = dict(MAIN, speckle=CorruptionSpec("speckle", speckle, 1.0, "custom", {"amount": 0.2}))
    assert "speckle" in extended and "speckle" not in MAIN
    assert extended["speckle"](torch.zeros(1, 1, 4, 4)).shape == (1, 1, 4, 4)


def test_get_corruption() -> None:
    assert get_corruption("shift_40") is HEAVY["shift_40"]
    with pytest.raises(KeyError, match="erosion_5"):
        get_corruption("nope")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, ValueError),
        ({"fn": 3}, TypeError),
        ({"weight": -1.0}, ValueError),
        ({"weight": math.inf}, ValueError),
        ({"weight": "1"}, TypeError),
        ({"family": ""}, ValueError),
        ({"params": [1]}, TypeError),
    ],
)
def test_spec_validation(kwargs: dict, error: type) -> None:
    base = {"name": "x", "fn": F.erosion, "weight": 1.0, "family": "f", "params": {}}
    with pytest.raises(error):
        CorruptionSpec(**{**base, **kwargs})


def test_spec_hands_backend_to_builtins() -> None:
    masks = torch.zeros(1, 1, 16, 16)
    masks[..., 4:12, 4:12] = 1
    spec = MAIN["erosion_5"]
    assert torch.equal(spec(masks, backend="torch"), spec(masks))
    with pytest.raises(ValueError, match="backend"):
        spec(masks, backend="gpu")

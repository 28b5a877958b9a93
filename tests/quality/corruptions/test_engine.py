"""Tests for the corruption engine's internals: qg_lightning.quality.corruptions.engine (the sampler's
interface), the kernel runner and the helpers both backends share."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from qg_lightning.quality.corruptions import (
    _base,
    _cv_ops,
    _direct,
    _kernels,
    _plans,
    _torch_ops,
    engine,
    registry,
)
from qg_lightning.quality.corruptions import functional as F
from qg_lightning.quality.corruptions._base import run
from qg_lightning.quality.corruptions._kernels import (
    k_geometry,
    k_morph,
    k_polygon,
    k_smooth,
    random_points,
    stats,
)

#: The masks come from the fixtures of conftest.py (ellipse, mask_batch): drawing functions.
MaskMaker = Callable[..., torch.Tensor]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------
# the sampler's interface
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("name", sorted(registry.all_corruptions()))
def test_plans_reproduce_the_public_functions(name: str, backend: str, mask_batch: MaskMaker) -> None:
    """What the sampler relies on: a registry entry's plan run on its masks is the entry itself."""
    spec = registry.all_corruptions()[name]
    masks = mask_batch(32)
    plan = engine.plan_of(spec.fn, spec.params)
    assert engine.is_builtin(spec.fn)
    if plan is None:
        assert spec.fn not in engine.PLANS
        return
    expected = spec(masks, generator=_gen(4), backend=backend)
    assert torch.equal(run(masks, *plan, _gen(4), backend), expected)
    with torch.inference_mode():
        u8 = engine.to_u8(masks)
        out = engine.run_u8(u8, plan[0], {k: [v] * 4 for k, v in plan[1].items()}, _gen(4), backend)
    assert torch.equal(engine.finish(out, masks.dtype), expected)


def test_is_builtin_only_for_the_corruptions() -> None:
    assert engine.is_builtin(F.erosion) and engine.is_builtin(F.class_swap) and engine.is_builtin(F.identity)
    assert not engine.is_builtin(F.scaled_radius)
    assert not engine.is_builtin(lambda masks, *, generator=None: masks)
    assert engine.plan_of(lambda masks, *, generator=None: masks, {}) is None


def test_merged_kernel_calls_match_single_calls(mask_batch: MaskMaker) -> None:
    """The sampler runs registry entries that share a kernel as one call with per-sample parameters."""
    masks = mask_batch(48)[:2]
    kernel, _ = engine.PLANS[F.gaussian_blob]()
    merged = run(masks, kernel, {"std_factor": [1.2, 1.0], "isotropic": [0.0, 1.0]}, None, "auto")
    assert torch.equal(merged[0], F.gaussian_blob(masks[:1], std_factor=1.2)[0])
    assert torch.equal(merged[1], F.circle(masks[1:])[0])
    big = mask_batch(128)
    morph = run(big, k_morph, {"op": [0, 1, 2, 3], "kernel": [5, 11, 9, 5]}, None, "auto")
    singles = [F.dilation, F.erosion, F.opening, F.closing]
    for i, (fn, k) in enumerate(zip(singles, [5, 11, 9, 5], strict=True)):
        assert torch.equal(morph[i], fn(big[i : i + 1], kernel=k)[0])
    smooth = run(masks, k_smooth, {"kernel": [11.0, 15.0]}, None, "auto")
    assert torch.equal(smooth[0], F.smoothing(masks[:1], kernel=11)[0])
    assert torch.equal(smooth[1], F.smoothing(masks[1:], kernel=15)[0])
    polygons = run(masks, k_polygon, {"vertices": [3.0, 8.0]}, _gen(3), "auto")
    g = _gen(3)
    assert torch.equal(polygons[0], F.polygon_approximation(masks[:1], vertices=3, generator=g)[0])
    assert torch.equal(polygons[1], F.polygon_approximation(masks[1:], vertices=8, generator=g)[0])
    geometry = run(
        masks.repeat(2, 1, 1, 1),
        k_geometry,
        {
            "centroid": [0, 1, 1, 0],
            "scale_lo": [1, 1, 0.8, 1],
            "scale_hi": [1, 1, 0.8, 1],
            "max_degrees": [0, 0, 0, 0],
            "max_shift": [0, 0, 0, 0],
            "whole": [1, 1, 1, 0],
        },
        None,
        "auto",
    )
    expected = torch.cat([masks, F.scale(masks[:1], factor=(0.8, 0.8)), masks[1:]])
    assert torch.equal(geometry, expected)


def test_backend_checks() -> None:
    assert engine.BACKENDS == ("auto", "opencv", "torch")
    with pytest.raises(ValueError, match="`backend` must be one of"):
        engine.check_backend("numpy")
    x = torch.zeros(1, 4, 4, dtype=torch.uint8)
    assert _base.use_opencv(x, "auto") and _base.use_opencv(x, "opencv") and not _base.use_opencv(x, "torch")
    meta = x.to("meta")  # stands in for a CUDA tensor
    assert not _base.use_opencv(meta, "auto")
    with pytest.raises(ValueError, match="CPU tensors only"):
        _base.use_opencv(meta, "opencv")


# ----------------------------------------------------------------------------------------------------------
# helpers shared by both backends
# ----------------------------------------------------------------------------------------------------------


def test_cpu_helpers_match_torch(mask_batch: MaskMaker) -> None:
    x = (mask_batch(40)[:, 0] > 0.5).to(torch.uint8)
    x[1] = 0  # an empty mask: centre of the image, points anywhere
    moments, points = stats(x, True), random_points(x, 5, _gen(2), True)
    for cpu, reference in zip(moments, stats(x, False), strict=True):
        assert torch.allclose(cpu, reference, atol=1e-4)
    reference = random_points(x, 5, _gen(2), False)
    assert torch.equal(points[0], reference[0]) and torch.equal(points[1], reference[1])
    ys, xs = points[0].long(), points[1].long()
    picked = x[torch.arange(4)[:, None], ys, xs]
    assert bool(picked[[0, 2, 3]].all())  # foreground pixels of non-empty masks


@pytest.mark.parametrize("opencv", [True, False])
def test_random_points_are_uniform(opencv: bool) -> None:
    """Every foreground pixel is equally likely, whatever its row holds (4 standard deviations)."""
    x = torch.zeros(1, 6, 8, dtype=torch.uint8)
    x[0, 0, 1] = x[0, 2, 2:6] = x[0, 5, 7] = 1  # rows with 1, 4 and 1 foreground pixels
    n = 6000
    ys, xs = random_points(x, n, _gen(3), opencv)
    counts = torch.zeros(6, 8)
    counts.index_put_((ys[0].long(), xs[0].long()), torch.ones(n), accumulate=True)
    assert float(counts[x[0] == 0].sum()) == 0
    p = 1 / 6
    sigma = math.sqrt(n * p * (1 - p))
    assert bool(((counts[x[0] == 1] - n * p).abs() <= 4 * sigma).all()), counts


# ----------------------------------------------------------------------------------------------------------
# no global state
# ----------------------------------------------------------------------------------------------------------

MODULES = (_base, _torch_ops, _cv_ops, _kernels, _direct, _plans, F, registry, engine)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_no_module_level_mutable_state(module) -> None:
    """No switches, no hand-made caches: module globals are constants, functions and read-only mappings."""
    for name, value in vars(module).items():
        if name.startswith("__"):
            continue
        assert not isinstance(value, (dict, list, set, bytearray, np.ndarray, torch.Tensor)), name
        assert not (isinstance(value, bool) and name.isupper()), name  # e.g. an `_OPENCV_CPU` switch


def test_caches_are_bounded_and_read_only() -> None:
    cached = [_cv_ops.axis_basis, _cv_ops.square, _cv_ops.ramp_windows, _cv_ops.pixel_grid, _cv_ops.hull_trig,
              _cv_ops.elastic_taps, _cv_ops.smooth_taps]  # fmt: skip
    assert all(fn.cache_info().maxsize is not None for fn in cached)
    arrays = [_cv_ops.axis_basis(7)[0], _cv_ops.square(2), _cv_ops.ramp_windows(8), _cv_ops.pixel_grid(4, 6),
              *_cv_ops.hull_trig(), _cv_ops.elastic_taps(2.5), *_cv_ops.smooth_taps(32, 32, (11.0, 15.0))]  # fmt: skip
    assert not any(a.flags.writeable for a in arrays)

"""Tests for qg_lightning.quality.corruptions.functional: the contract, the documented effects and both
backends."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
import torch

from qg_lightning.quality.corruptions import functional as F
from qg_lightning.quality.corruptions.registry import all_corruptions

ALL = all_corruptions()
NAMES = sorted(ALL)
# corruptions whose output does not depend on the generator
DETERMINISTIC = {
    "erosion_5", "erosion_7", "erosion_9", "erosion_11", "dilation_5", "dilation_7", "dilation_9",
    "dilation_11", "opening_5", "closing_5", "ellipse", "convex_hull", "bbox_fill", "smooth_11", "smooth_15",
    "keep_largest", "gaussian_blob", "gaussian_blob_large", "circle", "inverted", "empty", "full",
}  # fmt: skip
#: The masks come from the fixtures of conftest.py (ellipse, mask_batch, multiclass_batch): drawing functions.
MaskMaker = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------------------


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _is_binary(t: torch.Tensor) -> bool:
    return bool(((t == 0) | (t == 1)).all())


# ----------------------------------------------------------------------------------------------------------
# contract: every corruption
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.uint8])
def test_shape_dtype_binary(name: str, dtype: torch.dtype, mask_batch: MaskMaker) -> None:
    masks = mask_batch(32).to(dtype)
    out = ALL[name](masks, generator=_gen())
    assert out.shape == masks.shape
    assert out.dtype == dtype
    assert _is_binary(out.float())


@pytest.mark.parametrize("name", NAMES)
def test_seeded_and_pure(name: str, mask_batch: MaskMaker) -> None:
    masks = mask_batch(48)
    before = masks.clone()
    first = ALL[name](masks, generator=_gen(1))
    second = ALL[name](masks, generator=_gen(1))
    assert torch.equal(first, second)
    assert torch.equal(masks, before)  # inputs untouched
    if name not in DETERMINISTIC | {"class_swap"}:
        others = [ALL[name](masks, generator=_gen(seed)) for seed in (2, 3, 4)]
        assert any(not torch.equal(first, other) for other in others), f"{name} ignores the generator"


@pytest.mark.parametrize("name", NAMES)
def test_multiclass_stays_exclusive(name: str, multiclass_batch: MaskMaker) -> None:
    masks = multiclass_batch(32)
    out = ALL[name](masks, generator=_gen())
    assert out.shape == masks.shape
    assert _is_binary(out)
    assert bool((out.sum(1) <= 1).all()), "foreground channels overlap"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_empty_and_full_inputs(name: str, fill: float) -> None:
    masks = torch.full((2, 1, 24, 24), fill)
    out = ALL[name](masks, generator=_gen())
    assert out.shape == masks.shape
    assert _is_binary(out)


def test_odd_sizes_and_non_square() -> None:
    masks = torch.zeros(2, 1, 37, 53)
    masks[:, :, 10:25, 12:40] = 1
    for name in NAMES:
        out = ALL[name](masks, generator=_gen())
        assert out.shape == masks.shape and _is_binary(out), name


def test_uint8_storage_offset_views() -> None:
    """Slices with an unaligned storage offset fall back to the generic counting path."""
    masks = torch.zeros(3, 1, 16, 16, dtype=torch.uint8)
    masks[:, :, 4:12, 4:12] = 1
    view = masks.view(-1)[1:].view(-1)  # 1-byte offset
    odd = view[: 2 * 16 * 16].view(2, 1, 16, 16)
    assert F.circle(odd).shape == odd.shape
    assert F.bounding_box(odd).shape == odd.shape


# ----------------------------------------------------------------------------------------------------------
# documented effects
# ----------------------------------------------------------------------------------------------------------


def _subset(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a <= b).all())


@pytest.mark.parametrize("name", ["erosion_5", "erosion_9", "erosion_11", "opening_5"])
def test_shrinking_morphology(name: str, mask_batch: MaskMaker) -> None:
    masks = mask_batch(64)
    out = ALL[name](masks)
    assert _subset(out, masks)
    if name != "opening_5":
        assert out.sum() < masks.sum()


@pytest.mark.parametrize("name", ["dilation_5", "dilation_9", "dilation_11", "closing_5"])
def test_growing_morphology(name: str, mask_batch: MaskMaker) -> None:
    masks = mask_batch(64)
    out = ALL[name](masks)
    assert _subset(masks, out)
    if name != "closing_5":
        assert out.sum() > masks.sum()


def test_morphology_matches_opencv(mask_batch: MaskMaker) -> None:
    masks = mask_batch(64)
    r = F.scaled_radius(9, 64)
    kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    for i, m in enumerate(masks[:, 0].numpy().astype(np.uint8)):
        assert np.array_equal(F.dilation(masks, kernel=9)[i, 0].numpy(), cv2.dilate(m, kernel))
        assert np.array_equal(F.erosion(masks, kernel=9)[i, 0].numpy(), cv2.erode(m, kernel))


def test_scaled_radius() -> None:
    assert F.scaled_radius(5, 224) == 2
    assert F.scaled_radius(11, 448) == 10
    assert F.scaled_radius(5, 32) == 1  # at least 1 px
    assert F.scaled_radius(1, 512) == 0
    with pytest.raises(ValueError, match="kernel"):
        F.scaled_radius(0, 224)


def _removed_fraction(ellipse: MaskMaker, name: str, size: int, seeds: int = 4) -> float:
    disk = ellipse(size, 0.5, 0.5, 0.3, 0.3)[None, None].repeat(seeds, 1, 1, 1)
    out = ALL[name](disk, generator=_gen(5))
    return float((out != disk).float().sum() / disk.sum())


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("erosion_9", 0.35),
        ("dilation_11", 0.35),
        ("holes_large", 0.5),
        ("shift_20", 0.35),
        ("elastic_60", 0.5),
        ("grid_8", 0.5),
        ("rect_dropout", 0.35),
    ],
)
def test_sizes_scale_with_resolution(name: str, tolerance: float, ellipse: MaskMaker) -> None:
    """A 64 px and a 256 px disk lose (or gain) a similar fraction of their area."""
    small, large = _removed_fraction(ellipse, name, 64), _removed_fraction(ellipse, name, 256)
    assert large > 0
    assert abs(small - large) / large <= tolerance, (small, large)


def test_inverted_empty_full(mask_batch: MaskMaker) -> None:
    masks = mask_batch(32)
    assert torch.equal(F.inverted(masks), 1 - masks)
    assert F.empty(masks).sum() == 0
    assert F.full(masks).sum() == masks.numel()


def test_random_noise_is_fair() -> None:
    out = F.random_noise(torch.zeros(4, 1, 64, 64), generator=_gen())
    assert abs(out.mean().item() - 0.5) < 0.02
    biased = F.random_noise(torch.zeros(4, 1, 64, 64), p=0.2, generator=_gen())
    assert abs(biased.mean().item() - 0.2) < 0.02


def test_hull_and_bbox_contain_the_mask(mask_batch: MaskMaker) -> None:
    masks = mask_batch(64)
    hull, box = F.convex_hull(masks), F.bounding_box(masks)
    assert _subset(masks, hull) and _subset(hull, box)
    for i, m in enumerate(masks[:, 0].numpy().astype(np.uint8)):
        points = cv2.findNonZero(m)
        reference = np.zeros_like(m)
        cv2.fillPoly(reference, [cv2.convexHull(points)], 1)
        ours = hull[i, 0].numpy().astype(bool)
        iou = (ours & reference.astype(bool)).sum() / (ours | reference.astype(bool)).sum()
        assert iou > 0.95, (i, iou)
        ys, xs = np.nonzero(m)
        expected = np.zeros_like(m)
        expected[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = 1
        assert np.array_equal(box[i, 0].numpy(), expected)


def test_fitted_ellipse_recovers_an_ellipse(mask_batch: MaskMaker) -> None:
    masks = mask_batch(96)[1:2]  # a tilted ellipse
    out = F.fitted_ellipse(masks)
    iou = (out * masks).sum() / ((out + masks) > 0).sum()
    assert iou > 0.9


def test_polygon_lies_inside_the_hull(mask_batch: MaskMaker) -> None:
    masks = mask_batch(64)
    hull = F.dilation(F.convex_hull(masks), kernel=3)  # one pixel of slack for rounding
    for vertices in (3, 5, 8):
        out = F.polygon_approximation(masks, vertices=vertices, generator=_gen())
        assert _subset(out, hull)
        assert out.sum() > 0.3 * masks.sum()
    tri = F.polygon_approximation(masks, vertices=3, generator=_gen()).sum()
    octagon = F.polygon_approximation(masks, vertices=8, generator=_gen()).sum()
    assert octagon > tri


@pytest.mark.parametrize(
    "name", ["holes_small", "holes_large", "holes_heavy", "rect_dropout", "keep_largest", "drop_component"]
)
def test_removing_corruptions_only_remove(name: str, mask_batch: MaskMaker) -> None:
    masks = mask_batch(64)
    out = ALL[name](masks, generator=_gen())
    assert _subset(out, masks)
    if name not in ("keep_largest", "drop_component"):
        assert out.sum() < masks.sum()


def test_islands_only_add(mask_batch: MaskMaker) -> None:
    masks = mask_batch(64)
    out = F.islands(masks, count=2, radius=(3.0, 8.0), generator=_gen())
    assert _subset(masks, out) and out.sum() > masks.sum()


def test_components(mask_batch: MaskMaker) -> None:
    masks = mask_batch(48)
    two = masks[2:3]  # two blobs
    kept = F.keep_largest_component(two)
    counts = [cv2.connectedComponentsWithStats(two[0, 0].numpy().astype(np.uint8))[2][1:, 4]]
    assert kept.sum().item() == max(counts[0])
    dropped = F.drop_random_component(two, generator=_gen())
    assert _subset(dropped, two) and dropped.sum() < two.sum() and dropped.sum() > 0
    single = masks[:1]  # one component: unchanged
    assert torch.equal(F.drop_random_component(single, generator=_gen()), single)


def test_shift_preserves_area_away_from_borders(ellipse: MaskMaker) -> None:
    masks = ellipse(64, 0.5, 0.5, 0.15, 0.15)[None, None].repeat(4, 1, 1, 1)
    for max_fraction in (0.1, 0.2, 0.3):
        out = F.shift(masks, max_fraction=max_fraction, generator=_gen())
        assert torch.equal(out.sum((1, 2, 3)), masks.sum((1, 2, 3)))
    assert not torch.equal(out, masks)


def test_geometry_effects(ellipse: MaskMaker) -> None:
    masks = ellipse(64, 0.5, 0.5, 0.2, 0.1)[None, None].repeat(4, 1, 1, 1)
    area = masks.sum((1, 2, 3))
    assert bool((F.scale(masks, factor=(0.75, 0.9), generator=_gen()).sum((1, 2, 3)) < area).all())
    assert bool((F.scale(masks, factor=(1.1, 1.25), generator=_gen()).sum((1, 2, 3)) > area).all())
    rotated = F.rotate(masks, max_degrees=30.0, generator=_gen())
    assert torch.allclose(rotated.sum((1, 2, 3)), area, rtol=0.1)
    affine = F.random_affine(masks, generator=_gen())
    assert torch.allclose(affine.sum((1, 2, 3)), area, rtol=0.3)
    # no-op settings are exact identities on every geometry path
    assert torch.equal(F.scale(masks, factor=(1.0, 1.0)), masks)
    assert torch.equal(F.rotate(masks, max_degrees=0.0), masks)
    assert torch.equal(F.shift(masks, max_fraction=0.0), masks)


@pytest.mark.parametrize("name", ["elastic_30", "elastic_60", "grid_5", "grid_8", "grid_12", "jagged_3"])
def test_boundary_corruptions_keep_the_shape(name: str, mask_batch: MaskMaker) -> None:
    masks = mask_batch(64)
    out = ALL[name](masks, generator=_gen())
    dice = 2 * (out * masks).sum() / (out.sum() + masks.sum())
    assert 0.6 < dice < 1.0


def test_jagged_band_only_touches_the_band(mask_batch: MaskMaker) -> None:
    masks = mask_batch(64)
    out = F.jagged_band(masks, kernel=5, generator=_gen())
    band = F.dilation(masks, kernel=5) - F.erosion(masks, kernel=5)
    assert torch.equal(out * (1 - band), masks * (1 - band))


def test_smoothing_removes_specks_and_keeps_disks(ellipse: MaskMaker) -> None:
    masks = ellipse(128, 0.5, 0.5, 0.3, 0.3)[None, None].clone()
    masks[..., 5, 5] = 1
    out = F.smoothing(masks, kernel=11)
    assert out[0, 0, 5, 5] == 0
    assert abs(out.sum().item() - masks.sum().item()) / masks.sum().item() < 0.03


def test_blobs_match_the_area(mask_batch: MaskMaker) -> None:
    masks = mask_batch(96)
    area = masks.sum((1, 2, 3))
    blob = F.gaussian_blob(masks).sum((1, 2, 3))
    large = F.gaussian_blob(masks, std_factor=1.2).sum((1, 2, 3))
    disk = F.circle(masks).sum((1, 2, 3))
    assert torch.allclose(blob, area, rtol=0.05)
    assert torch.allclose(disk, area, rtol=0.05)
    assert torch.allclose(large, area * 1.44, rtol=0.06)


def test_shapes_of_empty_masks_stay_empty() -> None:
    masks = torch.zeros(2, 1, 32, 32)
    shapes = ("ellipse", "polygon_5", "convex_hull", "bbox_fill", "gaussian_blob", "circle", "keep_largest")
    for name in shapes:
        assert ALL[name](masks, generator=_gen()).sum() == 0, name
    assert F.islands(masks, generator=_gen()).sum() > 0  # islands land anywhere on an empty mask


def test_class_swap(mask_batch: MaskMaker, multiclass_batch: MaskMaker) -> None:
    masks = multiclass_batch(48)
    out = F.class_swap(masks, generator=_gen())
    assert torch.equal(out.sum(1), masks.sum(1))  # same foreground, only the labels move
    assert not torch.equal(out, masks)
    assert bool((out.sum(1) <= 1).all())
    binary = mask_batch(32)
    assert torch.equal(F.class_swap(binary, generator=_gen()), binary)


# ----------------------------------------------------------------------------------------------------------
# CPU path (OpenCV / NumPy per mask) against the batched torch path (the one CUDA tensors take)
# ----------------------------------------------------------------------------------------------------------

# corruptions whose CPU path repeats the torch path's integer pixel work exactly (no float rounding ties)
EXACT_ON_CPU = {
    "erosion_5", "erosion_7", "erosion_9", "erosion_11", "dilation_5", "dilation_7", "dilation_9",
    "dilation_11", "opening_5", "closing_5", "jagged_3", "jagged_5", "holes_small", "holes_large", "islands",
    "holes_islands", "holes_heavy", "shift_10", "shift_20", "shift_30", "shift_40", "keep_largest",
    "drop_component", "grid_5", "grid_8", "grid_12",
}  # fmt: skip


def _both_paths(fn, masks: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn`` on the CPU (OpenCV / NumPy) path and on the batched torch path, same seed."""
    cpu = fn(masks, generator=_gen(seed))
    reference = fn(masks, generator=_gen(seed), backend="torch")
    return cpu, reference


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [48, 96])
def test_cpu_path_matches_torch_path(name: str, size: int, mask_batch: MaskMaker) -> None:
    """Both paths make the same draws; they may differ only on rounding ties (warps, blurs)."""
    masks = torch.cat([mask_batch(size), mask_batch(size).flip(-1)])
    cpu, reference = _both_paths(ALL[name], masks, 5)
    assert cpu.shape == reference.shape and cpu.dtype == reference.dtype
    differ = int((cpu != reference).sum())
    if name in EXACT_ON_CPU:
        assert differ == 0, name
    else:
        assert differ <= 0.01 * max(1.0, float(reference.sum())), (name, differ)


@pytest.mark.parametrize("name", ["erosion_5", "closing_5", "jagged_5", "smooth_11", "elastic_60", "grid_8",
                                  "holes_islands", "rotate_30", "affine", "shift_20"])  # fmt: skip
def test_cpu_path_matches_torch_path_multiclass(name: str, multiclass_batch: MaskMaker) -> None:
    cpu, reference = _both_paths(ALL[name], multiclass_batch(48), 2)
    assert bool((cpu.sum(1) <= 1).all())
    assert int((cpu != reference).sum()) <= 0.01 * float(reference.sum()), name


@pytest.mark.parametrize("name", NAMES)
def test_torch_path_contract(name: str, mask_batch: MaskMaker, multiclass_batch: MaskMaker) -> None:
    """The batched torch path (CUDA's) keeps the contract when forced on CPU: shape, dtype, hard values,
    seeded."""
    masks = mask_batch(32)
    first = ALL[name](masks, generator=_gen(1), backend="torch")
    assert first.shape == masks.shape and first.dtype == masks.dtype and _is_binary(first)
    assert torch.equal(first, ALL[name](masks, generator=_gen(1), backend="torch"))
    multi = ALL[name](multiclass_batch(32), generator=_gen(1), backend="torch")
    assert bool((multi.sum(1) <= 1).all())


def test_float_inputs_of_any_layout(mask_batch: MaskMaker) -> None:
    """The NumPy fast path for float masks accepts float64 and non-contiguous views."""
    masks = mask_batch(32)
    expected = F.erosion(masks, kernel=7)
    assert torch.equal(F.erosion(masks.double(), kernel=7), expected.double())
    transposed = masks.transpose(2, 3).contiguous().transpose(2, 3)  # same values, column-major
    assert not transposed.is_contiguous()
    assert torch.equal(F.erosion(transposed, kernel=7), expected)


# ----------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="masks"):
        F.erosion(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="masks"):
        F.erosion(torch.zeros(1, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="masks"):
        F.erosion(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="kernel"):
        F.erosion(torch.zeros(1, 1, 4, 4), kernel=0)
    with pytest.raises(ValueError, match="radius"):
        F.holes(torch.zeros(1, 1, 4, 4), radius=(5.0, 1.0))
    with pytest.raises(ValueError, match="vertices"):
        F.polygon_approximation(torch.zeros(1, 1, 4, 4), vertices=2)
    with pytest.raises(ValueError, match="max_degrees"):
        F.rotate(torch.zeros(1, 1, 4, 4), max_degrees=400.0)


@pytest.mark.parametrize("name", NAMES)
def test_backend_is_validated(name: str, mask_batch: MaskMaker) -> None:
    """Every corruption takes ``backend``; a bad value, or ``"opencv"`` off the CPU, names the argument."""
    masks = mask_batch(16)
    with pytest.raises(ValueError, match="`backend` must be one of"):
        ALL[name](masks, generator=_gen(), backend="cuda")
    with pytest.raises(ValueError, match="backend='opencv'"):
        F.erosion(masks.to("meta"), backend="opencv")
    auto = ALL[name](masks, generator=_gen(), backend="auto")
    assert torch.equal(auto, ALL[name](masks, generator=_gen(), backend="opencv"))  # CPU: auto is OpenCV


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.bool])
def test_results_are_ordinary_tensors(dtype: torch.dtype, mask_batch: MaskMaker) -> None:
    """Work runs under inference mode, but callers get tensors they may modify in place."""
    masks = mask_batch(16).to(dtype)
    for fn in (F.erosion, F.shift, F.class_swap):
        out = fn(masks, generator=_gen())
        assert not out.is_inference()
        out.logical_not_() if dtype == torch.bool else out.mul_(0)
    assert bool(masks.any())  # the input was not modified through the output


def test_zero_sized_batch() -> None:
    masks = torch.zeros(0, 1, 8, 8)
    assert F.erosion(masks).shape == masks.shape
    assert F.shift(masks, generator=_gen()).shape == masks.shape

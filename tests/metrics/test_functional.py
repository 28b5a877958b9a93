"""Tests for qg_lightning.metrics.functional against independent NumPy / SciPy references."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from qg_lightning.metrics.functional import dice_score, hd95, iou_score

# ----------------------------------------------------------------------------------------------------
# Independent references (plain NumPy loops; HD95 the MedPy way)
# ----------------------------------------------------------------------------------------------------


def _ref_overlap(
    preds: np.ndarray, target: np.ndarray, num_classes: int, kind: str, both_empty: float
) -> np.ndarray:
    out = np.zeros((preds.shape[0], num_classes - 1))
    for b in range(preds.shape[0]):
        for c in range(1, num_classes):
            p = preds[b] == c
            t = target[b] == c
            inter = np.logical_and(p, t).sum()
            if kind == "dice":
                denom = p.sum() + t.sum()
                out[b, c - 1] = both_empty if denom == 0 else 2 * inter / denom
            else:
                union = np.logical_or(p, t).sum()
                out[b, c - 1] = both_empty if union == 0 else inter / union
    return out


def _medpy_surface_distances(
    result: np.ndarray, reference: np.ndarray, spacing: tuple[float, float]
) -> np.ndarray:
    footprint = generate_binary_structure(2, 1)
    result_border = result ^ binary_erosion(result, structure=footprint, iterations=1)
    reference_border = reference ^ binary_erosion(reference, structure=footprint, iterations=1)
    dt = distance_transform_edt(~reference_border, sampling=spacing)
    return dt[result_border]


def _ref_hd95(
    preds: np.ndarray, target: np.ndarray, num_classes: int, spacing: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    height, width = preds.shape[1:]
    diagonal = math.sqrt((height * spacing[0]) ** 2 + (width * spacing[1]) ** 2)
    out = np.zeros((preds.shape[0], num_classes - 1))
    for b in range(preds.shape[0]):
        for c in range(1, num_classes):
            p = preds[b] == c
            t = target[b] == c
            if not p.any() and not t.any():
                out[b, c - 1] = 0.0
            elif not p.any() or not t.any():
                out[b, c - 1] = diagonal
            else:
                d1 = _medpy_surface_distances(p, t, spacing)
                d2 = _medpy_surface_distances(t, p, spacing)
                out[b, c - 1] = np.percentile(np.hstack((d1, d2)), 95)
    return out


def _random_blobs(
    batch: int, size: int, num_classes: int, generator: torch.Generator, blobs: int = 3, noise: float = 0.02
) -> torch.Tensor:
    """Label maps with a few random ellipses per class, some flipped pixels, and some empty classes."""
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    labels = torch.zeros(batch, size, size, dtype=torch.long)
    for c in range(1, num_classes):
        centres = torch.rand(batch, blobs, 2, generator=generator) * size
        radii = 2 + torch.rand(batch, blobs, 2, generator=generator) * size / 4
        present = torch.rand(batch, blobs, generator=generator) < 0.8
        dy = (yy - centres[..., 0, None, None]) / radii[..., 0, None, None]
        dx = (xx - centres[..., 1, None, None]) / radii[..., 1, None, None]
        inside = ((dy**2 + dx**2) < 1) & present[..., None, None]
        labels[inside.any(dim=1)] = c
    flips = torch.rand(batch, size, size, generator=generator) < noise
    random_labels = torch.randint(0, num_classes, (batch, size, size), generator=generator)
    return torch.where(flips, random_labels, labels)


# ----------------------------------------------------------------------------------------------------
# Dice / IoU
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 3, 5])
@pytest.mark.parametrize("name", ["dice", "iou"])
def test_overlap_matches_numpy_reference(num_classes: int, name: str) -> None:
    g = torch.Generator().manual_seed(num_classes)
    preds = _random_blobs(6, 32, num_classes, g)
    target = _random_blobs(6, 32, num_classes, g)
    preds[0] = target[0]  # one perfect image
    fn = dice_score if name == "dice" else iou_score
    out = fn(preds, target, num_classes)
    assert out.shape == (6, num_classes - 1)
    assert out.dtype == torch.float32
    ref = _ref_overlap(preds.numpy(), target.numpy(), num_classes, name, both_empty=1.0)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-6)
    assert torch.all(out[0] == 1.0)


def test_dice_iou_known_values() -> None:
    preds = torch.tensor([[[1, 1, 0, 0]]])
    target = torch.tensor([[[1, 0, 0, 0]]])
    assert dice_score(preds, target, 2).item() == pytest.approx(2 / 3)
    assert iou_score(preds, target, 2).item() == pytest.approx(1 / 2)


@pytest.mark.parametrize("fn", [dice_score, iou_score])
def test_overlap_both_empty_default_is_one(fn) -> None:
    empty = torch.zeros(2, 8, 8, dtype=torch.long)
    assert torch.equal(fn(empty, empty, 2), torch.ones(2, 1))


@pytest.mark.parametrize("fn", [dice_score, iou_score])
def test_overlap_both_empty_custom_value(fn) -> None:
    empty = torch.zeros(1, 8, 8, dtype=torch.long)
    assert torch.isnan(fn(empty, empty, 2, both_empty=float("nan"))).all()
    assert fn(empty, empty, 2, both_empty=0.0).item() == 0.0


@pytest.mark.parametrize("fn", [dice_score, iou_score])
def test_overlap_empty_prediction_nonempty_truth_is_zero(fn) -> None:
    preds = torch.zeros(1, 8, 8, dtype=torch.long)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 0, 0] = 1  # a single true pixel: no smoothing may lift this above 0
    assert fn(preds, target, 2).item() == 0.0
    assert fn(preds, target, 2, both_empty=float("nan")).item() == 0.0


@pytest.mark.parametrize("fn", [dice_score, iou_score])
def test_overlap_nonempty_prediction_empty_truth_is_zero(fn) -> None:
    preds = torch.zeros(1, 8, 8, dtype=torch.long)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    preds[0, 3, 3] = 1
    assert fn(preds, target, 2).item() == 0.0


def test_overlap_multiclass_per_class_values() -> None:
    # class 1 perfect, class 2 half-overlapping, class 3 absent from both
    target = torch.tensor([[[1, 1, 2, 2, 0, 0]]])
    preds = torch.tensor([[[1, 1, 2, 0, 2, 0]]])
    dice = dice_score(preds, target, 4)
    iou = iou_score(preds, target, 4)
    torch.testing.assert_close(dice, torch.tensor([[1.0, 0.5, 1.0]]))
    torch.testing.assert_close(iou, torch.tensor([[1.0, 1 / 3, 1.0]]))
    assert torch.isnan(dice_score(preds, target, 4, both_empty=float("nan"))[0, 2])


def test_overlap_accepts_integer_dtypes_and_empty_batch() -> None:
    preds = torch.tensor([[[1, 0], [1, 1]]], dtype=torch.int32)
    target = torch.tensor([[[1, 0], [0, 1]]], dtype=torch.uint8)
    assert dice_score(preds, target, 2).item() == pytest.approx(0.8)
    empty_batch = torch.zeros(0, 4, 4, dtype=torch.long)
    assert dice_score(empty_batch, empty_batch, 3).shape == (0, 2)
    assert hd95(empty_batch, empty_batch, 3).shape == (0, 2)


# ----------------------------------------------------------------------------------------------------
# HD95
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("spacing", [None, (0.5, 2.0)])
def test_hd95_matches_medpy_style_reference(num_classes: int, spacing) -> None:
    g = torch.Generator().manual_seed(10 + num_classes)
    preds = _random_blobs(8, 40, num_classes, g)
    target = _random_blobs(8, 40, num_classes, g)
    preds[0] = target[0]
    preds[1] = torch.clamp(target[1] + 1, max=num_classes - 1)  # grown masks, touching the border
    out = hd95(preds, target, num_classes, spacing=spacing)
    assert out.shape == (8, num_classes - 1)
    assert out.dtype == torch.float32
    ref = _ref_hd95(preds.numpy(), target.numpy(), num_classes, spacing or (1.0, 1.0))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)
    assert torch.all(out[0] == 0.0)


def test_hd95_masks_touching_image_border() -> None:
    # the whole image is foreground: its boundary is the outer frame (outside counts as background)
    full = torch.ones(1, 10, 12, dtype=torch.long)
    square = torch.zeros(1, 10, 12, dtype=torch.long)
    square[0, 3:7, 4:8] = 1
    out = hd95(full, square, 2)
    ref = _ref_hd95(full.numpy(), square.numpy(), 2)
    assert out.item() == pytest.approx(ref.item(), abs=1e-5)
    assert hd95(full, full, 2).item() == 0.0


def test_hd95_known_value_single_pixels() -> None:
    preds = torch.zeros(1, 10, 10, dtype=torch.long)
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    preds[0, 1, 1] = 1
    target[0, 4, 5] = 1
    assert hd95(preds, target, 2).item() == pytest.approx(5.0)
    assert hd95(preds, target, 2, spacing=(2.0, 1.0)).item() == pytest.approx(math.sqrt(6**2 + 4**2))


def test_hd95_uses_union_percentile_not_max_of_directed() -> None:
    # Pred: the true square plus a far-away 2 x 2 island. The island's 4 boundary pixels are 10% of the
    # prediction-to-truth distances (95th percentile: large) but only 5% of the union (95th percentile:
    # small).
    target = torch.zeros(1, 40, 40, dtype=torch.long)
    target[0, 2:12, 2:12] = 1
    preds = target.clone()
    preds[0, 34:36, 34:36] = 1
    out = hd95(preds, target, 2).item()
    p, t = preds[0].numpy() == 1, target[0].numpy() == 1
    d_pt = _medpy_surface_distances(p, t, (1.0, 1.0))
    d_tp = _medpy_surface_distances(t, p, (1.0, 1.0))
    union = np.percentile(np.hstack((d_pt, d_tp)), 95)
    max_of_directed = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
    assert out == pytest.approx(union, abs=1e-5)
    assert max_of_directed > union + 10.0


def test_hd95_both_empty_default_is_zero() -> None:
    empty = torch.zeros(2, 8, 8, dtype=torch.long)
    assert torch.equal(hd95(empty, empty, 2), torch.zeros(2, 1))


def test_hd95_both_empty_custom_value() -> None:
    empty = torch.zeros(1, 8, 8, dtype=torch.long)
    assert torch.isnan(hd95(empty, empty, 2, both_empty=float("nan"))).all()
    assert hd95(empty, empty, 2, both_empty=7.0).item() == 7.0


@pytest.mark.parametrize("empty_side", ["preds", "target"])
def test_hd95_exactly_one_empty_is_diagonal(empty_side: str) -> None:
    mask = torch.zeros(1, 6, 8, dtype=torch.long)
    mask[0, 2:4, 2:4] = 1
    empty = torch.zeros_like(mask)
    preds, target = (empty, mask) if empty_side == "preds" else (mask, empty)
    assert hd95(preds, target, 2).item() == pytest.approx(10.0)  # sqrt(6^2 + 8^2)
    assert hd95(preds, target, 2, spacing=(0.5, 0.25)).item() == pytest.approx(math.hypot(3.0, 2.0))
    assert hd95(preds, target, 2, both_empty=float("nan")).item() == pytest.approx(10.0)


def test_hd95_empty_worse_than_any_nonempty_prediction() -> None:
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[0, 0, 0] = 1
    far = torch.zeros_like(target)
    far[0, 15, 15] = 1  # the farthest possible non-empty prediction
    empty = torch.zeros_like(target)
    assert hd95(empty, target, 2).item() > hd95(far, target, 2).item() > 0


def test_hd95_multiclass_per_class_rules() -> None:
    preds = torch.zeros(1, 8, 8, dtype=torch.long)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    preds[0, 1:3, 1:3] = 1
    target[0, 1:3, 1:3] = 1  # class 1 perfect -> 0
    target[0, 5:7, 5:7] = 2  # class 2 missed -> diagonal
    # class 3 absent from both -> both_empty
    out = hd95(preds, target, 4, both_empty=-1.0)
    torch.testing.assert_close(out, torch.tensor([[0.0, math.sqrt(128.0), -1.0]]))


def test_hd95_batch_equals_single_images() -> None:
    g = torch.Generator().manual_seed(3)
    preds = _random_blobs(5, 24, 3, g)
    target = _random_blobs(5, 24, 3, g)
    batched = hd95(preds, target, 3)
    singles = torch.cat([hd95(preds[i : i + 1], target[i : i + 1], 3) for i in range(5)])
    torch.testing.assert_close(batched, singles)


def test_hd95_speed_64_images_256px() -> None:
    g = torch.Generator().manual_seed(0)
    preds = _random_blobs(64, 256, 2, g, noise=0.0)
    target = _random_blobs(64, 256, 2, g, noise=0.0)
    hd95(preds[:2], target[:2], 2)  # warm-up
    start = time.perf_counter()
    hd95(preds, target, 2)
    elapsed = time.perf_counter() - start
    # target is < 1 s on one free CPU core; the bound is loose because the test machines are shared
    assert elapsed < 5.0, f"hd95 on 64 x 256 x 256 took {elapsed:.2f} s"


# ----------------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------------

_FUNCTIONS = [dice_score, iou_score, hd95]


@pytest.mark.parametrize("fn", _FUNCTIONS)
def test_rejects_wrong_ndim(fn) -> None:
    good = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="`preds`"):
        fn(torch.zeros(2, 1, 4, 4, dtype=torch.long), good, 2)
    with pytest.raises(ValueError, match="`target`"):
        fn(good, torch.zeros(4, 4, dtype=torch.long), 2)


@pytest.mark.parametrize("fn", _FUNCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_rejects_non_integer_dtype(fn, dtype: torch.dtype) -> None:
    good = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="`preds`.*dtype"):
        fn(good.to(dtype), good, 2)
    with pytest.raises(ValueError, match="`target`.*dtype"):
        fn(good, good.to(dtype), 2)


@pytest.mark.parametrize("fn", _FUNCTIONS)
def test_rejects_values_out_of_range(fn) -> None:
    good = torch.zeros(1, 4, 4, dtype=torch.long)
    bad = good.clone()
    bad[0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"`preds` must hold values in 0\.\.2"):
        fn(bad, good, 3)
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match="`target`"):
        fn(good, bad, 3)


@pytest.mark.parametrize("fn", _FUNCTIONS)
def test_rejects_shape_mismatch_and_non_tensors(fn) -> None:
    a = torch.zeros(1, 4, 4, dtype=torch.long)
    b = torch.zeros(1, 4, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="same shape"):
        fn(a, b, 2)
    with pytest.raises(TypeError, match="`preds`"):
        fn(a.numpy(), a, 2)


@pytest.mark.parametrize("fn", _FUNCTIONS)
@pytest.mark.parametrize("num_classes", [1, 0, 2.0, True])
def test_rejects_bad_num_classes(fn, num_classes) -> None:
    a = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="`num_classes`"):
        fn(a, a, num_classes)


@pytest.mark.parametrize("spacing", [(1.0,), (1.0, 0.0), (1.0, -2.0), (1.0, float("inf")), "ab", 1.0])
def test_hd95_rejects_bad_spacing(spacing) -> None:
    a = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="`spacing`"):
        hd95(a, a, 2, spacing=spacing)


@pytest.mark.parametrize("fn", _FUNCTIONS)
def test_rejects_bad_both_empty(fn) -> None:
    a = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(TypeError, match="`both_empty`"):
        fn(a, a, 2, both_empty="one")

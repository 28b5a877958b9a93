"""Tests for qg_lightning.metrics.wrappers.SegmentationMetrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torchmetrics.utilities import dim_zero_cat

from qg_lightning.metrics import SegmentationMetrics, dice_score, hd95, iou_score


def _batch(batch: int, size: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.zeros(batch, size, size, dtype=torch.long)
    preds = torch.zeros(batch, size, size, dtype=torch.long)
    for c in range(1, num_classes):
        corners = torch.randint(0, size - 6, (batch, 2, 2), generator=g)
        for b in range(batch):
            (ty, tx), (py, px) = corners[b].tolist()
            target[b, ty : ty + 5, tx : tx + 5] = c
            preds[b, py : py + 6, px : px + 4] = c
    return preds, target


@pytest.mark.parametrize("num_classes", [2, 3])
def test_compute_and_per_image_match_functional(num_classes: int) -> None:
    metric = SegmentationMetrics(num_classes=num_classes)
    batches = [_batch(3, 16, num_classes, seed) for seed in range(3)]
    for preds, target in batches:
        metric.update(preds, target)
    preds = torch.cat([p for p, _ in batches])
    target = torch.cat([t for _, t in batches])
    expected = {
        "dice": dice_score(preds, target, num_classes).mean(dim=1),
        "iou": iou_score(preds, target, num_classes).mean(dim=1),
        "hd95": hd95(preds, target, num_classes).mean(dim=1),
    }
    per_image = metric.per_image()
    assert set(per_image) == {"dice", "iou", "hd95"}
    for key, values in expected.items():
        assert per_image[key].shape == (9,)
        torch.testing.assert_close(per_image[key], values)
    result = metric.compute()
    assert set(result) == {"dice", "iou", "hd95"}
    for key, values in expected.items():
        torch.testing.assert_close(result[key], values.mean())


def test_summary_sample_std_and_json() -> None:
    metric = SegmentationMetrics(num_classes=2)
    preds, target = _batch(4, 16, 2, seed=1)
    metric.update(preds, target)
    summary = metric.summary()
    per_image = metric.per_image()
    assert set(summary) == {"dice", "iou", "hd95"}
    for key, stats in summary.items():
        values = per_image[key].double().numpy()
        assert stats["n"] == 4 and isinstance(stats["n"], int)
        assert stats["mean"] == pytest.approx(values.mean())
        assert stats["std"] == pytest.approx(values.std(ddof=1))
        assert isinstance(stats["mean"], float) and isinstance(stats["std"], float)
    json.loads(json.dumps(summary))


def test_summary_single_image_std_is_zero() -> None:
    metric = SegmentationMetrics(num_classes=2, include_hd95=False)
    preds, target = _batch(1, 16, 2, seed=2)
    metric.update(preds, target)
    summary = metric.summary()
    assert summary["dice"]["n"] == 1
    assert summary["dice"]["std"] == 0.0


def test_empty_state_gives_nan_and_zero_count() -> None:
    metric = SegmentationMetrics(num_classes=2)
    assert metric.per_image()["dice"].shape == (0,)
    summary = metric.summary()
    assert summary["dice"]["n"] == 0 and math.isnan(summary["dice"]["mean"])


def test_without_hd95() -> None:
    metric = SegmentationMetrics(num_classes=2, include_hd95=False)
    preds, target = _batch(2, 16, 2, seed=3)
    metric.update(preds, target)
    assert set(metric.compute()) == {"dice", "iou"}
    assert set(metric.per_image()) == {"dice", "iou"}
    assert set(metric.summary()) == {"dice", "iou"}


def test_spacing_scales_hd95() -> None:
    preds, target = _batch(2, 16, 2, seed=4)
    in_pixels = SegmentationMetrics(num_classes=2)
    in_mm = SegmentationMetrics(num_classes=2, spacing=(0.5, 0.5))
    in_pixels.update(preds, target)
    in_mm.update(preds, target)
    torch.testing.assert_close(in_mm.compute()["hd95"], in_pixels.compute()["hd95"] * 0.5)


def test_empty_rules_follow_functional_defaults() -> None:
    empty = torch.zeros(2, 8, 8, dtype=torch.long)
    target = empty.clone()
    target[1, 2:4, 2:4] = 1  # image 0: both empty; image 1: nothing predicted
    metric = SegmentationMetrics(num_classes=2)
    metric.update(empty, target)
    per_image = metric.per_image()
    torch.testing.assert_close(per_image["dice"], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(per_image["hd95"], torch.tensor([0.0, math.sqrt(128.0)]))


def test_reset_clears_state() -> None:
    metric = SegmentationMetrics(num_classes=2)
    metric.update(*_batch(2, 16, 2, seed=5))
    metric.reset()
    metric.update(*_batch(1, 16, 2, seed=6))
    assert metric.per_image()["dice"].shape == (1,)


def test_per_image_uses_synced_state_and_restores_local_state() -> None:
    """Fake a 2-process run where every rank holds the same values: synced results are doubled."""
    metric = SegmentationMetrics(num_classes=2)
    preds, target = _batch(3, 16, 2, seed=7)
    metric.update(preds, target)
    local = metric.per_image()["dice"].clone()

    def fake_gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        return [tensor, tensor.clone()]

    metric.dist_sync_fn = fake_gather
    metric.distributed_available_fn = lambda: True
    synced = metric.per_image()
    torch.testing.assert_close(synced["dice"], torch.cat([local, local]))
    assert metric.summary()["dice"]["n"] == 6
    torch.testing.assert_close(metric.compute()["dice"], local.mean())
    # the local state is restored afterwards, so accumulation can continue
    assert sum(len(v) for v in metric.dice) == 3
    metric.distributed_available_fn = lambda: False
    torch.testing.assert_close(metric.per_image()["dice"], local)


def test_class_attributes_and_state_reduction() -> None:
    assert SegmentationMetrics.is_differentiable is False
    assert SegmentationMetrics.higher_is_better is None
    assert SegmentationMetrics.full_state_update is False
    metric = SegmentationMetrics(num_classes=2)
    assert set(metric._reductions) == {"dice", "iou", "hd95", "true_present", "pred_present"}
    assert set(metric._reductions.values()) == {dim_zero_cat}


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 1}, {"spacing": (1.0, -1.0)}, {"spacing": (1.0,)}, {"absent_classes": "drop"}]
)
def test_invalid_arguments(kwargs) -> None:
    with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}`"):
        SegmentationMetrics(**kwargs)


def test_invalid_update_inputs_name_the_argument() -> None:
    metric = SegmentationMetrics(num_classes=2)
    good = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="`preds`"):
        metric.update(good.float(), good)
    with pytest.raises(ValueError, match="`target`"):
        metric.update(good, good + 2)


def test_mean_over_foreground_classes_per_image() -> None:
    preds = torch.tensor([[[1, 1, 2, 0]]])
    target = torch.tensor([[[1, 1, 2, 2]]])
    metric = SegmentationMetrics(num_classes=3, include_hd95=False)
    metric.update(preds, target)
    expected = np.mean([1.0, 2 / 3])
    assert metric.compute()["dice"].item() == pytest.approx(expected)


# ----------------------------------------------------------- absent classes (multi-class test sets)
def _three_class_case() -> tuple[torch.Tensor, torch.Tensor]:
    """4 images of 3 classes: class 2 is in the truth of image 0 only; image 2 predicts class 2 where the
    truth has none; image 3 has no foreground class at all (and predicts none)."""
    preds = torch.zeros(4, 8, 8, dtype=torch.long)
    target = torch.zeros(4, 8, 8, dtype=torch.long)
    target[:3, :4] = 1
    preds[:3, :3] = 1  # class 1: Dice 2 * 24 / (32 + 24) = 6/7 on images 0-2
    target[0, 6:] = 2
    preds[0, 7:] = 2  # class 2 on image 0: Dice 2 * 8 / (16 + 8) = 2/3
    preds[2, 6:] = 2  # class 2 painted on image 2, whose truth has none
    return preds, target


def test_skip_averages_each_class_over_the_images_whose_truth_has_it() -> None:
    preds, target = _three_class_case()
    metric = SegmentationMetrics(num_classes=3, absent_classes="skip")
    metric.update(preds, target)
    per_class = metric.compute_per_class()
    assert per_class["dice_class1"].item() == pytest.approx(6 / 7)  # images 0-2
    assert per_class["dice_class2"].item() == pytest.approx(2 / 3)  # image 0 only: no trivial 1.0, no FP 0.0
    per_image = metric.per_image()["dice"]
    torch.testing.assert_close(per_image[:3], torch.tensor([(6 / 7 + 2 / 3) / 2, 6 / 7, 6 / 7]))
    assert per_image[3].isnan()  # no foreground class in the truth: left out, and counted
    assert metric.compute()["dice"].item() == pytest.approx(per_image[:3].mean().item())
    summary = metric.summary()
    assert (summary["dice"]["n"], summary["dice"]["n_absent"]) == (3, 1)
    class2 = summary["per_class"]["class2"]
    assert (class2["dice"]["n"], class2["dice"]["n_absent"], class2["dice"]["n_false_positive"]) == (1, 3, 1)
    assert class2["hd95"]["n"] == 1 and summary["per_class"]["class1"]["dice"]["n_false_positive"] == 0
    assert metric.per_class()["dice"].shape == (4, 2)
    json.loads(json.dumps(summary))


def test_count_keeps_the_functional_rules_and_binary_results_unchanged() -> None:
    preds, target = _three_class_case()
    metric = SegmentationMetrics(num_classes=3)  # "count", the default
    metric.update(preds, target)
    # class 2: 2/3 on image 0, 1.0 on images 1 and 3 (absent from both), 0.0 on image 2 (painted)
    assert metric.compute_per_class()["dice_class2"].item() == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)
    assert "n_absent" not in metric.summary()["dice"]
    # binary: "skip" only differs on images without foreground; "count" is what binary results always used
    binary_preds, binary_target = (preds == 1).long(), (target == 1).long()
    plain = SegmentationMetrics(num_classes=2)
    plain.update(binary_preds, binary_target)
    expected = dice_score(binary_preds, binary_target, 2).mean(dim=1)
    torch.testing.assert_close(plain.per_image()["dice"], expected)
    assert plain.compute()["dice"].item() == pytest.approx(expected.mean().item())
    assert set(plain.summary()) == {"dice", "iou", "hd95"}  # no per-class block for K = 2


def test_skip_state_syncs_across_processes() -> None:
    preds, target = _three_class_case()
    metric = SegmentationMetrics(num_classes=3, include_hd95=False, absent_classes="skip")
    metric.update(preds, target)

    def fake_gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        return [tensor, tensor.clone()]

    metric.dist_sync_fn = fake_gather
    metric.distributed_available_fn = lambda: True
    class2 = metric.summary()["per_class"]["class2"]["dice"]
    assert (class2["n"], class2["n_absent"], class2["n_false_positive"]) == (2, 6, 2)

"""Tests for qg_lightning.losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from qg_lightning.losses import segmentation_loss, segmentation_loss_per_image, weighted_mean


def _binary_inputs(seed: int = 0, batch: int = 3, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 1, size, size, generator=g)
    labels = torch.randint(0, 2, (batch, size, size), generator=g)
    return logits, labels


def _reference_binary(logits: torch.Tensor, labels: torch.Tensor, smooth: float = 1e-6) -> torch.Tensor:
    """Straightforward per-image loop: 0.5 BCE + 0.5 soft Dice."""
    out = []
    for b in range(logits.shape[0]):
        x = logits[b, 0].double()
        y = labels[b].double()
        p = 1 / (1 + torch.exp(-x))
        bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
        dice = 1 - (2 * (p * y).sum() + smooth) / (p.sum() + y.sum() + smooth)
        out.append(0.5 * bce + 0.5 * dice)
    return torch.stack(out).float()


# ----------------------------------------------------------------------------------------------------
# Binary path
# ----------------------------------------------------------------------------------------------------


def test_binary_matches_reference() -> None:
    logits, labels = _binary_inputs()
    out = segmentation_loss_per_image(logits, labels, 2)
    assert out.shape == (3,)
    torch.testing.assert_close(out, _reference_binary(logits, labels), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(segmentation_loss(logits, labels, 2), out.mean())


def test_binary_known_value_tiny() -> None:
    # logits 0 -> p = 0.5 everywhere; labels [1, 0]: BCE = log 2; Dice = 1 - (2*0.5 + s) / (1 + 1 + s)
    logits = torch.zeros(1, 1, 1, 2)
    labels = torch.tensor([[[1, 0]]])
    smooth = 1e-6
    expected = 0.5 * math.log(2) + 0.5 * (1 - (1 + smooth) / (2 + smooth))
    assert segmentation_loss_per_image(logits, labels, 2).item() == pytest.approx(expected, rel=1e-6)
    only_bce = segmentation_loss_per_image(logits, labels, 2, bce_weight=1.0, dice_weight=0.0)
    assert only_bce.item() == pytest.approx(math.log(2), rel=1e-6)


def test_perfect_prediction_gives_near_zero_loss() -> None:
    _, labels = _binary_inputs()
    labels[:, 0, 0] = 1  # non-empty targets
    logits = (labels.unsqueeze(1).float() * 2 - 1) * 40
    assert segmentation_loss_per_image(logits, labels, 2).max().item() < 1e-6
    multi_logits = F.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 40
    assert segmentation_loss_per_image(multi_logits, labels, 3).max().item() < 1e-6


def test_gradients_flow_binary_and_multiclass() -> None:
    logits, labels = _binary_inputs()
    logits.requires_grad_(True)
    segmentation_loss(logits, labels, 2).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0

    g = torch.Generator().manual_seed(1)
    multi = torch.randn(2, 3, 6, 6, generator=g, requires_grad=True)
    multi_labels = torch.randint(0, 3, (2, 6, 6), generator=g)
    segmentation_loss(multi, multi_labels, 3).backward()
    assert multi.grad is not None and torch.isfinite(multi.grad).all() and multi.grad.abs().sum() > 0


def test_half_precision_logits_are_upcast() -> None:
    logits, labels = _binary_inputs()
    out = segmentation_loss_per_image(logits.to(torch.bfloat16), labels, 2)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, segmentation_loss_per_image(logits, labels, 2), rtol=2e-2, atol=2e-2)


def test_wrong_prediction_costs_more() -> None:
    _, labels = _binary_inputs()
    labels[:, 0, 0] = 1
    good = (labels.unsqueeze(1).float() * 2 - 1) * 3
    assert (
        segmentation_loss_per_image(-good, labels, 2) > segmentation_loss_per_image(good, labels, 2)
    ).all()


# ----------------------------------------------------------------------------------------------------
# Multi-class path
# ----------------------------------------------------------------------------------------------------


def test_multiclass_matches_reference() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 5, 5, generator=g)
    labels = torch.randint(0, 4, (2, 5, 5), generator=g)
    smooth = 1e-6
    out = segmentation_loss_per_image(logits, labels, 4)
    expected = []
    for b in range(2):
        probs = torch.softmax(logits[b].double(), dim=0)
        ce = -torch.log(probs.gather(0, labels[b].unsqueeze(0))).mean()
        dices = []
        for c in range(1, 4):
            y = (labels[b] == c).double()
            dices.append(1 - (2 * (probs[c] * y).sum() + smooth) / (probs[c].sum() + y.sum() + smooth))
        expected.append(0.5 * ce + 0.5 * torch.stack(dices).mean())
    torch.testing.assert_close(out, torch.stack(expected).float(), rtol=1e-5, atol=1e-6)


def test_soft_targets_equal_hard_targets_when_one_hot() -> None:
    logits, labels = _binary_inputs()
    soft = labels.unsqueeze(1).float()
    torch.testing.assert_close(
        segmentation_loss_per_image(logits, soft, 2), segmentation_loss_per_image(logits, labels, 2)
    )
    g = torch.Generator().manual_seed(3)
    multi = torch.randn(2, 3, 6, 6, generator=g)
    multi_labels = torch.randint(0, 3, (2, 6, 6), generator=g)
    multi_soft = F.one_hot(multi_labels, 3).permute(0, 3, 1, 2)[:, 1:].float()
    torch.testing.assert_close(
        segmentation_loss_per_image(multi, multi_soft, 3), segmentation_loss_per_image(multi, multi_labels, 3)
    )


def test_soft_targets_are_differentiable_in_logits() -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 1, 6, 6, generator=g, requires_grad=True)
    teacher = torch.rand(2, 1, 6, 6, generator=g)
    loss = segmentation_loss(logits, teacher, 2)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------
# Pixel weights
# ----------------------------------------------------------------------------------------------------


def test_pixel_weights_all_zero_gives_zero() -> None:
    logits, labels = _binary_inputs()
    logits.requires_grad_(True)
    out = segmentation_loss_per_image(logits, labels, 2, pixel_weights=torch.zeros(3, 8, 8))
    assert torch.equal(out, torch.zeros(3))
    out.sum().backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_pixel_weights_all_one_equals_unweighted() -> None:
    logits, labels = _binary_inputs()
    weighted = segmentation_loss_per_image(logits, labels, 2, pixel_weights=torch.ones(3, 8, 8))
    torch.testing.assert_close(weighted, segmentation_loss_per_image(logits, labels, 2))


def test_pixel_weights_binary_mask_equals_crop() -> None:
    # keeping only the left half is the same as computing the loss on the left half alone
    logits, labels = _binary_inputs()
    weights = torch.zeros(3, 8, 8)
    weights[:, :, :4] = 1
    masked = segmentation_loss_per_image(logits, labels, 2, pixel_weights=weights)
    cropped = segmentation_loss_per_image(logits[..., :4].contiguous(), labels[..., :4].contiguous(), 2)
    torch.testing.assert_close(masked, cropped, rtol=1e-5, atol=1e-6)


def test_pixel_weights_one_image_empty() -> None:
    logits, labels = _binary_inputs()
    weights = torch.ones(3, 8, 8)
    weights[1] = 0
    out = segmentation_loss_per_image(logits, labels, 2, pixel_weights=weights)
    assert out[1].item() == 0.0
    torch.testing.assert_close(out[[0, 2]], segmentation_loss_per_image(logits, labels, 2)[[0, 2]])


def test_pixel_weights_multiclass() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 6, 6, generator=g)
    labels = torch.randint(0, 3, (2, 6, 6), generator=g)
    assert torch.equal(
        segmentation_loss_per_image(logits, labels, 3, pixel_weights=torch.zeros(2, 6, 6)), torch.zeros(2)
    )
    torch.testing.assert_close(
        segmentation_loss_per_image(logits, labels, 3, pixel_weights=torch.ones(2, 6, 6)),
        segmentation_loss_per_image(logits, labels, 3),
    )


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------


def test_rejects_wrong_logit_channels() -> None:
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="`logits`"):
        segmentation_loss_per_image(torch.zeros(2, 2, 4, 4), labels, 2)
    with pytest.raises(ValueError, match="`logits`"):
        segmentation_loss_per_image(torch.zeros(2, 1, 4, 4), labels, 3)
    with pytest.raises(ValueError, match="`logits`"):
        segmentation_loss_per_image(torch.zeros(2, 4, 4), labels, 2)


@pytest.mark.parametrize(
    "labels",
    [
        torch.zeros(2, 4, 5, dtype=torch.long),  # spatial mismatch
        torch.full((2, 4, 4), 2, dtype=torch.long),  # out of range
        torch.zeros(2, 2, 4, 4),  # soft with wrong channels
        torch.full((2, 1, 4, 4), 1.5),  # soft out of [0, 1]
        torch.zeros(2, 4, 4, dtype=torch.bool),  # wrong dtype
    ],
)
def test_rejects_bad_labels(labels: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="`labels`"):
        segmentation_loss_per_image(torch.zeros(2, 1, 4, 4), labels, 2)


def test_rejects_bad_pixel_weights_and_scalars() -> None:
    logits, labels = torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="`pixel_weights`"):
        segmentation_loss_per_image(logits, labels, 2, pixel_weights=torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError, match="`pixel_weights`"):
        segmentation_loss_per_image(logits, labels, 2, pixel_weights=torch.full((2, 4, 4), 2.0))
    for name in ("bce_weight", "dice_weight", "smooth"):
        with pytest.raises(ValueError, match=f"`{name}`"):
            segmentation_loss_per_image(logits, labels, 2, **{name: -1.0})
    with pytest.raises(ValueError, match="`num_classes`"):
        segmentation_loss_per_image(logits, labels, 1)


# ----------------------------------------------------------------------------------------------------
# weighted_mean
# ----------------------------------------------------------------------------------------------------


def test_weighted_mean_zero_weights_gives_exact_zero() -> None:
    values = torch.tensor([0.3, 2.0, float("inf")], requires_grad=True)
    out = weighted_mean(values, torch.zeros(3))
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(values.grad, torch.zeros(3))


def test_weighted_mean_equal_weights_is_mean() -> None:
    values = torch.tensor([0.5, 1.5, 4.0])
    torch.testing.assert_close(weighted_mean(values, torch.full((3,), 0.7)), values.mean())


def test_weighted_mean_known_value_and_gradient() -> None:
    values = torch.tensor([1.0, 3.0], requires_grad=True)
    weights = torch.tensor([1.0, 3.0])
    out = weighted_mean(values, weights, eps=1e-8)
    assert out.item() == pytest.approx(10.0 / 4.0)
    out.backward()
    torch.testing.assert_close(values.grad, weights / 4.0)


def test_weighted_mean_with_per_image_losses() -> None:
    logits, labels = _binary_inputs()
    logits.requires_grad_(True)
    per_image = segmentation_loss_per_image(logits, labels, 2)
    weights = torch.tensor([1.0, 0.0, 0.5])
    loss = weighted_mean(per_image, weights)
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_weighted_mean_validation() -> None:
    with pytest.raises(ValueError, match="`weights`"):
        weighted_mean(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="`weights`"):
        weighted_mean(torch.ones(2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="`eps`"):
        weighted_mean(torch.ones(2), torch.ones(2), eps=0.0)
    with pytest.raises(TypeError, match="`values`"):
        weighted_mean([1.0], torch.ones(1))

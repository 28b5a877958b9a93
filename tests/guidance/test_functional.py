from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from qg_lightning.guidance import functional as F
from qg_lightning.guidance.functional import (
    alignment_moments,
    confidence_pixel_mask,
    confidence_weights,
    frac_above,
    pearson_from_moments,
    qar_loss,
    quality_weights,
    quality_weights_per_class,
    reduce_class_quality,
    weighted_mean,
    weights_from_quality,
)
from qg_lightning.quality.predictor import QualityPredictor


class FixedQuality(nn.Module):
    """Returns preset qualities (B, K-1), whatever the inputs; has one trainable-looking parameter."""

    def __init__(self, quality: torch.Tensor) -> None:
        super().__init__()
        self.num_foreground = quality.shape[1]
        self.register_buffer("quality", quality.clone())
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.quality * self.scale + 0.0 * masks.mean(dim=(2, 3))


@pytest.fixture(scope="module")
def predictor() -> QualityPredictor:
    torch.manual_seed(0)
    return QualityPredictor(in_channels=3, num_classes=2).eval().requires_grad_(False)


def _images(b: int = 4, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_weights_formula_threshold_and_temperature() -> None:
    q = torch.tensor([0.0, 0.49, 0.5, 0.7, 1.0])
    expected = torch.where(q >= 0.5, q**2, torch.zeros_like(q))
    torch.testing.assert_close(weights_from_quality(q), expected)
    torch.testing.assert_close(weights_from_quality(q, tau=0.0, temperature=1.0), q)
    torch.testing.assert_close(
        weights_from_quality(q, tau=0.8, temperature=3.0), torch.tensor([0, 0, 0, 0, 1.0])
    )


def test_quality_weights_with_label_map_and_foreground_masks() -> None:
    g = FixedQuality(torch.tensor([[0.9], [0.4], [0.6], [0.5]])).eval()
    images = _images()
    labels = torch.randint(0, 2, (4, 32, 32), generator=torch.Generator().manual_seed(1))
    w1, q1 = quality_weights(g, images, labels, tau=0.5, temperature=2.0)
    w2, q2 = quality_weights(g, images, labels.unsqueeze(1).float())
    torch.testing.assert_close(w1, torch.tensor([0.81, 0.0, 0.36, 0.25]))
    torch.testing.assert_close(w1, w2)
    torch.testing.assert_close(q1, q2)
    assert w1.shape == (4,) and q1.shape == (4, 1) and w1.dtype == torch.float32


def test_zero_weights_give_zero_weighted_mean() -> None:
    g = FixedQuality(torch.full((3, 1), 0.2)).eval()
    weights, _ = quality_weights(g, _images(3), torch.zeros(3, 32, 32, dtype=torch.long))
    assert torch.all(weights == 0)
    losses = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    out = weighted_mean(losses, weights)
    assert out.item() == 0.0
    out.backward()
    assert torch.all(losses.grad == 0)


@pytest.mark.parametrize(
    ("reduction", "expected_q"),
    [("mean", [0.7, 0.8, 0.3]), ("min", [0.5, 0.8, 0.2]), ("product", [0.45, 0.64, 0.08])],
)
def test_multiclass_reductions_before_threshold(reduction: str, expected_q: list[float]) -> None:
    per_class = torch.tensor([[0.9, 0.5], [0.8, 0.8], [0.4, 0.2]])
    g = FixedQuality(per_class).eval()
    labels = torch.randint(0, 3, (3, 16, 16), generator=torch.Generator().manual_seed(0))
    weights, quality = quality_weights(g, _images(3, size=16), labels, class_reduction=reduction)
    torch.testing.assert_close(quality, per_class)
    reduced = torch.tensor(expected_q)
    torch.testing.assert_close(reduce_class_quality(per_class, reduction), reduced)
    torch.testing.assert_close(weights, torch.where(reduced >= 0.5, reduced**2, torch.zeros_like(reduced)))


def test_per_class_weights() -> None:
    per_class = torch.tensor([[0.9, 0.4]])
    weights, quality = quality_weights_per_class(
        FixedQuality(per_class).eval(), _images(1), torch.zeros(1, 2, 32, 32)
    )
    torch.testing.assert_close(weights, torch.tensor([[0.81, 0.0]]))
    torch.testing.assert_close(quality, per_class)


def test_binary_reductions_agree(predictor: QualityPredictor) -> None:
    labels = torch.randint(0, 2, (2, 32, 32), generator=torch.Generator().manual_seed(3))
    outs = [
        quality_weights(predictor, _images(2), labels, class_reduction=r)[0]
        for r in ("mean", "min", "product")
    ]
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(outs[0], outs[2])


def test_weights_have_no_grad(predictor: QualityPredictor) -> None:
    images = _images(2).requires_grad_(True)
    masks = torch.rand(2, 1, 32, 32, requires_grad=True)
    weights, quality = quality_weights(predictor, images, masks)
    assert not weights.requires_grad and not quality.requires_grad
    assert ((weights >= 0) & (weights <= 1)).all()


def test_qar_gradient_reaches_probs_and_segmenter_not_predictor(predictor: QualityPredictor) -> None:
    segmenter = nn.Conv2d(3, 1, 3, padding=1)
    images = _images(2)
    probs = torch.sigmoid(segmenter(images))
    loss = qar_loss(predictor, images, probs)
    assert loss.ndim == 0 and 0.0 <= loss.item() <= 1.0
    loss.backward()
    assert segmenter.weight.grad is not None and segmenter.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in predictor.parameters())


def test_qar_matches_definition(predictor: QualityPredictor) -> None:
    images, probs = _images(2), torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = 1.0 - predictor(images, probs).mean()
    torch.testing.assert_close(qar_loss(predictor, images, probs), expected)


def test_predictor_must_be_frozen() -> None:
    g = QualityPredictor(in_channels=3, num_classes=2)  # train mode, requires_grad True
    images, probs = _images(1), torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="training mode"):
        quality_weights(g, images, probs)
    g.eval()
    with pytest.raises(ValueError, match="requires_grad=True"):
        qar_loss(g, images, probs)
    quality_weights(g, images, probs)  # eval is enough without gradient


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": 1.5}, "`tau` must be a number in \\[0, 1\\], got 1.5"),
        ({"tau": -0.1}, "`tau`"),
        ({"temperature": 0.0}, "`temperature` must be a finite number > 0"),
        ({"temperature": -1.0}, "`temperature`"),
        ({"class_reduction": "max"}, "`class_reduction` must be one of"),
    ],
)
def test_quality_weights_validation(kwargs: dict, match: str) -> None:
    g = FixedQuality(torch.full((1, 1), 0.5)).eval()
    with pytest.raises(ValueError, match=match):
        quality_weights(g, _images(1), torch.zeros(1, 32, 32, dtype=torch.long), **kwargs)


def test_mask_channel_mismatch_is_reported() -> None:
    g = FixedQuality(torch.full((1, 1), 0.5)).eval()
    with pytest.raises(ValueError, match="K-1 = 1"):
        quality_weights(g, _images(1), torch.zeros(1, 2, 32, 32))


def test_confidence_weights_binary_and_multiclass() -> None:
    probs = torch.tensor([[[[0.9, 0.1], [0.8, 0.2]]], [[[0.5, 0.5], [0.6, 0.4]]]])
    weights, confidence = confidence_weights(probs, tau=0.6, temperature=2.0)
    torch.testing.assert_close(confidence, torch.tensor([0.85, 0.55]))
    torch.testing.assert_close(weights, torch.tensor([0.85**2, 0.0]))
    # K = 3: background = 1 - sum(foreground)
    multi = torch.tensor([[[[0.1]], [[0.2]]]])  # background 0.7
    torch.testing.assert_close(confidence_weights(multi, tau=0.0)[1], torch.tensor([0.7]))


def test_confidence_pixel_mask() -> None:
    probs = torch.tensor([[[[0.95, 0.5], [0.05, 0.9]]]])
    mask = confidence_pixel_mask(probs, threshold=0.9)
    torch.testing.assert_close(mask, torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))
    with pytest.raises(ValueError, match="`threshold`"):
        confidence_pixel_mask(probs, threshold=2.0)


def test_frac_above() -> None:
    assert frac_above(torch.tensor([0.2, 0.5, 0.9, 0.4]), 0.5).item() == 0.5
    assert torch.isnan(frac_above(torch.zeros(0), 0.5))


def test_pearson_from_moments_matches_numpy_and_is_additive() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(20, generator=g), torch.rand(20, generator=g)
    moments = alignment_moments(x[:7], y[:7]) + alignment_moments(x[7:], y[7:])
    expected = np.corrcoef(x.numpy(), y.numpy())[0, 1]
    assert abs(pearson_from_moments(moments).item() - expected) < 1e-6
    assert torch.isnan(pearson_from_moments(alignment_moments(torch.ones(5), y[:5])))
    assert torch.isnan(pearson_from_moments(alignment_moments(x[:1], y[:1])))


def test_module_exports_weighted_mean_from_losses() -> None:
    from qg_lightning import losses

    assert F.weighted_mean is losses.weighted_mean


def test_reductions_treat_a_class_rated_absent_as_documented() -> None:
    """Rule (d): a class the predictor rates absent (about 1) leaves min / product at the present classes'
    value and lifts the mean; a class painted where there is none (about 0) zeroes min / product."""
    present = torch.tensor([0.4, 0.9, 0.3])
    absent = torch.ones(3, 1)
    q = torch.cat([present.unsqueeze(1), absent], dim=1)  # class 2 rightly absent on every sample
    torch.testing.assert_close(reduce_class_quality(q, "min"), present)
    torch.testing.assert_close(reduce_class_quality(q, "product"), present)
    torch.testing.assert_close(reduce_class_quality(q, "mean"), (present + 1) / 2)
    # the lifted mean lets a poor pseudolabel of the one present class clear tau = 0.5 ...
    weights = weights_from_quality(reduce_class_quality(q, "mean"), tau=0.5)
    assert weights[0] > 0 and weights_from_quality(reduce_class_quality(q, "min"), tau=0.5)[0] == 0
    # ... and a class painted where the image has none counts against the sample
    painted = torch.tensor([[0.9, 0.0]])
    assert reduce_class_quality(painted, "min").item() == 0 == reduce_class_quality(painted, "product").item()
    assert reduce_class_quality(painted, "mean").item() == pytest.approx(0.45)

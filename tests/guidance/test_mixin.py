from __future__ import annotations

import copy
import pickle

import lightning as L
import pytest
import torch
from torch import nn

from qg_lightning.guidance import QualityGuidedMixin
from qg_lightning.guidance.mixin import GuidanceSettings
from qg_lightning.quality.predictor import QualityPredictor


class Host(QualityGuidedMixin, L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters({"in_channels": 3, "num_classes": 2})
        self.net = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HostMixinLast(L.LightningModule, QualityGuidedMixin):  # other MRO, mixin __init__ never runs
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Conv2d(3, 1, 1)


@pytest.fixture(scope="module")
def predictor() -> QualityPredictor:
    torch.manual_seed(0)
    return QualityPredictor(in_channels=3, num_classes=2).eval().requires_grad_(False)


def _images(b: int = 2) -> torch.Tensor:
    return torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cls", [Host, HostMixinLast])
def test_inactive_defaults_and_missing_callback_error(cls: type) -> None:
    host = cls()
    assert not host.quality_guidance_active
    assert host.qw_lambda == 0.0 and host.qar_lambda == 0.0
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    with pytest.raises(RuntimeError, match="QualityReweightCallback\\(predictor="):
        host.quality_weights(_images(), labels)
    with pytest.raises(RuntimeError, match="trainer.callbacks"):
        host.quality_regularization(_images(), torch.rand(2, 1, 32, 32))
    weights, quality = host.quality_weights(_images(), labels, required=False)
    assert torch.all(weights == 1) and quality.shape == (2, 1) and torch.isnan(quality).all()
    loss = host.quality_regularization(_images(), torch.rand(2, 1, 32, 32), required=False)
    assert loss.item() == 0.0
    assert host.quality_stats() == {}


def test_attached_predictor_is_not_registered(predictor: QualityPredictor) -> None:
    host = Host()
    n_params, keys = len(list(host.parameters())), set(host.state_dict())
    host.attach_quality_predictor(predictor, GuidanceSettings(mechanisms=frozenset({"qw", "qar"})))
    assert host.quality_guidance_active and host.quality_predictor is predictor
    assert len(list(host.parameters())) == n_params
    assert set(host.state_dict()) == keys
    assert all(m is not predictor for m in host.modules())
    ema = copy.deepcopy(host)  # an EMA copy shares the predictor instead of copying it
    assert ema.quality_predictor is predictor
    assert pickle.loads(pickle.dumps(host)).quality_predictor is None


def test_attach_refuses_unfrozen_predictor() -> None:
    with pytest.raises(ValueError, match="training mode"):
        Host().attach_quality_predictor(QualityPredictor(in_channels=3, num_classes=2))


def test_lambdas_follow_mechanisms(predictor: QualityPredictor) -> None:
    host = Host()
    host.attach_quality_predictor(predictor, GuidanceSettings(mechanisms=frozenset({"qw"})))
    host.set_quality_lambdas(0.2, 0.05)
    assert host.qw_lambda == 0.2 and host.qar_lambda == 0.0
    host.detach_quality_predictor()
    assert host.qw_lambda == 0.0 and not host.quality_guidance_active


def test_stats_recorded_and_samples_kept(predictor: QualityPredictor) -> None:
    host = Host()
    host.attach_quality_predictor(
        predictor, GuidanceSettings(tau=0.0, n_keep_images=1, mechanisms=frozenset({"qw", "qar"}))
    )
    host.set_quality_lambdas(0.25, 0.01)
    assert "train/lambda_qw" not in host.quality_stats()  # not read yet: not logged
    assert host.qw_lambda == 0.25 and host.qar_lambda == 0.01
    labels = torch.randint(0, 2, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    weights, quality = host.quality_weights(_images(), labels)
    probs = torch.sigmoid(host(_images()))
    qar = host.quality_regularization(_images(), probs)
    qar.backward()
    assert host.net.weight.grad is not None and host.net.weight.grad.abs().sum() > 0
    stats = host.quality_stats()
    assert stats["train/lambda_qw"] == 0.25 and stats["train/lambda_qar"] == 0.01
    assert stats["train/qw_applied"] == 1.0 and stats["train/qar_applied"] == 1.0
    torch.testing.assert_close(torch.as_tensor(stats["train/q_mean"]), quality.mean())
    torch.testing.assert_close(torch.as_tensor(stats["train/w_mean"]), weights.mean())
    assert float(stats["train/frac_q_above_tau"]) == 1.0
    torch.testing.assert_close(torch.as_tensor(stats["train/loss_qar"]), qar.detach())
    samples = host.pop_quality_samples()
    assert (
        samples is not None
        and samples["images"].shape == (1, 3, 32, 32)
        and samples["masks"].shape == (1, 1, 32, 32)
    )
    assert host.pop_quality_samples() is None
    host.reset_quality_stats()
    assert host.quality_stats() == {"train/qw_applied": 0.0, "train/qar_applied": 0.0}

"""Every reference host runs plain and quality-guided, with the same data and the mixin/callback contract."""

import pytest
import torch

from qg_lightning.guidance import QualityReweightCallback
from qg_lightning.methods import (
    CPSSegmenter,
    FixMatchSegmenter,
    MeanTeacherSegmenter,
    PseudoLabelSegmenter,
    QARSegmenter,
    SupervisedSegmenter,
)

SMALL = dict(arch="Unet", encoder_name="resnet18", encoder_weights=None, lr=1e-3)
# Ramps start at once so the unsupervised and guidance terms are active in a 2-step test.
NOW = dict(unsup_warmup=0.0, unsup_ramp=0.0)


HOSTS = [
    ("PL", PseudoLabelSegmenter, dict(weighting="none"), "weak"),
    ("PL-T", PseudoLabelSegmenter, dict(weighting="threshold"), "weak"),
    ("PL-C", PseudoLabelSegmenter, dict(weighting="confidence"), "weak"),
    ("MT", MeanTeacherSegmenter, {}, "weak_strong"),
    ("FixMatch", FixMatchSegmenter, {}, "weak_strong"),
    ("CPS", CPSSegmenter, {}, "weak"),
]


@pytest.mark.parametrize("name,cls,kwargs,views", HOSTS, ids=[h[0] for h in HOSTS])
@pytest.mark.parametrize("guided", [False, True], ids=["plain", "qw"])
def test_host_runs(name, cls, kwargs, views, guided, data_root, predictor_ckpt, tmp_path, host_dm, fit_host):
    torch.manual_seed(0)
    model = cls(**SMALL, **NOW, **kwargs)
    callbacks = (
        [QualityReweightCallback(predictor=predictor_ckpt, mechanisms=["qw"], qw_warmup=0, qw_ramp=0)]
        if guided
        else []
    )
    trainer = fit_host(model, host_dm(data_root, views), callbacks, tmp_path)
    logged = trainer.callback_metrics
    assert torch.isfinite(logged["train/loss"])
    assert "train/loss_unsup" in logged
    if guided:
        assert "train/q_mean" in logged and "train/w_mean" in logged
        assert model.quality_guidance_active
    else:
        assert not model.quality_guidance_active


def test_ema_teacher_follows_and_is_saved(data_root, tmp_path, host_dm, fit_host):
    model = MeanTeacherSegmenter(**SMALL, **NOW)
    before = [p.clone() for p in model.teacher.parameters()]
    fit_host(model, host_dm(data_root, "weak_strong"), tmp_path=tmp_path)
    assert int(model.teacher.num_updates) == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, model.teacher.parameters(), strict=True))
    assert any(k.startswith("teacher.") for k in model.state_dict())
    opt_params = {id(p) for g in model.trainer.optimizers[0].param_groups for p in g["params"]}
    assert not any(id(p) in opt_params for p in model.teacher.parameters())


def test_qar_host_needs_callback_and_trains_with_it(data_root, predictor_ckpt, tmp_path, host_dm, fit_host):
    with pytest.raises(RuntimeError, match="QualityReweightCallback"):
        fit_host(QARSegmenter(**SMALL, **NOW), host_dm(data_root), tmp_path=tmp_path)
    model = QARSegmenter(**SMALL, **NOW)
    cb = QualityReweightCallback(predictor=predictor_ckpt, mechanisms=["qar"], qar_warmup=0, qar_ramp=0)
    trainer = fit_host(model, host_dm(data_root), [cb], tmp_path)
    assert "train/loss_qar" in trainer.callback_metrics


def test_pl_qw_without_callback_is_an_error_only_when_guided(data_root, tmp_path, host_dm, fit_host):
    # Plain PL never asks for quality; it must not need a predictor.
    fit_host(PseudoLabelSegmenter(**SMALL, **NOW), host_dm(data_root), tmp_path=tmp_path, steps=1)


def test_fixmatch_requires_strong_view(data_root, tmp_path, host_dm, fit_host):
    with pytest.raises(KeyError, match="weak_strong"):
        fit_host(FixMatchSegmenter(**SMALL, **NOW), host_dm(data_root, "weak"), tmp_path=tmp_path, steps=1)


def test_cps_optimises_both_networks(data_root, tmp_path, host_dm, fit_host):
    model = CPSSegmenter(**SMALL, **NOW)
    trainer = fit_host(model, host_dm(data_root), tmp_path=tmp_path, steps=1)
    opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert all(id(p) in opt_params for p in model.model_b.parameters())
    assert all(id(p) in opt_params for p in model.model.parameters())


def test_supervised_ignores_unlabeled_batches(data_root, tmp_path, host_dm, fit_host):
    trainer = fit_host(SupervisedSegmenter(**SMALL), host_dm(data_root), tmp_path=tmp_path, steps=1)
    assert "train/loss_sup" in trainer.callback_metrics


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (PseudoLabelSegmenter, dict(weighting="soft"), "weighting"),
        (PseudoLabelSegmenter, dict(conf_threshold=1.5), "conf_threshold"),
        (FixMatchSegmenter, dict(conf_threshold=-0.1), "conf_threshold"),
        (MeanTeacherSegmenter, dict(ema_decay=1.0), "decay"),
        (CPSSegmenter, dict(unsup_weight=-1.0), "unsup_weight"),
        (SupervisedSegmenter, dict(lr=0.0), "lr"),
        (SupervisedSegmenter, dict(num_classes=1), "num_classes"),
    ],
)
def test_invalid_settings_fail_at_construction(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**{**SMALL, **kwargs})

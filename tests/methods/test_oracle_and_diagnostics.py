"""PL-oracle, the pseudolabel diagnostics, and the guarantee that hidden unlabeled masks reach no other loss."""

import functools

import pytest
import torch

from qg_lightning.guidance import QualityReweightCallback
from qg_lightning.methods import (
    CPSSegmenter,
    FixMatchSegmenter,
    MeanTeacherSegmenter,
    PseudoLabelSegmenter,
    QARSegmenter,
)

SMALL = dict(arch="Unet", encoder_name="resnet18", encoder_weights=None, lr=1e-3)
NOW = dict(unsup_warmup=0.0, unsup_ramp=0.0)


@pytest.fixture
def dm_with_truth(host_dm):
    """The hosts' data module (conftest.py) with 4 unlabeled images a batch and their hidden true masks."""
    return functools.partial(host_dm, unlabeled_batch_size=4, truth=True)


@pytest.fixture
def fit_and_validate(fit_host):
    """The hosts' short fit (conftest.py): 3 steps, then one validation batch (it summarises the diagnostics)."""
    return functools.partial(fit_host, steps=3, validate=True)


def _batch(dm):
    dm.setup()
    batch, *_ = next(iter(dm.train_dataloader()))
    return batch


NO_TRUTH_HOSTS = [
    ("PL", PseudoLabelSegmenter, dict(weighting="none"), "weak"),
    ("PL-T", PseudoLabelSegmenter, dict(weighting="threshold"), "weak"),
    ("PL-C", PseudoLabelSegmenter, dict(weighting="confidence"), "weak"),
    ("MT", MeanTeacherSegmenter, {}, "weak_strong"),
    ("FixMatch", FixMatchSegmenter, {}, "weak_strong"),
    ("CPS", CPSSegmenter, {}, "weak"),
]


@pytest.mark.parametrize("name,cls,kwargs,views", NO_TRUTH_HOSTS, ids=[h[0] for h in NO_TRUTH_HOSTS])
def test_hidden_masks_reach_no_loss_of_other_methods(name, cls, kwargs, views, data_root, dm_with_truth):
    batch = _batch(dm_with_truth(data_root, views))
    truth = batch["unlabeled"]["true_mask"]
    variants = {
        "true": truth,
        "inverted": 1 - truth,
        "absent": None,
    }
    losses = {}
    for key, mask in variants.items():
        torch.manual_seed(0)
        model = cls(**SMALL, **NOW, **kwargs).train()
        unlabeled = {k: v for k, v in batch["unlabeled"].items() if k != "true_mask"}
        if mask is not None:
            unlabeled["true_mask"] = mask
        torch.manual_seed(1)
        losses[key] = model.training_loss({"labeled": batch["labeled"], "unlabeled": unlabeled}, 0)
    assert torch.equal(losses["true"], losses["absent"]) and torch.equal(losses["inverted"], losses["absent"])


def test_oracle_weights_follow_true_masks_and_refuse_without_them(data_root, dm_with_truth):
    batch = _batch(dm_with_truth(data_root, "weak"))
    torch.manual_seed(0)
    model = PseudoLabelSegmenter(**SMALL, **NOW, weighting="oracle").train()
    terms = model.unsupervised_terms(batch["unlabeled"])
    pseudo = terms["pseudo"]
    # a perfect "truth" (the pseudolabels themselves) keeps every sample at full weight
    perfect = model.unsupervised_terms({**batch["unlabeled"], "true_mask": pseudo.clone()})
    assert torch.equal(perfect["weights"], torch.ones_like(perfect["weights"]))
    # the inverted pseudolabels as truth: every Dice is far below tau, so nothing is kept
    inverted = model.unsupervised_terms({**batch["unlabeled"], "true_mask": 1 - pseudo})
    assert torch.equal(inverted["weights"], torch.zeros_like(inverted["weights"]))
    assert terms["weights"].shape == (pseudo.shape[0],)
    with pytest.raises(ValueError, match="true_mask.*unlabeled_true_masks=True"):
        model.unsupervised_terms({k: v for k, v in batch["unlabeled"].items() if k != "true_mask"})


def test_guided_run_logs_quality_and_confidence_diagnostics(
    data_root, predictor_ckpt, tmp_path, dm_with_truth, fit_and_validate
):
    torch.manual_seed(0)
    model = PseudoLabelSegmenter(**SMALL, **NOW, weighting="none")
    callback = QualityReweightCallback(predictor=predictor_ckpt, mechanisms=["qw"], qw_warmup=0, qw_ramp=0)
    trainer = fit_and_validate(model, dm_with_truth(data_root), [callback], tmp_path)
    logged = trainer.callback_metrics
    for key in ("diag/true_dice_mean", "diag/quality/kept_frac", "diag/confidence/kept_frac",
                "diag/quality/mean_score", "diag/confidence/mean_score"):  # fmt: skip
        assert key in logged, key
    assert 0.0 <= float(logged["diag/true_dice_mean"]) <= 1.0
    assert float(logged["diag/n"]) == 3 * 4  # 3 steps x 4 unlabeled images
    # the oracle score is the true Dice itself at the guidance's tau: what a perfect predictor would keep
    kept, kept_dice = float(logged["diag/oracle/kept_frac"]), float(logged["diag/oracle/kept_true_dice"])
    assert 0.0 <= kept <= 1.0
    assert kept == 0.0 or kept_dice >= callback.tau
    if kept < 1.0:
        assert float(logged["diag/oracle/dropped_true_dice"]) < callback.tau
    assert len(model.pseudolabel_diagnostics) == 0  # summarised and reset at the validation


def test_no_diagnostics_without_true_masks(data_root, tmp_path, dm_with_truth, fit_and_validate):
    torch.manual_seed(0)
    model = PseudoLabelSegmenter(**SMALL, **NOW, weighting="confidence")
    trainer = fit_and_validate(model, dm_with_truth(data_root, truth=False), tmp_path=tmp_path)
    assert not [k for k in trainer.callback_metrics if k.startswith("diag/")]


def test_qar_host_records_nothing(data_root, predictor_ckpt, tmp_path, dm_with_truth, fit_and_validate):
    model = QARSegmenter(**SMALL, **NOW, unsup_weight=0.0)
    callback = QualityReweightCallback(predictor=predictor_ckpt, mechanisms=["qar"], qar_warmup=0, qar_ramp=1)
    trainer = fit_and_validate(model, dm_with_truth(data_root), [callback], tmp_path)
    assert not [k for k in trainer.callback_metrics if k.startswith("diag/")]

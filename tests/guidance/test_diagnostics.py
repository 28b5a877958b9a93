"""qg_lightning.guidance.diagnostics: pseudolabel Dice, oracle weights, score diagnostics and the accumulator."""

import math

import pytest
import torch

from qg_lightning.guidance.diagnostics import (
    PseudolabelDiagnostics,
    oracle_weights,
    pseudolabel_dice,
    score_diagnostics,
)


def test_pseudolabel_dice_is_per_image_mean_over_foreground_classes():
    pseudo = torch.tensor([[[1, 2], [0, 0]], [[0, 0], [0, 0]]])
    truth = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    dice = pseudolabel_dice(pseudo, truth, num_classes=3)
    # image 0: class 1 Dice 2*1/(1+2) = 2/3, class 2 Dice 0 -> 1/3; image 1: both classes absent -> 1
    assert torch.allclose(dice, torch.tensor([1 / 3, 1.0]))


def test_oracle_weights_use_the_quality_weight_form():
    pseudo = torch.ones(3, 4, 4, dtype=torch.long)
    truth = torch.ones(3, 4, 4, dtype=torch.long)
    truth[1, :2] = 0  # Dice 2*8/(16+8) = 2/3
    truth[2] = 0  # Dice 0
    weights, dice = oracle_weights(pseudo, truth, 2, tau=0.5, temperature=2.0)
    assert torch.allclose(dice, torch.tensor([1.0, 2 / 3, 0.0]))
    assert torch.allclose(weights, torch.tensor([1.0, 4 / 9, 0.0]))
    with pytest.raises(ValueError, match="tau"):
        oracle_weights(pseudo, truth, 2, tau=1.5)


def test_score_diagnostics_perfect_blind_and_constant_scores():
    true = torch.linspace(0, 1, 20)
    perfect = score_diagnostics(true, true, tau=0.5)
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["pearson"] == pytest.approx(1.0)
    assert perfect["kept_true_dice"] > perfect["dropped_true_dice"]
    constant = score_diagnostics(torch.full((20,), 0.9), true, tau=0.5)
    assert math.isnan(constant["spearman"]) and constant["kept_frac"] == 1.0
    assert math.isnan(constant["dropped_true_dice"])
    with pytest.raises(ValueError, match="same length"):
        score_diagnostics(torch.ones(3), torch.ones(4), 0.5)


def test_accumulator_summarises_each_score_over_its_own_steps():
    diag = PseudolabelDiagnostics()
    diag.update(torch.tensor([0.1, 0.9]), {"confidence": (torch.tensor([0.6, 0.7]), 0.5)})
    diag.update(
        torch.tensor([0.2, 0.8]),
        {"confidence": (torch.tensor([0.6, 0.8]), 0.5), "quality": (torch.tensor([0.3, 0.9]), 0.5)},
    )
    assert len(diag) == 4
    out = diag.compute()
    assert out["n"] == 4 and out["true_dice_mean"] == pytest.approx(0.5)
    assert out["confidence/kept_frac"] == 1.0
    assert out["quality/kept_frac"] == 0.5 and out["quality/kept_true_dice"] == pytest.approx(0.8)
    assert diag.compute() == {}
    with pytest.raises(ValueError, match="3 values for 2"):
        diag.update(torch.ones(2), {"quality": (torch.ones(3), 0.5)})

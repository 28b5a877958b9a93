"""Tests for qg_lightning.quality.eval_metrics: regression figures and failure detection."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from qg_lightning.quality.eval_metrics import failure_detection, regression_metrics


# -------------------------------------------------------------------------------------- regression metrics
def test_regression_metrics_match_scipy() -> None:
    rng = np.random.default_rng(0)
    true = rng.random(40)
    pred = np.round(true + rng.normal(0, 0.2, 40), 1)  # rounding makes ties
    m = regression_metrics(pred, true)
    assert m["n"] == 40
    assert m["mae"] == pytest.approx(np.abs(pred - true).mean())
    assert m["pearson"] == pytest.approx(stats.pearsonr(pred, true)[0])
    assert m["spearman"] == pytest.approx(stats.spearmanr(pred, true)[0])
    assert m["mean_pred"] == pytest.approx(pred.mean())
    assert m["mean_true"] == pytest.approx(true.mean())
    assert m["constant_baseline_mae"] == pytest.approx(np.abs(true - true.mean()).mean())


def test_regression_metrics_undefined_cases() -> None:
    m = regression_metrics([0.5, 0.5, 0.5], [0.1, 0.9, 0.4])
    assert math.isnan(m["pearson"]) and math.isnan(m["spearman"])  # constant predictions: undefined, not 0
    empty = regression_metrics([], [])
    assert empty["n"] == 0 and math.isnan(empty["mae"])
    with pytest.raises(ValueError, match="same number of values"):
        regression_metrics([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="non-finite"):
        regression_metrics([0.1, float("nan")], [0.1, 0.2])


# -------------------------------------------------------------------------------------- failure detection
def _auroc_brute(scores: np.ndarray, dice: np.ndarray, threshold: float) -> float:
    fail, good = scores[dice < threshold], scores[dice >= threshold]
    wins = sum((f < g) + 0.5 * (f == g) for f in fail for g in good)
    return wins / (len(fail) * len(good))


def _aurc_brute(order: list[int], risk: np.ndarray) -> float:
    return float(np.mean([risk[order[:k]].mean() for k in range(1, len(order) + 1)]))


def test_auroc_matches_pairwise_count_with_ties() -> None:
    rng = np.random.default_rng(1)
    dice = rng.random(30)
    scores = np.round(dice + rng.normal(0, 0.3, 30), 1)
    fd = failure_detection(scores, dice, threshold=0.5)
    assert fd["auroc"] == pytest.approx(_auroc_brute(scores, dice, 0.5))
    assert fd["n_failures"] == int((dice < 0.5).sum())


def test_auroc_direction_and_undefined() -> None:
    dice = np.array([0.1, 0.2, 0.8, 0.9])
    assert failure_detection(dice, dice)["auroc"] == 1.0  # low predicted quality = failure
    assert failure_detection(-dice, dice)["auroc"] == 0.0
    assert math.isnan(failure_detection([0.3, 0.4], [0.9, 0.8])["auroc"])  # no failures
    with pytest.raises(ValueError, match="threshold"):
        failure_detection([0.1], [0.1], threshold=0.0)


def test_aurc_matches_brute_force_without_ties() -> None:
    rng = np.random.default_rng(2)
    dice = rng.random(25)
    scores = rng.random(25)
    fd = failure_detection(scores, dice)
    risk = 1 - dice
    assert fd["aurc"] == pytest.approx(_aurc_brute(list(np.argsort(-scores)), risk))
    assert fd["aurc_oracle"] == pytest.approx(_aurc_brute(list(np.argsort(-dice)), risk))
    assert fd["aurc_random"] == pytest.approx(risk.mean())
    assert fd["aurc_oracle"] <= fd["aurc"] + 1e-12


def test_aurc_ties_are_the_mean_over_orders() -> None:
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.2, 0.2])
    dice = np.array([0.8, 0.1, 0.9, 0.4, 0.7, 0.3])
    risk = 1 - dice
    orders = []
    for mid in itertools.permutations([1, 2, 3]):
        for low in itertools.permutations([4, 5]):
            orders.append(_aurc_brute([0, *mid, *low], risk))
    assert failure_detection(scores, dice)["aurc"] == pytest.approx(np.mean(orders))
    constant = failure_detection(np.zeros(6), dice)
    assert constant["aurc"] == pytest.approx(constant["aurc_random"])

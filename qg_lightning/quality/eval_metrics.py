"""Figures of merit of quality predictions (METHOD.md, "Evaluating g"): pure functions, numpy in, dicts out.

* :func:`regression_metrics`: MAE, Pearson r, Spearman rho of predicted vs true Dice, and the MAE of the
  best constant answer (the mean true Dice), the bar any useful predictor must clear;
* :func:`failure_detection`: AUROC of flagging failures (true Dice < 0.5) by low predicted quality, and the
  area under the risk-coverage curve (AURC).

Both are re-exported by :mod:`qg_lightning.quality.evaluation`, which runs a predictor and reports them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata
from torch import Tensor

from qg_lightning._validation import check_fraction

__all__ = ["failure_detection", "regression_metrics"]


def as_1d(values: Any, name: str) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be an array of numbers, got {type(values).__name__}.") from None
    if not np.isfinite(arr).all():
        raise ValueError(
            f"`{name}` has {int((~np.isfinite(arr)).sum())} non-finite value(s); pass finite numbers."
        )
    return arr


def paired(pred: Any, true: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_1d(pred, names[0]), as_1d(true, names[1])
    if a.shape != b.shape:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must hold the same number of values, got {a.size} and {b.size}."
        )
    return a, b


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; NaN when fewer than 2 values or either side is constant (undefined, never a fake 0)."""
    if a.size < 2:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((da * da).sum()) * float((db * db).sum()))
    if denom <= 1e-12 * max(1.0, a.size):
        return math.nan
    return float(np.clip((da * db).sum() / denom, -1.0, 1.0))


def regression_metrics(pred: Any, true: Any) -> dict[str, float]:
    """Agreement between predicted and true quality (Dice).

    Args:
        pred: predicted qualities, any shape (flattened), finite.
        true: true qualities, same number of values.

    Returns:
        ``{"n", "mae", "pearson", "spearman", "mean_pred", "mean_true", "constant_baseline_mae"}``.
        ``constant_baseline_mae`` is ``mean |true - mean(true)|``: the MAE of always answering the mean true
        Dice of this very set (an optimistic constant; a useful predictor must beat it). Correlations are NaN
        when undefined (fewer than 2 values, or constant predictions or targets); with no values every
        figure is NaN and ``n`` is 0. Spearman uses average ranks for ties.

    Example:
        >>> m = regression_metrics([0.1, 0.5, 0.9, 0.7], [0.2, 0.4, 1.0, 0.6])
        >>> [round(m[k], 3) for k in ("mae", "pearson", "spearman", "constant_baseline_mae")]
        [0.1, 0.943, 1.0, 0.25]
    """
    p, t = paired(pred, true, ("pred", "true"))
    if p.size == 0:
        keys = ("mae", "pearson", "spearman", "mean_pred", "mean_true", "constant_baseline_mae")
        return {"n": 0, **{k: math.nan for k in keys}}
    return {
        "n": int(p.size),
        "mae": float(np.abs(p - t).mean()),
        "pearson": pearson(p, t),
        "spearman": pearson(rankdata(p), rankdata(t)) if p.size >= 2 else math.nan,
        "mean_pred": float(p.mean()),
        "mean_true": float(t.mean()),
        "constant_baseline_mae": float(np.abs(t - t.mean()).mean()),
    }


def _auroc(failure_scores: np.ndarray, failures: np.ndarray) -> float:
    """Mann-Whitney AUROC: P(score of a failure > score of a success), ties count 1/2."""
    n_pos = int(failures.sum())
    n_neg = failures.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(failure_scores)  # average ranks handle ties
    return float((ranks[failures].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _aurc(confidence: np.ndarray, risk: np.ndarray) -> float:
    """Area under the risk-coverage curve, accepting samples by decreasing confidence.

    ``AURC = mean_k (sum of the k first risks) / k`` for ``k = 1..n``. Samples with equal confidence are in no
    particular order, so within a tie group the expected cumulative risk (the group's mean risk per accepted
    sample) is used: the result does not depend on how ties happen to be sorted.
    """
    n = confidence.size
    if n == 0:
        return math.nan
    order = np.argsort(-confidence, kind="stable")
    c, r = confidence[order], risk[order]
    change = np.r_[True, c[1:] != c[:-1]]
    starts = np.flatnonzero(change)
    group = np.cumsum(change) - 1
    counts = np.diff(np.r_[starts, n])
    means = np.add.reduceat(r, starts) / counts
    cum_before = np.r_[0.0, np.cumsum(r)][starts]
    pos = np.arange(1, n + 1)
    cum = cum_before[group] + (pos - starts[group]) * means[group]
    return float((cum / pos).mean())


def failure_detection(scores: Any, true_dice: Any, threshold: float = 0.5) -> dict[str, float]:
    """How well a confidence score separates failures (true Dice < ``threshold``) from good masks.

    Args:
        scores: confidence per candidate, higher = more likely good (a predicted quality; for the segmenter
            baselines the mean max-probability, or minus the mean entropy).
        true_dice: true Dice per candidate, in [0, 1].
        threshold: a candidate with true Dice below it is a failure (0.5, METHOD.md).

    Returns:
        ``{"n", "n_failures", "failure_rate", "threshold", "auroc", "aurc", "aurc_oracle", "aurc_random"}``:

        * ``auroc``: AUROC of detecting failures, where a *lower* score means *more likely* a failure (0.5 =
          chance, 1 = perfect); NaN when there are no failures or no successes.
        * ``aurc``: area under the risk-coverage curve with **risk = 1 - true Dice** (not the failure
          indicator): candidates are accepted in order of decreasing score; at coverage ``k / n`` the risk is
          the mean ``1 - Dice`` of the ``k`` accepted candidates; AURC is the mean over ``k = 1..n`` (lower is
          better). Tied scores count as accepted in random order (expected value).
        * ``aurc_oracle``: AURC of the perfect ordering (by true Dice); ``aurc_random``: expected AURC of a
          random ordering (the mean risk). Useful as the floor and ceiling of ``aurc``.

    Example:
        >>> fd = failure_detection([0.9, 0.6, 0.3, 0.8], [0.95, 0.7, 0.1, 0.4])
        >>> fd["n_failures"], fd["auroc"], round(fd["aurc"], 4), round(fd["aurc_oracle"], 4)
        (2, 0.75, 0.2885, 0.251)
    """
    check_fraction(threshold, "threshold", hint="The paper's default is 0.5.")
    s, d = paired(scores, true_dice, ("scores", "true_dice"))
    failures = d < threshold
    risk = 1.0 - d
    return {
        "n": int(s.size),
        "n_failures": int(failures.sum()),
        "failure_rate": float(failures.mean()) if s.size else math.nan,
        "threshold": float(threshold),
        "auroc": _auroc(-s, failures),
        "aurc": _aurc(s, risk),
        "aurc_oracle": _aurc(d, risk),
        "aurc_random": float(risk.mean()) if s.size else math.nan,
    }

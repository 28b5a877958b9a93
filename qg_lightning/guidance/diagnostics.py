"""Pseudolabel diagnostics and the oracle weighting: how well does a score see pseudolabel quality?

Analysis tools for runs whose unlabeled images have known (hidden) masks, e.g. a labeled dataset split into a
labeled and an unlabeled part (``SemiSupervisedDataModule(unlabeled_true_masks=True)``):

* :func:`pseudolabel_dice`: the true Dice of each hard pseudolabel against the hidden mask;
* :func:`oracle_weights`: PL-oracle, the PL-QW weights ``q**T * 1[q >= tau]`` with ``q`` the *true* Dice, the
  ceiling of what any quality predictor can buy through this weighting;
* :func:`score_diagnostics`: Pearson and Spearman between a score (predicted quality, teacher confidence) and
  the true Dice of the very pseudolabels it scored, the kept fraction ``score >= tau``, and the mean true Dice
  of kept and dropped pseudolabels;
* :class:`PseudolabelDiagnostics`: accumulates those per training step and summarises them per interval
  (the reference hosts log them as ``diag/<score>/<statistic>`` at every validation).

These numbers say *why* a weighting helps or not: a score blind to pseudolabel quality (correlation near 0),
a threshold that keeps almost everything, or no headroom (kept and dropped pseudolabels equally good).

Example:
    >>> pseudo = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    >>> truth = torch.tensor([[[1, 1], [0, 0]], [[1, 1], [1, 0]]])
    >>> pseudolabel_dice(pseudo, truth, num_classes=2)
    tensor([1., 0.])
    >>> weights, dice = oracle_weights(pseudo, truth, num_classes=2)
    >>> weights
    tensor([1., 0.])
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from qg_lightning.guidance.functional import check_tau, check_temperature, weights_from_quality
from qg_lightning.metrics.functional import dice_score

__all__ = [
    "PseudolabelDiagnostics",
    "oracle_weights",
    "pseudolabel_dice",
    "score_diagnostics",
]

_STATISTICS = ("pearson", "spearman", "kept_frac", "kept_true_dice", "dropped_true_dice", "mean_score")


def pseudolabel_dice(pseudo: Tensor, truth: Tensor, num_classes: int) -> Tensor:
    """True Dice of each hard pseudolabel against its hidden mask, averaged over foreground classes.

    A class absent from both pseudolabel and truth scores 1 (nothing to find, nothing predicted).

    Args:
        pseudo: hard pseudolabels, ``long`` ``(B, H, W)`` in ``0..K-1``.
        truth: the true masks, same shape and rules.
        num_classes: K, background included.

    Returns:
        ``float32`` ``(B,)`` in ``[0, 1]``, no gradient.
    """
    with torch.no_grad():
        return dice_score(pseudo.long(), truth.long(), num_classes).mean(dim=1)


def oracle_weights(
    pseudo: Tensor, truth: Tensor, num_classes: int, *, tau: float = 0.5, temperature: float = 2.0
) -> tuple[Tensor, Tensor]:
    """PL-oracle weights: ``d**T * 1[d >= tau]`` with ``d`` the true Dice of each pseudolabel.

    The same form, threshold and temperature as the quality weights (PL-QW), so ``PL-oracle - PL-C`` is the
    headroom of this weighting and ``(PL-QW - PL-C) / (PL-oracle - PL-C)`` the share a predictor captures.
    Analysis only: it reads the masks of unlabeled images.

    Returns:
        ``(weights, true_dice)``, both ``float32`` ``(B,)``.
    """
    tau = check_tau(tau)
    temperature = check_temperature(temperature)
    dice = pseudolabel_dice(pseudo, truth, num_classes)
    return weights_from_quality(dice, tau=tau, temperature=temperature), dice


def _correlation(kind: str, x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan  # undefined for constant inputs
    result = stats.pearsonr(x, y) if kind == "pearson" else stats.spearmanr(x, y)
    return float(result[0])


def score_diagnostics(
    scores: Tensor | np.ndarray, true_dice: Tensor | np.ndarray, tau: float
) -> dict[str, float]:
    """How well ``scores`` see the quality of the pseudolabels they scored.

    Args:
        scores: one score per pseudolabel (predicted quality, confidence or true Dice), ``(N,)``.
        true_dice: the true Dice of the same pseudolabels, ``(N,)``.
        tau: the threshold the weighting applies to ``scores`` (kept = ``score >= tau``).

    Returns:
        ``pearson``, ``spearman`` (NaN when a side is constant or N < 3), ``kept_frac``, ``kept_true_dice``
        and ``dropped_true_dice`` (NaN when none is kept / dropped), ``mean_score``, and ``n``.

    Example:
        >>> d = score_diagnostics(torch.tensor([0.9, 0.8, 0.3, 0.1]), torch.tensor([0.8, 0.9, 0.2, 0.0]), 0.5)
        >>> [round(d[k], 2) for k in ("spearman", "kept_frac", "kept_true_dice", "dropped_true_dice")]
        [0.8, 0.5, 0.85, 0.1]
    """
    s = np.asarray(torch.as_tensor(scores).detach().float().cpu(), dtype=np.float64).ravel()
    d = np.asarray(torch.as_tensor(true_dice).detach().float().cpu(), dtype=np.float64).ravel()
    if s.shape != d.shape:
        raise ValueError(f"`scores` {s.shape} and `true_dice` {d.shape} must have the same length.")
    kept = s >= tau
    return {
        "pearson": _correlation("pearson", s, d),
        "spearman": _correlation("spearman", s, d),
        "kept_frac": float(kept.mean()) if s.size else math.nan,
        "kept_true_dice": float(d[kept].mean()) if kept.any() else math.nan,
        "dropped_true_dice": float(d[~kept].mean()) if (~kept).any() else math.nan,
        "mean_score": float(s.mean()) if s.size else math.nan,
        "n": float(s.size),
    }


class PseudolabelDiagnostics:
    """Accumulates ``(true Dice, scores)`` of pseudolabels over training steps and summarises one interval.

    Not a ``Module`` and not saved in checkpoints: an interval cut by a resume is summarised from the steps
    after it.

    Example:
        >>> diag = PseudolabelDiagnostics()
        >>> diag.update(torch.tensor([0.9, 0.2, 0.6]), {"quality": (torch.tensor([0.8, 0.3, 0.7]), 0.5)})
        >>> out = diag.compute()
        >>> [round(out[k], 3) for k in ("true_dice_mean", "quality/kept_frac", "quality/spearman")]
        [0.567, 0.667, 1.0]
        >>> diag.compute()  # reset after compute
        {}
    """

    def __init__(self) -> None:
        self._steps: list[tuple[Tensor, dict[str, Tensor]]] = []
        self._tau: dict[str, float] = {}

    def __len__(self) -> int:
        return sum(int(dice.numel()) for dice, _ in self._steps)

    def update(self, true_dice: Tensor, scores: Mapping[str, tuple[Tensor, float]]) -> None:
        """Record one step: the true Dice ``(B,)`` and, per score name, ``(scores (B,), tau)``."""
        dice = true_dice.detach().float().reshape(-1).cpu()
        step: dict[str, Tensor] = {}
        for name, (score, tau) in scores.items():
            score = score.detach().float().reshape(-1).cpu()
            if score.numel() != dice.numel():
                raise ValueError(
                    f"Score {name!r} has {score.numel()} values for {dice.numel()} pseudolabels."
                )
            step[name] = score
            self._tau[name] = float(tau)
        self._steps.append((dice, step))

    def reset(self) -> None:
        """Forget everything recorded."""
        self._steps, self._tau = [], {}

    def compute(self, *, reset: bool = True) -> dict[str, float]:
        """``true_dice_mean``, ``n`` and ``<score>/<statistic>`` (see :func:`score_diagnostics`) over the
        recorded steps (each score over the steps that recorded it); ``{}`` when nothing was recorded. Resets
        unless ``reset=False``."""
        if not self._steps:
            return {}
        dice = torch.cat([d for d, _ in self._steps])
        out: dict[str, float] = {"true_dice_mean": float(dice.mean()), "n": float(dice.numel())}
        for name, tau in self._tau.items():
            pairs = [(d, s[name]) for d, s in self._steps if name in s]
            figures = score_diagnostics(
                torch.cat([s for _, s in pairs]), torch.cat([d for d, _ in pairs]), tau
            )
            out.update({f"{name}/{k}": v for k, v in figures.items() if k in _STATISTICS})
        if reset:
            self.reset()
        return out

"""Evaluating a quality predictor g (METHOD.md, "Evaluating g"): how well does it judge candidate masks?

* :func:`regression_metrics` and :func:`failure_detection` (pure functions, in
  :mod:`~qg_lightning.quality.eval_metrics`): MAE, Pearson r, Spearman rho and the constant baseline; AUROC and
  AURC of flagging failures;
* :func:`image_dependence`: the release's check that g looks at the image at all (blacked-out and shuffled
  images).

:func:`evaluate_predictor` runs g on candidate masks and returns (and writes) the report (figures overall, per
source: synthetic corruptions vs real segmentation models, per corruption category), with a calibration
scatter and a gallery of the worst-predicted cases as PNGs (:mod:`~qg_lightning.quality.report`). The
candidates come from :mod:`~qg_lightning.quality.candidates` (:func:`make_candidate_set`,
:func:`evaluate_candidate_set`). The ``qg-lightning evaluate-predictor`` command lives in
:mod:`qg_lightning.cli_evaluate` (``evaluate_predictor_cli`` stays importable from here).

Synthetic corruptions flatter a predictor trained on the same recipe; the real-model figures
(``by_source["real"]``) are the ones that decide whether guidance can help (METHOD.md).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from qg_lightning._validation import check_int
from qg_lightning.quality.candidates import (
    SYNTHETIC,
    CandidateSet,
    as_float_images,
    check_images,
    load_evaluation_images,
    load_segmenter,
    make_candidate_set,
    module_device,
    segment_images,
)
from qg_lightning.quality.eval_metrics import failure_detection, pearson, regression_metrics
from qg_lightning.quality.report import json_safe, save_calibration_png, save_worst_png, write_candidates_csv
from qg_lightning.quality.sampling import CATEGORIES, dice_target

__all__ = [
    "IMAGE_DEPENDENCE_THRESHOLD",
    "SYNTHETIC",
    "CandidateSet",
    "evaluate_candidate_set",
    "evaluate_predictor",
    "evaluate_predictor_cli",  # noqa: F822 (module __getattr__: it lives in qg_lightning.cli_evaluate)
    "failure_detection",
    "image_dependence",
    "load_evaluation_images",
    "load_segmenter",
    "make_candidate_set",
    "predict_quality",
    "regression_metrics",
    "save_calibration_png",
    "save_worst_png",
    "segment_images",
]

log = logging.getLogger(__name__)

#: A predictor whose predictions on blacked-out images correlate above this with its normal predictions is
#: ignoring the image (the release's check).
IMAGE_DEPENDENCE_THRESHOLD = 0.7
#: Categories whose per-corruption figures are reported under the corruption's registry name.
_NAMED_CATEGORIES = ("single", "heavy", "catastrophic", "blob")


# --------------------------------------------------------------------------------------- running networks
def _gather(tensor: Tensor, index: Tensor | None, rows: slice) -> Tensor:
    return tensor[rows] if index is None else tensor[index[rows]]


def _index_tensor(image_index: Any, n_images: int, n_candidates: int) -> Tensor | None:
    if image_index is None:
        return None
    index = torch.as_tensor(image_index, dtype=torch.long).reshape(-1)
    if index.numel() != n_candidates:
        raise ValueError(
            f"`image_index` must have one entry per candidate ({n_candidates}), got {index.numel()}."
        )
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n_images):
        raise ValueError(
            f"`image_index` values must lie in [0, {n_images - 1}] (one per image), got out-of-range."
        )
    return index


@torch.no_grad()
def predict_quality(
    predictor: nn.Module,
    images: Tensor,
    masks: Tensor,
    *,
    image_index: Any = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Run a quality predictor in eval mode, batched, on the predictor's device.

    Args:
        predictor: ``predictor(images, masks) -> (B, K-1)`` (e.g. a
            :class:`~qg_lightning.quality.QualityPredictor`); its train/eval mode is restored afterwards.
        images: ``(N, C, H, W)`` float in [0, 1] or ``uint8``; one per mask, or one per image with
            ``image_index``.
        masks: ``(M, K-1, H, W)`` candidate masks (any numeric dtype, {0, 1}).
        image_index: optional ``(M,)`` index of each mask's image in ``images``.
        batch_size: masks per forward pass.

    Returns:
        ``(M, K-1)`` float64 predicted qualities.

    Example:
        >>> from qg_lightning.quality.predictor import QualityPredictor
        >>> g = QualityPredictor()
        >>> images, masks = torch.rand(2, 3, 32, 32), torch.ones(3, 1, 32, 32)
        >>> predict_quality(g, images, masks, image_index=[0, 1, 1]).shape
        (3, 1)
    """
    check_images(images)
    if not isinstance(masks, Tensor) or masks.ndim != 4:
        raise ValueError(
            f"`masks` must be a tensor (M, K-1, H, W), got {getattr(masks, 'shape', type(masks))}."
        )
    check_int(batch_size, "batch_size", minimum=1)
    index = _index_tensor(image_index, images.shape[0], masks.shape[0])
    if index is None and images.shape[0] != masks.shape[0]:
        raise ValueError(
            f"`images` ({images.shape[0]}) and `masks` ({masks.shape[0]}) must have the same length, or pass "
            "`image_index` to map each mask to its image."
        )
    device = module_device(predictor)
    was_training = predictor.training
    predictor.eval()
    out = []
    try:
        for start in range(0, masks.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            x = as_float_images(_gather(images, index, rows).to(device))
            m = masks[rows].to(device).float()
            out.append(predictor(x, m).float().cpu())
    finally:
        predictor.train(was_training)
    if not out:
        return np.zeros((0, masks.shape[1]), dtype=np.float64)
    return torch.cat(out).double().numpy()


def _derangement(n: int, generator: torch.Generator | None) -> Tensor:
    """A permutation with no fixed point (each sample gets another sample's image); identity for n < 2."""
    if n < 2:
        return torch.arange(n)
    perm = torch.randperm(n, generator=generator)
    src = torch.empty(n, dtype=torch.long)
    src[perm] = perm.roll(-1)
    return src


def image_dependence(
    predictor: nn.Module,
    images: Tensor,
    masks: Tensor,
    *,
    image_index: Any = None,
    predictions: np.ndarray | None = None,
    batch_size: int = 64,
    threshold: float = IMAGE_DEPENDENCE_THRESHOLD,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Does the predictor look at the image? Rerun it with blacked-out and with shuffled images.

    The candidates stay the same; the images are replaced by zeros (``blackout``), or by another candidate's
    image (``shuffled``: a random permutation without fixed points across all candidates). Predictions that
    barely change (Pearson with the normal predictions above ``threshold`` for blacked-out images) mean the
    predictor judges the mask's shape alone; that is flagged as ``ignores_image`` and logged as a warning.

    Args:
        predictor: ``predictor(images, masks) -> (B, K-1)``.
        images: ``(N, C, H, W)`` float in [0, 1] or ``uint8``.
        masks: ``(M, K-1, H, W)`` candidates.
        image_index: optional ``(M,)`` image of each candidate (see :func:`predict_quality`).
        predictions: the normal predictions ``(M, K-1)`` if already computed (saves one pass).
        batch_size: candidates per forward pass.
        threshold: correlation above which the predictor counts as ignoring the image (0.7, the release's).
        generator: draws the shuffle.

    Returns:
        ``{"n", "pearson_blackout", "pearson_shuffled", "mean_abs_change_blackout",
        "mean_abs_change_shuffled", "threshold", "ignores_image"}`` (Pearson over all per-class values; NaN
        when undefined, e.g. for constant predictions, which are not flagged).

    Example:
        >>> class MaskOnly(nn.Module):  # looks at the mask area only
        ...     def forward(self, images, masks):
        ...         return masks.mean(dim=(2, 3))
        >>> gen = torch.Generator().manual_seed(0)
        >>> masks = (torch.rand(8, 1, 16, 16, generator=gen) > torch.rand(8, 1, 1, 1, generator=gen)).float()
        >>> dep = image_dependence(MaskOnly(), torch.rand(8, 3, 16, 16, generator=gen), masks, generator=gen)
        >>> dep["ignores_image"], dep["pearson_blackout"]
        (True, 1.0)
    """
    check_images(images)
    if predictions is None:
        predictions = predict_quality(
            predictor, images, masks, image_index=image_index, batch_size=batch_size
        )
    normal = np.asarray(predictions, dtype=np.float64).reshape(-1)
    blackout = predict_quality(
        predictor,
        images.new_zeros((1, *images.shape[1:])),
        masks,
        image_index=np.zeros(masks.shape[0], dtype=np.int64),
        batch_size=batch_size,
    )
    index = _index_tensor(image_index, images.shape[0], masks.shape[0])
    own = index if index is not None else torch.arange(masks.shape[0])
    shuffled_index = own[_derangement(masks.shape[0], generator)]
    shuffled = predict_quality(predictor, images, masks, image_index=shuffled_index, batch_size=batch_size)
    pb, ps = pearson(normal, blackout.reshape(-1)), pearson(normal, shuffled.reshape(-1))
    ignores = bool(not math.isnan(pb) and pb > threshold)
    if ignores:
        log.warning(
            "The quality predictor barely depends on the image: its predictions with blacked-out images "
            "correlate %.3f (> %.2f) with its normal predictions, so it judges the mask's shape alone. Train "
            "with more cross-image and snapshot (real model) candidates.",
            pb,
            threshold,
        )
    return {
        "n": int(masks.shape[0]),
        "pearson_blackout": pb,
        "pearson_shuffled": ps,
        "mean_abs_change_blackout": float(np.abs(normal - blackout.reshape(-1)).mean())
        if normal.size
        else math.nan,
        "mean_abs_change_shuffled": float(np.abs(normal - shuffled.reshape(-1)).mean())
        if normal.size
        else math.nan,
        "threshold": float(threshold),
        "ignores_image": ignores,
    }


# ---------------------------------------------------------------------------------------------- reporting
def _any_foreground(masks: Tensor) -> Tensor:
    """``(M, K-1)`` bool: the mask has the class (any pixel above 0.5)."""
    return (masks.detach().cpu() > 0.5).flatten(2).any(dim=2)


def _mean_over_classes(values: np.ndarray) -> np.ndarray:
    return values.reshape(values.shape[0], -1).mean(axis=1)


def _per_class(pred: np.ndarray, true: np.ndarray, present: np.ndarray) -> dict[str, dict[str, Any]]:
    """Regression figures of each class over the candidates where the class is present in the truth or in the
    candidate; the both-empty pairs (true Dice 1 by definition, nothing to get wrong) are left out of the
    figures and counted (``n_both_empty``), with the mean prediction on them (ideally 1)."""
    out = {}
    for k in range(pred.shape[1]):
        keep = present[:, k]
        figures = regression_metrics(pred[keep, k], true[keep, k])
        figures["n_both_empty"] = int((~keep).sum())
        figures["mean_pred_both_empty"] = float(pred[~keep, k].mean()) if (~keep).any() else math.nan
        out[f"class{k + 1}"] = figures
    return out


def _summary(
    pred: np.ndarray,
    true: np.ndarray,
    threshold: float,
    extra_scores: Mapping[str, np.ndarray],
    present: np.ndarray,
) -> dict:
    """Regression figures over per-class values + failure detection on per-candidate mean quality; per-class
    figures (K-1 > 1) over the pairs where the class is present (:func:`_per_class`)."""
    out: dict[str, Any] = _with_counts(regression_metrics(pred, true), pred)
    out["n_both_empty"] = int((~present).sum())
    if pred.shape[0] == 0:
        return out
    true_mean = _mean_over_classes(true)
    fd = {"predictor": failure_detection(_mean_over_classes(pred), true_mean, threshold)}
    for name, scores in extra_scores.items():
        fd[name] = failure_detection(scores, true_mean, threshold)
    out["failure_detection"] = fd
    if pred.shape[1] > 1:
        out["per_class"] = _per_class(pred, true, present)
    return out


def _with_counts(metrics: dict[str, Any], pred: np.ndarray) -> dict[str, Any]:
    """``n`` = candidates, ``n_values`` = per-class values the figures are computed over."""
    return {
        "n": int(pred.shape[0]),
        "n_values": int(pred.size),
        **{k: v for k, v in metrics.items() if k != "n"},
    }


def _small(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    m = _with_counts(regression_metrics(pred, true), pred)
    return {k: m[k] for k in ("n", "mae", "mean_pred", "mean_true")}


def evaluate_predictor(
    predictor: nn.Module,
    images: Tensor,
    truths: Tensor,
    candidates: Tensor,
    sources: Sequence[str],
    categories: Sequence[str | None],
    *,
    segmenter_scores: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    image_index: Any = None,
    ids: Sequence[str] | None = None,
    corruptions: Sequence[str | None] | None = None,
    threshold: float = 0.5,
    out_prefix: str | os.PathLike | None = None,
    n_worst: int = 16,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Evaluate a quality predictor on candidate masks with known ground truth; return the JSON report.

    Args:
        predictor: ``predictor(images, masks) -> (B, K-1)`` predicted Dice.
        images: ``(M, C, H, W)`` one image per candidate (float in [0, 1] or ``uint8``), or ``(N, C, H, W)``
            one per image together with ``image_index``.
        truths: ground-truth foreground masks ``(M or N, K-1, H, W)`` (aligned like ``images``).
        candidates: ``(M, K-1, H, W)`` candidate masks.
        sources: ``(M,)`` ``"synthetic"`` for recipe corruptions, else the name of the segmentation model that
            predicted the candidate (a "real" candidate).
        categories: ``(M,)`` corruption category (one of ``CATEGORIES``) of synthetic candidates; ignored
            (None) for real ones.
        segmenter_scores: optional free confidence baselines of the real candidates, ``{"max_probability":
            (M,), "entropy": (M,)}`` (NaN for synthetic candidates): mean max-probability and mean entropy of
            the segmenter that made the candidate. Scored for failure detection (entropy negated).
        batch_size: candidates per forward pass.
        image_index: ``(M,)`` image of each candidate when ``images`` / ``truths`` are per image.
        ids: ``(M,)`` image id of each candidate (captions, per-candidate CSV).
        corruptions: ``(M,)`` corruption name(s) of synthetic candidates (``CorruptionResult.name``); adds
            ``by_corruption``.
        threshold: true Dice below which a candidate is a failure (0.5).
        out_prefix: when given, write ``<prefix>_calibration.png``, ``<prefix>_worst.png`` and
            ``<prefix>_candidates.csv`` and put their paths in the report.
        n_worst: cases in the worst-predicted gallery.
        generator: draws the shuffle of the image-dependence check.

    Returns:
        The report: ``n`` (candidates), ``n_values`` (per-class values, ``n * (K-1)``), ``num_foreground``,
        ``mae``, ``pearson``, ``spearman``, ``mean_pred``, ``mean_true``, ``constant_baseline_mae`` (over all
        per-class values of all candidates, both-empty pairs included: guidance reads those predictions too),
        ``n_both_empty`` (per-class values whose class is in neither the truth nor the candidate: true Dice 1,
        nothing to get wrong); for K-1 > 1, ``per_class`` (``class1``, ...: the same figures of each class over
        the candidates where the class is in the truth or in the candidate, so trivially right absent classes
        cannot inflate them, plus ``n_both_empty``, the pairs left out, and ``mean_pred_both_empty``, the mean
        prediction on them, ideally 1);
        ``by_source`` (``"synthetic"`` and ``"real"``, each with the same figures, ``per_class`` included, plus
        ``failure_detection``); ``by_segmenter`` (each real model); ``by_category`` and ``by_corruption``
        (synthetic: ``n``, ``mae``, ``mean_pred``, ``mean_true``); ``image_dependence``;
        ``failure_detection`` (``threshold``, ``predictor`` over all candidates, ``synthetic``, ``real``,
        and ``baselines`` for real candidates with segmenter scores: ``predictor`` on the same candidates,
        ``max_probability``, ``entropy``); ``calibration_png``, ``worst_png``, ``candidates_csv`` (paths or
        None). Failure detection uses each candidate's mean quality over classes. NaN means undefined.
        For a :class:`~qg_lightning.quality.QualityEnsemble` of two or more, also ``members``: per member,
        ``all``, ``synthetic`` and ``real`` regression figures of that member alone on the same candidates.

    Example:
        >>> from qg_lightning.quality.predictor import QualityPredictor
        >>> gen = torch.Generator().manual_seed(0)
        >>> truths = torch.zeros(4, 1, 32, 32); truths[:, :, 8:24, 8:24] = 1
        >>> cands = truths.clone(); cands[2:, :, 8:16] = 0
        >>> sources, categories = ["synthetic"] * 2 + ["unet"] * 2, ["identity"] * 2 + [None] * 2
        >>> images = torch.rand(4, 3, 32, 32, generator=gen)
        >>> report = evaluate_predictor(QualityPredictor(), images, truths, cands, sources, categories)
        >>> report["n"], report["by_source"]["real"]["n"], round(report["by_source"]["real"]["mean_true"], 3)
        (4, 2, 0.667)
    """
    check_images(images)
    if not isinstance(candidates, Tensor) or candidates.ndim != 4:
        raise ValueError(
            f"`candidates` must be a tensor (M, K-1, H, W), got {getattr(candidates, 'shape', None)}."
        )
    m = candidates.shape[0]
    for name, seq in (
        ("sources", sources),
        ("categories", categories),
        ("ids", ids),
        ("corruptions", corruptions),
    ):
        if seq is not None and len(seq) != m:
            raise ValueError(f"`{name}` must have one entry per candidate ({m}), got {len(seq)}.")
    index = _index_tensor(image_index, images.shape[0], m)
    if truths.shape[0] != images.shape[0] or truths.shape[1:] != candidates.shape[1:]:
        raise ValueError(
            f"`truths` {tuple(truths.shape)} must match `images` in length ({images.shape[0]}) and "
            f"`candidates` in shape {tuple(candidates.shape[1:])}."
        )
    if m == 0:
        raise ValueError("No candidates to evaluate: `candidates` is empty.")
    sources = [str(s) for s in sources]
    src = np.asarray(sources)
    synthetic = src == SYNTHETIC
    real = ~synthetic

    aligned_truths = truths if index is None else truths[index]
    true = dice_target(candidates, aligned_truths).double().numpy()
    # (M, K-1): the class is in the truth or in the candidate (else a both-empty pair, true Dice 1)
    present = (_any_foreground(candidates) | _any_foreground(aligned_truths)).numpy()
    members = getattr(predictor, "members", None)  # a QualityEnsemble: each member once, then their mean
    if isinstance(members, nn.ModuleList) and len(members) > 1:
        member_preds = [
            predict_quality(member, images, candidates, image_index=index, batch_size=batch_size)
            for member in members
        ]
        pred = np.mean(member_preds, axis=0)
    else:
        member_preds = []
        pred = predict_quality(predictor, images, candidates, image_index=index, batch_size=batch_size)
    pred_mean, true_mean = _mean_over_classes(pred), _mean_over_classes(true)

    scores: dict[str, np.ndarray] = {}
    for name, values in (segmenter_scores or {}).items():
        arr = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
        if arr.shape != (m,):
            raise ValueError(f"`segmenter_scores[{name!r}]` must have shape ({m},), got {arr.shape}.")
        scores[name] = -arr if name == "entropy" else arr

    report: dict[str, Any] = {
        **_with_counts(regression_metrics(pred, true), pred),
        "n_both_empty": int((~present).sum()),
        "num_foreground": int(pred.shape[1]),
    }
    if pred.shape[1] > 1:
        report["per_class"] = _per_class(pred, true, present)
    by_source = {}
    for label, sel in ((SYNTHETIC, synthetic), ("real", real)):
        by_source[label] = _summary(pred[sel], true[sel], threshold, {}, present[sel])
    report["by_source"] = by_source
    if member_preds:  # what each member alone scores on the same candidates, to set beside the mean
        subsets = (("all", np.ones(m, bool)), (SYNTHETIC, synthetic), ("real", real))
        report["members"] = [
            {label: _with_counts(regression_metrics(p[sel], true[sel]), p[sel]) for label, sel in subsets}
            for p in member_preds
        ]
    report["by_segmenter"] = {}
    for name in sorted(set(src[real].tolist())):
        sel = src == name
        extra = {k: v[sel] for k, v in scores.items() if np.isfinite(v[sel]).all()}
        report["by_segmenter"][name] = _summary(pred[sel], true[sel], threshold, extra, present[sel])

    cats = np.asarray([str(c) if c is not None else "" for c in categories])
    report["by_category"] = {
        cat: _small(pred[synthetic & (cats == cat)], true[synthetic & (cats == cat)])
        for cat in CATEGORIES
        if (synthetic & (cats == cat)).any()
    }
    if corruptions is not None:
        keys = np.asarray(
            [
                str(n) if (c in _NAMED_CATEGORIES and n) else c
                for c, n in zip(cats.tolist(), corruptions, strict=True)
            ]
        )
        report["by_corruption"] = {
            k: _small(pred[synthetic & (keys == k)], true[synthetic & (keys == k)])
            for k in sorted(set(keys[synthetic].tolist()))
        }

    report["image_dependence"] = image_dependence(
        predictor,
        images,
        candidates,
        image_index=index,
        predictions=pred,
        batch_size=batch_size,
        generator=generator,
    )

    fd: dict[str, Any] = {
        "threshold": float(threshold),
        "predictor": failure_detection(pred_mean, true_mean, threshold),
    }
    fd[SYNTHETIC] = by_source[SYNTHETIC].get("failure_detection")
    fd["real"] = by_source["real"].get("failure_detection")
    with_scores = (
        real & np.all([np.isfinite(v) for v in scores.values()], axis=0) if scores else np.zeros(m, bool)
    )
    if with_scores.any():
        fd["baselines"] = {
            "n": int(with_scores.sum()),
            "predictor": failure_detection(pred_mean[with_scores], true_mean[with_scores], threshold),
            **{
                k: failure_detection(v[with_scores], true_mean[with_scores], threshold)
                for k, v in scores.items()
            },
        }
    report["failure_detection"] = fd

    report["calibration_png"] = report["worst_png"] = report["candidates_csv"] = None
    if out_prefix is not None:
        prefix = Path(out_prefix)
        report["calibration_png"] = str(
            save_calibration_png(pred_mean, true_mean, sources, f"{prefix}_calibration.png")
        )
        err = np.abs(pred_mean - true_mean)
        worst = np.argsort(-err, kind="stable")[: max(0, int(n_worst))]
        captions = []
        for i in worst.tolist():
            what = (
                sources[i]
                if not synthetic[i]
                else (corruptions[i] if corruptions is not None else categories[i])
            )
            head = f"{ids[i]} " if ids is not None else ""
            captions.append(f"{head}{what}\npred {pred_mean[i]:.2f} true {true_mean[i]:.2f}")
        sel = torch.as_tensor(worst, dtype=torch.long)
        img_rows = sel if index is None else index[sel]
        report["worst_png"] = str(
            save_worst_png(
                images[img_rows],
                candidates[sel],
                truths[img_rows],
                captions,
                f"{prefix}_worst.png",
                title="Worst-predicted candidates (blue: candidate, green outline: ground truth)",
            )
        )
        report["candidates_csv"] = str(
            write_candidates_csv(
                f"{prefix}_candidates.csv", pred, true, sources, cats, corruptions, ids, scores
            )
        )
    return json_safe(report)


def evaluate_candidate_set(
    predictor: nn.Module,
    candidate_set: CandidateSet,
    *,
    batch_size: int = 64,
    out_prefix: str | os.PathLike | None = None,
    n_worst: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`evaluate_predictor` on a :class:`CandidateSet` (the shuffle check seeded by ``seed``)."""
    from qg_lightning.data import derive_seed

    cs = candidate_set
    return evaluate_predictor(
        predictor,
        cs.images,
        cs.truths,
        cs.candidates,
        cs.sources,
        cs.categories,
        segmenter_scores=cs.segmenter_scores,
        batch_size=batch_size,
        image_index=cs.image_index,
        ids=cs.ids,
        corruptions=cs.corruptions,
        out_prefix=out_prefix,
        n_worst=n_worst,
        generator=torch.Generator().manual_seed(derive_seed(seed, 23)),
    )


def __getattr__(name: str) -> Any:
    """``evaluate_predictor_cli`` moved to the CLI layer (:mod:`qg_lightning.cli_evaluate`); still importable."""
    if name == "evaluate_predictor_cli":
        from qg_lightning.cli_evaluate import evaluate_predictor_cli

        return evaluate_predictor_cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

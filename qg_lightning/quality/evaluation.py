"""Evaluating a quality predictor g (METHOD.md, "Evaluating g"): how well does it judge candidate masks?

Pure functions first (numpy in, plain dicts out):

* :func:`regression_metrics`: MAE, Pearson r, Spearman rho of predicted vs true Dice, and the MAE of the
  best constant answer (the mean true Dice), the bar any useful predictor must clear;
* :func:`failure_detection`: AUROC of flagging failures (true Dice < 0.5) by low predicted quality, and the
  area under the risk-coverage curve (AURC);
* :func:`image_dependence`: the release's check that g looks at the image at all (blacked-out and shuffled
  images).

Then :func:`evaluate_predictor` runs g on candidate masks and writes the JSON report (figures overall, per
source: synthetic corruptions vs real segmentation models, per corruption category), with a calibration
scatter and a gallery of the worst-predicted cases as PNGs. :func:`evaluate_predictor_cli` is the
``qg-lightning evaluate-predictor`` command: it reads a folder, makes synthetic candidates with the corruption
recipe and real candidates with ``--segmenter`` checkpoints, and calls :func:`evaluate_predictor`.

Synthetic corruptions flatter a predictor trained on the same recipe; the real-model figures
(``by_source["real"]``) are the ones that decide whether guidance can help (METHOD.md).
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from scipy.stats import rankdata
from torch import Tensor, nn

from qg_lightning.checkpoint import load_checkpoint
from qg_lightning.masks import foreground_from_labels, labels_from_foreground, labels_from_logits
from qg_lightning.quality.sampling import CATEGORIES, CorruptionSampler, dice_target

__all__ = [
    "IMAGE_DEPENDENCE_THRESHOLD",
    "SYNTHETIC",
    "CandidateSet",
    "evaluate_candidate_set",
    "evaluate_predictor",
    "evaluate_predictor_cli",
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
#: Source label of candidates made by the corruption recipe; any other label names a real segmentation model.
SYNTHETIC = "synthetic"
#: Categories whose per-corruption figures are reported under the corruption's registry name.
_NAMED_CATEGORIES = ("single", "heavy", "catastrophic", "blob")


# ----------------------------------------------------------------------------------------- pure functions
def _as_1d(values: Any, name: str) -> np.ndarray:
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


def _pair(pred: Any, true: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_1d(pred, names[0]), _as_1d(true, names[1])
    if a.shape != b.shape:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must hold the same number of values, got {a.size} and {b.size}."
        )
    return a, b


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
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
    p, t = _pair(pred, true, ("pred", "true"))
    if p.size == 0:
        keys = ("mae", "pearson", "spearman", "mean_pred", "mean_true", "constant_baseline_mae")
        return {"n": 0, **{k: math.nan for k in keys}}
    return {
        "n": int(p.size),
        "mae": float(np.abs(p - t).mean()),
        "pearson": _pearson(p, t),
        "spearman": _pearson(rankdata(p), rankdata(t)) if p.size >= 2 else math.nan,
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
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"`threshold` must be a number in (0, 1], got {threshold!r} (paper default 0.5).")
    s, d = _pair(scores, true_dice, ("scores", "true_dice"))
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


# --------------------------------------------------------------------------------------- running networks
def _module_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _as_float_images(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def _check_images(images: Any, name: str = "images") -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"`{name}` must be a tensor (N, C, H, W), float in [0, 1] or uint8, got {shape}.")
    return images


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
    _check_images(images)
    if not isinstance(masks, Tensor) or masks.ndim != 4:
        raise ValueError(
            f"`masks` must be a tensor (M, K-1, H, W), got {getattr(masks, 'shape', type(masks))}."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
    index = _index_tensor(image_index, images.shape[0], masks.shape[0])
    if index is None and images.shape[0] != masks.shape[0]:
        raise ValueError(
            f"`images` ({images.shape[0]}) and `masks` ({masks.shape[0]}) must have the same length, or pass "
            "`image_index` to map each mask to its image."
        )
    device = _module_device(predictor)
    was_training = predictor.training
    predictor.eval()
    out = []
    try:
        for start in range(0, masks.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            x = _as_float_images(_gather(images, index, rows).to(device))
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
    _check_images(images)
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
    pb, ps = _pearson(normal, blackout.reshape(-1)), _pearson(normal, shuffled.reshape(-1))
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


@torch.no_grad()
def segment_images(
    net: nn.Module, images: Tensor, num_classes: int, *, batch_size: int = 16
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """Hard masks of a segmentation network and its per-image confidence baselines.

    Args:
        net: logits network (1 channel for binary, K otherwise), e.g. a segmenter's ``evaluation_network()``.
        images: ``(N, C, H, W)`` float in [0, 1] or ``uint8``.
        num_classes: K (2 = binary).
        batch_size: images per forward pass.

    Returns:
        ``(masks, max_probability, entropy)``: ``uint8 (N, K-1, H, W)`` hard foreground masks (threshold 0.5 /
        argmax), the mean over pixels of the winning class probability, and the mean pixel entropy in nats
        (over the K classes, background included).

    Example:
        >>> from qg_lightning.methods import build_segmenter
        >>> net = build_segmenter(in_channels=3, num_classes=2).eval()
        >>> masks, conf, ent = segment_images(net, torch.rand(2, 3, 32, 32), 2)
        >>> masks.shape, masks.dtype, conf.shape, bool(((conf >= 0.5) & (conf <= 1)).all())
        (torch.Size([2, 1, 32, 32]), torch.uint8, (2,), True)
    """
    _check_images(images)
    device = _module_device(net)
    was_training = net.training
    net.eval()
    masks, conf, ent = [], [], []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = _as_float_images(images[start : start + batch_size].to(device))
            logits = net(x).float()
            if logits.shape[1] == 1:
                p = torch.sigmoid(logits)
                probs = torch.cat([1 - p, p], dim=1)
            else:
                probs = torch.softmax(logits, dim=1)
            labels = labels_from_logits(logits, num_classes)
            masks.append(foreground_from_labels(labels, num_classes).to(torch.uint8).cpu())
            conf.append(probs.amax(dim=1).flatten(1).mean(1).cpu())
            ent.append((-(probs * probs.clamp_min(1e-12).log()).sum(1)).flatten(1).mean(1).cpu())
    finally:
        net.train(was_training)
    if not masks:
        empty = np.zeros(0)
        return torch.zeros((0, num_classes - 1, *images.shape[2:]), dtype=torch.uint8), empty, empty
    return torch.cat(masks), torch.cat(conf).double().numpy(), torch.cat(ent).double().numpy()


# --------------------------------------------------------------------------------------- segmenter loading
def _segmenter_classes() -> dict[str, type]:
    from qg_lightning import methods
    from qg_lightning.methods import SupervisedSegmenter

    out = {}
    for name in methods.__all__:
        obj = getattr(methods, name)
        if isinstance(obj, type) and issubclass(obj, SupervisedSegmenter):
            out[name] = obj
    return out


def load_segmenter(
    path: str | os.PathLike,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    map_location: str = "cpu",
) -> nn.Module:
    """The evaluation network of a segmentation checkpoint, in eval mode and frozen (``weights_only=True``).

    Accepts Lightning checkpoints of :class:`~qg_lightning.methods.SupervisedSegmenter` and of every host in
    :mod:`qg_lightning.methods` (the class is looked up by the name in the ``_class_path`` hyper-parameter the
    CLI records, only among those classes: nothing else is imported), plain ``{"state_dict",
    "hyper_parameters"}`` dicts of them, and snapshot files of
    :class:`~qg_lightning.quality.SnapshotCallback`.
    A checkpoint of another (custom) subclass is read as a ``SupervisedSegmenter``: only its ``model.*``
    weights are used, with a warning.

    Args:
        path: checkpoint file.
        in_channels: image channels of the data; must match the checkpoint.
        num_classes: K of the data; must match the checkpoint.
        map_location: device of the returned network.

    Returns:
        The network (``images [0, 1] (B, C, H, W) -> logits``), eval mode, ``requires_grad=False``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a segmentation checkpoint, or ``in_channels`` / ``num_classes`` mismatch (named).

    Example:
        >>> import tempfile, pathlib
        >>> from qg_lightning.methods import SupervisedSegmenter
        >>> m = SupervisedSegmenter(in_channels=1)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     p = pathlib.Path(tmp) / "seg.ckpt"
        ...     torch.save({"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams)}, p)
        ...     net = load_segmenter(p, in_channels=1, num_classes=2)
        >>> type(net).__name__, net.training
        ('SegmentationNet', False)
    """
    from qg_lightning.methods import SupervisedSegmenter
    from qg_lightning.quality.snapshots import SNAPSHOT_FORMAT, load_snapshot

    ckpt = load_checkpoint(path, map_location="cpu", what="segmentation checkpoint")
    if ckpt.get("format") == SNAPSHOT_FORMAT:
        return load_snapshot(path, in_channels=in_channels, num_classes=num_classes).net.to(map_location)
    hparams = ckpt.get("hyper_parameters")
    state = ckpt.get("state_dict")
    hparams = dict(hparams) if isinstance(hparams, Mapping) else {}
    if not isinstance(state, Mapping) or not {"arch", "encoder_name"} <= set(hparams):
        kind = "a quality predictor" if "backbone" in hparams else "not a segmentation model"
        raise ValueError(
            f"'{path}' is not a segmentation checkpoint (it is {kind}: expected hyper-parameters 'arch' and "
            "'encoder_name' and a 'state_dict'). Pass checkpoints of qg_lightning segmenters "
            "(SupervisedSegmenter or an SSL host) or snapshot files to --segmenter."
        )
    ckpt_in, ckpt_k = hparams.get("in_channels", 3), hparams.get("num_classes", 2)
    problems = []
    if in_channels is not None and ckpt_in != in_channels:
        problems.append(f"in_channels={ckpt_in} but the data/predictor use in_channels={in_channels}")
    if num_classes is not None and ckpt_k != num_classes:
        problems.append(f"num_classes={ckpt_k} but the data/predictor use num_classes={num_classes}")
    if problems:
        raise ValueError(
            f"Segmentation checkpoint '{path}' does not fit: {'; '.join(problems)}. Use a segmenter "
            "trained on this kind of data (same image channels and classes)."
        )
    class_path = hparams.get("_class_path")
    classes = _segmenter_classes()
    name = class_path.rsplit(".", 1)[-1] if isinstance(class_path, str) else "SupervisedSegmenter"
    known = isinstance(class_path, str) and class_path.startswith("qg_lightning.") and name in classes
    cls = classes[name] if known else SupervisedSegmenter
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in hparams.items() if k in params and k != "self" and not k.startswith("_")}
    kwargs["encoder_weights"] = None
    module = cls(**kwargs)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        model_state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        if known or not model_state:
            raise ValueError(
                f"Could not load the weights of segmentation checkpoint '{path}': {err}"
            ) from None
        try:
            module.model.load_state_dict(model_state, strict=True)
        except RuntimeError as err2:
            raise ValueError(
                f"Could not load the weights of segmentation checkpoint '{path}': {err2}"
            ) from None
        rank_zero_warn(
            f"Segmentation checkpoint '{path}' is of class {class_path or 'unknown'}; using its 'model.*' "
            "network as the evaluation network."
        )
    net = module.evaluation_network()
    return net.to(map_location).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------- reporting
def _mean_over_classes(values: np.ndarray) -> np.ndarray:
    return values.reshape(values.shape[0], -1).mean(axis=1)


def _summary(
    pred: np.ndarray, true: np.ndarray, threshold: float, extra_scores: Mapping[str, np.ndarray]
) -> dict:
    """Regression figures over per-class values + failure detection on per-candidate mean quality."""
    out: dict[str, Any] = _with_counts(regression_metrics(pred, true), pred)
    if pred.shape[0] == 0:
        return out
    true_mean = _mean_over_classes(true)
    fd = {"predictor": failure_detection(_mean_over_classes(pred), true_mean, threshold)}
    for name, scores in extra_scores.items():
        fd[name] = failure_detection(scores, true_mean, threshold)
    out["failure_detection"] = fd
    if pred.shape[1] > 1:
        out["per_class"] = {
            f"class{k + 1}": regression_metrics(pred[:, k], true[:, k]) for k in range(pred.shape[1])
        }
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


def _json_safe(obj: Any) -> Any:
    """NaN / inf -> None (JSON has no NaN), numpy scalars -> Python, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _agg_figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_calibration_png(
    pred: Any, true: Any, sources: Sequence[str], path: str | os.PathLike, *, title: str = "Quality predictor"
) -> Path:
    """Scatter of predicted vs true Dice coloured by source, with the diagonal; MAE / Pearson in the title.

    Args:
        pred: predicted quality per candidate (mean over classes), ``(M,)``.
        true: true Dice per candidate, ``(M,)``.
        sources: source label per candidate (``"synthetic"`` or a segmenter's name).
        path: PNG file to write (folder created).
        title: first line of the title.

    Returns:
        The written path.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "c.png"
        ...     p = save_calibration_png([0.2, 0.8], [0.3, 0.9], ["synthetic", "unet"], path)
        ...     p.stat().st_size > 0
        True
    """
    p, t = _pair(pred, true, ("pred", "true"))
    sources = [str(s) for s in sources]
    if len(sources) != p.size:
        raise ValueError(f"`sources` must have one label per candidate ({p.size}), got {len(sources)}.")
    m = regression_metrics(p, t)
    fig = _agg_figure((6.4, 6.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="ideal")
    names = [SYNTHETIC] + sorted({s for s in sources if s != SYNTHETIC})
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    src = np.asarray(sources)
    for i, name in enumerate(names):
        sel = src == name
        if not sel.any():
            continue
        sm = regression_metrics(p[sel], t[sel])
        ax.scatter(
            t[sel],
            p[sel],
            s=10,
            alpha=0.5,
            color=colors[i % len(colors)],
            label=f"{name} (n={sm['n']}, MAE {_fmt(sm['mae'])}, r {_fmt(sm['pearson'])})",
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("true Dice")
    ax.set_ylabel("predicted quality")
    ax.set_title(
        f"{title}\nMAE {_fmt(m['mae'])}, Pearson {_fmt(m['pearson'])}, Spearman {_fmt(m['spearman'])}"
    )
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


#: Candidate colours (per foreground class) of the overlays: chosen to stand out on reddish medical images.
_CANDIDATE_COLORS = ((0.15, 0.55, 1.0), (1.0, 0.85, 0.1), (1.0, 0.2, 0.8), (0.6, 0.3, 1.0), (1.0, 0.5, 0.0))
_TRUTH_COLOR = (0.1, 1.0, 0.1)


def _overlay_rgb(image: Tensor, candidate: Tensor, truth: Tensor | None) -> np.ndarray:
    """``(H, W, 3)`` uint8: candidate filled and outlined per class, ground truth as a green outline."""
    from qg_lightning.visualize import mask_boundary

    rgb = _as_float_images(image.unsqueeze(0)).cpu()
    rgb = (rgb.repeat(1, 3, 1, 1) if rgb.shape[1] == 1 else rgb[:, :3]).clamp(0, 1)[0]
    pred = labels_from_foreground(candidate.unsqueeze(0).float().cpu())
    for k in range(1, int(pred.max()) + 1):
        color = torch.tensor(_CANDIDATE_COLORS[(k - 1) % len(_CANDIDATE_COLORS)]).view(3, 1, 1)
        sel = pred == k
        rgb = torch.where(sel, rgb * 0.6 + color * 0.4, rgb)
        rgb = torch.where(mask_boundary(sel.long())[0], color, rgb)
    if truth is not None:
        target = labels_from_foreground(truth.unsqueeze(0).float().cpu())
        rgb = torch.where(mask_boundary(target)[0], torch.tensor(_TRUTH_COLOR).view(3, 1, 1), rgb)
    return (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _panel_figure(panels: Sequence[tuple[np.ndarray, str]], *, title: str, ncols: int, size: float = 2.4):
    """A figure with one image per panel and its caption above it.

    The tiles are composed into one canvas shown by a single axes (one matplotlib axes per panel is slow for
    the ~50 panels of the corruption gallery); captions are text at pixel positions.
    """
    import cv2

    dpi = 100
    n = max(1, len(panels))
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    tile, cap, top, pad = int(size * dpi), 34, 36, 8
    width, height = ncols * (tile + pad) + pad, nrows * (tile + cap + pad) + top
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    spots = []
    for i, (rgb, caption) in enumerate(panels):
        r, c = divmod(i, ncols)
        x, y = pad + c * (tile + pad), top + r * (tile + cap + pad) + cap
        h, w = rgb.shape[:2]
        scale = tile / max(h, w)
        th, tw = max(1, round(h * scale)), max(1, round(w * scale))
        canvas[y : y + th, x : x + tw] = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_NEAREST)
        spots.append((x + tile / 2, y - 3, caption))
    fig = _agg_figure((width / dpi, height / dpi))
    fig.set_dpi(dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for x, y, caption in spots:
        ax.text(x, y, caption, ha="center", va="bottom", fontsize=7)
    ax.text(
        width / 2, top / 2, title if panels else f"{title} (no cases)", ha="center", va="center", fontsize=9
    )
    return fig


def _panel_png(
    panels: Sequence[tuple[np.ndarray, str]], path: str | os.PathLike, *, title: str, ncols: int = 4
) -> Path:
    fig = _panel_figure(panels, title=title, ncols=ncols, size=2.6)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def save_worst_png(
    images: Tensor,
    candidates: Tensor,
    truths: Tensor | None,
    captions: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
    ncols: int = 4,
) -> Path:
    """A grid of overlays (candidate filled, ground truth outlined in green) with one caption each.

    Args:
        images: ``(B, C, H, W)`` float in [0, 1] or ``uint8``.
        candidates: ``(B, K-1, H, W)`` candidate masks.
        truths: ``(B, K-1, H, W)`` ground-truth masks, or None (no outline).
        captions: one caption per panel.
        path: PNG to write.
        title: figure title.
        ncols: panels per row.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     p = save_worst_png(torch.rand(2, 3, 16, 16), torch.ones(2, 1, 16, 16), None, ["a", "b"],
        ...                        pathlib.Path(tmp) / "w.png")
        ...     p.is_file()
        True
    """
    if len(captions) != images.shape[0] or candidates.shape[0] != images.shape[0]:
        raise ValueError(
            f"`images` ({images.shape[0]}), `candidates` ({candidates.shape[0]}) and `captions` "
            f"({len(captions)}) must have the same length."
        )
    panels = [
        (_overlay_rgb(images[i], candidates[i], truths[i] if truths is not None else None), captions[i])
        for i in range(images.shape[0])
    ]
    return _panel_png(panels, path, title=title, ncols=ncols)


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
        per-class values of all candidates);
        ``by_source`` (``"synthetic"`` and ``"real"``, each with the same figures plus
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
    _check_images(images)
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
        "num_foreground": int(pred.shape[1]),
    }
    by_source = {}
    for label, sel in ((SYNTHETIC, synthetic), ("real", real)):
        by_source[label] = _summary(pred[sel], true[sel], threshold, {})
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
        report["by_segmenter"][name] = _summary(pred[sel], true[sel], threshold, extra)

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
            _write_candidates_csv(
                f"{prefix}_candidates.csv", pred, true, sources, cats, corruptions, ids, scores
            )
        )
    return _json_safe(report)


def _csv_number(value: float) -> str:
    return f"{value:.6f}" if math.isfinite(value) else ""


def _write_candidates_csv(path, pred, true, sources, cats, corruptions, ids, scores) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = pred.shape[1]
    per_class = [f"{w}_class{c + 1}" for c in range(k) for w in ("pred", "true")] if k > 1 else []
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["id", "source", "category", "corruption", "pred", "true", *per_class, *sorted(scores)]
        )
        for i in range(pred.shape[0]):
            extra = [f"{v:.6f}" for c in range(k) for v in (pred[i, c], true[i, c])] if k > 1 else []
            writer.writerow(
                [
                    ids[i] if ids is not None else i,
                    sources[i],
                    cats[i],
                    (corruptions[i] or "") if corruptions is not None else "",
                    f"{pred[i].mean():.6f}",
                    f"{true[i].mean():.6f}",
                    *extra,
                    *(_csv_number(-scores[s][i] if s == "entropy" else scores[s][i]) for s in sorted(scores)),
                ]
            )
    return path


# ------------------------------------------------------------------------------------------------- command
@dataclass(frozen=True)
class CandidateSet:
    """Candidate masks with known truth, ready for :func:`evaluate_predictor` (see :func:`make_candidate_set`).

    Attributes:
        images: ``uint8 (N, C, H, W)`` one per image.
        truths: ``uint8 (N, K-1, H, W)`` ground-truth foreground masks.
        candidates: ``uint8 (M, K-1, H, W)`` candidate masks.
        image_index: ``long (M,)`` image of each candidate.
        sources: ``(M,)`` ``"synthetic"`` or the segmenter's name.
        categories: ``(M,)`` corruption category of synthetic candidates (None for real ones).
        corruptions: ``(M,)`` corruption name of synthetic candidates (None for real ones).
        ids: ``(M,)`` image id of each candidate.
        segmenter_scores: ``{"max_probability": (M,), "entropy": (M,)}`` (NaN for synthetic candidates), or
            None without segmenters.
    """

    images: Tensor
    truths: Tensor
    candidates: Tensor
    image_index: Tensor
    sources: list[str]
    categories: list[str | None]
    corruptions: list[str | None]
    ids: list[str]
    segmenter_scores: dict[str, np.ndarray] | None


def load_evaluation_images(
    index: Any, ids: Sequence[str], *, image_size: int, in_channels: int, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Images ``uint8 (N, C, S, S)`` and truths ``uint8 (N, K-1, S, S)`` of ``ids`` from a
    :class:`~qg_lightning.data.folder.FolderIndex` (e.g. ``SemiSupervisedDataModule.index`` after ``setup``)."""
    from qg_lightning.quality.datamodule import load_resized

    images_u8, labels = load_resized(
        [index.image_paths[i] for i in ids],
        [index.mask_paths[i] for i in ids],
        size=image_size,
        in_channels=in_channels,
        num_classes=num_classes,
        decoded=index.decoded,
    )
    if labels is None:  # cannot happen: mask paths were given
        raise RuntimeError("load_resized returned no masks.")
    return images_u8, foreground_from_labels(labels.long(), num_classes).to(torch.uint8)


def make_candidate_set(
    images: Tensor,
    truths: Tensor,
    ids: Sequence[str],
    *,
    segmenters: Mapping[str, nn.Module] | None = None,
    num_classes: int = 2,
    candidates_per_image: int = 5,
    seed: int = 0,
    batch_size: int = 32,
) -> CandidateSet:
    """Synthetic candidates (``candidates_per_image`` draws of the corruption recipe per image, seeded by
    ``seed``) and each segmenter's hard masks of the same images, what ``qg-lightning evaluate-predictor``
    scores.

    Args:
        images: ``uint8 (N, C, H, W)`` images.
        truths: ``uint8 (N, K-1, H, W)`` ground-truth foreground masks.
        ids: ``(N,)`` image ids.
        segmenters: name -> logits network (e.g. :func:`load_segmenter`); their masks are "real" candidates.
        num_classes: K (2 = binary).
        candidates_per_image: synthetic candidates per image (0: real ones only).
        seed: seed of the synthetic draws.
        batch_size: images per segmenter forward pass.

    Raises:
        ValueError: no candidates at all, or ``candidates_per_image`` below 0.

    Example:
        >>> truths = torch.zeros(3, 1, 32, 32, dtype=torch.uint8); truths[:, :, 8:24, 8:24] = 1
        >>> images = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
        >>> cs = make_candidate_set(images, truths, ["a", "b", "c"], candidates_per_image=2)
        >>> cs.candidates.shape, cs.ids[:4], cs.sources[0]
        (torch.Size([6, 1, 32, 32]), ['a', 'b', 'c', 'a'], 'synthetic')
    """
    from qg_lightning.data import derive_seed

    segmenters = dict(segmenters or {})
    if isinstance(candidates_per_image, bool) or not isinstance(candidates_per_image, int):
        raise ValueError(f"`candidates_per_image` must be an integer >= 0, got {candidates_per_image!r}.")
    if candidates_per_image < 0:
        raise ValueError(f"`candidates_per_image` must be >= 0, got {candidates_per_image}.")
    if candidates_per_image == 0 and not segmenters:
        raise ValueError("Nothing to evaluate: `candidates_per_image` is 0 and no segmenter was given.")
    n = len(ids)
    cands, img_idx, sources, cats, names = [], [], [], [], []
    conf, ent = [], []
    if candidates_per_image:
        sampler = CorruptionSampler()
        g = torch.Generator().manual_seed(derive_seed(seed, 22))
        for _ in range(candidates_per_image):
            result = sampler(truths, generator=g)
            cands.append(result.masks.to(torch.uint8))
            img_idx.append(torch.arange(n))
            sources += [SYNTHETIC] * n
            cats += result.category_names
            names += list(result.name)
            conf.append(np.full(n, np.nan))
            ent.append(np.full(n, np.nan))
    for name, net in segmenters.items():
        masks, c, e = segment_images(net, images, num_classes, batch_size=batch_size)
        cands.append(masks)
        img_idx.append(torch.arange(n))
        sources += [name] * n
        cats += [None] * n
        names += [None] * n
        conf.append(c)
        ent.append(e)
    image_index = torch.cat(img_idx)
    scores = {"max_probability": np.concatenate(conf), "entropy": np.concatenate(ent)} if segmenters else None
    return CandidateSet(
        images=images,
        truths=truths,
        candidates=torch.cat(cands),
        image_index=image_index,
        sources=sources,
        categories=cats,
        corruptions=names,
        ids=[ids[i] for i in image_index.tolist()],
        segmenter_scores=scores,
    )


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


def _checkpoint_context(path: str | os.PathLike) -> dict[str, Any]:
    """What a Lightning predictor checkpoint recorded about its training data (hyper-parameters, split)."""
    ckpt = load_checkpoint(path, what="quality predictor checkpoint")
    data_hp = ckpt.get("datamodule_hyper_parameters")
    data_hp = dict(data_hp) if isinstance(data_hp, Mapping) else {}
    split = None
    for value in ckpt.values():
        if isinstance(value, Mapping) and isinstance(value.get("split"), Mapping):
            if isinstance(value["split"].get("test"), list):
                split = {k: list(v) for k, v in value["split"].items() if isinstance(v, list)}
    return {"data": data_hp, "split": split}


def _segmenter_names(paths: Sequence[str]) -> list[str]:
    names = [Path(p).stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{Path(p).parent.name}/{Path(p).stem}" for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    return names


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qg-lightning evaluate-predictor",
        description=(
            "Evaluate a quality predictor on a folder's test split (or on every image when the folder has no "
            "split file): synthetic candidates from the corruption recipe and, with --segmenter, real "
            "models' predictions. Writes a JSON report, a calibration PNG, a worst-cases PNG and a "
            "per-candidate CSV."
        ),
    )
    p.add_argument(
        "--predictor",
        required=True,
        nargs="+",
        help="quality predictor checkpoint (.ckpt); several: their mean is evaluated (an ensemble, e.g. of "
        "seeds), with the first one's recorded data settings",
    )
    p.add_argument("--out", required=True, help="report JSON path; PNGs/CSV are written next to it")
    p.add_argument(
        "--data.root",
        dest="root",
        default=None,
        help="dataset folder (standard layout); default: the predictor's training data, else the "
        "embedded synthetic data",
    )
    p.add_argument(
        "--data.split_file", dest="split_file", default=None, help="split JSON (default ROOT/split.json)"
    )
    p.add_argument(
        "--data.image_size",
        dest="image_size",
        type=int,
        default=None,
        help="evaluation size (default: the predictor's training size, else 128)",
    )
    p.add_argument(
        "--data.in_channels", dest="in_channels", type=int, default=None, help="must match the predictor"
    )
    p.add_argument(
        "--data.num_classes", dest="num_classes", type=int, default=None, help="must match the predictor"
    )
    p.add_argument("--data.labeled_fraction", dest="labeled_fraction", type=float, default=None)
    p.add_argument("--data.n_labeled", dest="n_labeled", type=int, default=None)
    p.add_argument("--data.val_fraction", dest="val_fraction", type=float, default=None)
    p.add_argument("--data.test_fraction", dest="test_fraction", type=float, default=None)
    p.add_argument("--data.seed", dest="data_seed", type=int, default=None, help="seed of a generated split")
    p.add_argument("--data.synthetic_images", dest="synthetic_images", type=int, default=None)
    p.add_argument("--data.synthetic_size", dest="synthetic_size", type=int, default=None)
    p.add_argument("--data.skip_bad", dest="skip_bad", action="store_true", help="skip unreadable files")
    p.add_argument(
        "--subset",
        choices=("auto", "test", "val", "all"),
        default="auto",
        help="auto: the split file's test split; else the test split recorded in the predictor checkpoint "
        "when "
        "this is its training folder; else every image. test: always a test split (split file, recorded, "
        "or the seeded split from --data.*). val: the validation split, likewise (e.g. to fit a calibration "
        "with `qg-lightning calibrate-predictor`). all: every image.",
    )
    p.add_argument("--all-images", action="store_true", help="same as --subset all")
    p.add_argument(
        "--segmenter", nargs="+", default=[], help="segmentation checkpoint(s) for real candidates"
    )
    p.add_argument("--candidates-per-image", type=int, default=5, help="synthetic candidates per image")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic candidates and the shuffle check"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--tta",
        action="store_true",
        help="average the predictor over 4 flips of image and mask (4x the cost)",
    )
    p.add_argument("--worst", type=int, default=16, help="cases in the worst-predicted PNG")
    p.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda:0', ...")
    return p


def evaluate_predictor_cli(argv: Sequence[str]) -> int:
    """``qg-lightning evaluate-predictor``: see ``--help``. Returns the exit code (0)."""
    from qg_lightning.data import SemiSupervisedDataModule
    from qg_lightning.quality.predictor import load_quality_predictors

    ns = _build_parser().parse_args(list(argv))
    if ns.all_images:
        ns.subset = "all"
    if ns.candidates_per_image < 0:
        raise ValueError(f"`--candidates-per-image` must be >= 0, got {ns.candidates_per_image}.")
    if ns.candidates_per_image == 0 and not ns.segmenter:
        raise ValueError("Nothing to evaluate: --candidates-per-image is 0 and no --segmenter was given.")
    missing = [f"--predictor '{path}'" for path in ns.predictor if not Path(path).is_file()]
    missing += [f"--segmenter '{s}'" for s in ns.segmenter if not Path(s).is_file()]
    if ns.root is not None and not Path(ns.root).expanduser().is_dir():
        missing.append(f"--data.root '{ns.root}' (folder)")
    if ns.split_file is not None and not Path(ns.split_file).expanduser().is_file():
        missing.append(f"--data.split_file '{ns.split_file}'")
    if missing:
        raise FileNotFoundError("Not found: " + "; ".join(missing) + ". Check the paths.")
    out = Path(ns.out)
    if out.suffix.lower() != ".json":
        raise ValueError(f"`--out` must be a .json file path, got '{ns.out}'.")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if ns.device == "auto" else ns.device

    ctx = _checkpoint_context(ns.predictor[0])
    if len(ns.predictor) > 1 and ns.image_size is None:
        sizes = [ctx["data"].get("image_size")]
        sizes += [_checkpoint_context(path)["data"].get("image_size") for path in ns.predictor[1:]]
        if len(set(sizes)) > 1:
            log.warning(
                "The predictors were trained at different image sizes (%s); evaluating at the first one's. "
                "Pass --data.image_size to choose.",
                ", ".join(f"{path}: {size}" for path, size in zip(ns.predictor, sizes, strict=True)),
            )
    predictor = load_quality_predictors(
        ns.predictor, in_channels=ns.in_channels, num_classes=ns.num_classes, map_location=device, tta=ns.tta
    )
    in_channels, num_classes = predictor.in_channels, predictor.num_classes
    segmenter_names = _segmenter_names(ns.segmenter)
    segmenters = {
        name: load_segmenter(path, in_channels=in_channels, num_classes=num_classes, map_location=device)
        for name, path in zip(segmenter_names, ns.segmenter, strict=True)
    }
    recorded = ctx["data"]

    def pick(value: Any, key: str, default: Any) -> Any:
        return value if value is not None else recorded.get(key, default)

    image_size = pick(ns.image_size, "image_size", 128)
    for name, net in segmenters.items():
        divisor = getattr(net, "divisor", 1)
        if image_size % divisor:
            raise ValueError(
                f"--data.image_size {image_size} is not divisible by {divisor}, which segmenter '{name}' "
                "needs. "
                f"Use a multiple of {divisor}."
            )
    root = ns.root if ns.root is not None else recorded.get("root")
    if root is not None and not Path(root).expanduser().is_dir():
        raise FileNotFoundError(
            f"The predictor was trained on data.root='{root}', which does not exist from here (a relative "
            "path "
            "is relative to where training ran). Pass --data.root."
        )
    dm = SemiSupervisedDataModule(
        root=root,
        synthetic_images=pick(ns.synthetic_images, "synthetic_images", 300),
        synthetic_size=pick(ns.synthetic_size, "synthetic_size", 128),
        split_file=ns.split_file,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        val_fraction=pick(ns.val_fraction, "val_fraction", 0.15),
        test_fraction=pick(ns.test_fraction, "test_fraction", 0.15),
        n_labeled=ns.n_labeled
        if ns.n_labeled is not None or ns.labeled_fraction is not None
        else recorded.get("n_labeled"),
        labeled_fraction=ns.labeled_fraction
        if ns.n_labeled is not None or ns.labeled_fraction is not None
        else recorded.get("labeled_fraction"),
        use_unlabeled=False,
        seed=pick(ns.data_seed, "seed", 0),
        skip_bad=ns.skip_bad,
    )
    dm.setup()
    index = dm.index
    assert index is not None and dm.split is not None
    has_file = not dm.split_source.startswith("make_split")
    rec_split = ctx["split"]
    rec_ok = rec_split is not None and set().union(*rec_split.values()) <= set(index.ids)
    if ns.subset == "all":
        ids, subset = list(index.ids), "all images (--subset all)"
    elif ns.subset == "val":
        if not has_file and rec_ok and rec_split.get("val"):
            ids, subset = list(rec_split["val"]), "val split recorded in the predictor checkpoint"
        else:
            ids, subset = list(dm.split.val), f"val split of {dm.split_source}"
    elif has_file:
        ids, subset = list(dm.split.test), f"test split of {dm.split_source}"
    elif rec_ok:
        ids, subset = list(rec_split["test"]), "test split recorded in the predictor checkpoint"
    elif ns.subset == "test":
        ids, subset = list(dm.split.test), f"test split of {dm.split_source}"
    else:
        ids, subset = list(index.ids), "all images (the folder has no split file)"
    if not ids:
        raise ValueError(
            f"The evaluation set is empty ({subset}). Use --subset all or a split with test ids."
        )

    images_u8, truth = load_evaluation_images(
        index, ids, image_size=image_size, in_channels=in_channels, num_classes=num_classes
    )
    n = len(ids)
    candidate_set = make_candidate_set(
        images_u8,
        truth,
        ids,
        segmenters=segmenters,
        num_classes=num_classes,
        candidates_per_image=ns.candidates_per_image,
        seed=ns.seed,
        batch_size=min(ns.batch_size, 32),
    )
    report = evaluate_candidate_set(
        predictor,
        candidate_set,
        batch_size=ns.batch_size,
        out_prefix=out.with_suffix(""),
        n_worst=ns.worst,
        seed=ns.seed,
    )
    members = [
        {"predictor": str(path), **figures}
        for path, figures in zip(ns.predictor, report.get("members", []), strict=False)
    ]
    report = {
        **report,
        "predictor": str(ns.predictor[0]),
        "predictors": [str(path) for path in ns.predictor],
        **({"members": members} if members else {}),
        "data": {
            "root": str(index.root),
            "subset": subset,
            "n_images": n,
            "image_size": image_size,
            "candidates_per_image": ns.candidates_per_image,
            "seed": ns.seed,
        },
        "tta": bool(ns.tta),
        "segmenters": dict(zip(segmenter_names, ns.segmenter, strict=True)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_safe(report), indent=2))

    ensemble = f" with the mean of {len(ns.predictor)} predictors" if len(ns.predictor) > 1 else ""
    lines = [
        f"Evaluated {report['n']} candidates on {n} images ({subset}) at {image_size} px{ensemble}.",
        f"  all:       MAE {_fmt(report['mae'])}  Pearson {_fmt(report['pearson'])}  Spearman "
        f"{_fmt(report['spearman'])}  (constant baseline MAE {_fmt(report['constant_baseline_mae'])})",
    ]
    for label in (SYNTHETIC, "real"):
        s = report["by_source"][label]
        if s.get("n"):
            lines.append(
                f"  {label + ':':<10} MAE {_fmt(s['mae'])}  Pearson {_fmt(s['pearson'])}  Spearman "
                f"{_fmt(s['spearman'])}  (constant baseline MAE {_fmt(s['constant_baseline_mae'])}, "
                f"n={s['n']})"
            )
    for i, member in enumerate(report.get("members", [])):
        figures = member["real"] if member["real"]["n"] else member["all"]
        lines.append(
            f"  member {i + 1} alone ({'real' if member['real']['n'] else 'all'}): MAE {_fmt(figures['mae'])}  "
            f"Pearson {_fmt(figures['pearson'])}  Spearman {_fmt(figures['spearman'])}  ({member['predictor']})"
        )
    dep = report["image_dependence"]
    lines.append(
        f"  image dependence: Pearson with blacked-out images {_fmt(dep['pearson_blackout'])}, shuffled "
        f"{_fmt(dep['pearson_shuffled'])}" + ("  WARNING: ignores the image" if dep["ignores_image"] else "")
    )
    lines += [
        f"Report:      {out}",
        f"Calibration: {report['calibration_png']}",
        f"Worst cases: {report['worst_png']}",
        f"Candidates:  {report['candidates_csv']}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0

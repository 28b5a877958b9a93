"""Per-image segmentation metrics: Dice, IoU and HD95, computed per image and per foreground class.

All functions take *label maps* (``long`` ``(B, H, W)`` with values ``0..K-1``, see :mod:`qg_lightning.masks`)
and return a ``float32`` tensor ``(B, K-1)``: one value per image and foreground class. Nothing is averaged
here; averaging (and deciding what to do with undefined cases) is the caller's job.

Empty-mask rules (each is a named argument, never a hidden smoothing term):

* Dice / IoU: prediction and truth both empty -> ``both_empty`` (default 1.0, the quality target of [0]);
  exactly one empty -> 0.0.
* HD95: both empty -> ``both_empty`` (default 0.0); exactly one empty -> the worst value, the image
  diagonal ``sqrt((H * sy) ** 2 + (W * sx) ** 2)``, which is larger than any distance two non-empty masks
  can reach. Never 0.

For multi-class masks these rules apply per class, so a class absent from both prediction and truth scores
``both_empty``. That is the quality target's rule; a *reported* multi-class Dice should not average such
trivial 1.0s in: :class:`~qg_lightning.metrics.SegmentationMetrics` with ``absent_classes="skip"`` averages
each class over the images whose truth has it (``docs/predictor.md``, "Multi-class masks: absent classes").

References:
    [0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation", 2026.
    [1] MedPy, ``medpy.metric.binary.hd95`` (surface distances and percentile definition used here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from torch import Tensor

from qg_lightning._validation import is_number
from qg_lightning.masks import check_num_classes

__all__ = ["dice_score", "iou_score", "hd95"]

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_label_map(labels: object, num_classes: int, name: str) -> Tensor:
    """Validate one label map argument and return it."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor label map (B, H, W), got {type(labels).__name__}.")
    if labels.ndim != 3:
        raise ValueError(
            f"`{name}` must be a label map of shape (B, H, W), got shape {tuple(labels.shape)}. "
            "Convert logits with qg_lightning.masks.labels_from_logits and foreground masks with "
            "labels_from_foreground."
        )
    if labels.dtype not in _INTEGER_DTYPES:
        raise ValueError(
            f"`{name}` must hold integer class indices (torch.long), got dtype {labels.dtype}. "
            "Pass hard labels, e.g. `labels.long()` after thresholding."
        )
    if labels.shape[1] == 0 or labels.shape[2] == 0:
        raise ValueError(
            f"`{name}` has an empty spatial size {tuple(labels.shape[1:])}; H and W must be >= 1."
        )
    if labels.numel() > 0:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"`{name}` must hold values in 0..{num_classes - 1} (num_classes={num_classes}), "
                f"got values in {low}..{high}. Check `num_classes` (it counts the background)."
            )
    return labels


def _check_inputs(preds: Tensor, target: Tensor, num_classes: int) -> None:
    """Validate ``num_classes`` and both label maps (types, shapes, dtypes, value range)."""
    check_num_classes(num_classes)
    _check_label_map(preds, num_classes, "preds")
    _check_label_map(target, num_classes, "target")
    if preds.shape != target.shape:
        raise ValueError(
            f"`preds` and `target` must have the same shape (B, H, W), got {tuple(preds.shape)} and "
            f"{tuple(target.shape)}."
        )
    if preds.device != target.device:
        raise ValueError(
            f"`preds` is on {preds.device} but `target` is on {target.device}; move both to one device."
        )


def _check_both_empty(both_empty: float) -> float:
    if not is_number(both_empty):
        raise TypeError(f"`both_empty` must be a float (NaN allowed), got {both_empty!r}.")
    return float(both_empty)


def _one_hot_foreground(labels: Tensor, num_classes: int) -> Tensor:
    """Boolean foreground masks ``(B, K-1, H, W)`` from a label map ``(B, H, W)``."""
    classes = torch.arange(1, num_classes, device=labels.device).view(1, -1, 1, 1)
    return labels.long().unsqueeze(1) == classes


def _overlap_counts(preds: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per image and class: |P & T|, |P|, |T| as ``int64`` ``(B, K-1)``."""
    pred_fg = _one_hot_foreground(preds, num_classes)
    true_fg = _one_hot_foreground(target, num_classes)
    inter = (pred_fg & true_fg).sum(dim=(2, 3))
    return inter, pred_fg.sum(dim=(2, 3)), true_fg.sum(dim=(2, 3))


def dice_score(preds: Tensor, target: Tensor, num_classes: int, *, both_empty: float = 1.0) -> Tensor:
    """Per-image, per-foreground-class Dice ``2|P & T| / (|P| + |T|)``.

    Exact counts, no smoothing: an empty prediction of a non-empty truth scores 0.0, and the only special
    case, both empty, returns ``both_empty``. Fully batched.

    Args:
        preds: predicted label map, integer ``(B, H, W)`` with values ``0..K-1``.
        target: ground-truth label map, same shape and rules as ``preds``.
        num_classes: K, background included (2 = binary).
        both_empty: value when prediction and truth of a class are both empty (default 1.0 as in [0];
            ``float("nan")`` to leave it undefined).

    Returns:
        ``float32`` ``(B, K-1)`` in ``[0, 1]`` (or ``both_empty``), on the device of the inputs.

    Raises:
        TypeError: an input is not a tensor, or ``both_empty`` is not a number.
        ValueError: bad ``num_classes``, shapes, dtypes or label values; the message names the argument.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> preds = torch.randint(0, 2, (2, 4, 4), generator=g)
        >>> target = torch.randint(0, 2, (2, 4, 4), generator=g)
        >>> dice_score(preds, target, num_classes=2)
        tensor([[0.4762],
                [0.7059]])
        >>> dice_score(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long), 2)
        tensor([[1.]])
    """
    _check_inputs(preds, target, num_classes)
    both_empty = _check_both_empty(both_empty)
    inter, pred_size, true_size = _overlap_counts(preds, target, num_classes)
    denom = (pred_size + true_size).double()
    score = 2.0 * inter.double() / denom.clamp_min(1.0)
    score = torch.where(denom > 0, score, torch.full_like(score, both_empty))
    return score.float()


def iou_score(preds: Tensor, target: Tensor, num_classes: int, *, both_empty: float = 1.0) -> Tensor:
    """Per-image, per-foreground-class IoU (Jaccard) ``|P & T| / |P | T|``.

    Same rules as :func:`dice_score`: no smoothing, empty prediction of a non-empty truth -> 0.0, both
    empty -> ``both_empty``.

    Args:
        preds: predicted label map, integer ``(B, H, W)`` with values ``0..K-1``.
        target: ground-truth label map, same shape and rules as ``preds``.
        num_classes: K, background included (2 = binary).
        both_empty: value when prediction and truth of a class are both empty (default 1.0; NaN allowed).

    Returns:
        ``float32`` ``(B, K-1)`` in ``[0, 1]`` (or ``both_empty``), on the device of the inputs.

    Raises:
        TypeError: an input is not a tensor, or ``both_empty`` is not a number.
        ValueError: bad ``num_classes``, shapes, dtypes or label values; the message names the argument.

    Example:
        >>> preds = torch.tensor([[[0, 1, 1, 2]]])
        >>> target = torch.tensor([[[0, 1, 2, 2]]])
        >>> iou_score(preds, target, num_classes=3)
        tensor([[0.5000, 0.5000]])
    """
    _check_inputs(preds, target, num_classes)
    both_empty = _check_both_empty(both_empty)
    inter, pred_size, true_size = _overlap_counts(preds, target, num_classes)
    union = (pred_size + true_size - inter).double()
    score = inter.double() / union.clamp_min(1.0)
    score = torch.where(union > 0, score, torch.full_like(score, both_empty))
    return score.float()


def _check_spacing(spacing: Sequence[float] | None) -> tuple[float, float]:
    if spacing is None:
        return (1.0, 1.0)
    if isinstance(spacing, (str, bytes)) or not isinstance(spacing, Sequence) or len(spacing) != 2:
        raise ValueError(
            f"`spacing` must be None (pixels) or a pair (row_spacing, col_spacing) of positive numbers, "
            f"got {spacing!r}."
        )
    values = []
    for value in spacing:
        if not is_number(value) or not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"`spacing` must hold two positive finite numbers (row_spacing, col_spacing), "
                f"got {spacing!r}."
            )
        values.append(float(value))
    return (values[0], values[1])


def _boundaries(masks: Tensor) -> Tensor:
    """Inner boundary of boolean masks ``(N, H, W)``, batched.

    A boundary pixel is a foreground pixel with at least one 4-neighbour that is background or outside the
    image; this equals ``mask ^ binary_erosion(mask, cross)`` with scipy's default ``border_value=0``.
    """
    padded = F.pad(masks.float().unsqueeze(1), (1, 1, 1, 1), value=0.0)[:, 0] > 0.5
    interior = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:] & masks
    return masks & ~interior


def _hd95_pair(border_a: np.ndarray, border_b: np.ndarray, sampling: tuple[float, float]) -> float:
    """MedPy HD95 between two non-empty boundary maps ``(H, W)`` (bool)."""
    dist_to_b = distance_transform_edt(~border_b, sampling=sampling)
    dist_to_a = distance_transform_edt(~border_a, sampling=sampling)
    distances = np.concatenate([dist_to_b[border_a], dist_to_a[border_b]])
    return float(np.percentile(distances, 95))


def hd95(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    *,
    spacing: tuple[float, float] | None = None,
    both_empty: float = 0.0,
) -> Tensor:
    """Per-image, per-foreground-class 95th-percentile symmetric Hausdorff distance (HD95).

    Definition (MedPy's ``hd95`` [1], connectivity 1):

    1. The boundary of a mask is the set of its foreground pixels with at least one 4-neighbour that is
       background or outside the image (``mask ^ binary_erosion(mask, cross, border_value=0)``); computed
       batched with tensor ops.
    2. ``d_pt``: for each boundary pixel of the prediction, the Euclidean distance (scaled by ``spacing``) to
       the nearest boundary pixel of the truth (exact EDT, ``scipy.ndimage.distance_transform_edt``);
       ``d_tp`` the other way round.
    3. HD95 = ``numpy.percentile(concat(d_pt, d_tp), 95)`` (linear interpolation): the 95th percentile of
       the *union* of both directed distance sets, exactly as MedPy. This is not the
       ``max(percentile(d_pt, 95), percentile(d_tp, 95))`` variant used by some other libraries.

    Empty masks: both empty -> ``both_empty`` (default 0.0); exactly one empty -> the image diagonal
    ``sqrt((H * sy) ** 2 + (W * sx) ** 2)``, the worst value (larger than any distance between pixels of
    the image), never 0.

    The boundaries are computed on the input device; the distance transforms run per (image, class) pair
    on the CPU with SciPy (a few ms per 256 x 256 pair). The result goes back to the input device.

    Args:
        preds: predicted label map, integer ``(B, H, W)`` with values ``0..K-1``.
        target: ground-truth label map, same shape and rules as ``preds``.
        num_classes: K, background included (2 = binary).
        spacing: physical pixel size ``(row_spacing, col_spacing)`` along (H, W); ``None`` = pixels.
        both_empty: value when prediction and truth of a class are both empty (default 0.0; NaN allowed).

    Returns:
        ``float32`` ``(B, K-1)``, in pixels or in the units of ``spacing``.

    Raises:
        TypeError: an input is not a tensor, or ``both_empty`` is not a number.
        ValueError: bad ``num_classes``, ``spacing``, shapes, dtypes or label values.

    Example:
        >>> preds = torch.zeros(2, 8, 8, dtype=torch.long)
        >>> target = torch.zeros(2, 8, 8, dtype=torch.long)
        >>> preds[0, 1, 1] = 1
        >>> target[0, 4, 5] = 1  # one pixel each, 3 rows and 4 columns apart
        >>> target[1, 2:4, 2:4] = 1  # nothing predicted in image 1: worst value, the diagonal
        >>> hd95(preds, target, num_classes=2)
        tensor([[ 5.0000],
                [11.3137]])
        >>> hd95(preds, target, num_classes=2, spacing=(0.5, 1.0))[0]
        tensor([4.2720])
    """
    _check_inputs(preds, target, num_classes)
    sampling = _check_spacing(spacing)
    both_empty = _check_both_empty(both_empty)
    batch, height, width = preds.shape
    pred_fg = _one_hot_foreground(preds, num_classes)
    true_fg = _one_hot_foreground(target, num_classes)
    pred_any = pred_fg.flatten(2).any(dim=2)
    true_any = true_fg.flatten(2).any(dim=2)

    diagonal = math.hypot(height * sampling[0], width * sampling[1])
    result = torch.full((batch, num_classes - 1), diagonal, dtype=torch.float64)
    result[(~pred_any & ~true_any).cpu()] = both_empty

    both = (pred_any & true_any).cpu()
    if bool(both.any()):
        pairs = both.nonzero(as_tuple=False)
        idx_b, idx_c = pairs[:, 0].to(preds.device), pairs[:, 1].to(preds.device)
        pred_border = _boundaries(pred_fg[idx_b, idx_c]).cpu().numpy()
        true_border = _boundaries(true_fg[idx_b, idx_c]).cpu().numpy()
        values = [_hd95_pair(pred_border[i], true_border[i], sampling) for i in range(len(pairs))]
        result[pairs[:, 0], pairs[:, 1]] = torch.tensor(values, dtype=torch.float64)
    return result.float().to(preds.device)

"""Differentiable segmentation losses, per image, and the quality-weighted mean of METHOD.md.

The supervised loss of [0] is ``0.5 * BCE-with-logits + 0.5 * soft Dice`` per image (smoothing 1e-6),
averaged over the batch. The same per-image loss is what the quality weights of PL-QW multiply, so it is
exposed per image (:func:`segmentation_loss_per_image`) and reduced with :func:`weighted_mean`.

Targets come in two forms:

* a hard *label map*, ``long`` ``(B, H, W)`` with values ``0..K-1``;
* soft foreground targets, ``float`` ``(B, K-1, H, W)`` in ``[0, 1]`` (e.g. teacher probabilities for
  consistency losses). For K > 2 the background target is ``clamp(1 - sum(foreground), 0, 1)``.

References:
    [0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation", 2026.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qg_lightning._validation import check_number
from qg_lightning.masks import check_num_classes, foreground_from_labels, logit_channels

__all__ = ["segmentation_loss_per_image", "segmentation_loss", "weighted_mean"]

_WEIGHT_EPS = 1e-8
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _targets(labels: Tensor, num_classes: int, batch: int, height: int, width: int) -> tuple[Tensor, bool]:
    """Foreground targets ``(B, K-1, H, W)`` float and whether ``labels`` was a hard label map."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"`labels` must be a torch.Tensor, got {type(labels).__name__}.")
    if labels.dtype in _INTEGER_DTYPES:
        if tuple(labels.shape) != (batch, height, width):
            raise ValueError(
                f"`labels` as a label map must have shape (B, H, W) = {(batch, height, width)} to match "
                f"`logits`, got {tuple(labels.shape)}."
            )
        if labels.numel() > 0 and bool(((labels < 0) | (labels >= num_classes)).any()):
            raise ValueError(
                f"`labels` must hold values in 0..{num_classes - 1} (num_classes={num_classes}), "
                f"got values in {int(labels.min())}..{int(labels.max())}."
            )
        return foreground_from_labels(labels, num_classes), True
    if labels.is_floating_point():
        expected = (batch, num_classes - 1, height, width)
        if tuple(labels.shape) != expected:
            raise ValueError(
                f"`labels` as soft foreground targets must have shape (B, K-1, H, W) = {expected}, got "
                f"{tuple(labels.shape)}. Pass a long label map (B, H, W) for hard targets."
            )
        if labels.numel() > 0 and bool(((labels < 0) | (labels > 1)).any()):
            raise ValueError("`labels` as soft foreground targets must lie in [0, 1]; got values outside.")
        return labels, False
    raise ValueError(
        f"`labels` must be a long label map (B, H, W) or float soft targets (B, K-1, H, W), got dtype "
        f"{labels.dtype}."
    )


def segmentation_loss_per_image(
    logits: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    pixel_weights: Tensor | None = None,
    bce_weight: float = 0.5,
    dice_weight: float = 0.5,
    smooth: float = 1e-6,
) -> Tensor:
    """Per-image ``bce_weight * cross-entropy + dice_weight * soft-Dice loss`` (differentiable in ``logits``).

    * Binary (``num_classes == 2``, logits ``(B, 1, H, W)``): BCE-with-logits, mean over the pixels of each
      image, plus ``1 - (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth)`` with ``p = sigmoid(logits)``.
    * Multi-class (logits ``(B, K, H, W)``): softmax cross-entropy plus the soft Dice loss above on the
      softmax probabilities of each foreground class, averaged over the K-1 foreground classes.

    ``pixel_weights`` (e.g. the confidence mask of PL-T) multiplies the per-pixel cross-entropy, which then
    becomes ``sum(w * l) / (sum(w) + 1e-8)`` per image, and weights every pixel inside the Dice sums. An image
    whose weights are all 0 has loss exactly 0.

    Note the small ``smooth`` (as in [0]): for an empty target the Dice term is only near 0 once the
    predicted probabilities sum to well below ``smooth``; it still pushes them towards 0.

    Args:
        logits: raw segmenter output ``(B, 1, H, W)`` (binary) or ``(B, K, H, W)`` (multi-class), float.
        labels: hard label map ``long`` ``(B, H, W)`` in ``0..K-1``, or soft foreground targets ``float``
            ``(B, K-1, H, W)`` in ``[0, 1]`` (for consistency / distillation losses).
        num_classes: K, background included (2 = binary).
        pixel_weights: optional ``(B, H, W)`` weights in ``[0, 1]``; ``None`` = all ones.
        bce_weight: weight of the cross-entropy term (default 0.5 [0]).
        dice_weight: weight of the soft Dice term (default 0.5 [0]).
        smooth: Dice smoothing added to numerator and denominator (default 1e-6 [0]).

    Returns:
        ``(B,)`` per-image losses, float32 (float64 for float64 ``logits``; half precision is upcast).

    Raises:
        TypeError: ``logits`` or ``labels`` is not a tensor.
        ValueError: bad ``num_classes``, shapes, dtypes, label or weight values (the message names
            the argument).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> logits = torch.randn(2, 1, 4, 4, generator=g)
        >>> labels = torch.randint(0, 2, (2, 4, 4), generator=g)
        >>> segmentation_loss_per_image(logits, labels, num_classes=2)
        tensor([0.5777, 0.6387])
        >>> perfect = (labels.unsqueeze(1).float() * 2 - 1) * 30
        >>> segmentation_loss_per_image(perfect, labels, num_classes=2) < 1e-6
        tensor([True, True])
    """
    num_classes = check_num_classes(num_classes)
    if not isinstance(logits, Tensor):
        raise TypeError(f"`logits` must be a torch.Tensor, got {type(logits).__name__}.")
    channels = logit_channels(num_classes)
    if logits.ndim != 4 or logits.shape[1] != channels:
        raise ValueError(
            f"`logits` must have shape (B, {channels}, H, W) for num_classes={num_classes} "
            f"(1 channel for binary, K otherwise), got {tuple(logits.shape)}."
        )
    if not logits.is_floating_point():
        raise ValueError(f"`logits` must be a float tensor, got dtype {logits.dtype}.")
    bce_weight = check_number(bce_weight, "bce_weight", low=0, finite=True)
    dice_weight = check_number(dice_weight, "dice_weight", low=0, finite=True)
    smooth = check_number(smooth, "smooth", low=0, finite=True)
    batch, _, height, width = logits.shape
    # half-precision sums over a large image overflow: compute in at least float32
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets, hard = _targets(labels, num_classes, batch, height, width)
    targets = targets.to(logits.dtype)

    if pixel_weights is not None:
        if not isinstance(pixel_weights, Tensor) or tuple(pixel_weights.shape) != (batch, height, width):
            shape = tuple(pixel_weights.shape) if isinstance(pixel_weights, Tensor) else type(pixel_weights)
            raise ValueError(
                f"`pixel_weights` must be a tensor of shape (B, H, W) = {(batch, height, width)}, "
                f"got {shape}."
            )
        if pixel_weights.numel() > 0 and bool(((pixel_weights < 0) | (pixel_weights > 1)).any()):
            raise ValueError("`pixel_weights` must lie in [0, 1]; got values outside. Clamp or rescale them.")
        pixel_weights = pixel_weights.to(logits.dtype)

    if channels == 1:
        pixel_ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")[:, 0]
        probs = torch.sigmoid(logits)
    else:
        if hard:
            pixel_ce = F.cross_entropy(logits, labels.long(), reduction="none")
        else:
            background = (1.0 - targets.sum(dim=1, keepdim=True)).clamp(0.0, 1.0)
            pixel_ce = F.cross_entropy(logits, torch.cat([background, targets], dim=1), reduction="none")
        probs = torch.softmax(logits, dim=1)[:, 1:]

    if pixel_weights is None:
        ce = pixel_ce.mean(dim=(1, 2))
        inter = (probs * targets).sum(dim=(2, 3))
        sizes = probs.sum(dim=(2, 3)) + targets.sum(dim=(2, 3))
    else:
        ce = (pixel_weights * pixel_ce).sum(dim=(1, 2)) / (pixel_weights.sum(dim=(1, 2)) + _WEIGHT_EPS)
        w = pixel_weights.unsqueeze(1)
        inter = (w * probs * targets).sum(dim=(2, 3))
        sizes = (w * probs).sum(dim=(2, 3)) + (w * targets).sum(dim=(2, 3))
    dice_loss = 1.0 - (2.0 * inter + smooth) / (sizes + smooth)
    return bce_weight * ce + dice_weight * dice_loss.mean(dim=1)


def segmentation_loss(
    logits: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    pixel_weights: Tensor | None = None,
    bce_weight: float = 0.5,
    dice_weight: float = 0.5,
    smooth: float = 1e-6,
) -> Tensor:
    """Batch mean of :func:`segmentation_loss_per_image` (the supervised loss of [0]); a scalar.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> logits = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
        >>> labels = torch.randint(0, 3, (2, 4, 4), generator=g)
        >>> loss = segmentation_loss(logits, labels, num_classes=3)
        >>> loss.backward()
        >>> round(loss.item(), 4), logits.grad.shape
        (1.2491, torch.Size([2, 3, 4, 4]))
    """
    return segmentation_loss_per_image(
        logits,
        labels,
        num_classes,
        pixel_weights=pixel_weights,
        bce_weight=bce_weight,
        dice_weight=dice_weight,
        smooth=smooth,
    ).mean()


def weighted_mean(values: Tensor, weights: Tensor, eps: float = 1e-8) -> Tensor:
    """``sum(w * v) / (sum(w) + eps)`` over all elements: ``L_qw`` of METHOD.md.

    Exactly 0 when every weight is 0 (zero-weight entries are masked out, so even a non-finite value
    there contributes nothing, to the result or to the gradient). Gradients flow into ``values`` and
    ``weights`` (detach the weights yourself if they must stay constant).

    Args:
        values: per-sample losses, any shape, float.
        weights: non-negative weights, same shape as ``values``.
        eps: added to the weight sum (default 1e-8, METHOD.md).

    Returns:
        A scalar tensor.

    Raises:
        TypeError: an input is not a tensor.
        ValueError: shapes differ, a weight is negative, or ``eps`` is not a positive number.

    Example:
        >>> weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0]))
        tensor(2.)
        >>> weighted_mean(torch.tensor([1.0, 3.0]), torch.zeros(2))
        tensor(0.)
    """
    if not isinstance(values, Tensor) or not isinstance(weights, Tensor):
        raise TypeError(
            f"`values` and `weights` must be tensors, got {type(values).__name__} and "
            f"{type(weights).__name__}."
        )
    if values.shape != weights.shape:
        raise ValueError(
            f"`weights` must have the shape of `values`, got {tuple(weights.shape)} and "
            f"{tuple(values.shape)}."
        )
    check_number(eps, "eps", low=0, low_open=True, finite=True)
    if weights.numel() > 0 and bool((weights < 0).any()):
        raise ValueError("`weights` must be non-negative; got negative entries.")
    weights = weights.to(values.dtype)
    kept = weights > 0
    safe_values = torch.where(kept, values, torch.zeros_like(values))
    return (weights * safe_values).sum() / (weights.sum() + eps)

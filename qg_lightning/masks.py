"""Mask formats shared by every part of qg_lightning.

Conventions (used by data, metrics, losses, the quality predictor and guidance):

* ``num_classes`` (K) counts the background, so ``K == 2`` is binary segmentation.
* A *label map* is a ``long`` tensor ``(B, H, W)`` with values ``0..K-1`` (0 = background).
* A *foreground mask* is a ``float`` tensor ``(B, K-1, H, W)``: one channel per foreground class, hard
  ``{0, 1}`` or soft probabilities in ``[0, 1]``. Binary masks are the ``K - 1 == 1`` case.
* Segmenter logits have 1 channel for binary tasks (sigmoid) and K channels otherwise (softmax).
* Images are ``float32`` ``(B, C, H, W)`` in ``[0, 1]``; every network normalises its own input.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from qg_lightning._validation import check_int

__all__ = [
    "check_num_classes",
    "foreground_from_labels",
    "labels_from_foreground",
    "logit_channels",
    "probs_from_logits",
    "labels_from_logits",
]


def check_num_classes(num_classes: int, *, name: str = "num_classes") -> int:
    """Validate ``num_classes`` (background included) and return it.

    Example:
        >>> check_num_classes(2)
        2
    """
    return check_int(num_classes, name, minimum=2, hint="It counts the background class (2 = binary).")


def logit_channels(num_classes: int) -> int:
    """Number of output channels a segmenter needs: 1 for binary (sigmoid), K otherwise (softmax).

    Example:
        >>> logit_channels(2), logit_channels(4)
        (1, 4)
    """
    check_num_classes(num_classes)
    return 1 if num_classes == 2 else num_classes


def foreground_from_labels(labels: Tensor, num_classes: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot foreground masks ``(B, K-1, H, W)`` from a label map ``(B, H, W)``, in ``dtype`` (float32).

    ``uint8`` label maps are compared as they are (no ``long`` copy); ``dtype=torch.uint8`` returns the
    comparison's bytes without a conversion pass.

    Example:
        >>> labels = torch.tensor([[[0, 1], [2, 2]]])
        >>> foreground_from_labels(labels, 3)[0, 1]
        tensor([[0., 0.],
                [1., 1.]])
        >>> foreground_from_labels(labels.to(torch.uint8), 3, dtype=torch.uint8)[0, 0]
        tensor([[0, 1],
                [0, 0]], dtype=torch.uint8)
    """
    check_num_classes(num_classes)
    if labels.ndim != 3:
        raise ValueError(f"Expected a label map of shape (B, H, W), got shape {tuple(labels.shape)}.")
    work = labels if labels.dtype == torch.uint8 and num_classes <= 256 else labels.long()
    if work.dtype == torch.uint8 and work.device.type == "cpu" and not work.requires_grad:
        # NumPy's uint8 comparison is ~20x faster than torch's on CPU (1.6 ms -> 0.07 ms at 32 x 224 x 224)
        arr = work.numpy()
        hot_np = np.empty((arr.shape[0], num_classes - 1, *arr.shape[1:]), dtype=bool)
        for k in range(1, num_classes):
            np.equal(arr, k, out=hot_np[:, k - 1])
        hot = torch.from_numpy(hot_np)
    else:
        classes = torch.arange(1, num_classes, device=labels.device, dtype=work.dtype).view(1, -1, 1, 1)
        hot = work.unsqueeze(1) == classes
    return hot.view(torch.uint8) if dtype == torch.uint8 else hot.to(dtype)


def labels_from_foreground(masks: Tensor) -> Tensor:
    """Label map ``(B, H, W)`` from foreground masks ``(B, K-1, H, W)`` (hard or soft).

    A pixel is background unless some foreground channel exceeds 0.5; overlapping channels go to the
    largest value.

    Example:
        >>> masks = torch.tensor([[[[0.9, 0.1]], [[0.2, 0.7]]]])
        >>> labels_from_foreground(masks)
        tensor([[[1, 2]]])
    """
    if masks.ndim != 4:
        raise ValueError(
            f"Expected foreground masks of shape (B, K-1, H, W), got shape {tuple(masks.shape)}."
        )
    best, idx = masks.max(dim=1)
    return torch.where(best > 0.5, idx + 1, torch.zeros_like(idx))


def probs_from_logits(logits: Tensor, num_classes: int) -> Tensor:
    """Soft foreground probabilities ``(B, K-1, H, W)`` from segmenter logits.

    Example:
        >>> probs_from_logits(torch.zeros(1, 1, 1, 1), 2)
        tensor([[[[0.5000]]]])
    """
    if logit_channels(num_classes) == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:]


def labels_from_logits(logits: Tensor, num_classes: int) -> Tensor:
    """Hard label map ``(B, H, W)`` from segmenter logits (threshold 0.5 / argmax).

    Example:
        >>> labels_from_logits(torch.tensor([[[[-1.0, 2.0]]]]), 2)
        tensor([[[0, 1]]])
    """
    if logit_channels(num_classes) == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)

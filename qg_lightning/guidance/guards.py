"""Guards on what a host hands to the quality predictor: value range, hard masks, classes and image size.

A quality predictor reads images in ``[0, 1]`` (it normalises them itself with its training statistics), hard
masks for PL-QW and images of the size it was trained at. A module written without qg_lightning in mind often
breaks one of these silently: ImageNet-normalised images (about -2.1 to 2.6) make every predicted quality about
1.0, so every weight is 1 and guidance quietly does nothing. These pure functions decide, from a few numbers
read once per call, whether the input is fine, suspicious (a warning once) or wrong (an error with the fix);
:class:`~qg_lightning.guidance.QualityGuidedMixin` and
:class:`~qg_lightning.guidance.QualityReweightCallback` apply them.

Policies (arguments of :class:`~qg_lightning.guidance.QualityReweightCallback`):

* ``input_range``: ``"error"`` (default) raises when images are clearly not in ``[0, 1]`` (below
  :data:`IMAGE_RANGE_LIMITS` ``[0]`` or above its ``[1]``: normalised or 0..255 images) and warns once when they
  are only slightly outside (e.g. noise augmentation); ``"warn"`` only warns once; ``"off"`` checks nothing.
* ``size_mismatch``: ``"resize"`` (default) resizes images and masks to the predictor's training size (read from
  its checkpoint) before the predictor sees them, and says so once; ``"error"`` refuses other sizes; ``"keep"``
  passes them as they are.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as TF
from torch import Tensor

__all__ = [
    "INPUT_RANGE_POLICIES",
    "SIZE_POLICIES",
    "IMAGE_RANGE_LIMITS",
    "IMAGE_RANGE_TOLERANCE",
    "InputRangePolicy",
    "SizePolicy",
    "image_range_verdict",
    "image_range_message",
    "soft_mask_message",
    "label_range_message",
    "probs_range_message",
    "size_message",
    "resize_to",
    "batch_extremes",
    "read_scalars",
]

InputRangePolicy = Literal["error", "warn", "off"]
SizePolicy = Literal["resize", "error", "keep"]
INPUT_RANGE_POLICIES: tuple[str, ...] = ("error", "warn", "off")
SIZE_POLICIES: tuple[str, ...] = ("resize", "error", "keep")

#: Values outside this interval cannot come from ``[0, 1]`` images plus mild augmentation: the images are
#: normalised (mean/std) or in 0..255, and the predictor's output would be meaningless.
IMAGE_RANGE_LIMITS: tuple[float, float] = (-0.5, 1.5)
#: Float rounding allowed around ``[0, 1]`` before anything is said.
IMAGE_RANGE_TOLERANCE = 1e-3

_HOOK_HINT = (
    "Pass images in [0, 1]: un-normalise them (images * std + mean), or override "
    "`quality_images(self, images)` in {host} to do it for every image guidance sees (see QualityGuidedMixin)."
)


def image_range_verdict(low: float, high: float, *, tolerance: float = IMAGE_RANGE_TOLERANCE) -> str:
    """Classify an image batch by its minimum and maximum: ``"ok"``, ``"slight"`` or ``"wrong"``.

    Non-finite extremes give ``"ok"`` (the non-finite check reports them).

    Example:
        >>> [image_range_verdict(lo, hi) for lo, hi in ((0.0, 1.0), (-0.05, 1.08), (-2.1, 2.6), (0, 255))]
        ['ok', 'slight', 'wrong', 'wrong']
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return "ok"
    if low < IMAGE_RANGE_LIMITS[0] or high > IMAGE_RANGE_LIMITS[1]:
        return "wrong"
    if low < -tolerance or high > 1.0 + tolerance:
        return "slight"
    return "ok"


def image_range_message(low: float, high: float, *, call: str, host: str, verdict: str) -> str:
    """The error (``verdict="wrong"``) or warning (``"slight"``) for images outside ``[0, 1]``.

    Example:
        >>> text = image_range_message(-2.1, 2.6, call="quality_weights()", host="MyNet", verdict="wrong")
        >>> text[:80]
        'quality_weights() handed the quality predictor images with values from -2.1 to 2'
        >>> "look normalised" in text, "quality_images" in text
        (True, True)
    """
    seen = f"{call} handed the quality predictor images with values from {low:.3g} to {high:.3g}, "
    hook = _HOOK_HINT.format(host=host)
    if verdict == "wrong":
        if low >= -IMAGE_RANGE_TOLERANCE and high > IMAGE_RANGE_LIMITS[1]:
            looks = "They look like 0..255 pixel values: divide by 255."
        else:
            looks = "They look normalised (mean/std applied, e.g. ImageNet statistics in the Dataset)."
        return (
            f"{seen}but it expects float images in [0, 1] (it normalises them itself with its training "
            f"statistics); its qualities, and so the weights, would be meaningless. {looks} {hook} To accept "
            "this range anyway, set `QualityReweightCallback(input_range='warn')`."
        )
    return (
        f"{seen}slightly outside the [0, 1] the predictor was trained on (e.g. noise augmentation). Clamp them "
        f"to [0, 1] if that is not intended. {hook} Silence this with "
        "`QualityReweightCallback(input_range='off')`. (Said once.)"
    )


def probs_range_message(low: float, high: float, *, host: str) -> str:
    """The error for QAR ``probs`` outside ``[0, 1]`` (logits passed instead of probabilities).

    Example:
        >>> "probs_from_logits" in probs_range_message(-3.0, 4.0, host="MyNet")
        True
    """
    return (
        f"quality_regularization() got `probs` with values from {low:.3g} to {high:.3g}; it needs soft "
        "foreground probabilities in [0, 1], not logits. In "
        f"{host}, pass `probs_from_logits(logits, num_classes)` (sigmoid of a single channel, or softmax "
        "without the background channel)."
    )


def soft_mask_message(fraction: float, *, host: str) -> str:
    """The error for soft (non-binary) foreground masks passed to ``quality_weights``.

    Example:
        >>> "labels_from_logits" in soft_mask_message(0.4, host="MyNet")
        True
    """
    return (
        f"quality_weights() needs hard pseudolabels, but {fraction:.1%} of the mask values {host} passed are "
        "neither 0 nor 1 (soft probabilities?). PL-QW weighs the hard pseudolabels the loss is computed "
        "against; soft probabilities belong in quality_regularization() (QAR). Pass a label map "
        "`labels_from_logits(logits, num_classes)` (long (B, H, W)) or thresholded masks `(probs > 0.5).float()`."
    )


def label_range_message(top: int, num_classes: int, *, call: str, host: str) -> str:
    """The error for a label map with a class index the predictor does not know.

    Example:
        >>> "num_classes=2" in label_range_message(2, 2, call="quality_weights()", host="MyNet")
        True
    """
    return (
        f"{call} got a label map with class index {top} from {host}, but the quality predictor was trained for "
        f"num_classes={num_classes} (labels 0..{num_classes - 1}); the extra classes would be ignored silently. "
        "Use a quality predictor trained for your number of classes, or add `num_classes` to your module's "
        "hyper-parameters (`save_hyperparameters()`) so that the mismatch is caught at setup."
    )


def size_message(size: tuple[int, int], trained: int, *, policy: str, source: str) -> str:
    """What happens to images of ``size`` for a predictor trained at ``trained`` px (info or error).

    Example:
        >>> print(size_message((160, 160), 96, policy="resize", source="'g.ckpt'"))
        ... # doctest: +NORMALIZE_WHITESPACE
        Quality predictor 'g.ckpt' was trained on 96x96 px images; guidance gets 160x160 and resizes images and
        masks to 96x96 before the predictor sees them (bilinear; nearest for hard masks). Set
        `QualityReweightCallback(size_mismatch='keep')` to pass them as they are, or 'error' to refuse.
    """
    h, w = size
    if policy == "error":
        return (
            f"Quality predictor {source} was trained on {trained}x{trained} px images, but guidance gets {h}x{w}: "
            "its predicted qualities are not reliable at another scale. Train the predictor at this size "
            "(`data.init_args.image_size`), or set `QualityReweightCallback(size_mismatch='resize')` to resize "
            "to its training size (or 'keep' to use it as it is)."
        )
    if policy == "resize":
        return (
            f"Quality predictor {source} was trained on {trained}x{trained} px images; guidance gets {h}x{w} and "
            f"resizes images and masks to {trained}x{trained} before the predictor sees them (bilinear; nearest "
            "for hard masks). Set `QualityReweightCallback(size_mismatch='keep')` to pass them as they are, or "
            "'error' to refuse."
        )
    return (
        f"Quality predictor {source} was trained on {trained}x{trained} px images; guidance gets {h}x{w} and "
        "passes them as they are (size_mismatch='keep')."
    )


def resize_to(tensor: Tensor, size: int, *, hard: bool) -> Tensor:
    """Resize a ``(B, C, H, W)`` float tensor or a ``(B, H, W)`` label map to ``size x size``.

    Images and soft probabilities use bilinear interpolation (differentiable, antialiased when shrinking);
    hard masks and label maps use nearest neighbour, so they stay hard.

    Example:
        >>> labels = torch.tensor([[[0, 1], [1, 1]]])
        >>> resize_to(labels, 4, hard=True).shape, resize_to(torch.rand(1, 3, 8, 8), 4, hard=False).shape
        (torch.Size([1, 4, 4]), torch.Size([1, 3, 4, 4]))
    """
    if tuple(tensor.shape[-2:]) == (size, size):
        return tensor
    if tensor.ndim == 3:  # label map
        out = TF.interpolate(tensor.unsqueeze(1).float(), size=(size, size), mode="nearest-exact")
        return out.squeeze(1).to(tensor.dtype)
    if hard:
        return TF.interpolate(tensor.float(), size=(size, size), mode="nearest-exact").to(tensor.dtype)
    shrink = size < tensor.shape[-1] or size < tensor.shape[-2]
    return TF.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def batch_extremes(*tensors: Tensor) -> list[Tensor]:
    """``[amin, amax]`` of each tensor as 0-d ``float32`` tensors (no host sync; read them in one go)."""
    out: list[Tensor] = []
    for t in tensors:
        out += [t.detach().amin().float(), t.detach().amax().float()]
    return out


def read_scalars(values: list[Tensor]) -> list[float]:
    """Read 0-d tensors with one device sync."""
    if not values:
        return []
    device = values[0].device
    return torch.stack([v.to(device=device, dtype=torch.float32) for v in values]).tolist()

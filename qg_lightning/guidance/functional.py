"""Functional core of quality guidance: pure tensor functions, no ``self`` and no trainer.

Phase 2 of METHOD.md [0]: a frozen quality predictor ``g(x, m) -> q in [0, 1]`` (one quality per foreground
class) guides semi-supervised training in two ways:

* **PL-QW**: per-sample pseudolabel weights ``w = q ** T * 1[q >= tau]`` (:func:`quality_weights`), used with
  :func:`weighted_mean` (``sum w l / (sum w + 1e-8)``, 0 when every weight is 0).
* **QAR**: ``L_qar = 1 - mean g(x, probs)`` on soft probabilities (:func:`qar_loss`), differentiable into the
  segmenter through the frozen predictor.

Confidence baselines of [0] use the same forms: PL-C (:func:`confidence_weights`) and PL-T
(:func:`confidence_pixel_mask`).

The predictor may be any ``nn.Module`` that maps ``(images (B, C, H, W) in [0, 1], masks (B, K-1, H, W))`` to
``(B, K-1)`` qualities in ``[0, 1]`` and has an integer attribute ``num_foreground`` (= K-1), such as
:class:`qg_lightning.quality.predictor.QualityPredictor`. It must be frozen: eval mode always, and for
:func:`qar_loss` also ``requires_grad=False`` on every parameter; the functions check this and raise
otherwise.

These functions check shapes but not values (that would cost a device sync per call):
:class:`~qg_lightning.guidance.QualityGuidedMixin` checks the image range, hard masks and class indices (see
:mod:`qg_lightning.guidance.guards`), folded into the one sync its non-finite check needs anyway.

[0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation", 2026.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from qg_lightning._validation import check_number, is_int
from qg_lightning.losses import weighted_mean
from qg_lightning.masks import foreground_from_labels

__all__ = [
    "ClassReduction",
    "CLASS_REDUCTIONS",
    "check_tau",
    "check_temperature",
    "check_class_reduction",
    "reduce_class_quality",
    "weights_from_quality",
    "quality_weights",
    "quality_weights_per_class",
    "qar_loss",
    "weighted_mean",
    "confidence_weights",
    "confidence_pixel_mask",
    "frac_above",
    "alignment_moments",
    "pearson_from_moments",
]

ClassReduction = Literal["mean", "min", "product"]
CLASS_REDUCTIONS: tuple[str, ...] = ("mean", "min", "product")


# --------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------
def check_tau(tau: float, *, name: str = "tau") -> float:
    """Validate a quality/confidence threshold in ``[0, 1]`` and return it as ``float``.

    Example:
        >>> check_tau(0.5)
        0.5
    """
    return check_number(
        tau,
        name,
        low=0,
        high=1,
        hint="It is a threshold on predicted Dice (paper default 0.5; 0 keeps every sample).",
    )


def check_temperature(temperature: float, *, name: str = "temperature") -> float:
    """Validate the weight exponent ``T > 0`` (finite) and return it as ``float``.

    Example:
        >>> check_temperature(2)
        2.0
    """
    return check_number(
        temperature,
        name,
        low=0,
        low_open=True,
        finite=True,
        hint="It is the exponent T in w = q ** T (paper default 2; 1 = linear).",
    )


def check_class_reduction(class_reduction: str, *, name: str = "class_reduction") -> str:
    """Validate a class reduction name (one of :data:`CLASS_REDUCTIONS`) and return it.

    Example:
        >>> check_class_reduction("min")
        'min'
    """
    if class_reduction not in CLASS_REDUCTIONS:
        raise ValueError(f"`{name}` must be one of {list(CLASS_REDUCTIONS)}, got {class_reduction!r}.")
    return class_reduction


def _check_frozen(predictor: nn.Module, *, need_no_grad: bool) -> None:
    if not isinstance(predictor, nn.Module):
        raise TypeError(
            f"`predictor` must be an nn.Module (e.g. a QualityPredictor), got {type(predictor).__name__}."
        )
    if predictor.training:
        raise ValueError(
            "`predictor` is in training mode; guidance needs a frozen predictor (its BatchNorm statistics "
            "must not change). Call `predictor.eval().requires_grad_(False)` first."
        )
    if need_no_grad:
        for name, param in predictor.named_parameters():
            if param.requires_grad:
                raise ValueError(
                    f"`predictor` parameter '{name}' has requires_grad=True; QAR must send gradients into "
                    "the segmenter only. Call `predictor.eval().requires_grad_(False)` first."
                )


def _num_foreground(predictor: nn.Module) -> int:
    num_foreground = getattr(predictor, "num_foreground", None)
    if not is_int(num_foreground) or num_foreground < 1:
        raise TypeError(
            "`predictor` must have an integer attribute `num_foreground` >= 1 (K-1), got "
            f"{num_foreground!r}. Use a qg_lightning QualityPredictor."
        )
    return num_foreground


def _predictor_dtype(predictor: nn.Module, fallback: torch.dtype) -> torch.dtype:
    for param in predictor.parameters():
        return param.dtype
    return fallback


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"`images` must be a float tensor (B, C, H, W) in [0, 1], got {shape}.")


def _foreground_masks(masks: Tensor, images: Tensor, num_foreground: int) -> Tensor:
    """Hard foreground masks ``(B, K-1, H, W)`` from a label map ``(B, H, W)`` or foreground masks."""
    if not isinstance(masks, Tensor):
        raise TypeError(f"`masks` must be a tensor, got {type(masks).__name__}.")
    if masks.ndim == 3 and not masks.is_floating_point():
        masks = foreground_from_labels(masks, num_foreground + 1)
    elif masks.ndim != 4:
        raise ValueError(
            "`masks` must be a label map (B, H, W) of integers or foreground masks (B, K-1, H, W), got "
            f"shape {tuple(masks.shape)} ({masks.dtype})."
        )
    if masks.shape[1] != num_foreground:
        raise ValueError(
            f"`masks` has {masks.shape[1]} foreground channel(s), but the predictor expects "
            f"K-1 = {num_foreground}. Check `num_classes` of the segmenter and of the quality predictor."
        )
    if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"`masks` {tuple(masks.shape)} and `images` {tuple(images.shape)} must share batch size and H, W."
        )
    return masks


def _predict(predictor: nn.Module, images: Tensor, masks: Tensor) -> Tensor:
    dtype = _predictor_dtype(predictor, images.dtype)
    quality = predictor(images.to(dtype), masks.to(dtype))
    return quality.float()


# --------------------------------------------------------------------------------------------------
# quality weights (PL-QW)
# ----------------------------------------------------------------------------------------------------
def reduce_class_quality(quality: Tensor, class_reduction: ClassReduction = "mean") -> Tensor:
    """Per-class qualities ``(B, K-1)`` to one quality per sample ``(B,)``.

    * ``"mean"`` (default): mean predicted Dice over foreground classes, the usual multi-class summary and
      the "mean" output of the predictor in [0]. It keeps ``tau`` meaning "predicted mean Dice >= tau" for
      every K, and one poor class lowers the weight without discarding the sample.
    * ``"min"``: the worst class decides; conservative, a single failing class zeroes the sample.
    * ``"product"``: product of per-class qualities; harsher still and it shrinks as K grows, so ``tau``
      means different things for different K.

    For binary tasks (K-1 = 1) all three are identical.

    Absent classes. The predictor's target for a class that neither the pseudolabel nor the truth has is 1.0
    (Dice of two empty masks: nothing to get wrong), so a class it judges rightly absent comes in at about 1,
    and one painted where it judges the image has none at about 0. Then:

    * ``"min"`` and ``"product"`` are neutral to rightly absent classes: a quality of 1 is never the minimum
      and leaves a product unchanged, so the weight is that of the classes present (the product over them);
    * ``"mean"`` is lifted by them: each absent class adds a 1 to the average, so with one present class of
      quality q and A absent ones the sample counts as ``(q + A) / (1 + A)``. On data where most images
      lack most classes, a poor pseudolabel of the one class present can still clear ``tau`` (0.4 -> 0.7
      with one absent class); use ``"min"`` when that matters;
    * a class painted where the image has none (quality about 0) zeroes ``"min"`` and ``"product"`` and
      pulls ``"mean"`` down by ``1 / (K-1)``.

    Example:
        >>> q = torch.tensor([[0.9, 0.5], [0.8, 0.8]])
        >>> [reduce_class_quality(q, r) for r in ("mean", "min", "product")]
        [tensor([0.7000, 0.8000]), tensor([0.5000, 0.8000]), tensor([0.4500, 0.6400])]
        >>> absent = torch.tensor([[0.4, 1.0]])  # class 2 rightly absent, rated 1
        >>> [reduce_class_quality(absent, r) for r in ("mean", "min", "product")]
        [tensor([0.7000]), tensor([0.4000]), tensor([0.4000])]
    """
    check_class_reduction(class_reduction)
    if quality.ndim != 2:
        raise ValueError(f"`quality` must have shape (B, K-1), got {tuple(quality.shape)}.")
    if class_reduction == "mean":
        return quality.mean(dim=1)
    if class_reduction == "min":
        return quality.amin(dim=1)
    return quality.prod(dim=1)


def weights_from_quality(quality: Tensor, *, tau: float = 0.5, temperature: float = 2.0) -> Tensor:
    """Elementwise quality weights ``w = q ** T * 1[q >= tau]`` (any shape).

    Args:
        quality: qualities in ``[0, 1]``, any shape.
        tau: threshold; qualities below it get weight 0 (paper: 0.5).
        temperature: exponent T (paper: 2).

    Returns:
        Weights of the same shape, ``float32``, in ``[0, 1]``.

    Example:
        >>> weights_from_quality(torch.tensor([0.3, 0.5, 0.9]))
        tensor([0.0000, 0.2500, 0.8100])
    """
    tau = check_tau(tau)
    temperature = check_temperature(temperature)
    quality = quality.float().clamp(0.0, 1.0)
    return torch.where(quality >= tau, quality.pow(temperature), torch.zeros_like(quality))


@torch.no_grad()
def quality_weights_per_class(
    predictor: nn.Module,
    images: Tensor,
    masks: Tensor,
    *,
    tau: float = 0.5,
    temperature: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """Per-class quality weights ``w_c = q_c ** T * 1[q_c >= tau]``, without gradient.

    For hosts whose unsupervised loss is per class (e.g. a per-class Dice term). Arguments as in
    :func:`quality_weights`.

    Returns:
        ``(weights, quality)``, both ``float32`` ``(B, K-1)``.

    Example:
        >>> class Stub(nn.Module):  # "quality" = foreground fraction, stands in for a QualityPredictor
        ...     num_foreground = 2
        ...     def forward(self, images, masks):
        ...         return masks.mean(dim=(2, 3))
        >>> labels = torch.tensor([[[0, 1], [2, 1]]])
        >>> quality_weights_per_class(Stub().eval(), torch.zeros(1, 3, 2, 2), labels)
        (tensor([[0.2500, 0.0000]]), tensor([[0.5000, 0.2500]]))
    """
    _check_frozen(predictor, need_no_grad=False)
    _check_images(images)
    masks = _foreground_masks(masks, images, _num_foreground(predictor))
    quality = _predict(predictor, images, masks)
    return weights_from_quality(quality, tau=tau, temperature=temperature), quality


@torch.no_grad()
def quality_weights(
    predictor: nn.Module,
    images: Tensor,
    masks: Tensor,
    *,
    tau: float = 0.5,
    temperature: float = 2.0,
    class_reduction: ClassReduction = "mean",
) -> tuple[Tensor, Tensor]:
    """PL-QW sample weights ``w = q ** T * 1[q >= tau]`` from the frozen predictor, without gradient.

    Computed under ``torch.no_grad()`` on hard pseudolabels, as in [0]. For K-1 > 1 the per-class qualities
    are first reduced to one quality per sample (``class_reduction``, see :func:`reduce_class_quality`), and
    the threshold and power act on that reduced quality.

    Args:
        predictor: frozen quality predictor in eval mode (``num_foreground`` = K-1).
        images: ``float`` ``(B, C, H, W)`` in ``[0, 1]``.
        masks: pseudolabels, either a label map ``long`` ``(B, H, W)`` in ``0..K-1`` (K taken from
            ``predictor.num_foreground + 1``) or hard foreground masks ``float`` ``(B, K-1, H, W)``.
        tau: quality threshold in ``[0, 1]`` (paper: 0.5).
        temperature: exponent T > 0 (paper: 2).
        class_reduction: ``"mean"`` (default), ``"min"`` or ``"product"`` over foreground classes.

    Returns:
        ``(weights, quality)``: ``float32`` ``(B,)`` in ``[0, 1]`` and the predictor's per-class qualities
        ``float32`` ``(B, K-1)``.

    Raises:
        ValueError: bad ``tau``, ``temperature``, ``class_reduction`` or shapes, or a predictor in train mode.
        TypeError: ``predictor`` is not an ``nn.Module`` with ``num_foreground``.

    Example:
        >>> class Stub(nn.Module):  # "quality" = foreground fraction, stands in for a QualityPredictor
        ...     num_foreground = 1
        ...     def forward(self, images, masks):
        ...         return masks.mean(dim=(2, 3))
        >>> g = torch.Generator().manual_seed(0)
        >>> images = torch.rand(3, 3, 2, 2, generator=g)
        >>> labels = torch.tensor([[[1, 1], [1, 1]], [[1, 1], [1, 0]], [[1, 0], [0, 0]]])
        >>> weights, quality = quality_weights(Stub().eval(), images, labels)
        >>> weights, quality.squeeze(1)
        (tensor([1.0000, 0.5625, 0.0000]), tensor([1.0000, 0.7500, 0.2500]))
    """
    tau = check_tau(tau)
    temperature = check_temperature(temperature)
    check_class_reduction(class_reduction)
    _check_frozen(predictor, need_no_grad=False)
    _check_images(images)
    masks = _foreground_masks(masks, images, _num_foreground(predictor))
    quality = _predict(predictor, images, masks)
    sample_quality = reduce_class_quality(quality, class_reduction)
    return weights_from_quality(sample_quality, tau=tau, temperature=temperature), quality


# --------------------------------------------------------------------------------------------------
# quality-aware regularisation (QAR)
# ----------------------------------------------------------------------------------------------------
def qar_loss(predictor: nn.Module, images: Tensor, probs: Tensor) -> Tensor:
    """QAR loss ``1 - mean g(images, probs)`` of [0], differentiable into ``probs`` only.

    The predictor is fed the *soft* foreground probabilities, so gradients flow through the frozen predictor
    into the segmenter. The predictor's parameters must already have ``requires_grad=False`` (checked), so
    they receive no gradient; no ``torch.no_grad()`` is used, since that would cut the path into ``probs``.

    Args:
        predictor: frozen quality predictor (eval mode, ``requires_grad=False``).
        images: ``float`` ``(B, C, H, W)`` in ``[0, 1]``; usually detached (only ``probs`` needs a gradient).
        probs: soft foreground probabilities ``float`` ``(B, K-1, H, W)`` in ``[0, 1]``
            (:func:`qg_lightning.masks.probs_from_logits`).

    Returns:
        Scalar ``float32`` loss in ``[0, 1]`` (mean over samples and foreground classes).

    Raises:
        ValueError: shapes do not match, or the predictor is in train mode or has trainable parameters.

    Example:
        >>> class Stub(nn.Module):  # "quality" = foreground fraction, stands in for a QualityPredictor
        ...     num_foreground = 1
        ...     def forward(self, images, masks):
        ...         return masks.mean(dim=(2, 3))
        >>> probs = torch.full((2, 1, 2, 2), 0.75, requires_grad=True)
        >>> loss = qar_loss(Stub().eval(), torch.zeros(2, 3, 2, 2), probs)
        >>> loss.backward()
        >>> loss, probs.grad[0, 0, 0, 0]
        (tensor(0.2500, grad_fn=<RsubBackward1>), tensor(-0.1250))
    """
    _check_frozen(predictor, need_no_grad=True)
    _check_images(images)
    if not isinstance(probs, Tensor) or probs.ndim != 4 or not probs.is_floating_point():
        raise ValueError(
            "`probs` must be soft foreground probabilities, float (B, K-1, H, W); got "
            f"{tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__}. "
            "Use qg_lightning.masks.probs_from_logits(logits, num_classes)."
        )
    probs = _foreground_masks(probs, images, _num_foreground(predictor))
    return 1.0 - _predict(predictor, images, probs).mean()


# --------------------------------------------------------------------------------------------------
# confidence baselines (PL-C, PL-T)
# ----------------------------------------------------------------------------------------------------
def _pixel_confidence(probs: Tensor) -> Tensor:
    """Max class probability per pixel ``(B, H, W)`` from foreground probabilities ``(B, K-1, H, W)``."""
    if not isinstance(probs, Tensor) or probs.ndim != 4 or not probs.is_floating_point():
        raise ValueError(
            "`probs` must be soft foreground probabilities, float (B, K-1, H, W); got "
            f"{tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__}."
        )
    probs = probs.float()
    background = (1.0 - probs.sum(dim=1, keepdim=True)).clamp_min(0.0)
    return torch.cat([background, probs], dim=1).amax(dim=1)


def confidence_weights(probs: Tensor, *, tau: float = 0.5, temperature: float = 2.0) -> tuple[Tensor, Tensor]:
    """PL-C baseline: sample weights from mean max-probability confidence, ``w = c ** T * 1[c >= tau]``.

    ``c`` is the per-pixel probability of the most likely class (binary: ``max(p, 1 - p)``; multi-class: the
    background probability is ``1 - sum`` of the foreground ones), averaged over pixels. Same form, threshold
    and temperature as :func:`quality_weights`, so the two are directly comparable [0]. Note that for binary
    tasks ``c >= 0.5`` always, so the default ``tau`` removes nothing. Computed without gradient.

    Args:
        probs: soft foreground probabilities ``float`` ``(B, K-1, H, W)``.
        tau: confidence threshold in ``[0, 1]``.
        temperature: exponent T > 0.

    Returns:
        ``(weights, confidence)``, both ``float32`` ``(B,)``.

    Example:
        >>> probs = torch.tensor([[[[0.9, 0.1], [0.8, 0.2]]], [[[0.5, 0.5], [0.6, 0.4]]]])
        >>> confidence_weights(probs, tau=0.6)
        (tensor([0.7225, 0.0000]), tensor([0.8500, 0.5500]))
    """
    tau = check_tau(tau)
    temperature = check_temperature(temperature)
    with torch.no_grad():
        confidence = _pixel_confidence(probs.detach()).mean(dim=(1, 2))
    return weights_from_quality(confidence, tau=tau, temperature=temperature), confidence


def confidence_pixel_mask(probs: Tensor, threshold: float = 0.9) -> Tensor:
    """PL-T baseline: per-pixel mask ``1[max class probability >= threshold]``, without gradient.

    Use it as ``pixel_weights`` of :func:`qg_lightning.losses.segmentation_loss_per_image`.

    Args:
        probs: soft foreground probabilities ``float`` ``(B, K-1, H, W)``.
        threshold: confidence threshold in ``[0, 1]`` (paper: 0.9).

    Returns:
        ``float32`` ``(B, H, W)`` with values in ``{0, 1}``.

    Example:
        >>> confidence_pixel_mask(torch.tensor([[[[0.95, 0.5], [0.05, 0.8]]]]))
        tensor([[[1., 0.],
                 [1., 0.]]])
    """
    threshold = check_tau(threshold, name="threshold")
    with torch.no_grad():
        return (_pixel_confidence(probs.detach()) >= threshold).float()


def frac_above(quality: Tensor, tau: float) -> Tensor:
    """Fraction of entries with ``quality >= tau`` (scalar ``float32``; NaN for an empty tensor).

    Example:
        >>> frac_above(torch.tensor([0.2, 0.5, 0.9, 0.4]), 0.5)
        tensor(0.5000)
    """
    tau = check_tau(tau)
    if quality.numel() == 0:
        return torch.tensor(float("nan"), device=quality.device)
    return (quality.detach() >= tau).float().mean()


# --------------------------------------------------------------------------------------------------
# alignment of predicted and true quality
# ----------------------------------------------------------------------------------------------------
def alignment_moments(predicted: Tensor, true: Tensor) -> Tensor:
    """Sufficient statistics ``[n, sum x, sum y, sum x^2, sum y^2, sum xy]`` of paired qualities.

    Summable across batches and ranks (``all_reduce(sum)``), so the Pearson correlation of a whole epoch
    needs no gathering of per-image values; see :func:`pearson_from_moments`. ``float64`` (``float32`` on
    MPS).

    Args:
        predicted: predicted qualities ``(N,)``.
        true: true qualities (e.g. Dice) ``(N,)``.

    Returns:
        ``(6,)`` tensor on the device of ``predicted``.

    Example:
        >>> alignment_moments(torch.tensor([0.5, 1.0]), torch.tensor([0.0, 1.0]))
        tensor([2.0000, 1.5000, 1.0000, 1.2500, 1.0000, 1.0000], dtype=torch.float64)
    """
    if predicted.shape != true.shape or predicted.ndim != 1:
        raise ValueError(
            f"`predicted` and `true` must both have shape (N,), got {tuple(predicted.shape)} and "
            f"{tuple(true.shape)}."
        )
    dtype = torch.float32 if predicted.device.type == "mps" else torch.float64
    x = predicted.detach().to(dtype)
    y = true.detach().to(device=x.device, dtype=dtype)
    n = torch.tensor(float(x.numel()), dtype=dtype, device=x.device)
    return torch.stack([n, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()])


def pearson_from_moments(moments: Tensor) -> Tensor:
    """Pearson r from :func:`alignment_moments`; NaN with fewer than 2 samples or a constant variable.

    Example:
        >>> x = torch.tensor([0.1, 0.4, 0.8, 0.9]); y = torch.tensor([0.2, 0.3, 0.9, 0.7])
        >>> pearson_from_moments(alignment_moments(x, y)).float()
        tensor(0.9142)
    """
    n, sx, sy, sxx, syy, sxy = moments.unbind()
    nan = torch.full_like(n, float("nan"))
    if float(n) < 2:
        return nan
    cov = sxy / n - (sx / n) * (sy / n)
    var_x = (sxx / n - (sx / n) ** 2).clamp_min(0.0)
    var_y = (syy / n - (sy / n) ** 2).clamp_min(0.0)
    denom = (var_x * var_y).sqrt()
    if float(denom) <= 1e-12:
        return nan
    return (cov / denom).clamp(-1.0, 1.0)

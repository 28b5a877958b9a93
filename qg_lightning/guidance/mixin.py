"""``QualityGuidedMixin``: the host-side half of quality guidance (the other half is the callback).

A host ``LightningModule`` subclasses the mixin and, inside ``training_step``, asks for quality weights of
its pseudolabels and/or the QAR loss of its soft predictions;
:class:`~qg_lightning.guidance.QualityReweightCallback` loads the frozen predictor, attaches it, drives the
loss-weight schedules and logs the statistics.

Example host (PL-QW plus QAR)::

    class MyHost(QualityGuidedMixin, L.LightningModule):
        def training_step(self, batch, batch_idx):
            loss = supervised_loss(...)
            images = batch["unlabeled"]["image"]
            if self.qw_lambda > 0:
                pseudo = labels_from_logits(self.teacher(images), K)
                weights, _ = self.quality_weights(images, pseudo)
                per_image = segmentation_loss_per_image(self(images), pseudo, K)
                loss = loss + self.qw_lambda * weighted_mean(per_image, weights)
            if self.qar_lambda > 0:
                probs = probs_from_logits(self(images), K)
                loss = loss + self.qar_lambda * self.quality_regularization(images, probs)
            return loss
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from qg_lightning._validation import check_int
from qg_lightning.guidance import functional as F
from qg_lightning.guidance import guards
from qg_lightning.masks import foreground_from_labels, labels_from_logits

__all__ = ["QualityGuidedMixin", "GuidanceSettings"]


def _nonfinite_quality(call: str, quality: Tensor, inputs: dict[str, Tensor]) -> Exception:
    """The error for a non-finite predicted quality (failure path only: it syncs with the device)."""
    # Imported here: qg_lightning.methods imports this module.
    from qg_lightning.methods.nonfinite import nonfinite_error

    bad_inputs = [name for name, t in inputs.items() if not bool(torch.isfinite(t).all())]
    if bad_inputs:
        hint = (
            f"The predictor's input ({' and '.join(bad_inputs)}) is itself non-finite: fix the data, or, for the "
            "segmenter's probabilities, the diverging student (lower `lr`, `trainer.gradient_clip_val`)."
        )
    else:
        hint = (
            "The frozen quality predictor returned NaN/Inf for finite inputs: check the predictor checkpoint "
            "(a predictor trained into NaN weights) or run in float32 (`trainer.precision: 32`; 16-bit can "
            "overflow)."
        )
    return nonfinite_error(f"predicted quality ({call})", quality, hint=hint)


_MISSING_PREDICTOR = (
    "{what} needs a quality predictor, but none is attached to {cls}. Add "
    "`QualityReweightCallback(predictor='path/to/predictor.ckpt')` to `Trainer(callbacks=[...])` (in YAML: "
    "`trainer.callbacks: - class_path: qg_lightning.guidance.QualityReweightCallback, init_args: "
    "{{predictor: ...}}`). To run without guidance on purpose, check `self.quality_guidance_active` first "
    "or pass `required=False`."
)


@dataclass(frozen=True)
class GuidanceSettings:
    """What the callback hands to the module together with the predictor.

    Attributes:
        tau: quality threshold in ``[0, 1]``.
        temperature: weight exponent T > 0.
        class_reduction: ``"mean"``, ``"min"`` or ``"product"`` (multi-class only).
        mechanisms: enabled mechanisms, a subset of ``{"qw", "qar"}``.
        n_keep_images: how many samples of the last ``quality_weights`` call to keep for the image grid
            (0 = keep none).
        input_range: ``"error"``, ``"warn"`` or ``"off"``: what to do with images outside ``[0, 1]`` (see
            :mod:`qg_lightning.guidance.guards`).
        size_mismatch: ``"resize"``, ``"error"`` or ``"keep"``: what to do with images whose size differs from
            ``image_size``.
        image_size: side of the square images the predictor was trained on (``None``: unknown, no resizing).
        source: how messages name the predictor (e.g. its checkpoint path).
    """

    tau: float = 0.5
    temperature: float = 2.0
    class_reduction: str = "mean"
    mechanisms: frozenset[str] = field(default_factory=lambda: frozenset({"qw"}))
    n_keep_images: int = 0
    input_range: str = "error"
    size_mismatch: str = "resize"
    image_size: int | None = None
    source: str = "(attached by hand)"

    def __post_init__(self) -> None:
        F.check_tau(self.tau)
        F.check_temperature(self.temperature)
        F.check_class_reduction(self.class_reduction)
        unknown = set(self.mechanisms) - {"qw", "qar"}
        if unknown:
            raise ValueError(f"`mechanisms` may only contain 'qw' and 'qar', got {sorted(unknown)}.")
        if self.input_range not in guards.INPUT_RANGE_POLICIES:
            raise ValueError(
                f"`input_range` must be one of {list(guards.INPUT_RANGE_POLICIES)}, got {self.input_range!r}."
            )
        if self.size_mismatch not in guards.SIZE_POLICIES:
            raise ValueError(
                f"`size_mismatch` must be one of {list(guards.SIZE_POLICIES)}, got {self.size_mismatch!r}."
            )
        size = self.image_size
        check_int(size, "image_size", minimum=1, optional=True)


class _PredictorRef:
    """Holds the predictor outside ``nn.Module`` bookkeeping.

    Not a Module, so the host's ``parameters()``, ``state_dict()``, ``.to()``, optimizers and DDP never see
    the predictor. ``deepcopy`` (e.g. an EMA copy of the whole host) shares the reference instead of copying
    the network, and pickling drops it (the callback re-attaches it in ``setup`` on every process).
    """

    __slots__ = ("predictor",)

    def __init__(self, predictor: nn.Module | None) -> None:
        self.predictor = predictor

    def __deepcopy__(self, memo: dict) -> _PredictorRef:
        return self

    def __reduce__(self) -> tuple[type, tuple[None]]:
        return (_PredictorRef, (None,))


class _StepStats:
    """Statistics recorded during one training step (reset by the callback before each batch)."""

    __slots__ = ("n", "q_sum", "w_sum", "above", "qar_sum", "qar_calls", "qw_read", "qar_read")

    def __init__(self) -> None:
        # Sums stay tensors (no host-device sync per call); they are read once, when logged.
        self.n = 0
        self.q_sum: Tensor | float = 0.0
        self.w_sum: Tensor | float = 0.0
        self.above: Tensor | float = 0.0
        self.qar_sum: Tensor | float = 0.0
        self.qar_calls = 0
        self.qw_read = False  # whether the host read qw_lambda / qar_lambda during this step
        self.qar_read = False


class QualityGuidedMixin:
    """Mixin for ``LightningModule`` hosts that use quality guidance (PL-QW weights and/or QAR) [0].

    Subclass it, e.g. ``class Host(QualityGuidedMixin, L.LightningModule)`` (any order works). It needs no
    ``__init__`` call and no constructor arguments: all state is created lazily. The frozen predictor is held
    outside the module tree, so it is not in ``parameters()``, ``state_dict()``, optimizers, DDP or EMA
    copies.

    Host contract:
        * Add :class:`~qg_lightning.guidance.QualityReweightCallback` to the Trainer; it loads, freezes and
          attaches the predictor (:meth:`attach_quality_predictor`), sets :attr:`qw_lambda` /
          :attr:`qar_lambda` before every training batch, and logs the statistics after it.
        * If the module has ``hparams.in_channels`` / ``hparams.num_classes`` (``save_hyperparameters``), the
          callback checks the predictor against them at setup. Without them it says so once and checks every
          batch instead: image channels, and class indices of label maps (a label above the predictor's
          ``num_classes - 1`` raises).
        * In ``training_step``: weight each unlabeled sample's loss with :meth:`quality_weights` (hard
          pseudolabels: a label map, or foreground masks of exactly 0 and 1; soft values raise) and/or add
          ``self.qar_lambda * self.quality_regularization(images, probs)`` (soft probabilities in
          ``[0, 1]``; logits raise). Skipping either when its lambda is 0 saves compute.
        * Images: every image batch guidance hands to the predictor passes through :meth:`quality_images`
          first, which must return ``float`` ``(B, C, H, W)`` in ``[0, 1]``. The default returns the images
          unchanged; if your ``Dataset`` normalises (e.g. ImageNet mean/std), override it to un-normalise.
          Images outside ``[0, 1]`` raise (normalised or 0..255) or warn once (slightly outside), see the
          callback's ``input_range``. Images of another size than the predictor's training size are resized
          to it (bilinear; nearest for hard masks), or refused, see the callback's ``size_mismatch``.
        * Validation alignment check (``val/quality_alignment``): the callback asks
          :meth:`quality_alignment_batch` for ``(images, true label maps, predicted label maps)`` of each
          validation batch. The default reads dict batches with ``"image"`` and ``"mask"`` (a label map) and
          the predictions ``{"preds": label_map}`` returned by ``validation_step`` (else it runs
          ``self(images)`` once more); override it for other batch formats (tuples, one sigmoid channel).

    Logged lambdas: ``train/lambda_qw`` / ``train/lambda_qar`` are logged only on steps where the host read
    :attr:`qw_lambda` / :attr:`qar_lambda` (they are then the multipliers it was handed);
    ``train/qw_applied`` / ``train/qar_applied`` are 1.0 on steps where :meth:`quality_weights` /
    :meth:`quality_regularization` ran, else 0.0. A host that keeps its own unsupervised weight (never reads
    ``qw_lambda``) thus logs ``train/qw_applied`` = 1 and no misleading ``train/lambda_qw`` = 0.

    Checks run with one device sync per call (shared with the non-finite check below): predicted quality
    finite, image range, hard masks / label range (``quality_weights``) or probability range
    (``quality_regularization``).

    Attributes:
        qw_lambda: current PL-QW loss weight (0.0 when "qw" is disabled or no predictor is attached).
        qar_lambda: current QAR loss weight (0.0 when "qar" is disabled or no predictor is attached).
        quality_guidance_active: whether a predictor is attached.
        quality_predictor: the attached predictor or ``None``.

    Example:
        >>> import lightning as L
        >>> from qg_lightning.quality.predictor import QualityPredictor
        >>> class Host(QualityGuidedMixin, L.LightningModule):
        ...     pass
        >>> host = Host()
        >>> host.quality_guidance_active, host.qw_lambda
        (False, 0.0)
        >>> g = QualityPredictor(in_channels=3, num_classes=2).eval().requires_grad_(False)
        >>> host.attach_quality_predictor(g)  # normally done by QualityReweightCallback.setup
        >>> labels = torch.zeros(2, 32, 32, dtype=torch.long)
        >>> weights, quality = host.quality_weights(torch.rand(2, 3, 32, 32), labels)
        >>> weights.shape, quality.shape, len(list(host.parameters()))
        (torch.Size([2]), torch.Size([2, 1]), 0)
        >>> normalised = (torch.rand(2, 3, 32, 32) - 0.45) / 0.225  # images normalised in the Dataset
        >>> host.quality_weights(normalised, labels)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: quality_weights() handed the quality predictor images with values from ...

    [0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation", 2026.
    """

    # -----------------------------------------------------------------------------------------------
    # state, created lazily (the mixin never relies on its __init__ running)
    # ------------------------------------------------------------------------------------------------
    def _qg_get(self, name: str, default: Any) -> Any:
        return self.__dict__.get(name, default)

    def _qg_set(self, name: str, value: Any) -> None:
        # object.__setattr__ bypasses nn.Module.__setattr__: nothing is ever registered as a submodule.
        object.__setattr__(self, name, value)

    @property
    def quality_predictor(self) -> nn.Module | None:
        """The attached frozen predictor, or ``None``."""
        ref = self._qg_get("_qg_predictor_ref", None)
        return None if ref is None else ref.predictor

    @property
    def quality_guidance_active(self) -> bool:
        """``True`` when a quality predictor is attached (by the callback)."""
        return self.quality_predictor is not None

    @property
    def quality_guidance_settings(self) -> GuidanceSettings:
        """Threshold, temperature, reduction and mechanisms in use (defaults before attachment)."""
        return self._qg_get("_qg_settings", None) or GuidanceSettings()

    @property
    def qw_lambda(self) -> float:
        """Current PL-QW loss weight; 0.0 when "qw" is disabled or no predictor is attached.

        Reading it marks the step, so that ``train/lambda_qw`` is logged (see "Logged lambdas" above).
        """
        self._qg_stats().qw_read = True
        return self._qg_lambda("qw")

    @property
    def qar_lambda(self) -> float:
        """Current QAR loss weight; 0.0 when "qar" is disabled or no predictor is attached.

        Reading it marks the step, so that ``train/lambda_qar`` is logged.
        """
        self._qg_stats().qar_read = True
        return self._qg_lambda("qar")

    def _qg_lambda(self, mechanism: str) -> float:
        if not self.quality_guidance_active or mechanism not in self.quality_guidance_settings.mechanisms:
            return 0.0
        return float(self._qg_get(f"_qg_{mechanism}_lambda", 0.0))

    def attach_quality_predictor(
        self, predictor: nn.Module, settings: GuidanceSettings | None = None
    ) -> None:
        """Attach a frozen predictor (the callback does this in ``setup``; call it yourself only without one).

        Args:
            predictor: quality predictor, already in eval mode with ``requires_grad=False``.
            settings: threshold, temperature, reduction and mechanisms (defaults: paper settings, "qw").

        Raises:
            TypeError: ``predictor`` is not an ``nn.Module``.
            ValueError: ``predictor`` is not frozen.
        """
        if not isinstance(predictor, nn.Module):
            raise TypeError(f"`predictor` must be an nn.Module, got {type(predictor).__name__}.")
        F._check_frozen(predictor, need_no_grad=True)
        if isinstance(self, nn.Module) and any(m is predictor for m in self.modules()):
            raise ValueError(
                f"The quality predictor is registered as a submodule of {type(self).__name__}; it would be "
                "trained, saved and averaged with the host. Do not assign it as a module attribute."
            )
        self._qg_set("_qg_predictor_ref", _PredictorRef(predictor))
        self._qg_set("_qg_settings", settings or GuidanceSettings())
        self._qg_set("_qg_said", set())  # messages said once per attachment

    def detach_quality_predictor(self) -> None:
        """Remove the predictor; guidance becomes inactive and both lambdas read 0.0."""
        self._qg_set("_qg_predictor_ref", None)

    def set_quality_lambdas(self, qw: float, qar: float) -> None:
        """Set the current loss weights (the callback calls this before every training batch)."""
        self._qg_set("_qg_qw_lambda", float(qw))
        self._qg_set("_qg_qar_lambda", float(qar))

    def reset_quality_stats(self) -> None:
        """Forget the previous step's statistics (the callback calls this before every training batch)."""
        self._qg_set("_qg_step_stats", _StepStats())

    def _qg_stats(self) -> _StepStats:
        stats = self._qg_get("_qg_step_stats", None)
        if stats is None:
            stats = _StepStats()
            self._qg_set("_qg_step_stats", stats)
        return stats

    def _qg_require(self, what: str, required: bool) -> nn.Module | None:
        predictor = self.quality_predictor
        if predictor is None and required:
            raise RuntimeError(_MISSING_PREDICTOR.format(what=what, cls=type(self).__name__))
        return predictor

    # -----------------------------------------------------------------------------------------------
    # hooks a host may override
    # ------------------------------------------------------------------------------------------------
    def quality_images(self, images: Tensor) -> Tensor:
        """Map the images this module passes to guidance to what the predictor reads: ``(B, C, H, W)`` in [0, 1].

        Every image batch given to :meth:`quality_weights`, :meth:`quality_regularization` and (through
        :meth:`quality_alignment_batch`) the validation alignment check passes through here first. The default
        returns ``images`` unchanged. Override it when your ``Dataset`` normalises images, e.g.::

            def quality_images(self, images):
                return images * self.std + self.mean  # undo the Dataset's ImageNet normalisation

        Example:
            >>> class Host(QualityGuidedMixin):
            ...     pass
            >>> x = torch.rand(1, 3, 4, 4)
            >>> Host().quality_images(x) is x
            True
        """
        return images

    def quality_alignment_batch(self, batch: Any, outputs: Any) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(images, true label maps, predicted label maps)`` of one validation batch, for the alignment check.

        The callback calls this after every ``validation_step`` and logs how well the predicted quality of the
        predictions matches their true Dice (``val/quality_alignment``). ``images`` are as this module sees
        them (they pass through :meth:`quality_images`); both label maps are integer ``(B, H, W)`` in
        ``0..K-1``. Return ``None`` to skip the batch.

        The default handles dict batches ``{"image": (B, C, H, W), "mask": (B, H, W)}`` and takes the
        predictions from ``outputs["preds"]`` (what ``validation_step`` returned), else from
        ``labels_from_logits(self(images), K)``. For other batch formats override it, e.g. for tuple batches
        and a module that returns ``{"logits": ...}`` with one sigmoid channel::

            def quality_alignment_batch(self, batch, outputs):
                images, masks = batch
                return images, masks.squeeze(1).long(), (outputs["logits"][:, 0] > 0).long()

        Example:
            >>> class Host(QualityGuidedMixin):
            ...     pass
            >>> batch = {"image": torch.rand(2, 3, 4, 4), "mask": torch.zeros(2, 4, 4, dtype=torch.long)}
            >>> images, truth, preds = Host().quality_alignment_batch(batch, {"preds": torch.ones(2, 4, 4)})
            >>> truth.shape, preds.dtype
            (torch.Size([2, 4, 4]), torch.int64)
            >>> Host().quality_alignment_batch((batch["image"], batch["mask"]), None) is None
            True
        """
        if not isinstance(batch, Mapping):
            return None
        images, target = batch.get("image"), batch.get("mask")
        if not isinstance(images, Tensor) or not isinstance(target, Tensor) or target.ndim != 3:
            return None
        if isinstance(outputs, Mapping) and isinstance(outputs.get("preds"), Tensor):
            preds = outputs["preds"]
        else:
            predictor = self.quality_predictor
            num_classes = predictor.num_foreground + 1 if predictor is not None else 2  # type: ignore[operator]
            preds = labels_from_logits(self(images), num_classes)  # type: ignore[operator]
        return images, target.long(), preds.long()

    # -----------------------------------------------------------------------------------------------
    # API for training_step
    # ------------------------------------------------------------------------------------------------
    def quality_weights(
        self, images: Tensor, masks: Tensor, *, required: bool = True
    ) -> tuple[Tensor, Tensor]:
        """PL-QW weights ``w = q ** T * 1[q >= tau]`` of hard pseudolabels, without gradient.

        Uses the callback's ``tau``, ``temperature`` and ``class_reduction``; records mean quality, mean
        weight and the fraction with ``q >= tau`` for logging, and keeps a few samples for the image grid.
        Images pass through :meth:`quality_images`; images and masks of another size than the predictor's
        training size are resized to it (or refused, the callback's ``size_mismatch``).

        Args:
            images: ``float`` ``(B, C, H, W)``, in ``[0, 1]`` after :meth:`quality_images`.
            masks: hard pseudolabels, label map ``long`` ``(B, H, W)`` or foreground masks ``(B, K-1, H, W)``
                of exactly 0 and 1.
            required: if ``False`` and no predictor is attached, return ones and NaN qualities instead of
                raising.

        Returns:
            ``(weights (B,), quality (B, K-1))``, ``float32``.

        Raises:
            RuntimeError: no predictor is attached and ``required`` is ``True``.
            ValueError: images outside ``[0, 1]`` (normalised or 0..255; see the callback's ``input_range``),
                soft masks, a class index the predictor does not know, the wrong number of image channels, or
                a size the callback's ``size_mismatch='error'`` refuses. Each message names the fix.
            NonFiniteError: the predictor returned a NaN/Inf quality
                (:class:`~qg_lightning.methods.NonFiniteError`, a ``FloatingPointError``).
        """
        predictor = self._qg_require("quality_weights()", required)
        if predictor is None:
            num_fg = masks.shape[1] if masks.ndim == 4 else self._qg_num_foreground()
            batch = images.shape[0]
            return (
                torch.ones(batch, device=images.device),
                torch.full((batch, num_fg), float("nan"), device=images.device),
            )
        settings = self.quality_guidance_settings
        images, masks = self._qg_prepare(predictor, images, masks, call="quality_weights()", hard=True)
        weights, quality = F.quality_weights(
            predictor,
            images,
            masks,
            tau=settings.tau,
            temperature=settings.temperature,
            class_reduction=settings.class_reduction,  # type: ignore[arg-type]
        )
        self._qg_verify("quality_weights()", quality, {"images": images}, images, masks=masks)
        sample_quality = F.reduce_class_quality(quality, settings.class_reduction)  # type: ignore[arg-type]
        stats = self._qg_stats()
        stats.n += int(weights.numel())
        stats.q_sum = stats.q_sum + sample_quality.sum()
        stats.w_sum = stats.w_sum + weights.sum()
        stats.above = stats.above + (sample_quality >= settings.tau).float().sum()
        if settings.n_keep_images > 0:
            n = settings.n_keep_images
            fg = masks if masks.ndim == 4 else foreground_from_labels(masks, predictor.num_foreground + 1)
            self._qg_set(
                "_qg_last_samples",
                {
                    "images": images[:n].detach().float().clone(),
                    "masks": fg[:n].detach().float().clone(),
                    "weights": weights[:n].detach().clone(),
                    "quality": sample_quality[:n].detach().clone(),
                },
            )
        return weights, quality

    def quality_regularization(self, images: Tensor, probs: Tensor, *, required: bool = True) -> Tensor:
        """QAR loss ``1 - mean g(images, probs)`` (unweighted; multiply by :attr:`qar_lambda`) and record it.

        Args:
            images: ``float`` ``(B, C, H, W)``, in ``[0, 1]`` after :meth:`quality_images`.
            probs: soft foreground probabilities ``(B, K-1, H, W)`` in ``[0, 1]`` with gradient (not logits).
            required: if ``False`` and no predictor is attached, return a zero loss instead of raising.

        Returns:
            Scalar loss in ``[0, 1]``, differentiable into ``probs`` only.

        Raises:
            RuntimeError: no predictor is attached and ``required`` is ``True``.
            ValueError: images outside ``[0, 1]``, ``probs`` outside ``[0, 1]`` (logits?), the wrong number of
                image channels, or a refused size (see :meth:`quality_weights`).
            NonFiniteError: the predictor returned a NaN/Inf quality (the QAR loss is non-finite).
        """
        predictor = self._qg_require("quality_regularization()", required)
        if predictor is None:
            return probs.new_zeros((), dtype=torch.float32)
        images, probs = self._qg_prepare(
            predictor, images, probs, call="quality_regularization()", hard=False
        )
        loss = F.qar_loss(predictor, images, probs)
        self._qg_verify(
            "quality_regularization(), 1 - mean quality",
            loss,
            {"images": images, "probabilities": probs},
            images,
            probs=probs,
        )
        stats = self._qg_stats()
        stats.qar_sum = stats.qar_sum + loss.detach().float()
        stats.qar_calls += 1
        return loss

    def quality_of_predictions(self, images: Tensor, preds: Tensor, *, verify: bool = True) -> Tensor:
        """Predicted per-class quality ``(B, K-1)`` of hard predictions, without gradient or statistics.

        What the validation alignment check uses; the same preparation and checks as :meth:`quality_weights`
        (``verify=False`` skips the checks and their device sync).

        Raises:
            RuntimeError: no predictor is attached.
        """
        predictor = self._qg_require("quality_of_predictions()", True)
        if predictor is None:  # unreachable: _qg_require raised (keeps type checkers informed)
            raise RuntimeError("no quality predictor attached")
        images, preds = self._qg_prepare(predictor, images, preds, call="the alignment check", hard=True)
        _, quality = F.quality_weights(predictor, images, preds, tau=0.0)
        if verify:
            self._qg_verify("the alignment check", quality, {"images": images}, images, masks=preds)
        return quality

    # -----------------------------------------------------------------------------------------------
    # guards (see qg_lightning.guidance.guards)
    # ------------------------------------------------------------------------------------------------
    def _qg_say_once(self, key: str, message: str, *, warn: bool) -> None:
        said = self._qg_get("_qg_said", None)
        if said is None:
            said = set()
            self._qg_set("_qg_said", said)
        if key in said:
            return
        said.add(key)
        (rank_zero_warn if warn else rank_zero_info)(message)

    def _qg_prepare(
        self, predictor: nn.Module, images: Tensor, masks: Tensor, *, call: str, hard: bool
    ) -> tuple[Tensor, Tensor]:
        """Apply :meth:`quality_images`, check the image channels and apply the size policy."""
        images = self.quality_images(images)
        host = type(self).__name__
        settings = self.quality_guidance_settings
        in_channels = getattr(predictor, "in_channels", None)
        if (
            isinstance(images, Tensor)
            and images.ndim == 4
            and isinstance(in_channels, int)
            and images.shape[1] != in_channels
        ):
            raise ValueError(
                f"{call}: {host} passed images with {images.shape[1]} channel(s), but quality predictor "
                f"{settings.source} reads {in_channels}-channel images (shape {tuple(images.shape)}). Use a "
                f"predictor trained on {images.shape[1]}-channel images, or convert the images in "
                "`quality_images()`."
            )
        size = settings.image_size
        if size is None or not isinstance(images, Tensor) or images.ndim != 4:
            return images, masks
        hw = (int(images.shape[-2]), int(images.shape[-1]))
        if hw == (size, size):
            return images, masks
        message = guards.size_message(hw, size, policy=settings.size_mismatch, source=settings.source)
        if settings.size_mismatch == "error":
            raise ValueError(f"{call}: {message}")
        self._qg_say_once(f"size:{hw}", message, warn=False)
        if settings.size_mismatch == "keep":
            return images, masks
        resized = guards.resize_to(images, size, hard=False)
        if isinstance(masks, Tensor) and tuple(masks.shape[-2:]) == hw:
            masks = guards.resize_to(masks, size, hard=hard)
        return resized, masks

    def _qg_verify(
        self,
        call: str,
        result: Tensor,
        inputs: dict[str, Tensor],
        images: Tensor,
        *,
        masks: Tensor | None = None,
        probs: Tensor | None = None,
    ) -> None:
        """Every check of one call, read with a single device sync; raise or warn with the fix."""
        settings = self.quality_guidance_settings
        values = [torch.isfinite(result).all()]
        check_range = settings.input_range != "off"
        if check_range:
            values += guards.batch_extremes(images)
        label_map = masks is not None and masks.ndim == 3
        if masks is not None:
            values.append(masks.max() if label_map else ((masks != 0) & (masks != 1)).float().mean())
        if probs is not None:
            values += guards.batch_extremes(probs)
        read = guards.read_scalars(values)
        if not read[0]:
            raise _nonfinite_quality(call, result, inputs)
        host = type(self).__name__
        rest = read[1:]
        if check_range:
            low, high = rest[0], rest[1]
            rest = rest[2:]
            verdict = guards.image_range_verdict(low, high)
            if verdict != "ok":
                message = guards.image_range_message(low, high, call=call, host=host, verdict=verdict)
                if verdict == "wrong" and settings.input_range == "error":
                    raise ValueError(message)
                self._qg_say_once(f"range:{verdict}", message, warn=True)
        if masks is not None:
            value = rest[0]
            rest = rest[1:]
            predictor = self.quality_predictor
            num_classes = predictor.num_foreground + 1 if predictor is not None else 2  # type: ignore[operator]
            if label_map and value > num_classes - 1:
                raise ValueError(guards.label_range_message(int(value), num_classes, call=call, host=host))
            if not label_map and value > 0:
                raise ValueError(guards.soft_mask_message(value, host=host))
        if probs is not None:
            low, high = rest[0], rest[1]
            tol = guards.IMAGE_RANGE_TOLERANCE
            if low < -tol or high > 1.0 + tol:
                raise ValueError(guards.probs_range_message(low, high, host=host))

    # -----------------------------------------------------------------------------------------------
    # statistics
    # ------------------------------------------------------------------------------------------------
    def quality_stats(self) -> dict[str, Tensor | float]:
        """Statistics recorded since the last reset, under their logging keys (only those available).

        ``train/lambda_qw`` / ``train/lambda_qar`` only when the host read :attr:`qw_lambda` /
        :attr:`qar_lambda` since the reset; ``train/qw_applied`` / ``train/qar_applied`` (1.0 or 0.0) for
        each enabled mechanism.

        Example:
            >>> class Host(QualityGuidedMixin):
            ...     pass
            >>> Host().quality_stats()
            {}
        """
        if not self.quality_guidance_active:
            return {}
        mechanisms = self.quality_guidance_settings.mechanisms
        stats = self._qg_stats()
        out: dict[str, Tensor | float] = {}
        if stats.qw_read:
            out["train/lambda_qw"] = self._qg_lambda("qw")
        if stats.qar_read:
            out["train/lambda_qar"] = self._qg_lambda("qar")
        if "qw" in mechanisms:
            out["train/qw_applied"] = float(stats.n > 0)
        if "qar" in mechanisms:
            out["train/qar_applied"] = float(stats.qar_calls > 0)
        if stats.n:
            out["train/q_mean"] = stats.q_sum / stats.n
            out["train/w_mean"] = stats.w_sum / stats.n
            out["train/frac_q_above_tau"] = stats.above / stats.n
        if stats.qar_calls:
            out["train/loss_qar"] = stats.qar_sum / stats.qar_calls
        return out

    def log_quality_stats(self, batch_size: int | None = None) -> None:
        """Log :meth:`quality_stats` with ``self.log(on_step=True, on_epoch=False, sync_dist=True)``.

        Values are averaged across DDP ranks (one small all-reduce per key and step), so every logger sees
        the global mean predicted quality, weight and kept fraction.

        :class:`~qg_lightning.guidance.QualityReweightCallback` calls this once per training batch (in
        ``on_train_batch_end``); hosts do not need to. ``batch_size`` defaults to the number of samples seen
        by :meth:`quality_weights` this step (1 if none).
        """
        values = self.quality_stats()
        if not values:
            return
        if batch_size is None:
            batch_size = max(self._qg_stats().n, 1)
        log = getattr(self, "log", None)
        if log is None:
            raise TypeError(f"{type(self).__name__} must be a LightningModule to log quality statistics.")
        for key, value in values.items():
            log(key, value, on_step=True, on_epoch=False, batch_size=batch_size, sync_dist=True)

    def pop_quality_samples(self) -> dict[str, Tensor] | None:
        """The samples kept by the last :meth:`quality_weights` call (then forgotten), or ``None``.

        Returns:
            ``{"images": (n, C, H, W), "masks": (n, K-1, H, W), "weights": (n,), "quality": (n,)}``.
        """
        samples = self._qg_get("_qg_last_samples", None)
        self._qg_set("_qg_last_samples", None)
        return samples

    def _qg_num_foreground(self) -> int:
        hparams = getattr(self, "hparams", None)
        num_classes = hparams.get("num_classes") if isinstance(hparams, dict) else None
        return int(num_classes) - 1 if isinstance(num_classes, int) and num_classes >= 2 else 1

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

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from qg_lightning.guidance import functional as F
from qg_lightning.masks import foreground_from_labels

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
    """

    tau: float = 0.5
    temperature: float = 2.0
    class_reduction: str = "mean"
    mechanisms: frozenset[str] = field(default_factory=lambda: frozenset({"qw"}))
    n_keep_images: int = 0

    def __post_init__(self) -> None:
        F.check_tau(self.tau)
        F.check_temperature(self.temperature)
        F.check_class_reduction(self.class_reduction)
        unknown = set(self.mechanisms) - {"qw", "qar"}
        if unknown:
            raise ValueError(f"`mechanisms` may only contain 'qw' and 'qar', got {sorted(unknown)}.")


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

    __slots__ = ("n", "q_sum", "w_sum", "above", "qar_sum", "qar_calls")

    def __init__(self) -> None:
        # Sums stay tensors (no host-device sync per call); they are read once, when logged.
        self.n = 0
        self.q_sum: Tensor | float = 0.0
        self.w_sum: Tensor | float = 0.0
        self.above: Tensor | float = 0.0
        self.qar_sum: Tensor | float = 0.0
        self.qar_calls = 0


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
          callback checks the predictor against them.
        * In ``training_step``: weight each unlabeled sample's loss with :meth:`quality_weights` (hard
          pseudolabels) and/or add ``self.qar_lambda * self.quality_regularization(images, probs)`` (soft
          probabilities). Skipping either when its lambda is 0 saves compute.
        * For the validation alignment check, return ``{"preds": label_map}`` from ``validation_step``
          (else the callback runs ``self(batch["image"])`` once more); validation batches are dicts with
          ``"image"`` and ``"mask"``.

    Non-finite qualities: every predicted quality is checked (one ``isfinite(q).all()`` and one device sync
    per call). A NaN/Inf raises :class:`~qg_lightning.methods.NonFiniteError` whatever the host's policy, since
    a NaN quality would otherwise silently zero its sample's weight; the hosts of :mod:`qg_lightning.methods`
    catch it in ``training_step`` and apply their ``nonfinite`` policy (``"raise"`` adds the batch index and
    global step, ``"skip"`` skips the step).

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
        """Current PL-QW loss weight; 0.0 when "qw" is disabled or no predictor is attached."""
        if not self.quality_guidance_active or "qw" not in self.quality_guidance_settings.mechanisms:
            return 0.0
        return float(self._qg_get("_qg_qw_lambda", 0.0))

    @property
    def qar_lambda(self) -> float:
        """Current QAR loss weight; 0.0 when "qar" is disabled or no predictor is attached."""
        if not self.quality_guidance_active or "qar" not in self.quality_guidance_settings.mechanisms:
            return 0.0
        return float(self._qg_get("_qg_qar_lambda", 0.0))

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
    # API for training_step
    # ------------------------------------------------------------------------------------------------
    def quality_weights(
        self, images: Tensor, masks: Tensor, *, required: bool = True
    ) -> tuple[Tensor, Tensor]:
        """PL-QW weights ``w = q ** T * 1[q >= tau]`` of hard pseudolabels, without gradient.

        Uses the callback's ``tau``, ``temperature`` and ``class_reduction``; records mean quality, mean
        weight and the fraction with ``q >= tau`` for logging, and keeps a few samples for the image grid.

        Args:
            images: ``float`` ``(B, C, H, W)`` in ``[0, 1]``.
            masks: hard pseudolabels, label map ``long`` ``(B, H, W)`` or foreground masks ``(B, K-1, H, W)``.
            required: if ``False`` and no predictor is attached, return ones and NaN qualities instead of
                raising.

        Returns:
            ``(weights (B,), quality (B, K-1))``, ``float32``.

        Raises:
            RuntimeError: no predictor is attached and ``required`` is ``True``.
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
        weights, quality = F.quality_weights(
            predictor,
            images,
            masks,
            tau=settings.tau,
            temperature=settings.temperature,
            class_reduction=settings.class_reduction,  # type: ignore[arg-type]
        )
        if not bool(torch.isfinite(quality).all()):
            raise _nonfinite_quality("quality_weights()", quality, {"images": images})
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
            images: ``float`` ``(B, C, H, W)`` in ``[0, 1]``.
            probs: soft foreground probabilities ``(B, K-1, H, W)`` with gradient.
            required: if ``False`` and no predictor is attached, return a zero loss instead of raising.

        Returns:
            Scalar loss in ``[0, 1]``, differentiable into ``probs`` only.

        Raises:
            RuntimeError: no predictor is attached and ``required`` is ``True``.
            NonFiniteError: the predictor returned a NaN/Inf quality (the QAR loss is non-finite).
        """
        predictor = self._qg_require("quality_regularization()", required)
        if predictor is None:
            return probs.new_zeros((), dtype=torch.float32)
        loss = F.qar_loss(predictor, images, probs)
        if not bool(torch.isfinite(loss)):
            raise _nonfinite_quality(
                "quality_regularization(), 1 - mean quality", loss, {"images": images, "probabilities": probs}
            )
        stats = self._qg_stats()
        stats.qar_sum = stats.qar_sum + loss.detach().float()
        stats.qar_calls += 1
        return loss

    def quality_stats(self) -> dict[str, Tensor | float]:
        """Statistics recorded since the last reset, under their logging keys (only those available).

        Example:
            >>> class Host(QualityGuidedMixin):
            ...     pass
            >>> Host().quality_stats()
            {}
        """
        if not self.quality_guidance_active:
            return {}
        out: dict[str, Tensor | float] = {
            "train/lambda_qw": self.qw_lambda,
            "train/lambda_qar": self.qar_lambda,
        }
        stats = self._qg_stats()
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

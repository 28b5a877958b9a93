"""Shared parts of the semi-supervised hosts: unsupervised-weight schedule, guidance hooks, logging."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from torch import Tensor

from qg_lightning.guidance.diagnostics import PseudolabelDiagnostics, pseudolabel_dice
from qg_lightning.guidance.functional import reduce_class_quality
from qg_lightning.guidance.mixin import QualityGuidedMixin
from qg_lightning.guidance.schedules import RampSchedule
from qg_lightning.losses import weighted_mean
from qg_lightning.masks import probs_from_logits
from qg_lightning.methods.supervised import SupervisedSegmenter, labeled_part, unlabeled_part

__all__ = ["SemiSupervisedSegmenter"]


class SemiSupervisedSegmenter(QualityGuidedMixin, SupervisedSegmenter):
    """Base of every reference SSL host: supervised part + one unsupervised term + optional guidance.

    Subclasses implement :meth:`unsupervised_terms`, returning the per-image unsupervised losses ``(B,)`` and
    the hard pseudolabels ``(B, H, W)`` they were computed against (``None`` when the method has none), plus the
    unlabeled images and the student's logits on them. This base then

    * multiplies the per-image losses by per-sample weights: the method's own (e.g. PL-C confidence) and, when a
      :class:`~qg_lightning.guidance.QualityReweightCallback` with ``"qw"`` is attached, the quality weights of
      the pseudolabels (the "-QW" variant), and averages them with ``sum(w l) / (sum(w) + 1e-8)``;
    * scales that by the host's own ramp ``unsup_weight`` (0 for ``unsup_warmup``, then linear over
      ``unsup_ramp`` epochs or steps), the same for the plain and the guided variant, so they differ only by
      the quality weights;
    * adds ``qar_lambda * QAR`` on the student's soft probabilities when the callback enables ``"qar"``;
    * when unlabeled batches carry the hidden masks of their images (``"true_mask"``, from
      ``SemiSupervisedDataModule(unlabeled_true_masks=True)``, analysis only), records the true Dice of every
      pseudolabel beside the scores that weighted it (predicted quality, teacher confidence, and ``oracle``: the
      true Dice itself at the same tau, i.e. what a perfect predictor would keep) and logs, at every
      validation, ``diag/true_dice_mean`` and ``diag/<score>/<statistic>`` (Pearson, Spearman, kept fraction,
      mean true Dice of kept and dropped pseudolabels; see :mod:`qg_lightning.guidance.diagnostics`). The
      masks never enter a loss here.

    Args (in addition to :class:`~qg_lightning.methods.SupervisedSegmenter`'s):
        unsup_weight: final weight of the unsupervised term.
        unsup_warmup: epochs (or steps) with weight 0.
        unsup_ramp: epochs (or steps) of the linear ramp.
        schedule_unit: ``"epoch"`` or ``"step"``.
    """

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        num_classes: int = 2,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        min_lr: float = 1e-6,
        warmup_steps: int = 0,
        val_hd95: bool = False,
        nonfinite: Literal["raise", "skip"] = "raise",
        unsup_weight: float = 0.25,
        unsup_warmup: float = 15.0,
        unsup_ramp: float = 30.0,
        schedule_unit: Literal["epoch", "step"] = "epoch",
    ) -> None:
        super().__init__(
            arch=arch,
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            num_classes=num_classes,
            lr=lr,
            weight_decay=weight_decay,
            min_lr=min_lr,
            warmup_steps=warmup_steps,
            val_hd95=val_hd95,
            nonfinite=nonfinite,
        )
        if schedule_unit not in ("epoch", "step"):
            raise ValueError(f"`schedule_unit` must be 'epoch' or 'step', got {schedule_unit!r}.")
        self.unsup_schedule = RampSchedule.from_args(
            unsup_weight,
            unsup_warmup,
            unsup_ramp,
            names=("unsup_weight", "unsup_warmup", "unsup_ramp"),
            hint="Set it in model.init_args.",
        )

    # ------------------------------------------------------------------------------------------ schedule
    @property
    def unsup_lambda(self) -> float:
        """Current weight of the unsupervised term (a pure function of epoch or step: resumes exactly)."""
        if self._trainer is None:
            return self.unsup_schedule(0.0)
        t = self.trainer.global_step if self.hparams.schedule_unit == "step" else self.trainer.current_epoch
        return self.unsup_schedule(float(t))

    def guidance_uses(self, mechanism: str) -> bool:
        """Whether the attached quality guidance enables ``"qw"`` or ``"qar"``."""
        return self.quality_guidance_active and mechanism in self.quality_guidance_settings.mechanisms

    # ------------------------------------------------------------------------------------- unsupervised
    def unsupervised_terms(self, unlabeled: Mapping[str, Any]) -> dict[str, Tensor | None]:
        """Return ``{"losses": (B,), "weights": (B,) or None, "pseudo": (B,H,W) or None, "images": (B,C,H,W),
        "logits": student logits on ``images`` or None}``. Implemented by each host."""
        raise NotImplementedError

    def sample_weights(self, terms: Mapping[str, Any]) -> Tensor | None:
        """The method's own weights times, in guided "-QW" mode, the quality weights of its pseudolabels.

        In "-QW" mode the per-sample quality the weights came from is also stored as ``terms["quality"]``
        (when ``terms`` is a dict) for the pseudolabel diagnostics.
        """
        weights = terms.get("weights")
        if self.guidance_uses("qw") and terms.get("pseudo") is not None:
            qw, quality = self.quality_weights(terms["quality_images"], terms["pseudo"])
            weights = qw if weights is None else weights * qw
            if isinstance(terms, dict):
                reduction = self.quality_guidance_settings.class_reduction
                terms["quality"] = reduce_class_quality(quality, reduction).detach()  # type: ignore[arg-type]
        return weights

    # ------------------------------------------------------------------------------------ diagnostics
    @property
    def pseudolabel_diagnostics(self) -> PseudolabelDiagnostics:
        """The accumulator of pseudolabel diagnostics (filled only when batches carry ``"true_mask"``)."""
        diag = self.__dict__.get("_pl_diagnostics")
        if diag is None:
            diag = PseudolabelDiagnostics()
            object.__setattr__(self, "_pl_diagnostics", diag)
        return diag

    def record_pseudolabel_diagnostics(self, terms: Mapping[str, Any], truth: Tensor) -> None:
        """Record the true Dice of this step's pseudolabels with the scores that weighted them (analysis only:
        ``truth`` reaches no loss)."""
        pseudo = terms.get("pseudo")
        if pseudo is None:
            return
        n, b = pseudo.shape[0], truth.shape[0]
        if truth.shape[1:] == pseudo.shape[1:] and n != b and b > 0 and n % b == 0:
            truth = truth.repeat(n // b, 1, 1)  # several pseudolabels per image (e.g. CPS: one per network)
        if truth.shape != pseudo.shape:
            raise ValueError(
                f"Unlabeled `true_mask` {tuple(truth.shape)} does not match the pseudolabels "
                f"{tuple(pseudo.shape)}; the data module must give each unlabeled image's mask in the geometry "
                "of its weak view."
            )
        dice = pseudolabel_dice(pseudo, truth, self.num_classes)
        scores: dict[str, tuple[Tensor, float]] = {}
        if terms.get("quality") is not None:
            scores["quality"] = (terms["quality"], self.quality_guidance_settings.tau)
        if terms.get("confidence") is not None:
            scores["confidence"] = (terms["confidence"], float(self.hparams.get("conf_tau", 0.5)))
        # The true Dice itself at the weighting's tau: what a perfect predictor (PL-oracle) would keep.
        tau = (
            self.quality_guidance_settings.tau
            if self.quality_guidance_active
            else float(self.hparams.get("conf_tau", self.quality_guidance_settings.tau))
        )
        scores["oracle"] = (dice, tau)
        self.pseudolabel_diagnostics.update(dice, scores)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        for name, value in self.pseudolabel_diagnostics.compute().items():
            self.log(f"diag/{name}", value, sync_dist=True)

    def training_loss(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """Checked, logged ``L_sup + unsup_lambda * L_unsup (+ qar_lambda * QAR)`` of one training batch.

        Raises:
            NonFiniteError: a NaN/Inf in an image of the batch, a loss term or a predicted quality
                (:meth:`~qg_lightning.methods.SupervisedSegmenter.training_step` applies the policy).
        """
        labeled = labeled_part(batch)
        unlabeled = unlabeled_part(batch)
        self.check_finite_inputs(labeled, unlabeled)
        bs = labeled["image"].shape[0]
        loss_sup, _ = self.supervised_loss(labeled)
        loss = loss_sup
        lam = self.unsup_lambda
        use_qar = self.guidance_uses("qar") and self.qar_lambda > 0
        weights = loss_qar = None
        if lam == 0 and not use_qar:
            # Warm-up: the unsupervised term has weight 0, so skip its forward passes (and the predictor's).
            loss_u = loss_sup.new_zeros(())
            ubs = unlabeled["image"].shape[0]
        else:
            terms = self.unsupervised_terms(unlabeled)
            terms.setdefault("quality_images", terms["images"])
            weights = self.sample_weights(terms) if lam > 0 else None
            if unlabeled.get("true_mask") is not None:
                self.record_pseudolabel_diagnostics(terms, unlabeled["true_mask"])
            losses = terms["losses"]
            loss_u = losses.mean() if weights is None else weighted_mean(losses, weights)
            loss = loss + lam * loss_u
            ubs = losses.shape[0]
            if use_qar and terms.get("logits") is not None:
                probs = probs_from_logits(terms["logits"], self.num_classes)
                loss_qar = self.quality_regularization(terms["images"], probs)
                loss = loss + self.qar_lambda * loss_qar
        self.check_finite_losses({"sup": loss_sup, "unsup": loss_u, "qar": loss_qar, "total": loss})
        if weights is not None:
            self.log("train/w_mean_unsup", weights.mean(), batch_size=ubs)
        self.log("train/loss_sup", loss_sup, batch_size=bs)
        self.log("train/loss_unsup", loss_u, batch_size=ubs)
        self.log("train/lambda_unsup", lam, batch_size=ubs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

"""Pseudo-labelling hosts: PL, PL-T (pixel confidence threshold), PL-C (confidence weights), PL-QW, and QAR."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from qg_lightning.guidance.diagnostics import oracle_weights
from qg_lightning.guidance.functional import confidence_pixel_mask, confidence_weights
from qg_lightning.losses import segmentation_loss_per_image
from qg_lightning.masks import labels_from_logits, probs_from_logits
from qg_lightning.methods.base import SemiSupervisedSegmenter
from qg_lightning.methods.ema import EMATeacher

__all__ = ["PseudoLabelSegmenter", "QARSegmenter"]


class PseudoLabelSegmenter(SemiSupervisedSegmenter):
    """Pseudo-labelling with an EMA teacher (METHOD.md: PL, PL-T, PL-C; PL-QW with the callback).

    The EMA teacher (decay ramped 0.5 -> 0.999 over ``ema_warmup_steps``) labels each unlabeled image with hard
    pseudolabels; the student learns them with the per-image 0.5 BCE + 0.5 soft-Dice loss.

    * ``weighting="none"``: every pseudolabel counts fully (PL). With ``QualityReweightCallback`` (``"qw"``) this
      is **PL-QW**: per-sample weights ``q**T * 1[q >= tau]`` from the frozen quality predictor.
    * ``"threshold"`` (**PL-T**): only pixels whose teacher confidence is >= ``conf_threshold`` count.
    * ``"confidence"`` (**PL-C**): per-sample weights ``c**T * 1[c >= tau]`` from the mean teacher confidence
      ``c``, the same form as the quality weights (``conf_tau``, ``conf_temperature``).
    * ``"oracle"`` (**PL-oracle**, analysis only): the same form with ``c`` replaced by the *true* Dice of each
      pseudolabel against the hidden mask of its unlabeled image (``batch["unlabeled"]["true_mask"]``, from
      ``SemiSupervisedDataModule(unlabeled_true_masks=True)``): the ceiling of what any quality predictor can
      buy through this weighting. Refused, with the fix, when the batch has no masks.

    The student sees the strong view when the DataModule gives one (``unlabeled_views: weak_strong``), else the
    same weak view as the teacher.
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
        weighting: Literal["none", "threshold", "confidence", "oracle"] = "none",
        conf_threshold: float = 0.9,
        conf_tau: float = 0.5,
        conf_temperature: float = 2.0,
        ema_decay: float = 0.999,
        ema_initial_decay: float = 0.5,
        ema_warmup_steps: int = 1000,
    ) -> None:
        super().__init__(
            arch=arch, encoder_name=encoder_name, encoder_weights=encoder_weights, in_channels=in_channels,
            num_classes=num_classes, lr=lr, weight_decay=weight_decay, min_lr=min_lr, warmup_steps=warmup_steps,
            val_hd95=val_hd95, nonfinite=nonfinite, unsup_weight=unsup_weight, unsup_warmup=unsup_warmup,
            unsup_ramp=unsup_ramp, schedule_unit=schedule_unit,
        )  # fmt: skip
        if weighting not in ("none", "threshold", "confidence", "oracle"):
            raise ValueError(
                f"`weighting` must be 'none', 'threshold', 'confidence' or 'oracle', got {weighting!r}."
            )
        if not 0.0 <= conf_threshold <= 1.0:
            raise ValueError(f"`conf_threshold` must be in [0, 1], got {conf_threshold}.")
        if not 0.0 <= conf_tau <= 1.0:
            raise ValueError(f"`conf_tau` must be in [0, 1], got {conf_tau}.")
        if conf_temperature <= 0:
            raise ValueError(f"`conf_temperature` must be > 0, got {conf_temperature}.")
        self.teacher = EMATeacher(
            self.model, decay=ema_decay, initial_decay=ema_initial_decay, warmup_steps=ema_warmup_steps
        )

    def unsupervised_terms(self, unlabeled: Mapping[str, Any]) -> dict[str, Tensor | None]:
        hp = self.hparams
        weak = unlabeled["image"]
        student_view = unlabeled.get("image_strong", weak)
        with torch.no_grad():
            teacher_logits = self.teacher(weak)
        teacher_probs = probs_from_logits(teacher_logits.float(), self.num_classes)
        pseudo = labels_from_logits(teacher_logits, self.num_classes)
        pixel_weights = (
            confidence_pixel_mask(teacher_probs, hp.conf_threshold) if hp.weighting == "threshold" else None
        )
        conf_weights, confidence = confidence_weights(
            teacher_probs, tau=hp.conf_tau, temperature=hp.conf_temperature
        )
        weights = conf_weights if hp.weighting == "confidence" else None
        if hp.weighting == "oracle":
            truth = unlabeled.get("true_mask")
            if truth is None:
                raise ValueError(
                    "PseudoLabelSegmenter(weighting='oracle') (PL-oracle) weights each pseudolabel by its true "
                    "Dice, but the unlabeled batch has no `true_mask`. It needs unlabeled images with known "
                    "masks: SemiSupervisedDataModule(labeled_fraction=... or n_labeled=..., "
                    "unlabeled_true_masks=True), without ROOT/unlabeled or unlabeled_root images."
                )
            weights, _ = oracle_weights(
                pseudo, truth, self.num_classes, tau=hp.conf_tau, temperature=hp.conf_temperature
            )
        logits = self(student_view)
        losses = segmentation_loss_per_image(logits, pseudo, self.num_classes, pixel_weights=pixel_weights)
        return {
            "losses": losses,
            "weights": weights,
            "pseudo": pseudo,
            "images": student_view,
            "quality_images": weak,
            "logits": logits,
            "confidence": confidence,
        }

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.last_step_skipped:  # non-finite step skipped (nonfinite="skip"): the student did not move
            return
        self.teacher.update(self.model)

    def trainable_parameters(self):
        return (p for p in self.model.parameters() if p.requires_grad)


class QARSegmenter(SemiSupervisedSegmenter):
    """Supervised loss + quality-aware regularisation on unlabeled images (METHOD.md: QAR).

    Total = L_sup + lambda_qar * (1 - mean g(x_u, sigmoid(f(x_u)))), with lambda_qar scheduled by
    ``QualityReweightCallback(mechanisms=["qar"])``, which this host requires.
    """

    def unsupervised_terms(self, unlabeled: Mapping[str, Any]) -> dict[str, Tensor | None]:
        images = unlabeled["image"]
        logits = self(images)
        return {"losses": logits.new_zeros(images.shape[0]), "weights": None, "pseudo": None, "images": images,
                "logits": logits}  # fmt: skip

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not self.guidance_uses("qar"):
            raise RuntimeError(
                "QARSegmenter needs the quality regulariser: add "
                "`QualityReweightCallback(predictor=..., mechanisms=['qar'])` to the Trainer callbacks."
            )

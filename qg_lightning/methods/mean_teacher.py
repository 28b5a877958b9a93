"""Mean Teacher host (and MT-QW with the quality callback)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from qg_lightning.masks import labels_from_logits, probs_from_logits
from qg_lightning.methods.base import SemiSupervisedSegmenter
from qg_lightning.methods.ema import EMATeacher

__all__ = ["MeanTeacherSegmenter"]


class MeanTeacherSegmenter(SemiSupervisedSegmenter):
    """Mean Teacher: per-image MSE between student and EMA-teacher probabilities (METHOD.md).

    The teacher sees the weak view, the student the strong view when given (else the same weak view). In the
    MT-QW variant (callback with ``"qw"``), each image's consistency loss is weighted by the predicted quality
    of the teacher's hard pseudolabel. The teacher's decay ramps from ``ema_initial_decay`` to ``ema_decay``.
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
        unsup_weight: float = 1.0,
        unsup_warmup: float = 15.0,
        unsup_ramp: float = 30.0,
        schedule_unit: Literal["epoch", "step"] = "epoch",
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
        self.teacher = EMATeacher(
            self.model, decay=ema_decay, initial_decay=ema_initial_decay, warmup_steps=ema_warmup_steps
        )

    def unsupervised_terms(self, unlabeled: Mapping[str, Any]) -> dict[str, Tensor | None]:
        weak = unlabeled["image"]
        student_view = unlabeled.get("image_strong", weak)
        with torch.no_grad():
            teacher_logits = self.teacher(weak)
        teacher_probs = probs_from_logits(teacher_logits.float(), self.num_classes)
        logits = self(student_view)
        student_probs = probs_from_logits(logits.float(), self.num_classes)
        losses = (student_probs - teacher_probs).pow(2).flatten(1).mean(1)
        return {
            "losses": losses,
            "weights": None,
            "pseudo": labels_from_logits(teacher_logits, self.num_classes),
            "images": student_view,
            "quality_images": weak,
            "logits": logits,
        }

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.last_step_skipped:  # non-finite step skipped (nonfinite="skip"): the student did not move
            return
        self.teacher.update(self.model)

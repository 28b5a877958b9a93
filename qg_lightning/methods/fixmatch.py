"""FixMatch-style weak-to-strong host (and FixMatch-QW with the quality callback)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from qg_lightning.guidance.functional import confidence_pixel_mask
from qg_lightning.losses import segmentation_loss_per_image
from qg_lightning.masks import labels_from_logits, probs_from_logits
from qg_lightning.methods.base import SemiSupervisedSegmenter

__all__ = ["FixMatchSegmenter"]


class FixMatchSegmenter(SemiSupervisedSegmenter):
    """Weak-to-strong consistency: the model's own confident predictions on the weak view supervise the strong view.

    Pixels whose weak-view confidence is below ``conf_threshold`` are ignored. The DataModule must give both
    views with the same geometry (``data.unlabeled_views: weak_strong``). FixMatch-QW (callback with ``"qw"``)
    additionally weights each image by the predicted quality of its weak-view pseudolabel.
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
        conf_threshold: float = 0.95,
    ) -> None:
        super().__init__(
            arch=arch, encoder_name=encoder_name, encoder_weights=encoder_weights, in_channels=in_channels,
            num_classes=num_classes, lr=lr, weight_decay=weight_decay, min_lr=min_lr, warmup_steps=warmup_steps,
            val_hd95=val_hd95, nonfinite=nonfinite, unsup_weight=unsup_weight, unsup_warmup=unsup_warmup,
            unsup_ramp=unsup_ramp, schedule_unit=schedule_unit,
        )  # fmt: skip
        if not 0.0 <= conf_threshold <= 1.0:
            raise ValueError(f"`conf_threshold` must be in [0, 1], got {conf_threshold}.")

    def unsupervised_terms(self, unlabeled: Mapping[str, Any]) -> dict[str, Tensor | None]:
        if "image_strong" not in unlabeled:
            raise KeyError(
                "FixMatchSegmenter needs a strong view of each unlabeled image: set "
                "`data.init_args.unlabeled_views: weak_strong` in your config."
            )
        weak, strong = unlabeled["image"], unlabeled["image_strong"]
        with torch.no_grad():
            weak_logits = self(weak)
        pseudo = labels_from_logits(weak_logits, self.num_classes)
        keep = confidence_pixel_mask(
            probs_from_logits(weak_logits.float(), self.num_classes), self.hparams.conf_threshold
        )
        logits = self(strong)
        losses = segmentation_loss_per_image(logits, pseudo, self.num_classes, pixel_weights=keep)
        return {"losses": losses, "weights": None, "pseudo": pseudo, "images": strong, "quality_images": weak,
                "logits": logits}  # fmt: skip

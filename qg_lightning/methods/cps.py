"""Cross pseudo supervision host (and CPS-QW with the quality callback)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from qg_lightning.losses import segmentation_loss_per_image
from qg_lightning.masks import labels_from_logits
from qg_lightning.methods.base import SemiSupervisedSegmenter

__all__ = ["CPSSegmenter"]


class CPSSegmenter(SemiSupervisedSegmenter):
    """Two differently initialised networks supervise each other with hard pseudolabels (METHOD.md: CPS).

    Both are trained on the labeled batch; on unlabeled images network A learns B's hard labels and vice versa.
    CPS-QW (callback with ``"qw"``) weights each of the 2B cross terms by the predicted quality of the
    pseudolabel it learns from. Validation, test and prediction use network A. Same arguments as
    :class:`~qg_lightning.methods.base.SemiSupervisedSegmenter`.
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
            arch=arch, encoder_name=encoder_name, encoder_weights=encoder_weights, in_channels=in_channels,
            num_classes=num_classes, lr=lr, weight_decay=weight_decay, min_lr=min_lr, warmup_steps=warmup_steps,
            val_hd95=val_hd95, nonfinite=nonfinite, unsup_weight=unsup_weight, unsup_warmup=unsup_warmup,
            unsup_ramp=unsup_ramp, schedule_unit=schedule_unit,
        )  # fmt: skip
        self.model_b = self.build_network()

    def supervised_loss(
        self, labeled: Mapping[str, Any], logits: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        loss_a, logits_a = super().supervised_loss(labeled, logits)
        logits_b = self.model_b(labeled["image"])
        loss_b = segmentation_loss_per_image(logits_b, labeled["mask"], self.num_classes).mean()
        return loss_a + loss_b, logits_a

    def unsupervised_terms(self, unlabeled: Mapping[str, Any]) -> dict[str, Tensor | None]:
        images = unlabeled["image"]
        logits_a, logits_b = self(images), self.model_b(images)
        with torch.no_grad():
            pseudo_a = labels_from_logits(logits_a, self.num_classes)
            pseudo_b = labels_from_logits(logits_b, self.num_classes)
        losses = torch.cat([
            segmentation_loss_per_image(logits_a, pseudo_b, self.num_classes),
            segmentation_loss_per_image(logits_b, pseudo_a, self.num_classes),
        ])  # fmt: skip
        return {"losses": losses, "weights": None, "pseudo": torch.cat([pseudo_b, pseudo_a]),
                "images": images, "quality_images": torch.cat([images, images]), "logits": logits_a}  # fmt: skip

    def student_networks(self) -> list[nn.Module]:
        return [self.model, self.model_b]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        yield from super().trainable_parameters()
        yield from (p for p in self.model_b.parameters() if p.requires_grad)

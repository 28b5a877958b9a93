"""Bring your own module: a user-written weak-to-strong SSL module, then the same module quality-guided.

``MyWeakToStrong`` is what a user might already have: a FixMatch-style segmenter whose confident predictions
on the weak view of an unlabeled image supervise its prediction on the strong view. ``MyWeakToStrongQG`` is
the same class made quality-guided; the whole difference is

* the base class ``QualityGuidedMixin``,
* ``weights, _ = self.quality_weights(weak, pseudo)``: the frozen predictor's weight of each hard pseudolabel,
* ``weighted_mean(per_image, weights)`` instead of ``per_image.mean()``,
* optionally ``+ self.qar_lambda * self.quality_regularization(strong, probs)`` (QAR, soft probabilities),

plus ``QualityReweightCallback(predictor=...)`` in the Trainer's callbacks, which loads, freezes and attaches
the predictor, schedules ``qar_lambda`` and logs what the guidance did.

Images reach guidance in [0, 1] here (the module normalises inside ``forward``). If your ``Dataset`` normalises
instead, add a ``quality_images(self, images)`` method that un-normalises them (guidance raises otherwise); for
tuple validation batches, a ``quality_alignment_batch(self, batch, outputs)`` method feeds the alignment check
(see :class:`~qg_lightning.guidance.QualityGuidedMixin`).

Run it on the embedded synthetic data (generated on first use; nothing is downloaded)::

    python examples/custom_module.py --max-steps 50                       # plain
    python examples/custom_module.py --predictor runs/predictor/quality_predictor.ckpt --max-steps 50
    # (that path is what `python examples/fit.py fit --config examples/configs/predictor/quickstart.yaml` writes)
    python examples/custom_module.py --predictor PATH --qar --max-steps 50
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import lightning as L
import segmentation_models_pytorch as smp
import torch
from torch import Tensor

from qg_lightning.guidance import QualityGuidedMixin, QualityReweightCallback, weighted_mean
from qg_lightning.losses import segmentation_loss_per_image
from qg_lightning.masks import labels_from_logits, logit_channels, probs_from_logits

__all__ = ["MyWeakToStrong", "MyWeakToStrongQG", "build_trainer", "confident_pixels", "main"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def confident_pixels(logits: Tensor, num_classes: int, threshold: float) -> Tensor:
    """``float`` ``(B, H, W)``: 1 where the most likely class has probability >= ``threshold``, else 0."""
    if logit_channels(num_classes) == 1:
        probs = torch.sigmoid(logits[:, 0].float())
        confidence = torch.maximum(probs, 1 - probs)
    else:
        confidence = torch.softmax(logits.float(), dim=1).amax(dim=1)
    return (confidence >= threshold).float()


# ---------------------------------------------------------------------------------- the user's own module
class MyWeakToStrong(L.LightningModule):
    """Weak-to-strong consistency: confident weak-view predictions are the strong view's pseudolabels."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        lr: float = 1e-3,
        unsup_weight: float = 1.0,
        conf_threshold: float = 0.95,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        classes = logit_channels(num_classes)  # 1 (sigmoid) for binary, K (softmax) otherwise
        self.net = smp.Unet("resnet18", encoder_weights=None, in_channels=in_channels, classes=classes)
        mean = torch.tensor(IMAGENET_MEAN if in_channels == 3 else [0.449]).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD if in_channels == 3 else [0.226]).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - self.mean) / self.std)  # [0, 1] images in, normalised here

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        k = self.hparams.num_classes
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        loss_sup = segmentation_loss_per_image(self(labeled["image"]), labeled["mask"], k).mean()
        weak, strong = unlabeled["image"], unlabeled["image_strong"]
        with torch.no_grad():
            weak_logits = self(weak)
        pseudo = labels_from_logits(weak_logits, k)  # hard pseudolabels (B, H, W)
        keep = confident_pixels(weak_logits, k, self.hparams.conf_threshold)
        strong_logits = self(strong)
        per_image = segmentation_loss_per_image(strong_logits, pseudo, k, pixel_weights=keep)  # (B,)
        loss_unsup = per_image.mean()
        loss = loss_sup + self.hparams.unsup_weight * loss_unsup
        self.log_dict({"train/loss_sup": loss_sup, "train/loss_unsup": loss_unsup}, batch_size=weak.shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=weak.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        logits = self(batch["image"])
        loss = segmentation_loss_per_image(logits, batch["mask"], self.hparams.num_classes).mean()
        self.log("val/loss", loss, sync_dist=True, batch_size=logits.shape[0])
        return {"preds": labels_from_logits(logits, self.hparams.num_classes)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)


# ------------------------------------------------------------------------ the same module, quality-guided
class MyWeakToStrongQG(QualityGuidedMixin, L.LightningModule):
    """Weak-to-strong consistency: confident weak-view predictions are the strong view's pseudolabels."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        lr: float = 1e-3,
        unsup_weight: float = 1.0,
        conf_threshold: float = 0.95,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        classes = logit_channels(num_classes)  # 1 (sigmoid) for binary, K (softmax) otherwise
        self.net = smp.Unet("resnet18", encoder_weights=None, in_channels=in_channels, classes=classes)
        mean = torch.tensor(IMAGENET_MEAN if in_channels == 3 else [0.449]).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD if in_channels == 3 else [0.226]).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - self.mean) / self.std)  # [0, 1] images in, normalised here

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        k = self.hparams.num_classes
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        loss_sup = segmentation_loss_per_image(self(labeled["image"]), labeled["mask"], k).mean()
        weak, strong = unlabeled["image"], unlabeled["image_strong"]
        with torch.no_grad():
            weak_logits = self(weak)
        pseudo = labels_from_logits(weak_logits, k)  # hard pseudolabels (B, H, W)
        keep = confident_pixels(weak_logits, k, self.hparams.conf_threshold)
        strong_logits = self(strong)
        per_image = segmentation_loss_per_image(strong_logits, pseudo, k, pixel_weights=keep)  # (B,)
        weights, _ = self.quality_weights(weak, pseudo)  # q**T * 1[q >= tau] per pseudolabel, no gradient
        loss_unsup = weighted_mean(per_image, weights)
        loss = loss_sup + self.hparams.unsup_weight * loss_unsup
        if self.qar_lambda > 0:  # QAR on soft probabilities; gradients flow through the frozen predictor
            probs = probs_from_logits(strong_logits, k)  # (B, K-1, H, W)
            loss = loss + self.qar_lambda * self.quality_regularization(strong, probs)
        self.log_dict({"train/loss_sup": loss_sup, "train/loss_unsup": loss_unsup}, batch_size=weak.shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=weak.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        logits = self(batch["image"])
        loss = segmentation_loss_per_image(logits, batch["mask"], self.hparams.num_classes).mean()
        self.log("val/loss", loss, sync_dist=True, batch_size=logits.shape[0])
        return {"preds": labels_from_logits(logits, self.hparams.num_classes)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)


# ---------------------------------------------------------------------------------------------- running it
def build_trainer(
    predictor: str | None,
    *,
    max_steps: int,
    mechanisms: Sequence[str] = ("qw",),
    default_root_dir: str = "runs/custom_module",
    **trainer_kwargs: Any,
) -> tuple[L.LightningModule, L.Trainer]:
    """The module (guided when ``predictor`` is given) and a Trainer with the guidance callback attached."""
    model = MyWeakToStrong() if predictor is None else MyWeakToStrongQG()
    callbacks = []
    if predictor is not None:
        # This module keeps its own unsup_weight and never reads qw_lambda (the log shows train/qw_applied,
        # not train/lambda_qw); qw_* only shape the schedule the callback states at the start.
        # The QAR weight follows the callback's schedule (paper: 0 for 30 epochs, ramp over 40 to 0.01);
        # compressed to optimizer steps so that a short run reaches it (the start of fit says when).
        callbacks.append(
            QualityReweightCallback(
                predictor=predictor,
                mechanisms=list(mechanisms),
                schedule_unit="step",
                qw_weight=model.hparams.unsup_weight,
                qw_warmup=0,
                qw_ramp=0,
                qar_warmup=max_steps // 4,
                qar_ramp=max_steps // 4,
            )
        )
    trainer = L.Trainer(
        max_steps=max_steps, callbacks=callbacks, default_root_dir=default_root_dir, **trainer_kwargs
    )
    return model, trainer


def main(argv: Sequence[str] | None = None) -> L.Trainer:
    from qg_lightning.data import SemiSupervisedDataModule

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predictor", default=None, help="quality predictor checkpoint; omit to train plain")
    parser.add_argument("--qar", action="store_true", help="also add QAR (guided only)")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--root", default=None, help="dataset folder (standard layout); default: synthetic")
    parser.add_argument("--out", default="runs/custom_module", help="run directory")
    args = parser.parse_args(argv)

    L.seed_everything(0)
    data = SemiSupervisedDataModule(
        root=args.root,
        synthetic_images=120,
        synthetic_size=args.image_size,
        image_size=args.image_size,
        labeled_fraction=0.1,
        batch_size=4,
        unlabeled_views="weak_strong",
        seed=0,
    )
    model, trainer = build_trainer(
        args.predictor,
        max_steps=args.max_steps,
        mechanisms=["qw", "qar"] if args.qar else ["qw"],
        default_root_dir=args.out,
        accelerator="cpu",
        devices=1,
        log_every_n_steps=5,
    )
    trainer.fit(model, datamodule=data)
    return trainer


if __name__ == "__main__":
    main()

"""Supervised segmentation baseline: the supervised part every SSL host in :mod:`qg_lightning.methods` reuses."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor, nn

from qg_lightning.losses import segmentation_loss_per_image
from qg_lightning.masks import check_num_classes, labels_from_logits
from qg_lightning.methods.networks import build_segmenter
from qg_lightning.methods.nonfinite import NONFINITE_POLICIES, NonFiniteError, check_finite
from qg_lightning.metrics import SegmentationMetrics
from qg_lightning.runs import run_dir

__all__ = ["SupervisedSegmenter", "labeled_part", "unlabeled_part"]

log = logging.getLogger(__name__)

_IMAGE_HINT = (
    "Check the dataset file(s) and the augmentation pipeline (e.g. a normalisation that divides by a zero std); "
    "images must be finite floats in [0, 1]."
)
_LOSS_HINT = (
    "The input images were finite, so the network or the loss diverged: lower `lr`, clip gradients "
    "(`trainer.gradient_clip_val: 1.0`), or train in float32 (`trainer.precision: 32`) if you use 16-bit."
)


def labeled_part(batch: Mapping[str, Any]) -> Mapping[str, Any]:
    """The labeled batch from a combined ``{"labeled": ..., "unlabeled": ...}`` batch, or the batch itself."""
    if "labeled" in batch:
        return batch["labeled"]
    if "image" in batch and "mask" in batch:
        return batch
    raise KeyError(
        f"Expected a batch with a 'labeled' entry (SemiSupervisedDataModule) or with 'image' and 'mask', "
        f"got keys {sorted(batch)}."
    )


def unlabeled_part(batch: Mapping[str, Any]) -> Mapping[str, Any]:
    """The unlabeled batch of a combined batch; a clear error when the DataModule gives none."""
    unlabeled = batch.get("unlabeled") if isinstance(batch, Mapping) else None
    if unlabeled is None:
        raise KeyError(
            "This semi-supervised method needs unlabeled batches, but the batch has none. Set "
            "`data.use_unlabeled: true` and a labeled subset (`data.n_labeled` or `data.labeled_fraction`), "
            "or add unlabeled images under ROOT/unlabeled/."
        )
    return unlabeled


class SupervisedSegmenter(L.LightningModule):
    """Supervised segmentation with any segmentation-models-pytorch architecture.

    Loss: 0.5 BCE-with-logits + 0.5 soft Dice per image (softmax CE + Dice for ``num_classes > 2``), averaged.
    Optimiser: AdamW with a per-step cosine schedule (optional linear warm-up) down to ``min_lr``.
    Validation logs ``val/loss`` and ``val/dice`` (``val/iou``, optionally ``val/hd95``). Testing writes
    ``test_metrics[_TAG].json`` (mean, std and n of per-image Dice, IoU and HD95) and ``test_per_image[_TAG].csv``
    into the run directory; ``TAG`` is :attr:`test_tag` (the CLI sets ``best`` and ``last``).

    Multi-class (``num_classes > 2``): validation and test use
    :class:`~qg_lightning.metrics.SegmentationMetrics` with ``absent_classes="skip"``: a class absent from an
    image's ground truth is left out of that image, so each per-class Dice is the mean over the images whose
    truth has the class (NaN-aware), never lifted by trivially right "absent" classes. They also log
    ``{stage}/dice_class{k}`` (and IoU / HD95) and the report gives per-class figures with ``n_absent`` and
    ``n_false_positive`` (a class predicted where the truth has none, which these means do not see). Binary
    results are unchanged (``"count"``: an image with an empty truth and an empty prediction scores 1.0).

    SSL hosts subclass it and override :meth:`training_loss` (not :meth:`training_step`, which applies the
    non-finite policy around it), calling :meth:`supervised_loss` for the labeled part.

    Non-finite values: every training step checks the input images before the forward pass (labeled, and the
    unlabeled views an SSL host reads), every loss term before backward (``'sup'``, ``'unsup'``, ``'qar'``,
    ``'total'``) and, in guided hosts, every predicted quality (checked inside
    :class:`~qg_lightning.guidance.QualityGuidedMixin`, which always raises
    :class:`~qg_lightning.methods.NonFiniteError`; the host then applies its policy). With
    ``nonfinite="raise"`` (default) training stops with a ``NonFiniteError`` naming the batch index, global
    step, tensor, NaN/Inf counts and sample ids. With ``"skip"`` the step is dropped instead: a warning, no
    backward, no optimizer step, no EMA-teacher update (:attr:`last_step_skipped`), and the running count is
    logged as ``train/nonfinite_skipped``. A step is never skipped silently when the forward pass already wrote
    NaN/Inf into a student buffer (BatchNorm statistics): that raises under either policy. ``"skip"`` needs a
    single process (Lightning cannot skip a step on one DDP rank only); it is refused at fit start otherwise.

    Args:
        arch: smp architecture name (``Unet``, ``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus``, ...).
        encoder_name: smp encoder name, or ``tu-<timm name>``.
        encoder_weights: ``None`` (random init) or e.g. ``"imagenet"`` (must be downloadable or cached).
        in_channels: image channels (1 grayscale, 3 RGB).
        num_classes: classes including background (2 = binary).
        lr: AdamW learning rate. weight_decay: AdamW weight decay. min_lr: cosine floor.
        warmup_steps: linear warm-up steps before the cosine decay.
        val_hd95: also compute HD95 at validation (slower; always computed at test).
        nonfinite: what a NaN/Inf in a training step does: ``"raise"`` (stop with
            :class:`~qg_lightning.methods.NonFiniteError`) or ``"skip"`` (warn and skip that step).

    Attributes:
        nonfinite_skipped: training steps skipped so far under ``nonfinite="skip"``.
        last_step_skipped: whether the latest training step was skipped (hosts with an EMA teacher then do
            not update it).

    Example:
        >>> model = SupervisedSegmenter(encoder_name="resnet18", in_channels=1)
        >>> batch = {"image": torch.rand(2, 1, 64, 64), "mask": torch.zeros(2, 64, 64, dtype=torch.long)}
        >>> loss, logits = model.supervised_loss(batch)
        >>> logits.shape, loss.ndim
        (torch.Size([2, 1, 64, 64]), 0)
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
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                f"`nonfinite` must be one of {list(NONFINITE_POLICIES)}, got {nonfinite!r}. Use 'raise' to stop "
                "at the first NaN/Inf (default) or 'skip' to skip such training steps."
            )
        if lr <= 0:
            raise ValueError(f"`lr` must be > 0, got {lr}.")
        if weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}.")
        if not 0 <= min_lr <= lr:
            raise ValueError(f"`min_lr` must be in [0, lr={lr}], got {min_lr}.")
        if warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be >= 0, got {warmup_steps}.")
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.model = self.build_network()
        absent = "skip" if num_classes > 2 else "count"  # multi-class: per class over images that have it
        self.val_metrics = SegmentationMetrics(
            num_classes=num_classes, include_hd95=val_hd95, absent_classes=absent
        )
        self.test_metrics = SegmentationMetrics(
            num_classes=num_classes, include_hd95=True, absent_classes=absent
        )
        self.test_tag = ""
        self._test_ids: list[str] = []
        self.nonfinite_skipped = 0
        self.last_step_skipped = False

    # ----------------------------------------------------------------------------------------------- network
    def build_network(self) -> nn.Module:
        """A fresh segmentation network with this module's settings (hosts with two networks call it twice)."""
        hp = self.hparams
        return build_segmenter(hp.arch, hp.encoder_name, hp.encoder_weights, hp.in_channels, hp.num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B, 1 or K, H, W)`` for ``[0, 1]`` images ``(B, C, H, W)``."""
        return self.model(images)

    def student_networks(self) -> list[nn.Module]:
        """The networks the optimiser trains (checked for non-finite buffers before a step is skipped)."""
        return [self.model]

    # ------------------------------------------------------------------------------------------------- losses
    def supervised_loss(
        self, labeled: Mapping[str, Any], logits: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean supervised loss over a labeled batch and the logits it used."""
        if logits is None:
            logits = self(labeled["image"])
        loss = segmentation_loss_per_image(logits, labeled["mask"], self.num_classes).mean()
        return loss, logits

    def training_loss(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """Checked, logged loss of one training batch (hosts override this, not :meth:`training_step`).

        Raises:
            NonFiniteError: a NaN/Inf in an input image or a loss term.
        """
        labeled = labeled_part(batch)
        self.check_finite_inputs(labeled)
        loss, _ = self.supervised_loss(labeled)
        self.check_finite_losses({"sup": loss})
        bs = labeled["image"].shape[0]
        self.log("train/loss_sup", loss, batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor | None:
        """:meth:`training_loss` under the ``nonfinite`` policy.

        Returns:
            The loss, or ``None`` when the step is skipped (``nonfinite="skip"``): Lightning then runs no
            backward and no optimizer step for this batch.

        Raises:
            NonFiniteError: under ``nonfinite="raise"``, or under ``"skip"`` when the forward pass already
                wrote non-finite values into a student buffer (the step cannot be undone).
        """
        self.last_step_skipped = False
        policy = self.hparams.get("nonfinite", "raise")
        try:
            loss: Tensor | None = self.training_loss(batch, batch_idx)
        except NonFiniteError as err:
            step = int(self.trainer.global_step) if self._trainer is not None else None
            err.add_context(batch_idx=batch_idx, global_step=step, host=type(self).__name__, policy=policy)
            if policy != "skip":
                raise
            self._skip_nonfinite_step(err)
            loss = None
        if policy == "skip":
            self.log("train/nonfinite_skipped", float(self.nonfinite_skipped), batch_size=1)
        return loss

    def check_finite_inputs(
        self, labeled: Mapping[str, Any] | None = None, unlabeled: Mapping[str, Any] | None = None
    ) -> None:
        """Raise :class:`~qg_lightning.methods.NonFiniteError` if an image of the batch has a NaN/Inf.

        Checks ``labeled["image"]``, ``unlabeled["image"]`` and ``unlabeled["image_strong"]`` (those given),
        with one device sync for all of them, before any forward pass (so BatchNorm statistics stay clean).
        """
        tensors: dict[str, Tensor | None] = {}
        ids: dict[str, Any] = {}
        for part, prefix in ((labeled, "labeled"), (unlabeled, "unlabeled")):
            if part is None:
                continue
            for key, name in (("image", f"{prefix} image"), ("image_strong", f"{prefix} strong-view image")):
                if key in part:
                    tensors[name], ids[name] = part[key], part.get("id")
        check_finite(tensors, ids=ids, hint=_IMAGE_HINT)

    def check_finite_losses(self, losses: Mapping[str, Tensor | None]) -> None:
        """Raise :class:`~qg_lightning.methods.NonFiniteError` if a loss term (``name -> scalar``) is NaN/Inf."""
        named = {(f"loss '{k}'" if k != "total" else "total loss"): v for k, v in losses.items()}
        check_finite(named, hint=_LOSS_HINT)

    def _skip_nonfinite_step(self, err: NonFiniteError) -> None:
        buffers = {
            f"student buffer '{name}'": buf
            for net in self.student_networks()
            for name, buf in net.named_buffers()
            if buf.is_floating_point()
        }
        try:
            check_finite(buffers)
        except NonFiniteError as bad:
            bad.hint = (
                f"This step cannot be skipped: the forward pass already wrote non-finite values into the "
                f"network's buffers (BatchNorm running statistics) while computing it ({err.what} was "
                f"non-finite). Resume from the last good checkpoint with a lower `lr`, gradient clipping "
                "(`trainer.gradient_clip_val: 1.0`) or float32 precision (`trainer.precision: 32`)."
            )
            bad.add_context(
                batch_idx=err.batch_idx, global_step=err.global_step, host=err.host, policy="skip"
            )
            raise bad from err
        self.nonfinite_skipped += 1
        self.last_step_skipped = True
        rank_zero_warn(
            f"{err} Skipped this training step (no optimizer step, no EMA-teacher update); "
            f"{self.nonfinite_skipped} step(s) skipped so far.",
            category=RuntimeWarning,
        )

    def on_fit_start(self) -> None:
        if self.hparams.get("nonfinite", "raise") == "skip" and self.trainer.world_size > 1:
            raise ValueError(
                f"`nonfinite='skip'` needs a single process, but this run has {self.trainer.world_size}: "
                "Lightning cannot skip an optimizer step on one DDP rank only. Use `nonfinite='raise'` (default)."
            )

    # -------------------------------------------------------------------------------------------- evaluation
    def evaluation_network(self) -> nn.Module:
        """The network used for validation, test and prediction (EMA hosts return their teacher)."""
        return self.model

    def _evaluate(
        self, batch: Mapping[str, Any], metrics: SegmentationMetrics, stage: str
    ) -> dict[str, Tensor]:
        labeled = labeled_part(batch)
        logits = self.evaluation_network()(labeled["image"])
        loss = segmentation_loss_per_image(logits, labeled["mask"], self.num_classes).mean()
        preds = labels_from_logits(logits, self.num_classes)
        metrics.update(preds, labeled["mask"])
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=preds.shape[0])
        return {"preds": preds, "logits": logits}

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluate(batch, self.val_metrics, "val")

    def _epoch_values(self, metrics: SegmentationMetrics) -> dict[str, Tensor]:
        """The figures logged at the end of an evaluation epoch (per-class ones for K > 2)."""
        values = metrics.compute()
        if self.num_classes > 2:
            values.update(metrics.compute_per_class())
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._epoch_values(self.val_metrics)
        for name, value in values.items():
            self.log(f"val/{name}", value, prog_bar=name == "dice")
        self.val_metrics.reset()

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        self._test_ids.extend(labeled_part(batch).get("id", []))
        return self._evaluate(batch, self.test_metrics, "test")

    def on_test_epoch_start(self) -> None:
        self._test_ids = []

    def on_test_epoch_end(self) -> None:
        values = self._epoch_values(self.test_metrics)
        for name, value in values.items():
            self.log(f"test/{name}", value)
        summary = self.test_metrics.summary()
        per_image = {k: v.tolist() for k, v in self.test_metrics.per_image().items()}
        if self.num_classes > 2:
            for name, table in self.test_metrics.per_class().items():
                per_image.update(
                    {f"{name}_class{c + 1}": table[:, c].tolist() for c in range(table.shape[1])}
                )
        self.test_metrics.reset()
        if self._trainer is not None:
            self._write_test_report(run_dir(self.trainer), summary, per_image)  # run_dir: on every rank

    @rank_zero_only
    def _write_test_report(self, out: Path, summary: dict, per_image: dict[str, list[float]]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        suffix = f"_{self.test_tag}" if self.test_tag else ""
        ckpt = getattr(self.trainer, "ckpt_path", None)
        report = {
            "metrics": summary,
            "checkpoint": str(ckpt) if ckpt else None,
            "tag": self.test_tag or None,
            "num_classes": self.num_classes,
            "hd95_unit": "pixels",
            "absent_classes": self.test_metrics.absent_classes,
        }
        if self.test_metrics.absent_classes == "skip":
            report["absent_classes_rule"] = (
                "a class absent from an image's ground truth is left out of that image: per-class figures are "
                "means over the images whose truth has the class (n), n_absent images lack it, n_false_positive "
                "of them have it predicted; an image's value is the mean over the classes its truth has"
            )
        (out / f"test_metrics{suffix}.json").write_text(json.dumps(report, indent=2))
        n = len(next(iter(per_image.values()), []))
        if len(self._test_ids) == n:
            with open(out / f"test_per_image{suffix}.csv", "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["id", *per_image])
                for i, sample_id in enumerate(self._test_ids):
                    writer.writerow([sample_id, *(f"{per_image[k][i]:.6f}" for k in per_image)])
        log.info("Test metrics written to %s", out / f"test_metrics{suffix}.json")

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        images = batch["image"] if "image" in batch else labeled_part(batch)["image"]
        logits = self.evaluation_network()(images)
        return {"id": batch.get("id"), "preds": labels_from_logits(logits, self.num_classes)}

    # --------------------------------------------------------------------------------------------- optimiser
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimiser updates (hosts with a teacher or two students override this)."""
        return (p for p in self.model.parameters() if p.requires_grad)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer is not None else 1
        warmup = min(hp.warmup_steps, max(total - 1, 0))
        floor = hp.min_lr / hp.lr

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

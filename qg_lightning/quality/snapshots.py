"""Snapshot masks: predictions of partially trained ("weak") segmentation models (METHOD.md, Phase 1).

Two pieces:

* :class:`SnapshotCallback` saves a weights-only snapshot of the module's segmentation network after chosen
  epochs (METHOD.md: 1, 3, 5, 10, 15, 20) while a weak model trains (``examples/configs/snapshots/*.yaml``).
* :func:`load_snapshot` / :func:`predict_snapshot_masks` rebuild a snapshot network and run it, batched, on the
  training device. :class:`~qg_lightning.quality.datamodule.QualityDataModule` predicts every training image with
  every snapshot once and then applies each sample's spatial augmentation to image, truth and snapshot mask
  together, so a snapshot mask costs no network pass per sample.

Snapshots trained on other folds of the labeled data (``fold`` in the file) are only used for images outside
their training fold, so their errors on the predictor's training images are honest, not memorised.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn
from typing_extensions import override

from qg_lightning.checkpoint import atomic_save, load_checkpoint
from qg_lightning.masks import foreground_from_labels, labels_from_logits
from qg_lightning.methods.networks import SegmentationNet
from qg_lightning.runs import run_dir

__all__ = [
    "SNAPSHOT_FORMAT",
    "Snapshot",
    "SnapshotCallback",
    "find_snapshots",
    "load_snapshot",
    "predict_snapshot_masks",
    "predict_snapshot_probs",
    "threshold_snapshot_probs",
]

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "qg_lightning.snapshot/1"
_NET_KEYS = ("arch", "encoder_name", "in_channels", "num_classes")


@dataclass(frozen=True)
class Snapshot:
    """A loaded snapshot: the network (eval mode, frozen), the epoch it was taken at, and the ids it trained on."""

    path: Path
    net: SegmentationNet
    epoch: int
    train_ids: frozenset[str]
    fold: int | None


class SnapshotCallback(L.Callback):
    """Save the segmentation network after the given epochs (1-based, as in METHOD.md) for snapshot masks.

    Files are ``<dirpath>/snapshot_epoch{E:03d}.pt`` (or ``..._fold{F}_epoch...`` with ``fold``), written
    atomically and readable with ``weights_only=True``: network hyper-parameters, ``state_dict`` of
    ``pl_module.model``, the epoch, and the ids of the training images (so a quality predictor never gets
    snapshot masks of images the snapshot was trained on, unless it asks for them).

    Args:
        epochs: epochs after which to save (``1`` = after the first epoch).
        dirpath: output folder; ``None`` = ``<run dir>/snapshots``.
        fold: fold index written into the snapshot (cross-fitted snapshots), or ``None``.
    """

    def __init__(self, epochs: Sequence[int] = (1, 3, 5, 10, 15, 20), dirpath: str | None = None,
                 fold: int | None = None) -> None:  # fmt: skip
        epochs = sorted({int(e) for e in epochs})
        if not epochs or epochs[0] < 1:
            raise ValueError(f"`epochs` must be a non-empty list of epochs >= 1, got {list(epochs)}.")
        self.epochs = epochs
        self.dirpath = dirpath
        self.fold = fold
        self.saved: list[str] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(epochs=self.epochs, fold=self.fold)

    def _dir(self, trainer: L.Trainer) -> Path:
        """Output folder; collective under DDP when ``dirpath`` is None (call it on every rank)."""
        if self.dirpath is not None:
            return Path(self.dirpath)
        return run_dir(trainer) / "snapshots"

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch in self.epochs:
            self._save(trainer, pl_module, epoch, self._dir(trainer))

    @rank_zero_only
    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int, out: Path) -> None:
        net = getattr(pl_module, "model", None)
        if not isinstance(net, SegmentationNet):
            raise TypeError(
                f"SnapshotCallback needs a module whose `model` is a SegmentationNet (e.g. SupervisedSegmenter), "
                f"got {type(net).__name__}."
            )
        hp = {k: pl_module.hparams[k] for k in (*_NET_KEYS, "encoder_weights") if k in pl_module.hparams}
        dm = trainer.datamodule
        train_ids = getattr(dm, "training_labeled_ids", None)
        if train_ids is None:
            train_ids = getattr(getattr(dm, "split", None), "labeled", None) or []
        train_ids = sorted(train_ids)
        fold = self.fold if self.fold is not None else getattr(dm, "hparams", {}).get("fold")
        name = (
            f"snapshot_fold{fold}_epoch{epoch:03d}.pt"
            if fold is not None
            else f"snapshot_epoch{epoch:03d}.pt"
        )
        path = out / name
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        atomic_save(
            {"format": SNAPSHOT_FORMAT, "hyper_parameters": hp, "state_dict": state, "epoch": epoch,
             "train_ids": train_ids, "fold": fold},
            path,
        )  # fmt: skip
        self.saved.append(str(path))
        log.info("Saved snapshot %s", path)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"saved": list(self.saved)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.saved = list(state_dict.get("saved", []))


def find_snapshots(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Snapshot files from a folder (``*.pt``, searched recursively), a single file, or a list of either."""
    if isinstance(source, (str, Path)):
        source = [source]
    found: list[Path] = []
    for item in source:
        p = Path(item)
        if p.is_dir():
            found.extend(sorted(p.rglob("snapshot*.pt")))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(
                f"Snapshot path '{p}' does not exist (expected a snapshot .pt file or a folder)."
            )
    if not found:
        raise FileNotFoundError(
            f"No snapshot files (snapshot*.pt) under {[str(s) for s in source]}. Train a weak model with "
            f"SnapshotCallback first (see examples/configs/snapshots/)."
        )
    return found


def load_snapshot(path: str | Path, *, map_location: str | torch.device = "cpu", in_channels: int | None = None,
                  num_classes: int | None = None) -> Snapshot:  # fmt: skip
    """Rebuild a snapshot network from a file written by :class:`SnapshotCallback` (``weights_only=True``)."""
    ckpt = load_checkpoint(path, map_location=map_location, what="snapshot")
    if ckpt.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(
            f"'{path}' is not a qg_lightning snapshot (format {ckpt.get('format')!r}, expected {SNAPSHOT_FORMAT!r}). "
            f"Snapshots are written by qg_lightning.quality.SnapshotCallback."
        )
    hp: Mapping[str, Any] = ckpt["hyper_parameters"]
    for key, want in (("in_channels", in_channels), ("num_classes", num_classes)):
        if want is not None and hp.get(key) != want:
            raise ValueError(
                f"Snapshot '{path}' was trained with {key}={hp.get(key)}, but the data has {key}={want}."
            )
    net = SegmentationNet(hp["arch"], hp["encoder_name"], None, hp["in_channels"], hp["num_classes"])
    net.load_state_dict(ckpt["state_dict"])
    net.eval().requires_grad_(False)
    return Snapshot(
        Path(path), net, int(ckpt.get("epoch", 0)), frozenset(ckpt.get("train_ids", [])), ckpt.get("fold")
    )


@torch.no_grad()
def predict_snapshot_masks(
    net: nn.Module, images: Tensor, num_classes: int, *, batch_size: int = 32
) -> Tensor:
    """Hard foreground masks ``(N, K-1, H, W)`` (``uint8``) of one snapshot on ``[0, 1]`` images ``(N, C, H, W)``.

    Images are processed in chunks of ``batch_size`` on their own device.

    Example:
        >>> net = SegmentationNet("Unet", "resnet18", None, 1, 2).eval()
        >>> predict_snapshot_masks(net, torch.rand(3, 1, 32, 32), 2).shape
        torch.Size([3, 1, 32, 32])
    """
    out = []
    for start in range(0, images.shape[0], batch_size):
        logits = net(images[start : start + batch_size])
        out.append(
            foreground_from_labels(labels_from_logits(logits, num_classes), num_classes).to(torch.uint8)
        )
    return (
        torch.cat(out)
        if out
        else images.new_zeros((0, num_classes - 1, *images.shape[-2:]), dtype=torch.uint8)
    )


@torch.no_grad()
def predict_snapshot_probs(
    net: nn.Module, images: Tensor, num_classes: int, *, batch_size: int = 32
) -> Tensor:
    """Foreground probabilities ``(N, K-1, H, W)`` of one snapshot, quantised to ``uint8`` (0-255).

    Sigmoid of the single logit for binary segmenters, softmax without the background channel for multi-class
    ones. Kept instead of hard masks when snapshot masks are binarised at a random threshold per sample
    (:func:`threshold_snapshot_probs`), so one snapshot yields many masks whose errors lie where it was unsure.

    Example:
        >>> net = SegmentationNet("Unet", "resnet18", None, 1, 2).eval()
        >>> p = predict_snapshot_probs(net, torch.rand(3, 1, 32, 32), 2)
        >>> p.shape, p.dtype
        (torch.Size([3, 1, 32, 32]), torch.uint8)
    """
    out = []
    for start in range(0, images.shape[0], batch_size):
        logits = net(images[start : start + batch_size]).float()
        probs = torch.sigmoid(logits) if num_classes == 2 else torch.softmax(logits, dim=1)[:, 1:]
        out.append(probs.mul(255.0).round_().to(torch.uint8))
    return (
        torch.cat(out)
        if out
        else images.new_zeros((0, num_classes - 1, *images.shape[-2:]), dtype=torch.uint8)
    )


def threshold_snapshot_probs(probs: Tensor, thresholds: Tensor) -> Tensor:
    """Hard foreground masks from quantised snapshot probabilities, one threshold per sample.

    A pixel is foreground where the total foreground probability reaches the sample's threshold; for
    multi-class masks it goes to the most probable foreground class, so classes never overlap. With threshold
    0.5 and a binary snapshot this is the snapshot's own hard mask.

    Args:
        probs: ``(B, K-1, H, W)`` ``uint8`` from :func:`predict_snapshot_probs`.
        thresholds: ``(B,)`` float in ``(0, 1)``.

    Returns:
        ``(B, K-1, H, W)`` float masks in {0, 1}.

    Example:
        >>> probs = torch.tensor([[[[10, 100, 200]]], [[[10, 100, 200]]]], dtype=torch.uint8)
        >>> threshold_snapshot_probs(probs, torch.tensor([0.3, 0.7])).flatten(1).tolist()
        [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
    """
    cut = (thresholds.to(torch.float32) * 255.0).view(-1, 1, 1, 1)
    p = probs.to(torch.float32)
    if p.shape[1] == 1:
        return (p >= cut).to(torch.float32)
    region = p.sum(1, keepdim=True) >= cut
    best = F.one_hot(p.argmax(1), p.shape[1]).permute(0, 3, 1, 2).to(torch.bool)
    return (best & region).to(torch.float32)


def describe_snapshots(snapshots: Sequence[Snapshot]) -> str:
    """One JSON line summarising loaded snapshots (for logs and reports)."""
    return json.dumps([{"path": str(s.path), "epoch": s.epoch, "fold": s.fold, "n_train": len(s.train_ids)}
                       for s in snapshots])  # fmt: skip

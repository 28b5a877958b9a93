"""The quality predictor g(x, m) -> q in [0, 1] (Phase 1 of QG-SSL [0]) and its safe loader.

g reads an image and candidate foreground mask(s) and predicts the Dice coefficient of each foreground class
of the candidate against the unseen ground truth. It is trained here (:class:`QualityPredictor`), then frozen
and used by guidance (QAR feeds it soft probabilities and back-propagates through it; PL-QW feeds it hard
pseudolabels without gradient). :func:`load_quality_predictor` is the only way guidance should read it back.

[0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation", 2026.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import PearsonCorrCoef, SpearmanCorrCoef

from qg_lightning._standalone import standalone
from qg_lightning.checkpoint import load_checkpoint
from qg_lightning.masks import check_num_classes
from qg_lightning.quality.backbones import BACKBONE_ALIASES, BACKBONES, build_backbone, resolve_backbone_name

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FlipTTA",
    "QualityEnsemble",
    "QualityPredictor",
    "error_map_loss",
    "error_map_targets",
    "load_quality_predictor",
    "load_quality_predictors",
]

#: ImageNet RGB statistics (what the timm backbones expect).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Standard deviation of the last linear layer's initial weights: the logit starts near 0 (q near 0.5), so the
#: sigmoid is not saturated (METHOD.md: a Kaiming-initialised last layer saturates at 1.0 and never trains).
LAST_LAYER_INIT_STD = 1e-3

_BATCH_KEYS = ("image", "candidate", "quality")


def _default_stats(
    stats: Sequence[float] | None, imagenet: Sequence[float], in_channels: int, name: str
) -> list:
    """Resolve ``image_mean`` / ``image_std`` to a list of ``in_channels`` floats."""
    if stats is None:
        if in_channels == len(imagenet):
            return [float(v) for v in imagenet]
        return [round(sum(imagenet) / len(imagenet), 6)] * in_channels
    if isinstance(stats, (str, bytes)) or not isinstance(stats, Sequence):
        raise ValueError(f"`{name}` must be a sequence of {in_channels} floats or None, got {stats!r}.")
    values = []
    for v in stats:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"`{name}` must hold finite numbers, got {list(stats)!r}.")
        values.append(float(v))
    if len(values) != in_channels:
        raise ValueError(
            f"`{name}` has {len(values)} values but `in_channels` is {in_channels}: give one value per image "
            "channel, or leave it unset (None) for the ImageNet statistics."
        )
    return values


def _check_number(
    value: Any, name: str, *, low: float, high: float = math.inf, low_open: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value < high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"`{name}` must be a number in {bracket}{low}, {high}), got {value!r}.")


def _check_int(value: Any, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``torch.is_autocast_enabled(device_type)`` needs torch 2.4)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: separate CPU and CUDA queries
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class QualityPredictor(L.LightningModule):
    """Quality predictor g(x, m): the Dice of each foreground class of a candidate mask, in [0, 1] [0].

    Network (paper): a timm classification backbone whose first convolution takes the image channels plus
    ``K - 1`` mask channels (see :func:`~qg_lightning.quality.backbones.build_backbone` for the
    initialisation), global average pooling, then ``Dropout(dropout) -> Linear(F, hidden) -> ReLU ->
    Dropout(dropout / 2) -> Linear(hidden, K - 1) -> sigmoid``. The last layer starts small (normal, std
    ``1e-3``, bias 0) so the initial outputs sit near 0.5 instead of saturating. The image is normalised
    inside :meth:`forward` (buffers ``image_mean`` / ``image_std``); the masks are not normalised.
    :meth:`forward` is differentiable with respect to the masks, which is what QAR needs.

    Batches for ``fit`` / ``validate`` / ``test`` are dicts with ``image`` ``(B, C, H, W)`` float in [0, 1],
    ``candidate`` ``(B, K-1, H, W)`` float masks and ``quality`` ``(B, K-1)`` float true per-class Dice. The
    loss is SmoothL1 (``smooth_l1_beta``). Logged: ``train/loss``; ``val/loss``, ``val/mae``, ``val/pearson``,
    ``val/spearman`` (correlations over all flattened per-class values of the epoch; an undefined correlation,
    e.g. from constant predictions, is logged as 0.0 with a warning); the same with ``test/``.

    Optimiser (paper): AdamW (``lr``, ``weight_decay``) with cosine warm restarts (``t0`` epochs,
    ``x t_mult``, ``eta_min``) stepped once per epoch. Gradient clipping, mixed precision, early stopping and
    best-checkpoint selection belong to the Trainer; the paper's settings as a LightningCLI config::

        trainer:
          max_epochs: 150
          gradient_clip_val: 1.0
          precision: 16-mixed
          callbacks:
            - class_path: lightning.pytorch.callbacks.EarlyStopping
              init_args: {monitor: val/loss, mode: min, patience: 25}
            - class_path: qg_lightning.callbacks.ModelCheckpoint
              init_args: {monitor: val/loss, mode: min, save_top_k: 1, save_last: true}
        model:
          class_path: qg_lightning.quality.QualityPredictor
          init_args: {backbone: resnet18, in_channels: 3, num_classes: 2}

    Read a trained predictor back with :func:`load_quality_predictor` (never ``load_from_checkpoint``, which
    unpickles arbitrary objects).

    Args:
        backbone: a name from :data:`~qg_lightning.quality.backbones.BACKBONES` or an alias (paper: resnet18).
        in_channels: image channels, 1 or 3.
        num_classes: K, background included (2 = binary); the predictor outputs ``K - 1`` qualities.
        pretrained: start the backbone from ImageNet weights found in the local timm cache (never downloaded
            by qg_lightning; see :mod:`~qg_lightning.quality.backbones`).
        image_mean: per-channel mean used to normalise images; None = ImageNet (averaged to one value for
            grayscale). Saved in the hyper-parameters as a list.
        image_std: per-channel standard deviation, likewise.
        dropout: dropout before the hidden layer; the second dropout is ``dropout / 2`` (paper: 0.15, 0.075).
        hidden: width of the hidden layer (paper: 256).
        lr: AdamW learning rate (paper: 3e-4).
        weight_decay: AdamW weight decay (paper: 5e-4).
        t0: epochs of the first cosine cycle (paper: 10).
        t_mult: cycle length multiplier (paper: 2).
        eta_min: minimum learning rate (paper: 1e-6).
        smooth_l1_beta: SmoothL1 transition point (paper: 1.0).
        channels_last: keep the backbone and its input in channels-last memory format (measured about 1.2x
            faster training of ResNet-18 at 128 px on CPU; usually faster on GPUs with mixed precision too).
        error_map_weight: weight of an auxiliary training loss (0 = off, the paper's predictor): a 1x1
            convolution on the backbone's last feature grid predicts, per cell and foreground class, the
            fraction of false-positive and of false-negative pixels of the candidate (binary cross-entropy
            against the pooled error maps). Dense supervision on *where* the candidate is wrong; it needs
            training batches with ``truth`` (``(B, K-1, H, W)``), which ``QualityDataModule`` provides. The
            predicted quality and inference cost are unchanged.
        calibration: ``[scale, shift]`` applied to the output logit, ``q = sigmoid(scale * z + shift)``: a
            monotone correction fitted after training by ``qg-lightning calibrate-predictor`` on candidates the
            predictor never trained on (ranking unchanged). ``None``: uncalibrated.

    Attributes:
        in_channels: image channels expected by :meth:`forward`.
        num_classes: K.
        num_foreground: ``K - 1``, the number of mask channels and of outputs.
        backbone: the feature extractor; ``head``: the regression head.

    Raises:
        ValueError: an argument is out of range (the message names it).

    Example:
        >>> g = QualityPredictor(backbone="resnet18", in_channels=3, num_classes=2).eval()
        >>> gen = torch.Generator().manual_seed(0)
        >>> images = torch.rand(2, 3, 32, 32, generator=gen)
        >>> masks = (torch.rand(2, 1, 32, 32, generator=gen) > 0.5).float()
        >>> q = g(images, masks)
        >>> q.shape, bool(((q - 0.5).abs() < 0.05).all())
        (torch.Size([2, 1]), True)

    [0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation", 2026.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 3,
        num_classes: int = 2,
        pretrained: bool = False,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        dropout: float = 0.15,
        hidden: int = 256,
        lr: float = 3e-4,
        weight_decay: float = 5e-4,
        t0: int = 10,
        t_mult: int = 2,
        eta_min: float = 1e-6,
        smooth_l1_beta: float = 1.0,
        channels_last: bool = False,
        error_map_weight: float = 0.0,
        calibration: list[float] | None = None,
    ) -> None:
        super().__init__()
        try:
            resolve_backbone_name(backbone)
        except KeyError:
            raise ValueError(
                f"`backbone` must be one of {sorted(BACKBONES)} (aliases: {sorted(BACKBONE_ALIASES)}), "
                f"got {backbone!r}."
            ) from None
        if isinstance(in_channels, bool) or in_channels not in (1, 3):
            raise ValueError(f"`in_channels` must be 1 (grayscale) or 3 (RGB), got {in_channels!r}.")
        check_num_classes(num_classes)
        for name, flag in (("pretrained", pretrained), ("channels_last", channels_last)):
            if not isinstance(flag, bool):
                raise ValueError(f"`{name}` must be a bool, got {flag!r}.")
        mean = _default_stats(image_mean, IMAGENET_MEAN, in_channels, "image_mean")
        std = _default_stats(image_std, IMAGENET_STD, in_channels, "image_std")
        if any(s <= 0 for s in std):
            raise ValueError(f"`image_std` must be positive, got {std!r}.")
        _check_number(dropout, "dropout", low=0.0, high=1.0)
        _check_int(hidden, "hidden", minimum=1)
        _check_number(lr, "lr", low=0.0, low_open=True)
        _check_number(weight_decay, "weight_decay", low=0.0)
        _check_int(t0, "t0", minimum=1)
        _check_int(t_mult, "t_mult", minimum=1)
        _check_number(eta_min, "eta_min", low=0.0)
        _check_number(smooth_l1_beta, "smooth_l1_beta", low=0.0)
        _check_number(error_map_weight, "error_map_weight", low=0.0)
        if calibration is not None:
            ok = isinstance(calibration, Sequence) and len(calibration) == 2
            ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in calibration)
            if not ok or not all(math.isfinite(v) for v in calibration) or calibration[0] <= 0:
                raise ValueError(
                    f"`calibration` must be null or [scale, shift] with scale > 0 (finite numbers), got "
                    f"{calibration!r}. Fit it with `qg-lightning calibrate-predictor`."
                )
            calibration = [float(v) for v in calibration]

        self.save_hyperparameters()
        # Store the resolved statistics as plain lists: the checkpoint then says exactly how images were
        # normalised, and everything in it stays loadable with torch.load(weights_only=True).
        self.hparams["image_mean"] = mean
        self.hparams["image_std"] = std
        self.hparams["calibration"] = calibration

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_foreground = num_classes - 1
        self.backbone, features = build_backbone(
            backbone, in_channels=in_channels, mask_channels=self.num_foreground, pretrained=pretrained
        )
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout / 2),
            nn.Linear(hidden, self.num_foreground),
        )
        # Auxiliary error-map head (training only): FP and FN fractions per cell for each foreground class.
        self.error_head = (
            nn.Conv2d(int(self.backbone.num_features), 2 * self.num_foreground, 1)
            if error_map_weight > 0
            else None
        )
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        last = self.head[-1]
        nn.init.normal_(last.weight, mean=0.0, std=LAST_LAYER_INIT_STD)
        nn.init.zeros_(last.bias)
        # Non-persistent: the statistics live in the hyper-parameters; the state_dict holds learned weights.
        self.register_buffer("image_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

        with warnings.catch_warnings():  # Spearman warns that it keeps all values; that is intended here
            warnings.simplefilter("ignore", UserWarning)
            self.val_pearson = PearsonCorrCoef()
            self.val_spearman = SpearmanCorrCoef()
            self.test_pearson = PearsonCorrCoef()
            self.test_spearman = SpearmanCorrCoef()

    # ------------------------------------------------------------------ network
    def _check_inputs(self, images: Tensor, masks: Tensor) -> None:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != self.in_channels:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(
                f"`images` must have shape (B, {self.in_channels}, H, W) (in_channels={self.in_channels}), "
                f"got {shape}. This predictor was built for {self.in_channels}-channel images."
            )
        if not isinstance(masks, Tensor) or masks.ndim != 4 or masks.shape[1] != self.num_foreground:
            shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise ValueError(
                f"`masks` must have shape (B, {self.num_foreground}, H, W) (one channel per foreground "
                f"class, num_classes={self.num_classes}), got {shape}. Use "
                "qg_lightning.masks.foreground_from_labels or probs_from_logits to build them."
            )
        if masks.shape[0] != images.shape[0] or masks.shape[2:] != images.shape[2:]:
            raise ValueError(
                f"`images` {tuple(images.shape)} and `masks` {tuple(masks.shape)} must share batch size and "
                "spatial size."
            )

    def forward(self, images: Tensor, masks: Tensor) -> Tensor:
        """Predicted per-class quality of ``masks`` for ``images``; differentiable in both inputs.

        Args:
            images: ``(B, C, H, W)`` float in [0, 1], ``C == in_channels``.
            masks: ``(B, K-1, H, W)`` float, hard {0, 1} or soft probabilities in [0, 1] (not normalised).

        Returns:
            ``(B, K-1)`` predicted Dice in [0, 1].

        Raises:
            ValueError: wrong channel counts or mismatched shapes.

        Example:
            >>> g = QualityPredictor(num_classes=3).eval()
            >>> g(torch.rand(1, 3, 32, 32), torch.zeros(1, 2, 32, 32)).shape
            torch.Size([1, 2])
        """
        return self._quality(self._head(self.backbone(self._input(images, masks))))

    def _head(self, pooled: Tensor) -> Tensor:
        """Quality logits from pooled features. Under mixed precision (autocast) the small head runs in float32,
        so predictions keep float32 resolution: bfloat16 spaces values near 1 by 1/256 and float16 saturates
        the sigmoid's input sooner."""
        device = pooled.device.type
        if _autocast_enabled(device) and self.head[-1].weight.dtype == torch.float32:
            with torch.autocast(device, enabled=False):
                return self.head(pooled.float())
        return self.head(pooled)

    def _quality(self, logits: Tensor) -> Tensor:
        calibration = self.hparams.get("calibration")
        if calibration is not None:
            logits = calibration[0] * logits + calibration[1]
        return torch.sigmoid(logits)

    def _input(self, images: Tensor, masks: Tensor) -> Tensor:
        self._check_inputs(images, masks)
        x = (images - self.image_mean) / self.image_std
        x = torch.cat([x, masks.to(x.dtype)], dim=1)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward_with_error_maps(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted quality ``(B, K-1)`` and error-map logits ``(B, 2 (K-1), h, w)`` on the last feature grid.

        Channels ``2c`` and ``2c + 1`` are the false-positive and false-negative fractions of class ``c``.
        Only for predictors built with ``error_map_weight > 0``.

        Example:
            >>> g = QualityPredictor(error_map_weight=0.5)
            >>> q, maps = g.forward_with_error_maps(torch.rand(1, 3, 64, 64), torch.zeros(1, 1, 64, 64))
            >>> q.shape, maps.shape
            (torch.Size([1, 1]), torch.Size([1, 2, 2, 2]))
        """
        if self.error_head is None:
            raise ValueError("This predictor has no error-map head: build it with `error_map_weight` > 0.")
        fmap = self.backbone.forward_features(self._input(images, masks))
        pooled = self.backbone.forward_head(fmap)
        return self._quality(self._head(pooled)), self.error_head(fmap)

    @torch.no_grad()
    def predict_quality(self, images: Tensor, masks: Tensor) -> Tensor:
        """Batch scoring without gradient, in eval mode (the previous train/eval mode is restored).

        Use :meth:`forward` (or call the module) where a gradient is needed, e.g. for QAR.

        Args:
            images: ``(B, C, H, W)`` float in [0, 1].
            masks: ``(B, K-1, H, W)`` float.

        Returns:
            ``(B, K-1)`` predicted Dice in [0, 1], detached.

        Example:
            >>> g = QualityPredictor()
            >>> q = g.predict_quality(torch.rand(2, 3, 32, 32), torch.ones(2, 1, 32, 32))
            >>> q.shape, q.requires_grad, g.training
            (torch.Size([2, 1]), False, True)
        """
        was_training = self.training
        self.eval()
        try:
            return self(images, masks)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ steps
    def _unpack(self, batch: Any, stage: str) -> tuple[Tensor, Tensor, Tensor | None]:
        if isinstance(batch, Mapping):
            missing = [k for k in ("image", "candidate") if k not in batch]
            if missing or (stage != "predict" and "quality" not in batch):
                raise ValueError(
                    f"{stage} batch must be a dict with keys {list(_BATCH_KEYS)} (quality optional for "
                    f"predict), got keys {sorted(batch)}."
                )
            return batch["image"], batch["candidate"], batch.get("quality")
        if stage == "predict" and isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return batch[0], batch[1], None
        raise ValueError(
            f"{stage} batch must be a dict with keys {list(_BATCH_KEYS)}, got {type(batch).__name__}."
        )

    def _loss(self, batch: Any, stage: str) -> tuple[Tensor, Tensor, Tensor, int]:
        images, masks, target = self._unpack(batch, stage)
        aux = stage == "train" and self.error_head is not None
        if aux:
            truth = batch.get("truth") if isinstance(batch, Mapping) else None
            if truth is None or truth.shape != masks.shape:
                raise ValueError(
                    f"`error_map_weight`={self.hparams.error_map_weight} needs training batches with `truth`, the "
                    f"ground-truth foreground masks of shape {tuple(masks.shape)} (QualityDataModule provides "
                    f"them), got {None if truth is None else tuple(truth.shape)}. Set `error_map_weight: 0` to "
                    "train on quality targets only."
                )
            preds, maps = self.forward_with_error_maps(images, masks)
        else:
            preds = self(images, masks)
        if target.shape != preds.shape:
            raise ValueError(
                f"`quality` targets must have shape {tuple(preds.shape)} (B, K-1), got {tuple(target.shape)}."
            )
        target = target.to(preds.dtype)
        loss = F.smooth_l1_loss(preds, target, beta=self.hparams.smooth_l1_beta)
        if aux:
            loss = loss + self.hparams.error_map_weight * error_map_loss(maps, masks, truth)
        return loss, preds, target, images.shape[0]

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        """SmoothL1 between predicted and true quality; logs ``train/loss``."""
        loss, _, _, batch_size = self._loss(batch, "train")
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
        return loss

    def _eval_step(self, batch: Mapping[str, Tensor], stage: str) -> Tensor:
        loss, preds, target, batch_size = self._loss(batch, stage)
        mae = (preds - target).abs().mean()
        # averaged over every process under DDP, so early stopping and checkpointing see one value everywhere
        self.log(
            f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size,
            sync_dist=True,
        )  # fmt: skip
        self.log(f"{stage}/mae", mae, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        pearson, spearman = self._correlations(stage)
        pearson.update(preds.detach().flatten().float(), target.flatten().float())
        spearman.update(preds.detach().flatten().float(), target.flatten().float())
        return loss

    def _correlations(self, stage: str) -> tuple[PearsonCorrCoef, SpearmanCorrCoef]:
        if stage == "val":
            return self.val_pearson, self.val_spearman
        return self.test_pearson, self.test_spearman

    def _log_correlations(self, stage: str) -> None:
        for name, metric in zip(("pearson", "spearman"), self._correlations(stage), strict=True):
            if metric.update_count == 0:
                continue
            with warnings.catch_warnings():  # torchmetrics warns on zero variance; we warn once below
                warnings.simplefilter("ignore", UserWarning)
                value = metric.compute()
            metric.reset()
            if not bool(torch.isfinite(value)):
                rank_zero_warn(
                    f"{stage}/{name} is undefined this epoch (fewer than 2 values, or constant predictions "
                    "or targets); logging 0.0."
                )
                value = torch.zeros_like(value)
            self.log(f"{stage}/{name}", value, sync_dist=True)

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        """Logs ``val/loss`` and ``val/mae``; accumulates values for ``val/pearson`` and ``val/spearman``."""
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_correlations("val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        """Logs ``test/loss`` and ``test/mae``; accumulates ``test/pearson`` and ``test/spearman``."""
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_correlations("test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Predicted quality ``(B, K-1)`` for a dict batch (image, candidate) or an (images, masks) pair."""
        images, masks, _ = self._unpack(batch, "predict")
        return self(images, masks)

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with cosine warm restarts, stepped once per epoch."""
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=hp.t0, T_mult=hp.t_mult, eta_min=hp.eta_min
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class FlipTTA(nn.Module):
    """Test-time augmentation: the mean prediction over the identity, horizontal, vertical and both flips.

    The Dice of a mask is invariant to flipping image and mask together, so the four predictions estimate the
    same number; averaging them costs 4 forward passes and typically improves the ranking a little (measured on
    Kvasir-SEG real-model masks: Pearson 0.443 -> 0.478, see benchmarks/RESULTS.md). Used by
    ``qg-lightning evaluate-predictor --tta`` and ``qg-lightning score --tta``; wrap a predictor yourself for
    other uses. The wrapped predictor's train/eval mode and gradients are left as they are.

    Example:
        >>> g = QualityPredictor().eval()
        >>> tta = FlipTTA(g)
        >>> images, masks = torch.rand(2, 3, 32, 32), torch.ones(2, 1, 32, 32)
        >>> manual = sum(g(images.flip(d), masks.flip(d)) for d in ([], [-1], [-2], [-2, -1])) / 4
        >>> bool(torch.allclose(tta(images, masks), manual, atol=1e-6)), tta.num_classes
        (True, 2)
    """

    _FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))

    def __init__(self, predictor: nn.Module) -> None:
        super().__init__()
        self.predictor = predictor

    @property
    def in_channels(self) -> int:
        return self.predictor.in_channels

    @property
    def num_classes(self) -> int:
        return self.predictor.num_classes

    @property
    def num_foreground(self) -> int:
        return self.predictor.num_foreground

    def forward(self, images: Tensor, masks: Tensor) -> Tensor:
        """Mean of the predictor's ``(B, K-1)`` output over the four flips of ``images`` and ``masks``."""
        total = None
        for dims in self._FLIPS:
            out = (
                self.predictor(images.flip(dims), masks.flip(dims)) if dims else self.predictor(images, masks)
            )
            total = out if total is None else total + out
        return total / len(self._FLIPS)


class QualityEnsemble(nn.Module):
    """The mean prediction of several quality predictors, e.g. trained with different seeds or backbones.

    Members must agree on ``in_channels`` and ``num_classes``; each may be calibrated
    (``qg-lightning calibrate-predictor``) or wrapped in :class:`FlipTTA`, and is run as it is. On Kvasir-SEG
    real-model masks the mean of predictors trained with different seeds ranked about as well as the better
    member and up to 0.03 Pearson better than the weaker (calibrated: 0.669 and 0.690 alone, 0.700 together;
    see benchmarks/RESULTS.md), at the cost of one forward pass per member. :meth:`forward_with_spread` also
    returns how much the members disagree (``qg-lightning score`` writes it as ``quality_spread``). With two
    or three seeds on Kvasir-SEG that disagreement did not single out the masks the mean misjudged, so read it
    as information, not as a confidence. The ensemble is differentiable like its members (QAR back-propagates
    through every member); freeze it with ``.eval().requires_grad_(False)``.

    Args:
        predictors: two or more (one is allowed) modules ``(images, masks) -> (B, K-1)`` with integer
            attributes ``in_channels`` and ``num_classes``, e.g. :class:`QualityPredictor`.

    Raises:
        ValueError: no member, or members that disagree on ``in_channels`` / ``num_classes`` (named by
            position).
        TypeError: a member that is not an ``nn.Module``.

    Example:
        >>> a, b = QualityPredictor().eval(), QualityPredictor().eval()
        >>> ens = QualityEnsemble([a, b])
        >>> images, masks = torch.rand(2, 3, 32, 32), torch.ones(2, 1, 32, 32)
        >>> bool(torch.allclose(ens(images, masks), (a(images, masks) + b(images, masks)) / 2, atol=1e-6))
        True
        >>> mean, spread = ens.forward_with_spread(images, masks)
        >>> mean.shape, spread.shape, len(ens), ens.num_foreground
        (torch.Size([2, 1]), torch.Size([2, 1]), 2, 1)
    """

    def __init__(self, predictors: Sequence[nn.Module]) -> None:
        super().__init__()
        members = list(predictors)
        if not members:
            raise ValueError("`predictors` must hold at least one quality predictor, got none.")
        for i, member in enumerate(members):
            if not isinstance(member, nn.Module):
                raise TypeError(
                    f"`predictors[{i}]` must be an nn.Module (e.g. a QualityPredictor), got "
                    f"{type(member).__name__}."
                )
        shapes = [(getattr(m, "in_channels", None), getattr(m, "num_classes", None)) for m in members]
        if any(shape != shapes[0] for shape in shapes):
            listed = ", ".join(f"[{i}] in_channels={c}, num_classes={k}" for i, (c, k) in enumerate(shapes))
            raise ValueError(
                f"The quality predictors of an ensemble must agree on in_channels and num_classes, got {listed}. "
                "Combine only predictors trained for the same task."
            )
        self.members = nn.ModuleList(members)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def in_channels(self) -> int:
        return self.members[0].in_channels

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    @property
    def num_foreground(self) -> int:
        return self.num_classes - 1

    def _stacked(self, images: Tensor, masks: Tensor) -> Tensor:
        return torch.stack([member(images, masks) for member in self.members])  # (M, B, K-1)

    def forward(self, images: Tensor, masks: Tensor) -> Tensor:
        """Mean of the members' ``(B, K-1)`` predictions."""
        return self._stacked(images, masks).mean(dim=0)

    def forward_with_spread(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, spread)``, both ``(B, K-1)``: the members' mean and their standard deviation (population,
        0 for a single member), i.e. how much they disagree about each mask."""
        stacked = self._stacked(images, masks)
        return stacked.mean(dim=0), stacked.std(dim=0, correction=0)


def error_map_targets(candidate: Tensor, truth: Tensor, size: tuple[int, int]) -> Tensor:
    """False-positive and false-negative pixel fractions of ``candidate`` per cell of a ``size`` grid.

    Args:
        candidate: ``(B, K-1, H, W)`` masks in [0, 1].
        truth: ``(B, K-1, H, W)`` ground-truth masks in {0, 1}.
        size: the grid ``(h, w)`` (the backbone's last feature map).

    Returns:
        ``(B, 2 (K-1), h, w)`` in [0, 1]: channel ``2c`` the FP fraction of class ``c``, ``2c + 1`` its FN fraction.

    Example:
        >>> cand = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
        >>> truth = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
        >>> error_map_targets(cand, truth, (1, 1)).flatten().tolist()
        [0.25, 0.25]
    """
    cand, gt = candidate.float(), truth.float()
    errors = torch.stack([cand * (1 - gt), (1 - cand) * gt], dim=2).flatten(1, 2)
    return F.adaptive_avg_pool2d(errors, size)


def error_map_loss(logits: Tensor, candidate: Tensor, truth: Tensor) -> Tensor:
    """Binary cross-entropy between error-map logits and :func:`error_map_targets` on their grid."""
    target = error_map_targets(candidate, truth, tuple(logits.shape[-2:])).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target)


# ---------------------------------------------------------------------- loading
def _ctor_params() -> dict[str, inspect.Parameter]:
    params = inspect.signature(QualityPredictor.__init__).parameters
    return {k: p for k, p in params.items() if k != "self"}


def _describe_foreign(hparams: Mapping[str, Any], keys: Sequence[str]) -> str:
    """Best guess of what kind of checkpoint this is, for the error message."""
    class_path = hparams.get("_class_path")
    if isinstance(class_path, str) and class_path:
        return f"'{class_path}'"
    seg_hparams = {"arch", "encoder_name", "encoder_weights", "decoder_channels"}
    seg_prefixes = ("model.encoder.", "model.decoder.", "encoder.", "decoder.", "segmentation_head.")
    if seg_hparams & set(hparams) or any(k.startswith(seg_prefixes) for k in keys):
        arch = hparams.get("arch")
        return f"segmentation model ({arch})" if isinstance(arch, str) else "segmentation model"
    if any(k.startswith(("student.", "teacher.", "ema_")) for k in keys):
        return "semi-supervised segmentation (student/teacher)"
    if not keys:
        return "weights-free"
    return f"different model's (first keys: {list(keys)[:3]})"


def load_quality_predictor(
    path: str | os.PathLike,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    map_location: str = "cpu",
) -> QualityPredictor:
    """Rebuild a :class:`QualityPredictor` from a Lightning checkpoint, safely (``weights_only=True``).

    The model is built from the checkpoint's hyper-parameters with ``pretrained=False`` (the weights come from
    the checkpoint), loaded with ``strict=True`` and returned in eval mode. It is not frozen: guidance sets
    ``requires_grad=False`` itself.

    Args:
        path: a ``.ckpt`` written by Lightning (``ModelCheckpoint`` / ``trainer.save_checkpoint``) for a
            :class:`QualityPredictor`.
        in_channels: if given, the image channels the caller will pass; must match the checkpoint.
        num_classes: if given, K of the caller's task; must match the checkpoint.
        map_location: device for the tensors, e.g. ``"cpu"`` or ``"cuda:0"``.

    Returns:
        The predictor in eval mode, on ``map_location``.

    Raises:
        FileNotFoundError: no file at ``path``.
        qg_lightning.checkpoint.UnsafeCheckpointError: the file needs arbitrary code to unpickle (refused).
        ValueError: not a quality-predictor checkpoint, incompatible ``in_channels`` / ``num_classes``, or
            missing / unexpected / mis-shaped weights.

    Example:
        >>> import tempfile, pathlib
        >>> g = QualityPredictor(in_channels=1)
        >>> ckpt = {"state_dict": g.state_dict(), "hyper_parameters": dict(g.hparams)}
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "g.ckpt"
        ...     torch.save(ckpt, path)
        ...     h = load_quality_predictor(str(path), in_channels=1, num_classes=2)
        >>> h.training, h.num_foreground
        (False, 1)
    """
    ckpt = load_checkpoint(path, map_location=map_location, what="quality predictor checkpoint")
    hparams = ckpt.get("hyper_parameters")
    state_dict = ckpt.get("state_dict")
    hparams = dict(hparams) if isinstance(hparams, Mapping) else {}
    keys = list(state_dict) if isinstance(state_dict, Mapping) else []
    looks_right = (
        isinstance(hparams.get("backbone"), str)
        and bool(keys)
        and any(k.startswith("backbone.") for k in keys)
        and any(k.startswith("head.") for k in keys)
    )
    if not looks_right:
        raise ValueError(
            f"'{path}' is not a quality predictor checkpoint: this looks like a "
            f"{_describe_foreign(hparams, keys)} checkpoint, expected a quality predictor trained with "
            "QualityPredictor (qg_lightning.quality.QualityPredictor; hyper-parameter 'backbone' and weights "
            "'backbone.*', 'head.*'). "
            "Point the predictor path to the Phase-1 checkpoint."
        )

    params = _ctor_params()
    unknown = sorted(k for k in hparams if k not in params and not k.startswith("_"))
    if unknown:
        rank_zero_warn(
            f"Ignoring unknown hyper-parameters {unknown} in quality predictor checkpoint '{path}'."
        )
    kwargs = {k: v for k, v in hparams.items() if k in params}
    kwargs["pretrained"] = False
    ckpt_in = kwargs.get("in_channels", params["in_channels"].default)
    ckpt_k = kwargs.get("num_classes", params["num_classes"].default)
    mismatches = []
    if in_channels is not None and in_channels != ckpt_in:
        mismatches.append(f"in_channels={ckpt_in} (asked for in_channels={in_channels})")
    if num_classes is not None and num_classes != ckpt_k:
        mismatches.append(
            f"num_classes={ckpt_k}, i.e. {ckpt_k - 1} mask channel(s) (asked for num_classes={num_classes})"
        )
    if mismatches:
        raise ValueError(
            f"Quality predictor checkpoint '{path}' is incompatible: it expects {' and '.join(mismatches)}. "
            "Train a predictor for this task, or fix in_channels / num_classes in your config."
        )

    model = standalone(QualityPredictor, **kwargs)  # its own hyper-parameters, even inside a CLI-built module
    expected = set(model.state_dict())
    missing = sorted(expected - set(keys))
    unexpected = sorted(set(keys) - expected)
    if missing or unexpected:
        raise ValueError(
            f"Quality predictor checkpoint '{path}' does not match a QualityPredictor({kwargs}): "
            f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} ({len(unexpected)}). "
            "Was it saved by a different qg_lightning / timm version?"
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"Could not load the weights of quality predictor checkpoint '{path}': {err}"
        ) from None
    return model.to(map_location).eval()


def load_quality_predictors(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    map_location: str = "cpu",
    tta: bool = False,
) -> nn.Module:
    """One predictor checkpoint, or several averaged: :func:`load_quality_predictor` on each path.

    Args:
        paths: one ``.ckpt`` path or a list of them.
        in_channels, num_classes, map_location: as in :func:`load_quality_predictor`, for every checkpoint.
        tta: wrap each predictor in :class:`FlipTTA` (before averaging, so an ensemble's spread is that of
            its members' TTA predictions).

    Returns:
        For one path, the :class:`QualityPredictor` (in :class:`FlipTTA` with ``tta``); for several, a
        :class:`QualityEnsemble` of them, in eval mode.

    Raises:
        ValueError: no path, a duplicated path, or checkpoints that do not fit (the message names the file) or
            that disagree with each other on ``in_channels`` / ``num_classes`` (both files are named).
        FileNotFoundError, qg_lightning.checkpoint.UnsafeCheckpointError: as :func:`load_quality_predictor`.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("a", "b"):
        ...     g = QualityPredictor(in_channels=1)
        ...     torch.save({"state_dict": g.state_dict(), "hyper_parameters": dict(g.hparams)}, tmp / f"{name}.ckpt")
        >>> type(load_quality_predictors(tmp / "a.ckpt")).__name__
        'QualityPredictor'
        >>> ens = load_quality_predictors([tmp / "a.ckpt", tmp / "b.ckpt"], tta=True)
        >>> type(ens).__name__, len(ens), ens.in_channels, ens.training
        ('QualityEnsemble', 2, 1, False)
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise ValueError("Give at least one quality predictor checkpoint, got none.")
    seen: dict[str, int] = {}
    for i, path in enumerate(items):
        key = os.path.realpath(path)
        if key in seen:
            raise ValueError(
                f"Quality predictor checkpoint '{path}' is given twice (positions {seen[key]} and {i}); an "
                "ensemble averages different predictors, so list each checkpoint once."
            )
        seen[key] = i
    members: list[nn.Module] = []
    for path in items:
        model = load_quality_predictor(
            path, in_channels=in_channels, num_classes=num_classes, map_location=map_location
        )
        first = members[0] if members else model
        if (model.in_channels, model.num_classes) != (first.in_channels, first.num_classes):
            raise ValueError(
                f"Quality predictor checkpoints '{items[0]}' (in_channels={first.in_channels}, "
                f"num_classes={first.num_classes}) and '{path}' (in_channels={model.in_channels}, "
                f"num_classes={model.num_classes}) do not fit together; an ensemble needs predictors trained "
                "for the same task."
            )
        members.append(FlipTTA(model) if tta else model)
    if len(members) == 1:
        return members[0]
    return QualityEnsemble(members).eval()

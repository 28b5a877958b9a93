"""Training of the quality predictor g(x, m) -> q in [0, 1] (Phase 1 of QG-SSL [0]) and its safe loader.

g reads an image and candidate foreground mask(s) and predicts the Dice coefficient of each foreground class
of the candidate against the unseen ground truth. The network itself is
:class:`~qg_lightning.quality.network.QualityNetwork`; it is trained here (:class:`QualityPredictor`: the
network plus losses, optimiser and logging), then frozen and used by guidance (QAR feeds it soft
probabilities and back-propagates through it; PL-QW feeds it hard pseudolabels without gradient), which reads
it back as a plain network with :func:`~qg_lightning.quality.network.load_quality_networks`.
:func:`load_quality_predictor` reads it back as the training module (with its hyper-parameters).
:class:`FlipTTA`, :class:`QualityEnsemble`, ``IMAGENET_MEAN`` and ``IMAGENET_STD`` live in
:mod:`~qg_lightning.quality.network` and are re-exported here.

[0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation", 2026.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import PearsonCorrCoef, SpearmanCorrCoef

from qg_lightning._standalone import standalone
from qg_lightning._validation import check_int, check_number
from qg_lightning.quality.backbones import resolve_backbone_name
from qg_lightning.quality.network import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FlipTTA,
    QualityEnsemble,
    QualityNetwork,
    build_from_checkpoint,
    load_many,
)

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
    "predictor_from_checkpoint",
]

_BATCH_KEYS = ("image", "candidate", "quality")


class QualityPredictor(QualityNetwork, L.LightningModule):
    """Quality predictor g(x, m): the Dice of each foreground class of a candidate mask, in [0, 1] [0].

    The network is :class:`~qg_lightning.quality.network.QualityNetwork` (paper: a timm classification
    backbone taking the image plus ``K - 1`` mask channels, global average pooling, a two-layer head with a
    small last layer, sigmoid; the image is normalised inside :meth:`forward`, which is differentiable with
    respect to the masks, as QAR needs). This class is that network (same attributes and weight names) plus its
    training as a LightningModule: losses, optimiser, logging, and the hyper-parameters that the checkpoint
    records.

    Batches for ``fit`` / ``validate`` / ``test`` are dicts with ``image`` ``(B, C, H, W)`` float in [0, 1],
    ``candidate`` ``(B, K-1, H, W)`` float masks and ``quality`` ``(B, K-1)`` float true per-class Dice. The
    loss is SmoothL1 (``smooth_l1_beta``). Logged: ``train/loss``; ``val/loss``, ``val/mae``, ``val/pearson``,
    ``val/spearman`` (correlations over the flattened per-class values of the epoch, multi-class ones without the
    pairs where the class is in neither candidate nor truth; an undefined correlation, e.g. from constant
    predictions, is logged as 0.0 with a warning); the same with ``test/``.

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
        check_number(lr, "lr", low=0.0, low_open=True, finite=True)
        check_number(weight_decay, "weight_decay", low=0.0, finite=True)
        check_int(t0, "t0", minimum=1)
        check_int(t_mult, "t_mult", minimum=1)
        check_number(eta_min, "eta_min", low=0.0, finite=True)
        check_number(smooth_l1_beta, "smooth_l1_beta", low=0.0, finite=True)
        check_number(error_map_weight, "error_map_weight", low=0.0, finite=True)
        super().__init__(
            backbone=backbone, in_channels=in_channels, num_classes=num_classes, pretrained=pretrained,
            image_mean=image_mean, image_std=image_std, dropout=dropout, hidden=hidden,
            channels_last=channels_last, error_maps=error_map_weight > 0, calibration=calibration,
        )  # fmt: skip
        self.save_hyperparameters()
        # Store the resolved statistics and calibration as plain lists: the checkpoint then says exactly how
        # images were normalised, and everything in it stays loadable with torch.load(weights_only=True).
        self.hparams["image_mean"], self.hparams["image_std"] = self.image_stats
        self.hparams["calibration"] = self._calibration

        with warnings.catch_warnings():  # Spearman warns that it keeps all values; that is intended here
            warnings.simplefilter("ignore", UserWarning)
            self.val_pearson = PearsonCorrCoef()
            self.val_spearman = SpearmanCorrCoef()
            self.test_pearson = PearsonCorrCoef()
            self.test_spearman = SpearmanCorrCoef()

    @property
    def calibration(self) -> list[float] | None:
        """``[scale, shift]`` applied to the output logit, or None: the ``calibration`` hyper-parameter."""
        return self.hparams.get("calibration", self._calibration)

    @calibration.setter
    def calibration(self, value: list[float] | None) -> None:
        self._calibration = value  # first set by QualityNetwork.__init__, before the hyper-parameters exist
        if "calibration" in self.hparams:
            self.hparams["calibration"] = value

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
        pred_values, true_values = _correlation_values(preds, target, self._unpack(batch, stage)[1])
        if pred_values.numel():
            pearson, spearman = self._correlations(stage)
            pearson.update(pred_values, true_values)
            spearman.update(pred_values, true_values)
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


def _correlation_values(preds: Tensor, target: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
    """The (predicted, true) values ``val/pearson`` and ``val/spearman`` are computed over, flattened.

    Binary masks: every value. Multi-class (``K-1 > 1``): the both-empty pairs (the class is in neither the
    candidate nor the truth, so its true Dice is 1 by definition) are left out, as in the evaluation report's
    per-class figures: a cloud of trivially right (1, 1) pairs would make a predictor with no skill on a rare
    class look good. Such a pair is recognised without the truth: the candidate lacks the class and the target
    is 1 (a candidate that lacks a class the truth has scores 0).
    """
    pred_values, true_values = preds.detach().float(), target.detach().float()
    if pred_values.shape[1] > 1:
        painted = (candidates.detach() > 0.5).flatten(2).any(dim=2)
        keep = painted | (true_values < 1.0)
        return pred_values[keep], true_values[keep]
    return pred_values.flatten(), true_values.flatten()


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


def load_quality_predictor(
    path: str | os.PathLike,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    map_location: str = "cpu",
) -> QualityPredictor:
    """Rebuild a :class:`QualityPredictor` from a Lightning checkpoint, safely (``weights_only=True``).

    This is the training module with its hyper-parameters (e.g. to fine-tune it); to use the predictor,
    :func:`~qg_lightning.quality.network.load_quality_network` gives the plain network (same outputs).

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
    params = _ctor_params()
    defaults = {"in_channels": params["in_channels"].default, "num_classes": params["num_classes"].default}

    def build(**kwargs: Any) -> QualityPredictor:
        # its own hyper-parameters, even inside a CLI-built module
        return standalone(QualityPredictor, **kwargs)

    model = build_from_checkpoint(
        path, build, set(params), defaults, in_channels=in_channels, num_classes=num_classes,
        map_location=map_location,
    )  # fmt: skip
    return cast(QualityPredictor, model)


def predictor_from_checkpoint(path: str | os.PathLike, **hparams: Any) -> QualityPredictor:
    """A new :class:`QualityPredictor` built with ``hparams`` (e.g. a recipe's training settings) that starts
    from the weights of the predictor saved at ``path``: the start of a fine-tuning.

    The image statistics come from the checkpoint (the weights were learnt with them) and the calibration is
    dropped (fit a new one on the new data). ``backbone``, ``in_channels`` and ``num_classes`` must match the
    checkpoint's; an error-map head (``error_map_weight`` > 0) that the checkpoint lacks starts from its
    initialisation, and one that it has but ``hparams`` do not ask for is left out. The checkpoint is read with
    :func:`load_quality_predictor` (``weights_only=True``).

    Args:
        path: a quality predictor ``.ckpt`` (``qg-lightning train-predictor``'s ``quality_predictor.ckpt``).
        **hparams: :class:`QualityPredictor` arguments; ``pretrained``, ``image_mean``, ``image_std`` and
            ``calibration`` are set here.

    Returns:
        The predictor, in training mode.

    Raises:
        ValueError: the checkpoint's backbone, channels or classes differ from ``hparams`` (the message names
            the file and both values), or its weights do not fit.
        FileNotFoundError, qg_lightning.checkpoint.UnsafeCheckpointError: as :func:`load_quality_predictor`.

    Example:
        >>> import tempfile, pathlib
        >>> g = QualityPredictor(in_channels=1)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "g.ckpt"
        ...     torch.save({"state_dict": g.state_dict(), "hyper_parameters": dict(g.hparams)}, path)
        ...     h = predictor_from_checkpoint(path, in_channels=1, error_map_weight=0.5)
        >>> torch.equal(h.head[-1].weight, g.head[-1].weight), h.error_head is not None, h.training
        (True, True, True)
    """
    hparams = dict(hparams)
    source = load_quality_predictor(
        path, in_channels=hparams.get("in_channels"), num_classes=hparams.get("num_classes")
    )
    mine = resolve_backbone_name(str(hparams.get("backbone", _ctor_params()["backbone"].default)))
    theirs = resolve_backbone_name(str(source.hparams["backbone"]))
    if mine != theirs:
        raise ValueError(
            f"'{path}' is a {theirs} predictor, but the new one is asked to be {mine}: set `backbone` to "
            f"{theirs!r} to fine-tune it."
        )
    hparams.update(
        in_channels=source.in_channels,
        num_classes=source.num_classes,
        pretrained=False,
        image_mean=list(source.hparams["image_mean"]),
        image_std=list(source.hparams["image_std"]),
        calibration=None,
    )
    model = standalone(QualityPredictor, **hparams)
    weights = {k: v for k, v in source.state_dict().items() if not k.startswith("error_head.")}
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # mis-shaped weights (e.g. another head width)
        raise ValueError(f"The weights of '{path}' do not fit the new predictor: {err}") from None
    missing = [k for k in missing if not k.startswith("error_head.")]
    if missing or unexpected:
        raise ValueError(
            f"The weights of '{path}' do not fit the new predictor (missing {missing[:5]}, unexpected "
            f"{list(unexpected)[:5]}): build it with the checkpoint's `dropout`/`hidden` settings."
        )
    return model.train()


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
    return load_many(
        load_quality_predictor, paths, in_channels=in_channels, num_classes=num_classes,
        map_location=map_location, tta=tta,
    )  # fmt: skip

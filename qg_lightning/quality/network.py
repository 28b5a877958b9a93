"""The quality network g(x, m) -> q in [0, 1] as a plain ``nn.Module``, its ensembles and its safe loader.

:class:`QualityNetwork` is the predictor of QG-SSL [0] without its training: backbone, regression head, image
normalisation and the calibration of the output. :class:`FlipTTA` averages it over flips,
:class:`QualityEnsemble` over several networks, and :func:`load_quality_network` /
:func:`load_quality_networks` read one or several trained checkpoints back safely (``weights_only=True``).
This module imports no training code: guidance (:mod:`qg_lightning.guidance`) needs nothing else from
:mod:`qg_lightning.quality`. The Lightning training module,
:class:`~qg_lightning.quality.predictor.QualityPredictor`, is this network plus losses, optimiser and
logging; its checkpoints load here as they are (the same weight names).

Example:
    >>> import tempfile, pathlib
    >>> g = QualityNetwork(in_channels=1).eval()
    >>> ckpt = {"state_dict": g.state_dict(), "hyper_parameters": {"backbone": "resnet18", "in_channels": 1}}
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "g.ckpt"
    >>> torch.save(ckpt, path)
    >>> h = load_quality_network(path, in_channels=1)
    >>> images, masks = torch.rand(2, 1, 32, 32), torch.ones(2, 1, 32, 32)
    >>> type(h).__name__, bool(torch.equal(h(images, masks), g(images, masks)))
    ('QualityNetwork', True)

[0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation", 2026.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, cast

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

# check_int / check_number are also importable from here, where they lived before qg_lightning._validation.
from qg_lightning._validation import check_bool, check_in_channels, check_int, check_number, is_number
from qg_lightning.checkpoint import load_checkpoint
from qg_lightning.masks import check_num_classes
from qg_lightning.quality.backbones import BACKBONE_ALIASES, BACKBONES, build_backbone, resolve_backbone_name

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRAINING_HPARAMS",
    "FlipTTA",
    "QualityEnsemble",
    "QualityNetwork",
    "load_quality_network",
    "load_quality_networks",
]

#: ImageNet RGB statistics (what the timm backbones expect).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Standard deviation of the last linear layer's initial weights: the logit starts near 0 (q near 0.5), so the
#: sigmoid is not saturated (METHOD.md: a Kaiming-initialised last layer saturates at 1.0 and never trains).
LAST_LAYER_INIT_STD = 1e-3

#: Hyper-parameters of a predictor checkpoint that only its training uses (the network ignores them, except
#: ``error_map_weight`` > 0, which means the checkpoint holds the weights of an error-map head).
TRAINING_HPARAMS: frozenset[str] = frozenset(
    {"lr", "weight_decay", "t0", "t_mult", "eta_min", "smooth_l1_beta", "error_map_weight"}
)


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
        if not is_number(v) or not math.isfinite(v):
            raise ValueError(f"`{name}` must hold finite numbers, got {list(stats)!r}.")
        values.append(float(v))
    if len(values) != in_channels:
        raise ValueError(
            f"`{name}` has {len(values)} values but `in_channels` is {in_channels}: give one value per image "
            "channel, or leave it unset (None) for the ImageNet statistics."
        )
    return values


def _check_calibration(calibration: Any) -> list[float] | None:
    if calibration is None:
        return None
    ok = isinstance(calibration, Sequence) and len(calibration) == 2
    ok = ok and all(is_number(v) for v in calibration)
    if not ok or not all(math.isfinite(v) for v in calibration) or calibration[0] <= 0:
        raise ValueError(
            f"`calibration` must be null or [scale, shift] with scale > 0 (finite numbers), got "
            f"{calibration!r}. Fit it with `qg-lightning calibrate-predictor`."
        )
    return [float(v) for v in calibration]


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``torch.is_autocast_enabled(device_type)`` needs torch 2.4)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: separate CPU and CUDA queries
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class QualityNetwork(nn.Module):
    """The quality network g(x, m): the Dice of each foreground class of a candidate mask, in [0, 1] [0].

    Network (paper): a timm classification backbone whose first convolution takes the image channels plus
    ``K - 1`` mask channels (see :func:`~qg_lightning.quality.backbones.build_backbone` for the
    initialisation), global average pooling, then ``Dropout(dropout) -> Linear(F, hidden) -> ReLU ->
    Dropout(dropout / 2) -> Linear(hidden, K - 1) -> sigmoid``. The last layer starts small (normal, std
    ``1e-3``, bias 0) so the initial outputs sit near 0.5 instead of saturating. The image is normalised
    inside :meth:`forward` (buffers ``image_mean`` / ``image_std``); the masks are not normalised.
    :meth:`forward` is differentiable with respect to the masks, which is what QAR needs.

    Train it as :class:`~qg_lightning.quality.predictor.QualityPredictor` (this network plus its training);
    read a trained one back with :func:`load_quality_network`.

    Args:
        backbone: a name from :data:`~qg_lightning.quality.backbones.BACKBONES` or an alias (paper: resnet18).
        in_channels: image channels, 1 or 3.
        num_classes: K, background included (2 = binary); the network outputs ``K - 1`` qualities.
        pretrained: start the backbone from ImageNet weights found in the local timm cache (never downloaded
            by qg_lightning; see :mod:`~qg_lightning.quality.backbones`).
        image_mean: per-channel mean used to normalise images; None = ImageNet (averaged to one value for
            grayscale).
        image_std: per-channel standard deviation, likewise.
        dropout: dropout before the hidden layer; the second dropout is ``dropout / 2`` (paper: 0.15, 0.075).
        hidden: width of the hidden layer (paper: 256).
        channels_last: keep the backbone and its input in channels-last memory format.
        error_maps: add the error-map head (a 1x1 convolution on the backbone's last feature grid predicting,
            per cell and foreground class, the fractions of false-positive and false-negative pixels; see
            :meth:`forward_with_error_maps`). Used in training only; it does not change the predicted quality.
        calibration: ``[scale, shift]`` applied to the output logit, ``q = sigmoid(scale * z + shift)``, or
            ``None`` (uncalibrated).

    Attributes:
        in_channels: image channels expected by :meth:`forward`.
        num_classes: K.
        num_foreground: ``K - 1``, the number of mask channels and of outputs.
        calibration: the resolved ``[scale, shift]`` or None.
        image_stats: the resolved ``(mean, std)`` lists.
        backbone: the feature extractor; ``head``: the regression head; ``error_head``: the error-map head
            or None.

    Raises:
        ValueError: an argument is out of range (the message names it).

    Example:
        >>> g = QualityNetwork(backbone="resnet18", in_channels=3, num_classes=2).eval()
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
        channels_last: bool = False,
        error_maps: bool = False,
        calibration: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        try:
            resolve_backbone_name(backbone)
        except KeyError:
            raise ValueError(
                f"`backbone` must be one of {sorted(BACKBONES)} (aliases: {sorted(BACKBONE_ALIASES)}), "
                f"got {backbone!r}."
            ) from None
        check_in_channels(in_channels)
        check_num_classes(num_classes)
        for name, flag in (
            ("pretrained", pretrained),
            ("channels_last", channels_last),
            ("error_maps", error_maps),
        ):
            check_bool(flag, name)
        mean = _default_stats(image_mean, IMAGENET_MEAN, in_channels, "image_mean")
        std = _default_stats(image_std, IMAGENET_STD, in_channels, "image_std")
        if any(s <= 0 for s in std):
            raise ValueError(f"`image_std` must be positive, got {std!r}.")
        check_number(dropout, "dropout", low=0.0, high=1.0, high_open=True)
        check_int(hidden, "hidden", minimum=1)
        self.calibration: list[float] | None = _check_calibration(calibration)
        self.image_stats: tuple[list[float], list[float]] = (mean, std)
        self.channels_last = channels_last

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
            nn.Conv2d(int(self.backbone.num_features), 2 * self.num_foreground, 1) if error_maps else None
        )
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        last = self.head[-1]
        nn.init.normal_(last.weight, mean=0.0, std=LAST_LAYER_INIT_STD)
        nn.init.zeros_(last.bias)
        # Non-persistent: the statistics live in the checkpoint's hyper-parameters; the state_dict holds weights.
        self.register_buffer("image_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

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
            >>> g = QualityNetwork(num_classes=3).eval()
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
        calibration = self.calibration
        if calibration is not None:
            logits = calibration[0] * logits + calibration[1]
        return torch.sigmoid(logits)

    def _input(self, images: Tensor, masks: Tensor) -> Tensor:
        self._check_inputs(images, masks)
        x = (images - self.image_mean) / self.image_std
        x = torch.cat([x, masks.to(x.dtype)], dim=1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward_with_error_maps(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted quality ``(B, K-1)`` and error-map logits ``(B, 2 (K-1), h, w)`` on the last feature grid.

        Channels ``2c`` and ``2c + 1`` are the false-positive and false-negative fractions of class ``c``.
        Only for networks built with ``error_maps=True`` (predictors with ``error_map_weight > 0``).

        Example:
            >>> g = QualityNetwork(error_maps=True)
            >>> q, maps = g.forward_with_error_maps(torch.rand(1, 3, 64, 64), torch.zeros(1, 1, 64, 64))
            >>> q.shape, maps.shape
            (torch.Size([1, 1]), torch.Size([1, 2, 2, 2]))
        """
        if self.error_head is None:
            raise ValueError(
                "This predictor has no error-map head: build it with `error_maps=True` (a predictor with `error_map_weight` > 0)."
            )
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
            >>> g = QualityNetwork()
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


class FlipTTA(nn.Module):
    """Test-time augmentation: the mean prediction over the identity, horizontal, vertical and both flips.

    The Dice of a mask is invariant to flipping image and mask together, so the four predictions estimate the
    same number; averaging them costs 4 forward passes and typically improves the ranking a little (measured on
    Kvasir-SEG real-model masks: Pearson 0.443 -> 0.478, see benchmarks/RESULTS.md). Used by
    ``qg-lightning evaluate-predictor --tta`` and ``qg-lightning score --tta``; wrap a predictor yourself for
    other uses. The wrapped predictor's train/eval mode and gradients are left as they are.

    Example:
        >>> g = QualityNetwork().eval()
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
            attributes ``in_channels`` and ``num_classes``, e.g. :class:`QualityNetwork`.

    Raises:
        ValueError: no member, or members that disagree on ``in_channels`` / ``num_classes`` (named by
            position).
        TypeError: a member that is not an ``nn.Module``.

    Example:
        >>> a, b = QualityNetwork().eval(), QualityNetwork().eval()
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


# ---------------------------------------------------------------------- loading
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


def _network_kwargs(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`QualityNetwork` arguments from a predictor checkpoint's (filtered) hyper-parameters."""
    params = inspect.signature(QualityNetwork.__init__).parameters
    kwargs = {k: v for k, v in hparams.items() if k in params}
    weight = hparams.get("error_map_weight", 0.0)
    kwargs["error_maps"] = is_number(weight) and weight > 0
    return kwargs


def build_from_checkpoint(
    path: str | os.PathLike,
    build: Callable[..., nn.Module],
    known: Collection[str],
    defaults: Mapping[str, Any],
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    map_location: str = "cpu",
) -> nn.Module:
    """Read a quality predictor checkpoint safely and build a model from it; :func:`load_quality_network`
    and :func:`~qg_lightning.quality.predictor.load_quality_predictor` are this with their class.

    Args:
        path: the ``.ckpt`` (``state_dict`` with ``backbone.*`` and ``head.*`` weights, ``hyper_parameters``
            with ``backbone``).
        build: called with the known hyper-parameters (``pretrained=False``) as keyword arguments.
        known: the hyper-parameter names ``build`` takes or deliberately ignores; others warn.
        defaults: ``in_channels`` and ``num_classes`` of ``build`` when the checkpoint does not record them.
        in_channels, num_classes, map_location: as in :func:`load_quality_network`.

    Returns:
        The model with the checkpoint's weights (``strict=True``), on ``map_location``, in eval mode.

    Raises:
        As :func:`load_quality_network`.
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

    unknown = sorted(k for k in hparams if k not in known and not k.startswith("_"))
    if unknown:
        rank_zero_warn(
            f"Ignoring unknown hyper-parameters {unknown} in quality predictor checkpoint '{path}'."
        )
    kwargs = {k: v for k, v in hparams.items() if k in known}
    kwargs["pretrained"] = False
    ckpt_in = kwargs.get("in_channels", defaults["in_channels"])
    ckpt_k = kwargs.get("num_classes", defaults["num_classes"])
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

    model = build(**kwargs)
    expected = set(model.state_dict())
    missing = sorted(expected - set(keys))
    unexpected = sorted(set(keys) - expected)
    if missing or unexpected:
        raise ValueError(
            f"Quality predictor checkpoint '{path}' does not match a {type(model).__name__}({kwargs}): "
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


def load_quality_network(
    path: str | os.PathLike,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    map_location: str = "cpu",
) -> QualityNetwork:
    """Rebuild the :class:`QualityNetwork` of a quality predictor checkpoint, safely (``weights_only=True``).

    The network is built from the checkpoint's hyper-parameters with ``pretrained=False`` (the weights come
    from the checkpoint; the training hyper-parameters are ignored), loaded with ``strict=True`` and returned in
    eval mode. It is not frozen: guidance sets ``requires_grad=False`` itself. Its outputs are those of the
    :class:`~qg_lightning.quality.predictor.QualityPredictor` that wrote the checkpoint.

    Args:
        path: a ``.ckpt`` written by Lightning (``ModelCheckpoint`` / ``trainer.save_checkpoint``) for a
            :class:`~qg_lightning.quality.predictor.QualityPredictor`.
        in_channels: if given, the image channels the caller will pass; must match the checkpoint.
        num_classes: if given, K of the caller's task; must match the checkpoint.
        map_location: device for the tensors, e.g. ``"cpu"`` or ``"cuda:0"``.

    Returns:
        The network in eval mode, on ``map_location``.

    Raises:
        FileNotFoundError: no file at ``path``.
        qg_lightning.checkpoint.UnsafeCheckpointError: the file needs arbitrary code to unpickle (refused).
        ValueError: not a quality-predictor checkpoint, incompatible ``in_channels`` / ``num_classes``, or
            missing / unexpected / mis-shaped weights.

    Example:
        >>> import tempfile, pathlib
        >>> g = QualityNetwork(num_classes=3, calibration=[0.5, 0.1])
        >>> hparams = {"backbone": "resnet18", "num_classes": 3, "calibration": [0.5, 0.1], "lr": 1e-3}
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "g.ckpt"
        >>> torch.save({"state_dict": g.state_dict(), "hyper_parameters": hparams}, path)
        >>> h = load_quality_network(path, num_classes=3)
        >>> h.training, h.num_foreground, h.calibration
        (False, 2, [0.5, 0.1])
    """
    params = inspect.signature(QualityNetwork.__init__).parameters
    known = (set(params) - {"self", "error_maps"}) | TRAINING_HPARAMS
    defaults = {"in_channels": params["in_channels"].default, "num_classes": params["num_classes"].default}

    def build(**hparams: Any) -> QualityNetwork:
        return QualityNetwork(**_network_kwargs(hparams))

    model = build_from_checkpoint(
        path,
        build,
        known,
        defaults,
        in_channels=in_channels,
        num_classes=num_classes,
        map_location=map_location,
    )
    return cast(QualityNetwork, model)


def load_many(
    load_one: Callable[..., nn.Module],
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    map_location: str = "cpu",
    tta: bool = False,
) -> nn.Module:
    """``load_one`` on one checkpoint path, or on several averaged in a :class:`QualityEnsemble`.

    :func:`load_quality_networks` and :func:`~qg_lightning.quality.predictor.load_quality_predictors` are
    this with their single-checkpoint loader; see :func:`load_quality_networks` for the arguments.
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
        model = load_one(path, in_channels=in_channels, num_classes=num_classes, map_location=map_location)
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


def load_quality_networks(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    map_location: str = "cpu",
    tta: bool = False,
) -> nn.Module:
    """One quality network, or several averaged: :func:`load_quality_network` on each path.

    Args:
        paths: one ``.ckpt`` path or a list of them.
        in_channels, num_classes, map_location: as in :func:`load_quality_network`, for every checkpoint.
        tta: wrap each network in :class:`FlipTTA` (before averaging, so an ensemble's spread is that of
            its members' TTA predictions).

    Returns:
        For one path, the :class:`QualityNetwork` (in :class:`FlipTTA` with ``tta``); for several, a
        :class:`QualityEnsemble` of them, in eval mode.

    Raises:
        ValueError: no path, a duplicated path, or checkpoints that do not fit (the message names the file) or
            that disagree with each other on ``in_channels`` / ``num_classes`` (both files are named).
        FileNotFoundError, qg_lightning.checkpoint.UnsafeCheckpointError: as :func:`load_quality_network`.

    Example:
        >>> import tempfile, pathlib
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("a", "b"):
        ...     g = QualityNetwork(in_channels=1)
        ...     ckpt = {"state_dict": g.state_dict(), "hyper_parameters": {"backbone": "resnet18", "in_channels": 1}}
        ...     torch.save(ckpt, tmp / f"{name}.ckpt")
        >>> type(load_quality_networks(tmp / "a.ckpt")).__name__
        'QualityNetwork'
        >>> ens = load_quality_networks([tmp / "a.ckpt", tmp / "b.ckpt"], tta=True)
        >>> type(ens).__name__, len(ens), ens.in_channels, ens.training
        ('QualityEnsemble', 2, 1, False)
    """
    return load_many(
        load_quality_network, paths, in_channels=in_channels, num_classes=num_classes,
        map_location=map_location, tta=tta,
    )  # fmt: skip

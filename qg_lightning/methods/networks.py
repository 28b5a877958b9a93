"""Segmentation networks: any segmentation-models-pytorch architecture, normalising its own input."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn

from qg_lightning.masks import check_num_classes, logit_channels

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalize",
    "SegmentationNet",
    "available_architectures",
    "build_segmenter",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _channel_stats(
    values: Sequence[float] | None, default: Sequence[float], channels: int, name: str
) -> list[float]:
    if values is None:
        values = default if channels == len(default) else [sum(default) / len(default)] * channels
    values = [float(v) for v in values]
    if len(values) == 1 and channels > 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(
            f"`{name}` needs one value per image channel ({channels}), got {len(values)}: {values}."
        )
    return values


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics as buffers (they follow device and dtype).

    Example:
        >>> Normalize([0.5], [0.5])(torch.ones(1, 1, 1, 1))
        tensor([[[[1.]]]])
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if any(s <= 0 for s in std):
            raise ValueError(f"`image_std` values must be > 0, got {list(std)}.")
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, images: Tensor) -> Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)


def available_architectures() -> list[str]:
    """Names accepted as ``arch`` (segmentation-models-pytorch's, case-insensitive)."""
    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


def _check_encoder(encoder_name: str) -> None:
    if encoder_name in smp.encoders.encoders:
        return
    if encoder_name.startswith("tu-"):
        import timm

        if timm.is_model(encoder_name[3:]):
            return
        raise ValueError(
            f"Unknown timm encoder `encoder_name={encoder_name!r}`: timm has no model "
            f"'{encoder_name[3:]}'. List them with `timm.list_models()`."
        )
    close = difflib.get_close_matches(encoder_name, list(smp.encoders.encoders), n=5)
    raise ValueError(
        f"Unknown `encoder_name={encoder_name!r}`. Did you mean one of {close}? Use a segmentation-models-pytorch "
        f"encoder or any timm model as 'tu-<timm name>'. "
        f"Full list: `segmentation_models_pytorch.encoders.get_encoder_names()`."
    )


class SegmentationNet(nn.Module):
    """An smp model that takes ``[0, 1]`` images ``(B, C, H, W)`` and returns logits.

    Logits have 1 channel for binary tasks (``num_classes == 2``, sigmoid) and ``num_classes`` otherwise.
    """

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        num_classes: int = 2,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        if in_channels < 1:
            raise ValueError(f"`in_channels` must be >= 1, got {in_channels}.")
        if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
            raise ValueError(
                f"Unknown `arch={arch!r}`. Available architectures: {available_architectures()}."
            )
        _check_encoder(encoder_name)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.normalize = Normalize(
            _channel_stats(image_mean, IMAGENET_MEAN, in_channels, "image_mean"),
            _channel_stats(image_std, IMAGENET_STD, in_channels, "image_std"),
        )
        self.net = smp.create_model(
            arch,
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=logit_channels(num_classes),
        )
        self.divisor = 2 ** getattr(self.net.encoder, "_depth", 5)

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"Expected images of shape (B, {self.in_channels}, H, W), got {tuple(images.shape)}. "
                f"Set `in_channels` to match your data (1 = grayscale, 3 = RGB)."
            )
        h, w = images.shape[-2:]
        if h % self.divisor or w % self.divisor:
            raise ValueError(
                f"Image size {h}x{w} is not divisible by {self.divisor}, which this encoder needs. "
                f"Set `image_size` to a multiple of {self.divisor} (e.g. {((h + self.divisor - 1) // self.divisor) * self.divisor})."
            )
        return self.net(self.normalize(images))


def build_segmenter(
    arch: str = "Unet",
    encoder_name: str = "resnet18",
    encoder_weights: str | None = None,
    in_channels: int = 3,
    num_classes: int = 2,
) -> SegmentationNet:
    """Build a :class:`SegmentationNet` (weights are never downloaded unless ``encoder_weights`` asks for them).

    Example:
        >>> net = build_segmenter("Unet", "resnet18", None, in_channels=1, num_classes=2)
        >>> net(torch.rand(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """
    return SegmentationNet(arch, encoder_name, encoder_weights, in_channels, num_classes)

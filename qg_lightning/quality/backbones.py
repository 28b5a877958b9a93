"""Image-classification backbones for the quality predictor, with a first convolution widened for masks.

The quality predictor g(x, m) [0] reads the image and the candidate mask(s) concatenated on the channel axis.
:func:`build_backbone` creates a `timm <https://github.com/huggingface/pytorch-image-models>`_ classifier
without its classification layer (``num_classes=0``, so it returns globally average-pooled features) and
widens its first convolution from the 3 RGB channels to ``in_channels`` image channels plus
``mask_channels`` mask channels, with the paper's initialisation:

* RGB images (``in_channels=3``): the (pretrained or random) RGB filters are kept as they are;
* grayscale images (``in_channels=1``): the image channel gets the **sum** of the RGB filters, so a gray image
  gives the same first-layer response as the same image replicated into three RGB channels (timm's rule);
* each mask channel starts as the **mean** of the RGB filters [0].

The widening is done by hand on the first convolution (``timm``'s ``pretrained_cfg["first_conv"]``) after the
model is built, so the rule holds with and without pretrained weights.

Pretrained weights (``pretrained=True``) are loaded by ``timm`` from the local Hugging Face / torch hub cache.
qg_lightning never needs them and its tests never use them: on an offline machine, put the weights in the
cache beforehand (and set ``HF_HUB_OFFLINE=1`` so that nothing is fetched), otherwise ``timm`` tries to
download them.

[0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation", 2026.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import nn

from qg_lightning._validation import check_in_channels, check_int

__all__ = ["BACKBONES", "BACKBONE_ALIASES", "resolve_backbone_name", "build_backbone"]

#: Supported backbones: our name -> the ``timm`` model name (read-only). ResNet-18 is the paper's main
#: setting; the others are the paper's ablation (plus ResNet-34).
BACKBONES: Mapping[str, str] = MappingProxyType(
    {
        "resnet18": "resnet18",
        "resnet34": "resnet34",
        "mobilenetv3_large_100": "mobilenetv3_large_100",
        "efficientnet_b0": "efficientnet_b0",
        "densenet121": "densenet121",
        "convnext_tiny": "convnext_tiny",
    }
)

#: Short names accepted in configs: alias -> a key of :data:`BACKBONES` (read-only).
BACKBONE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "resnet-18": "resnet18",
        "resnet-34": "resnet34",
        "mobilenetv3": "mobilenetv3_large_100",
        "mobilenetv3_large": "mobilenetv3_large_100",
        "mobilenet_v3_large": "mobilenetv3_large_100",
        "efficientnet": "efficientnet_b0",
        "efficientnet-b0": "efficientnet_b0",
        "densenet": "densenet121",
        "densenet-121": "densenet121",
        "convnext": "convnext_tiny",
        "convnext-t": "convnext_tiny",
    }
)

_RGB = 3


def resolve_backbone_name(name: str) -> str:
    """Canonical backbone name (a key of :data:`BACKBONES`) for ``name`` or one of its aliases.

    Matching ignores case and surrounding spaces.

    Args:
        name: a key of :data:`BACKBONES` or :data:`BACKBONE_ALIASES`.

    Returns:
        The canonical name.

    Raises:
        KeyError: ``name`` is unknown; the message lists the supported names and aliases.

    Example:
        >>> resolve_backbone_name("MobileNetV3")
        'mobilenetv3_large_100'
        >>> resolve_backbone_name("resnet18")
        'resnet18'
    """
    if not isinstance(name, str):
        raise KeyError(
            f"Backbone name must be a string, got {name!r}. Supported backbones: {sorted(BACKBONES)}."
        )
    key = name.strip().lower()
    key = BACKBONE_ALIASES.get(key, key)
    if key not in BACKBONES:
        raise KeyError(
            f"Unknown backbone {name!r}. Supported backbones: {sorted(BACKBONES)} "
            f"(aliases: {sorted(BACKBONE_ALIASES)})."
        )
    return key


@torch.no_grad()
def _widened_weight(rgb_weight: torch.Tensor, in_channels: int, mask_channels: int) -> torch.Tensor:
    """First-conv weight ``(O, in_channels + mask_channels, kh, kw)`` from RGB filters ``(O, 3, kh, kw)``."""
    if in_channels == _RGB:
        image = rgb_weight
    else:  # in_channels == 1: sum of the RGB filters (gray replicated to RGB gives the same response)
        image = rgb_weight.sum(dim=1, keepdim=True)
    mask = rgb_weight.mean(dim=1, keepdim=True).expand(-1, mask_channels, -1, -1)
    return torch.cat([image, mask], dim=1).contiguous()


def build_backbone(
    name: str = "resnet18", *, in_channels: int, mask_channels: int = 0, pretrained: bool = False
) -> tuple[nn.Module, int]:
    """Feature extractor for ``(B, in_channels + mask_channels, H, W)`` inputs, returning ``(B, F)`` features.

    Args:
        name: a key of :data:`BACKBONES` or an alias from :data:`BACKBONE_ALIASES` (case-insensitive).
        in_channels: image channels, 3 (RGB) or 1 (grayscale). They come first in the input.
        mask_channels: mask channels appended after the image channels (``K - 1`` for the quality predictor;
            0 gives a plain image backbone).
        pretrained: load ImageNet weights through ``timm`` (they must already be in the local cache; see the
            module docstring). Tests use ``False``.

    Returns:
        ``(module, F)``: ``module(x)`` maps ``(B, in_channels + mask_channels, H, W)`` to globally
        average-pooled features ``(B, F)``.

    Raises:
        KeyError: unknown ``name`` (the message lists the supported names).
        ValueError: ``in_channels`` is not 1 or 3, or ``mask_channels`` is negative.
        TypeError: ``pretrained`` is not a bool.

    Example:
        >>> net, features = build_backbone("resnet18", in_channels=3, mask_channels=1)
        >>> features, net(torch.zeros(2, 4, 32, 32)).shape
        (512, torch.Size([2, 512]))
    """
    import timm  # local import: timm is slow to import and only needed here

    key = resolve_backbone_name(name)
    check_in_channels(in_channels, hint="Convert other images to grayscale or RGB first.")
    check_int(mask_channels, "mask_channels", minimum=0)
    if not isinstance(pretrained, bool):
        raise TypeError(f"`pretrained` must be a bool, got {pretrained!r}.")

    model = timm.create_model(BACKBONES[key], pretrained=pretrained, num_classes=0, in_chans=_RGB)
    conv_name = model.pretrained_cfg.get("first_conv")
    conv = model.get_submodule(conv_name) if conv_name else None
    if not isinstance(conv, nn.Conv2d) or conv.in_channels != _RGB or conv.groups != 1:
        raise RuntimeError(
            f"Backbone {key!r}: expected the first convolution {conv_name!r} to be an nn.Conv2d with 3 input "
            f"channels and groups=1, found {conv!r}. The installed timm version may have changed this model."
        )
    total = in_channels + mask_channels
    if total != _RGB or in_channels != _RGB:
        # Replace the weight in place: keeps the conv class (e.g. timm's padding-aware convs) and its bias.
        conv.weight = nn.Parameter(_widened_weight(conv.weight, in_channels, mask_channels))
        conv.in_channels = total
    features = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return model, features

"""Batched, seeded augmentation on tensors for the quality predictor's training data.

Spatial augmentation is applied *jointly* to images and every mask of a sample (ground truth, snapshot masks)
before corruption; photometric augmentation is applied to images only, after corruption (METHOD.md). Both run
on the batch's device in a few tensor ops, with per-sample parameters drawn in one call from an explicit
``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SpatialParams", "draw_spatial", "apply_spatial", "photometric"]


@dataclass(frozen=True)
class SpatialParams:
    """Per-sample spatial parameters: ``flip_h``/``flip_v`` bool ``(B,)``, ``angle`` radians ``(B,)``."""

    flip_h: Tensor
    flip_v: Tensor
    angle: Tensor


def draw_spatial(
    batch: int, *, max_rotation: float = 20.0, p_flip: float = 0.5, device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> SpatialParams:  # fmt: skip
    """Draw flips (each with ``p_flip``) and a rotation uniform in ``[-max_rotation, max_rotation]`` degrees.

    Example:
        >>> p = draw_spatial(3, generator=torch.Generator().manual_seed(0))
        >>> p.angle.shape, p.flip_h.dtype
        (torch.Size([3]), torch.bool)
    """
    u = torch.rand(batch, 3, device=device, generator=generator)
    angle = (u[:, 2] * 2 - 1) * math.radians(max_rotation)
    return SpatialParams(flip_h=u[:, 0] < p_flip, flip_v=u[:, 1] < p_flip, angle=angle)


def _grid(params: SpatialParams, size: tuple[int, int], dtype: torch.dtype) -> Tensor:
    b = params.angle.shape[0]
    cos, sin = torch.cos(params.angle), torch.sin(params.angle)
    sx = torch.where(params.flip_h, -1.0, 1.0).to(cos)
    sy = torch.where(params.flip_v, -1.0, 1.0).to(cos)
    theta = torch.zeros(b, 2, 3, device=cos.device, dtype=cos.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
    return F.affine_grid(theta.to(dtype), [b, 1, *size], align_corners=False)


def apply_spatial(params: SpatialParams, images: Tensor, *masks: Tensor) -> tuple[Tensor, ...]:
    """Warp images (bilinear, border padding) and masks (nearest, zero padding) with the same parameters.

    Args:
        params: from :func:`draw_spatial`, batch size ``B``.
        images: ``(B, C, H, W)`` float.
        masks: any number of ``(B, K, H, W)`` masks (any dtype; returned in the same dtype).

    Example:
        >>> p = SpatialParams(torch.tensor([True]), torch.tensor([False]), torch.zeros(1))
        >>> img = torch.arange(4.0).view(1, 1, 1, 4)
        >>> apply_spatial(p, img)[0].flatten().tolist()
        [3.0, 2.0, 1.0, 0.0]
    """
    grid = _grid(params, images.shape[-2:], images.dtype if images.is_floating_point() else torch.float32)
    out = [F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)]
    for m in masks:
        warped = F.grid_sample(m.to(grid.dtype), grid.to(grid.dtype), mode="nearest", padding_mode="zeros",
                               align_corners=False)  # fmt: skip
        out.append(warped.round().to(m.dtype))
    return tuple(out)


def photometric(
    images: Tensor, *, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
    noise_std: float = 0.03, generator: torch.Generator | None = None,
) -> Tensor:  # fmt: skip
    """Image-only photometric jitter, per sample: brightness, contrast, saturation (RGB) and Gaussian noise.

    Factors are uniform in ``[1 - x, 1 + x]``; the noise std is uniform in ``[0, noise_std]``. Output is clamped
    to ``[0, 1]``.

    Example:
        >>> out = photometric(torch.full((2, 3, 4, 4), 0.5), generator=torch.Generator().manual_seed(0))
        >>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
        (torch.Size([2, 3, 4, 4]), True, True)
    """
    b, c = images.shape[:2]
    u = torch.rand(b, 4, 1, 1, 1, device=images.device, generator=generator, dtype=images.dtype)
    x = images * (1 + brightness * (2 * u[:, 0] - 1))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + contrast * (2 * u[:, 1] - 1)) + mean
    if c == 3:
        gray = x.mean(dim=1, keepdim=True)
        x = (x - gray) * (1 + saturation * (2 * u[:, 2] - 1)) + gray
    noise = torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype)
    x = x + noise * (noise_std * u[:, 3])
    return x.clamp_(0, 1)

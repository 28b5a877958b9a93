"""Image grid of quality-weighted pseudolabels for TensorBoard / W&B.

Each tile is an unlabeled image with its pseudolabel filled and outlined in a colour that encodes the sample
weight (red = weight 0, green = weight 1), inside a frame whose colour encodes the predicted quality q on the
same scale. A red outline inside an orange frame reads "q just below tau, weight 0".
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.utils import make_grid

from qg_lightning.visualize import mask_boundary

__all__ = ["weight_colors", "quality_grid"]

_RED = (0.9, 0.1, 0.1)
_GREEN = (0.1, 0.85, 0.1)


def weight_colors(values: Tensor) -> Tensor:
    """Colours ``(n, 3)`` in ``[0, 1]`` from values ``(n,)`` in ``[0, 1]``: red at 0, green at 1.

    NaN (no prediction) maps to grey.

    Example:
        >>> weight_colors(torch.tensor([0.0, 1.0]))
        tensor([[0.9000, 0.1000, 0.1000],
                [0.1000, 0.8500, 0.1000]])
    """
    values = values.detach().float().reshape(-1, 1)
    red = torch.tensor(_RED, device=values.device).view(1, 3)
    green = torch.tensor(_GREEN, device=values.device).view(1, 3)
    colors = red + (green - red) * values.nan_to_num(0.0).clamp(0.0, 1.0)
    return torch.where(values.isnan(), torch.full_like(colors, 0.5), colors)


def quality_grid(
    images: Tensor,
    masks: Tensor,
    weights: Tensor,
    quality: Tensor,
    *,
    nrow: int = 4,
    alpha: float = 0.35,
    frame: int = 3,
) -> Tensor:
    """One RGB grid ``(3, H', W')`` in ``[0, 1]`` of pseudolabels coloured by weight, framed by quality.

    Args:
        images: ``float`` ``(n, C, H, W)`` in ``[0, 1]`` (C = 1 is shown as grey).
        masks: hard foreground masks ``(n, K-1, H, W)`` (all classes are drawn in one colour).
        weights: sample weights ``(n,)`` in ``[0, 1]``: colour of the filled mask and its outline.
        quality: predicted qualities ``(n,)`` in ``[0, 1]``: colour of the frame.
        nrow: tiles per row (``torchvision.utils.make_grid``).
        alpha: opacity of the mask fill.
        frame: frame width in pixels.

    Returns:
        ``float32`` ``(3, H', W')`` on the CPU.

    Example:
        >>> images = torch.zeros(2, 1, 8, 8)
        >>> masks = torch.zeros(2, 1, 8, 8); masks[:, :, 2:6, 2:6] = 1
        >>> grid = quality_grid(images, masks, torch.tensor([0.0, 1.0]), torch.tensor([0.3, 0.9]), frame=1)
        >>> grid.shape, grid[:, 2 + 1 + 2, 2 + 1 + 2]  # outline pixel of the first tile: red (weight 0)
        (torch.Size([3, 14, 26]), tensor([0.9000, 0.1000, 0.1000]))
    """
    rgb = images.detach().float().cpu()
    if rgb.shape[1] == 1:
        rgb = rgb.repeat(1, 3, 1, 1)
    rgb = rgb[:, :3].clamp(0.0, 1.0)
    fg = masks.detach().float().cpu().amax(dim=1) > 0.5  # (n, H, W)
    edge = mask_boundary(fg.long()).unsqueeze(1)
    color = weight_colors(weights.cpu()).view(-1, 3, 1, 1)
    fill = fg.unsqueeze(1).float() * alpha
    rgb = rgb * (1.0 - fill) + color * fill
    rgb = torch.where(edge, color.expand_as(rgb), rgb)
    if frame > 0:
        frame_color = weight_colors(quality.cpu()).view(-1, 3, 1, 1)
        framed = frame_color.expand(-1, -1, rgb.shape[2] + 2 * frame, rgb.shape[3] + 2 * frame).clone()
        framed[:, :, frame:-frame, frame:-frame] = rgb
        rgb = framed
    return make_grid(rgb, nrow=nrow, padding=2, pad_value=1.0)

"""Pictures: masks overlaid on images, written as PNG grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = ["CLASS_COLORS", "mask_boundary", "overlay_masks", "image_grid", "save_png"]

# One colour per foreground class (RGB in [0, 1]); cycles for more classes.
CLASS_COLORS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.2, 0.2),
    (0.2, 0.6, 1.0),
    (1.0, 0.85, 0.1),
    (0.8, 0.3, 1.0),
    (0.1, 0.9, 0.9),
)


def mask_boundary(labels: Tensor) -> Tensor:
    """Boolean ``(B, H, W)`` inner boundary of the non-zero region of label maps ``(B, H, W)``.

    Example:
        >>> m = torch.zeros(1, 5, 5, dtype=torch.long); m[0, 1:4, 1:4] = 1
        >>> mask_boundary(m)[0].int().sum().item()
        8
    """
    fg = (labels > 0).float().unsqueeze(1)
    eroded = -F.max_pool2d(-F.pad(fg, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return (fg - eroded).squeeze(1) > 0


def overlay_masks(
    images: Tensor,
    preds: Tensor | None = None,
    targets: Tensor | None = None,
    *,
    alpha: float = 0.4,
    target_color: Sequence[float] = (0.1, 1.0, 0.1),
) -> Tensor:
    """RGB overlays ``(B, 3, H, W)`` in ``[0, 1]``: predictions filled per class, truth drawn as a green outline.

    Args:
        images: ``(B, C, H, W)`` in ``[0, 1]`` (grayscale is repeated to RGB).
        preds: optional label maps ``(B, H, W)``; class ``k`` is filled with ``CLASS_COLORS[k - 1]``.
        targets: optional label maps ``(B, H, W)``; their boundary is drawn in ``target_color``.

    Example:
        >>> img = torch.zeros(1, 1, 4, 4); pred = torch.ones(1, 4, 4, dtype=torch.long)
        >>> overlay_masks(img, pred, alpha=1.0)[0, :, 0, 0]
        tensor([1.0000, 0.2000, 0.2000])
    """
    rgb = images.detach().float().cpu()
    if rgb.shape[1] == 1:
        rgb = rgb.repeat(1, 3, 1, 1)
    rgb = rgb[:, :3].clamp(0, 1).clone()
    if preds is not None:
        preds = preds.detach().cpu()
        for k in range(1, int(preds.max().item()) + 1 if preds.numel() else 1):
            color = torch.tensor(CLASS_COLORS[(k - 1) % len(CLASS_COLORS)]).view(1, 3, 1, 1)
            sel = (preds == k).unsqueeze(1).float() * alpha
            rgb = rgb * (1 - sel) + color * sel
    if targets is not None:
        edge = mask_boundary(targets.detach().cpu()).unsqueeze(1)
        rgb = torch.where(edge, torch.tensor(list(target_color), dtype=rgb.dtype).view(1, 3, 1, 1), rgb)
    return rgb


def image_grid(images: Tensor, *, ncol: int = 4, pad: int = 2, border: Tensor | None = None) -> np.ndarray:
    """Tile ``(B, 3, H, W)`` images in ``[0, 1]`` into one ``uint8`` ``(H', W', 3)`` array.

    ``border`` ``(B, 3)`` optionally colours each tile's frame (e.g. by a pseudolabel's weight).

    Example:
        >>> image_grid(torch.zeros(3, 3, 4, 4), ncol=2, pad=1).shape
        (11, 11, 3)
    """
    b, _, h, w = images.shape
    ncol = max(1, min(ncol, b))
    nrow = (b + ncol - 1) // ncol
    grid = torch.ones(3, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(b):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        if border is not None and pad > 0:
            grid[:, y - pad : y + h + pad, x - pad : x + w + pad] = border[i].view(3, 1, 1)
        grid[:, y : y + h, x : x + w] = images[i]
    return (grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a ``uint8`` ``(H, W, 3)`` array as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path

"""A picture of the corruption recipe: one example per corruption, with its Dice (``qg-lightning gallery``).

Each panel shows the corrupted mask filled in colour over the image, the ground truth as a green outline, and
the corruption's name, its registries and the Dice of the corrupted mask against the ground truth (the target
a quality predictor learns). Corruptions that live in several registries (the blob family is in both the main
and the blob registry) are drawn once.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qg_lightning._validation import check_int
from qg_lightning.masks import foreground_from_labels
from qg_lightning.quality.corruptions.registry import (
    BLOB,
    CATASTROPHIC,
    HEAVY,
    MAIN,
    MULTICLASS,
    CorruptionSpec,
)
from qg_lightning.quality.sampling import dice_target

__all__ = [
    "DEFAULT_REGISTRIES",
    "GalleryPanel",
    "corruption_gallery",
    "gallery_cli",  # noqa: F822 (module __getattr__: it lives in qg_lightning.cli_gallery)
    "gallery_panels",
]

#: The registries drawn by default, by display name (``multiclass`` is added for multi-class masks).
DEFAULT_REGISTRIES: Mapping[str, Mapping[str, CorruptionSpec]] = {
    "main": MAIN,
    "heavy": HEAVY,
    "catastrophic": CATASTROPHIC,
    "blob": BLOB,
}


@dataclass(frozen=True)
class GalleryPanel:
    """One corruption example.

    Attributes:
        name: registry key of the corruption.
        registries: display names of the registries it belongs to.
        dice: mean Dice over foreground classes of the corrupted mask against the ground truth.
        overlay: ``uint8 (H, W, 3)`` picture (corrupted mask filled, ground truth outlined in green).
    """

    name: str
    registries: tuple[str, ...]
    dice: float
    overlay: np.ndarray

    @property
    def title(self) -> str:
        """``"name [registries]\\nDice d"``."""
        return f"{self.name} [{', '.join(self.registries)}]\nDice {self.dice:.3f}"


def _label_map(mask: np.ndarray | Tensor) -> np.ndarray:
    arr = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"`mask` must be a label map (H, W), got shape {arr.shape}.")
    if arr.dtype.kind == "f":
        arr = np.rint(arr)
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"`mask` must hold class indices >= 0 (or binary 0/255), got minimum {arr.min()}.")
    values = set(np.unique(arr).tolist())
    if values <= {0, 255}:
        arr = (arr == 255).astype(np.int64)
    return arr


def _image_rgb(image: np.ndarray | Tensor | None, shape: tuple[int, int]) -> Tensor:
    """``(1, 3, H, W)`` float in [0, 1]; gray background when ``image`` is None."""
    h, w = shape
    if image is None:
        return torch.full((1, 3, h, w), 0.25)
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.ndim != 3:
            raise ValueError(f"`image` tensor must be (C, H, W), got shape {tuple(t.shape)}.")
        t = t.float().div(255.0) if t.dtype == torch.uint8 else t.float()
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise ValueError(f"`image` array must be (H, W) or (H, W, C), got shape {arr.shape}.")
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float()
        t = t / 255.0 if arr.dtype == np.uint8 else t
    if t.shape[1:] != (h, w):
        raise ValueError(
            f"`image` is {tuple(t.shape[1:])} (H, W) but `mask` is {(h, w)}; give them the same size."
        )
    if t.shape[0] == 1:
        t = t.repeat(3, 1, 1)
    return t[:3].clamp(0, 1).unsqueeze(0)


def gallery_panels(
    mask: np.ndarray | Tensor,
    *,
    image: np.ndarray | Tensor | None = None,
    seed: int = 0,
    registries: Mapping[str, Mapping[str, CorruptionSpec]] | None = None,
) -> list[GalleryPanel]:
    """Apply every corruption once to ``mask`` and return one :class:`GalleryPanel` each.

    Args:
        mask: label map ``(H, W)`` with class indices ``0..K-1`` (binary ``{0, 255}`` is read as ``{0, 1}``),
            numpy or tensor.
        image: optional image ``(H, W, C)`` uint8 / ``(C, H, W)`` tensor in [0, 1] of the same size.
        seed: each corruption draws from ``seed`` and its name, so one corruption's example does not depend
            on which others are drawn.
        registries: display name -> registry; default :data:`DEFAULT_REGISTRIES`, plus ``multiclass`` when the
            mask has several foreground classes.

    Returns:
        Panels in registry order, one per distinct corruption name.

    Example:
        >>> mask = np.zeros((32, 32), np.uint8); mask[8:24, 10:26] = 255
        >>> panels = gallery_panels(mask, seed=0)
        >>> len(panels), panels[0].name, panels[0].overlay.shape, panels[0].dice < 1
        (51, 'erosion_5', (32, 32, 3), True)
    """
    labels = _label_map(mask)
    num_classes = max(2, int(labels.max()) + 1)
    if registries is None:
        registries = dict(DEFAULT_REGISTRIES)
        if num_classes > 2:
            registries["multiclass"] = MULTICLASS
    specs: dict[str, tuple[CorruptionSpec, list[str]]] = {}
    for reg_name, registry in registries.items():
        for name, spec in registry.items():
            specs.setdefault(name, (spec, []))[1].append(reg_name)
    from qg_lightning.quality.report import overlay_rgb

    truth = foreground_from_labels(torch.from_numpy(labels).unsqueeze(0), num_classes)  # (1, K-1, H, W)
    rgb = _image_rgb(image, labels.shape)[0]
    panels = []
    for name, (spec, regs) in specs.items():
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
        corrupted = spec(truth.clone(), generator=g)
        dice = float(dice_target(corrupted, truth).mean())
        overlay = overlay_rgb(rgb, corrupted[0].float(), truth[0])
        panels.append(GalleryPanel(name, tuple(regs), dice, overlay))
    return panels


def corruption_gallery(
    mask: np.ndarray | Tensor,
    *,
    image: np.ndarray | Tensor | None = None,
    seed: int = 0,
    registries: Mapping[str, Mapping[str, CorruptionSpec]] | None = None,
    ncols: int = 8,
) -> np.ndarray:
    """One example of every corruption (MAIN, HEAVY, CATASTROPHIC, BLOB) with its name and Dice, as a picture.

    Args:
        mask: label map ``(H, W)`` (see :func:`gallery_panels`).
        image: optional image of the same size (otherwise a gray background).
        seed: seed of the corruption draws.
        registries: registries to draw (default :data:`DEFAULT_REGISTRIES`).
        ncols: panels per row.

    Returns:
        ``uint8 (H', W', 3)`` RGB picture of the matplotlib figure (one subplot per corruption).

    Example:
        >>> mask = np.zeros((32, 32), np.uint8); mask[8:24, 10:26] = 1
        >>> pic = corruption_gallery(mask, registries={"heavy": HEAVY}, ncols=4)
        >>> pic.dtype, pic.ndim, pic.shape[2]
        (dtype('uint8'), 3, 3)
    """
    from qg_lightning.quality.report import panel_figure

    check_int(ncols, "ncols", minimum=1)
    panels = gallery_panels(mask, image=image, seed=seed, registries=registries)
    fig = panel_figure(
        [(p.overlay, p.title) for p in panels],
        title="Corruption recipe: corrupted mask (blue) vs ground truth (green outline)",
        ncols=ncols,
        size=2.0,
    )
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


def __getattr__(name: str) -> Any:
    """``gallery_cli`` moved to the CLI layer (:mod:`qg_lightning.cli_gallery`); still importable from here."""
    if name == "gallery_cli":
        from qg_lightning.cli_gallery import gallery_cli

        return gallery_cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

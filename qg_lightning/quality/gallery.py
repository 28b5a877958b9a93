"""A picture of the corruption recipe: one example per corruption, with its Dice (``qg-lightning gallery``).

Each panel shows the corrupted mask filled in colour over the image, the ground truth as a green outline, and
the corruption's name, its registries and the Dice of the corrupted mask against the ground truth (the target
a quality predictor learns). Corruptions that live in several registries (the blob family is in both the main
and the blob registry) are drawn once.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

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

__all__ = ["DEFAULT_REGISTRIES", "GalleryPanel", "corruption_gallery", "gallery_cli", "gallery_panels"]

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
    from qg_lightning.quality.evaluation import _overlay_rgb

    truth = foreground_from_labels(torch.from_numpy(labels).unsqueeze(0), num_classes)  # (1, K-1, H, W)
    rgb = _image_rgb(image, labels.shape)[0]
    panels = []
    for name, (spec, regs) in specs.items():
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
        corrupted = spec(truth.clone(), generator=g)
        dice = float(dice_target(corrupted, truth).mean())
        overlay = _overlay_rgb(rgb, corrupted[0].float(), truth[0])
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
    from qg_lightning.quality.evaluation import _panel_figure

    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"`ncols` must be an integer >= 1, got {ncols!r}.")
    panels = gallery_panels(mask, image=image, seed=seed, registries=registries)
    fig = _panel_figure(
        [(p.overlay, p.title) for p in panels],
        title="Corruption recipe: corrupted mask (blue) vs ground truth (green outline)",
        ncols=ncols,
        size=2.0,
    )
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


def _first_with_lesion(masks: Sequence[np.ndarray]) -> int:
    for i, m in enumerate(masks):
        if (m > 0).any():
            return i
    raise ValueError("No mask with foreground found; pass --id of an image whose mask is not empty.")


def gallery_cli(argv: Sequence[str]) -> int:
    """``qg-lightning gallery``: see ``--help``. Returns the exit code (0)."""
    from qg_lightning.data import SYNTHETIC_SEED, read_image, read_mask, scan_folder, synthetic_sample

    parser = argparse.ArgumentParser(
        prog="qg-lightning gallery",
        description="Draw one example of each corruption of the recipe, with its Dice, on a real or embedded "
        "mask.",
    )
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument(
        "--data.root", dest="root", default=None, help="dataset folder (default: embedded data)"
    )
    parser.add_argument("--id", default=None, help="image id in --data.root (default: first with a lesion)")
    parser.add_argument("--data.num_classes", dest="num_classes", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=128, help="side the image and mask are resized to")
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(list(argv))
    if ns.image_size < 16:
        raise ValueError(f"`--image-size` must be >= 16, got {ns.image_size}.")
    out = Path(ns.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"`--out` must be a .png file path, got '{ns.out}'.")
    size = ns.image_size
    if ns.root is None:
        if ns.id is not None:
            raise ValueError("`--id` needs --data.root (the embedded data is used without it).")
        for i in range(1000):
            image, mask = synthetic_sample(i, image_size=size, seed=SYNTHETIC_SEED)
            if (mask > 0).any():
                source = f"embedded synthetic sample {i}"
                break
        mask = (mask > 0).astype(np.uint8)
    else:
        root = Path(ns.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--data.root '{root}' does not exist or is not a folder.")
        index = scan_folder(root, num_classes=ns.num_classes, check=False)
        if ns.id is None:
            ids = index.ids
            pick = None
            for id_ in ids:
                if (read_mask(index.mask_paths[id_], ns.num_classes) > 0).any():
                    pick = id_
                    break
            if pick is None:
                raise ValueError(f"Every mask in '{root}' is empty; pass --id of an image with a lesion.")
            ns.id = pick
        if ns.id not in index.image_paths:
            close = [i for i in index.ids if ns.id in i][:5]
            raise ValueError(f"--id '{ns.id}' is not an image/mask pair in '{root}'. Similar ids: {close}.")
        image = read_image(index.image_paths[ns.id], 3)
        mask = read_mask(index.mask_paths[ns.id], ns.num_classes)
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        source = f"{root} id {ns.id}"
    picture = corruption_gallery(mask, image=image, seed=ns.seed)
    from qg_lightning.visualize import save_png

    save_png(picture, out)
    sys.stdout.write(f"Corruption gallery of {source} ({size} px, seed {ns.seed}) -> {out}\n")
    return 0

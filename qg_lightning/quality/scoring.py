"""Quality control of a folder of masks with a trained quality predictor (``qg-lightning score``).

Give it a folder of images and a folder of masks (e.g. a model's predictions on new cases): files are paired
by id (the file name without extension), each pair is scored by the predictor (its predicted Dice against the
unseen truth), and the result is a CSV sorted worst first, so a reviewer starts with the masks most likely to
be wrong. Files that do not pair up are reported (a warning, ``unpaired.txt`` next to the CSV, and the
command's output), never silently dropped.

Masks are read like the data layer reads them (:func:`~qg_lightning.data.read_mask`: binary ``{0, 255}`` /
``{0, 1}`` or class indices ``0..K-1``) and resized to the predictor's input size with nearest neighbour;
images are read with :func:`~qg_lightning.data.read_image` and resized with area interpolation, exactly as
the predictor's training data (:func:`~qg_lightning.quality.datamodule.load_resized`).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from qg_lightning._validation import check_int
from qg_lightning.data import IMAGE_EXTENSIONS, DataValidationError, read_image, read_mask
from qg_lightning.masks import foreground_from_labels

__all__ = [
    "FilePairs",
    "pair_files",
    "save_worst_masks_png",
    "score_cli",  # noqa: F822 (module __getattr__: it lives in qg_lightning.cli_score)
    "score_masks",
    "worst_first",
    "write_scores",
]

log = logging.getLogger(__name__)


@dataclass
class FilePairs:
    """Images and masks paired by id.

    Attributes:
        ids: sorted ids present in both folders.
        image_paths: image file per id (same order as ``ids``).
        mask_paths: mask file per id.
        unpaired_images: image files without a mask.
        unpaired_masks: mask files without an image.
        ignored: files that cannot be used, with the reason (unsupported extension, duplicate id).
    """

    ids: list[str]
    image_paths: list[Path]
    mask_paths: list[Path]
    unpaired_images: list[Path] = field(default_factory=list)
    unpaired_masks: list[Path] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)

    @property
    def n_problems(self) -> int:
        """Number of files that were not paired."""
        return len(self.unpaired_images) + len(self.unpaired_masks) + len(self.ignored)

    def problem_lines(self) -> list[str]:
        """One human-readable line per file that was not paired."""
        lines = [f"image without mask: {p}" for p in self.unpaired_images]
        lines += [f"mask without image: {p}" for p in self.unpaired_masks]
        lines += [f"ignored: {p} ({why})" for p, why in self.ignored.items()]
        return lines


def _list_by_id(folder: Path, ignored: dict[str, str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            ignored[str(path)] = (
                f"unsupported extension '{path.suffix}', accepted: {', '.join(IMAGE_EXTENSIONS)}"
            )
            continue
        if path.stem in found:
            ignored[str(path)] = f"same id '{path.stem}' as {found[path.stem].name}; keep one file per id"
            continue
        found[path.stem] = path
    return found


def pair_files(images_dir: str | os.PathLike, masks_dir: str | os.PathLike) -> FilePairs:
    """Pair the files of two folders by id (file name without extension).

    Args:
        images_dir: folder of images (``.png``, ``.jpg``, ``.tif``, ...).
        masks_dir: folder of masks with the same ids (``.png`` recommended: JPEG masks are lossy).

    Returns:
        A :class:`FilePairs`; unpaired and unusable files are listed in it, not dropped silently.

    Raises:
        FileNotFoundError: a folder does not exist.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for sub, name in (("i", "a.png"), ("i", "b.jpg"), ("m", "a.png"), ("m", "c.png")):
        ...         Path(tmp, sub).mkdir(exist_ok=True)
        ...         Image.new("L", (4, 4)).save(Path(tmp, sub, name))
        ...     pairs = pair_files(Path(tmp, "i"), Path(tmp, "m"))
        ...     pairs.ids, [p.name for p in pairs.unpaired_images], [p.name for p in pairs.unpaired_masks]
        (['a'], ['b.jpg'], ['c.png'])
    """
    images_dir, masks_dir = Path(images_dir).expanduser(), Path(masks_dir).expanduser()
    for arg, folder in (("--images", images_dir), ("--masks", masks_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{arg} folder '{folder}' does not exist or is not a folder.")
    ignored: dict[str, str] = {}
    images = _list_by_id(images_dir, ignored)
    masks = _list_by_id(masks_dir, ignored)
    ids = sorted(set(images) & set(masks))
    return FilePairs(
        ids=ids,
        image_paths=[images[i] for i in ids],
        mask_paths=[masks[i] for i in ids],
        unpaired_images=[images[i] for i in sorted(set(images) - set(masks))],
        unpaired_masks=[masks[i] for i in sorted(set(masks) - set(images))],
        ignored=ignored,
    )


def _load_pair(image_path: Path, mask_path: Path, size: int, in_channels: int, num_classes: int):
    image = read_image(image_path, in_channels)
    mask = read_mask(mask_path, num_classes)
    ih, iw = image.shape[:2]
    mh, mw = mask.shape
    if abs(ih / iw - mh / mw) > 0.01 * (ih / iw):
        log.warning(
            "Mask '%s' is %dx%d (WxH) but image '%s' is %dx%d: different aspect ratios, so they cannot "
            "line up after resizing. Check that the files belong together.",
            mask_path,
            mw,
            mh,
            image_path,
            iw,
            ih,
        )
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, in_channels)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return image, mask


def _progress(enabled: bool, total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled or total == 0,
        transient=False,
    )


@torch.no_grad()
def score_masks(
    predictor: nn.Module,
    image_paths: Sequence[str | os.PathLike],
    mask_paths: Sequence[str | os.PathLike],
    *,
    ids: Sequence[str] | None = None,
    image_size: int = 128,
    batch_size: int = 32,
    skip_bad: bool = False,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Predicted quality of each mask for its image, in input order.

    Args:
        predictor: a :class:`~qg_lightning.quality.QualityPredictor` (uses its ``in_channels`` and
            ``num_classes``), run in eval mode on its own device; or a
            :class:`~qg_lightning.quality.QualityEnsemble`, whose members' disagreement is recorded too.
        image_paths: image files.
        mask_paths: mask files, one per image, same order.
        ids: one id per pair (default: the image file stems).
        image_size: side the pairs are resized to (the predictor's training size).
        batch_size: pairs per forward pass.
        skip_bad: record an unreadable pair (``quality`` NaN, ``error`` set) and go on, instead of raising.
        progress: show a progress bar on stderr.

    Returns:
        One dict per pair: ``id``, ``quality`` (mean over foreground classes), ``quality_class{k}`` per class
        for multi-class predictors, ``mask_fraction`` (share of foreground pixels at ``image_size``; 0 for an
        empty mask, which the predictor cannot judge well: it cannot know whether the image has a lesion),
        ``quality_spread`` for an ensemble of two or more (the members' standard deviation, averaged over
        classes: high where they disagree), ``image``, ``mask`` (paths) and ``error`` (``""`` unless skipped).

    Raises:
        ValueError: mismatched lengths or bad arguments.
        qg_lightning.data.DataValidationError: an unreadable image or mask (unless ``skip_bad``).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> from qg_lightning.quality.predictor import QualityPredictor
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Image.new("RGB", (40, 30), (120, 80, 60)).save(f"{tmp}/a.png")
        ...     Image.new("L", (40, 30), 255).save(f"{tmp}/a_mask.png")
        ...     rows = score_masks(QualityPredictor(), [f"{tmp}/a.png"], [f"{tmp}/a_mask.png"], image_size=32)
        >>> rows[0]["id"], 0 <= rows[0]["quality"] <= 1
        ('a', True)
    """
    image_paths = [Path(p) for p in image_paths]
    mask_paths = [Path(p) for p in mask_paths]
    if len(image_paths) != len(mask_paths):
        raise ValueError(
            f"`image_paths` ({len(image_paths)}) and `mask_paths` ({len(mask_paths)}) must pair up one to "
            "one."
        )
    ids = [p.stem for p in image_paths] if ids is None else [str(i) for i in ids]
    if len(ids) != len(image_paths):
        raise ValueError(f"`ids` must have one entry per pair ({len(image_paths)}), got {len(ids)}.")
    for name, value, lo in (("image_size", image_size, 8), ("batch_size", batch_size, 1)):
        check_int(value, name, minimum=lo)
    in_channels = int(getattr(predictor, "in_channels", 3))
    num_classes = int(getattr(predictor, "num_classes", 2))
    device = next((t.device for t in predictor.parameters()), torch.device("cpu"))
    was_training = predictor.training
    predictor.eval()
    with_spread = callable(getattr(predictor, "forward_with_spread", None)) and len(predictor) > 1
    records: list[dict[str, Any]] = []
    try:
        with _progress(progress, len(ids)) as bar:
            task = bar.add_task("scoring", total=len(ids))
            for start in range(0, len(ids), batch_size):
                rows = range(start, min(start + batch_size, len(ids)))
                images, masks, ok = [], [], []
                for i in rows:
                    rec = {
                        "id": ids[i],
                        "image": str(image_paths[i]),
                        "mask": str(mask_paths[i]),
                        "error": "",
                    }
                    try:
                        image, mask = _load_pair(
                            image_paths[i], mask_paths[i], image_size, in_channels, num_classes
                        )
                    except DataValidationError as err:
                        if not skip_bad:
                            raise DataValidationError(f"{err} (pass --skip-bad to score the rest)") from None
                        log.warning("Skipping pair '%s': %s", ids[i], err)
                        rec["error"] = str(err)
                        rec["quality"] = math.nan
                    else:
                        images.append(image)
                        masks.append(mask)
                        rec["mask_fraction"] = np.count_nonzero(mask) / mask.size
                        ok.append(rec)
                    records.append(rec)
                if images:
                    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0).to(device)
                    labels = torch.from_numpy(np.stack(masks)).long().to(device)
                    fg = foreground_from_labels(labels, num_classes)
                    if with_spread:
                        q, spread = (t.float().cpu().double() for t in predictor.forward_with_spread(x, fg))
                    else:
                        q, spread = predictor(x, fg).float().cpu().double(), None
                    for j, (rec, row) in enumerate(zip(ok, q.tolist(), strict=True)):
                        rec["quality"] = float(np.mean(row))
                        if spread is not None:
                            rec["quality_spread"] = float(spread[j].mean())
                        if len(row) > 1:
                            for k, value in enumerate(row, start=1):
                                rec[f"quality_class{k}"] = float(value)
                bar.advance(task, len(rows))
    finally:
        predictor.train(was_training)
    if len(ids) and all(r["error"] for r in records):
        raise DataValidationError(f"None of the {len(ids)} pairs could be read; see the warnings above.")
    return records


def _sort_key(rec: dict[str, Any]) -> tuple[int, float, str]:
    q = rec.get("quality", math.nan)
    bad = q is None or (isinstance(q, float) and math.isnan(q))
    return (1 if bad else 0, 0.0 if bad else float(q), str(rec["id"]))


def write_scores(records: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write records of :func:`score_masks` as CSV, sorted worst (lowest quality) first.

    Columns: ``id``, ``quality``, ``quality_class{k}`` (multi-class), ``quality_spread`` and ``mask_fraction``
    (when the records have them), ``image``, ``mask``, ``error``. Pairs that could not be read (``error`` set)
    come last with an empty quality.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     p = write_scores([{"id": "a", "quality": 0.9}, {"id": "b", "quality": 0.2}], f"{tmp}/s.csv")
        ...     p.read_text().split()
        ['id,quality,image,mask,error', 'b,0.200000,,,', 'a,0.900000,,,']
    """
    per_class = sorted(
        {k for r in records for k in r if k.startswith("quality_class")}, key=lambda k: int(k[13:])
    )
    extra = [k for k in ("quality_spread", "mask_fraction") if any(k in r for r in records)]
    columns = ["id", "quality", *per_class, *extra, "image", "mask", "error"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for rec in sorted(records, key=_sort_key):
            row = []
            for col in columns:
                value = rec.get(col, "")
                if isinstance(value, float):
                    value = "" if math.isnan(value) else f"{value:.6f}"
                row.append(value)
            writer.writerow(row)
    return path


def worst_first(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scored records of :func:`score_masks` (unreadable pairs left out), lowest predicted quality first.

    Example:
        >>> rows = [{"id": "a", "quality": 0.9, "error": ""}, {"id": "b", "quality": 0.2, "error": ""},
        ...         {"id": "c", "quality": math.nan, "error": "unreadable"}]
        >>> [r["id"] for r in worst_first(rows)]
        ['b', 'a']
    """
    return sorted((r for r in records if not r.get("error")), key=_sort_key)


def save_worst_masks_png(
    records: Sequence[dict[str, Any]],
    n: int,
    path: str | os.PathLike,
    *,
    image_size: int,
    in_channels: int,
    num_classes: int,
) -> Path | None:
    """Overlays of the ``n`` masks of ``records`` (:func:`score_masks`) with the lowest predicted quality, as a
    PNG at ``path`` (read again from their files at ``image_size``); None when nothing was scored."""
    from qg_lightning.quality.report import save_worst_png

    scored = worst_first(records)[: max(0, n)]
    if not scored:
        return None
    images, masks = [], []
    for rec in scored:
        image, mask = _load_pair(Path(rec["image"]), Path(rec["mask"]), image_size, in_channels, num_classes)
        images.append(image)
        masks.append(mask)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    fg = foreground_from_labels(torch.from_numpy(np.stack(masks)).long(), num_classes)
    captions = [f"{r['id']}\nquality {r['quality']:.3f}" for r in scored]
    return save_worst_png(
        x, fg, None, captions, path, title=f"{len(scored)} lowest predicted quality (blue: mask)"
    )


def __getattr__(name: str) -> Any:
    """``score_cli`` moved to the CLI layer (:mod:`qg_lightning.cli_score`); still importable from here."""
    if name == "score_cli":
        from qg_lightning.cli_score import score_cli

        return score_cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

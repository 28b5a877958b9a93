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

import argparse
import csv
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from qg_lightning.data import IMAGE_EXTENSIONS, DataValidationError, read_image, read_mask
from qg_lightning.masks import foreground_from_labels

__all__ = ["FilePairs", "pair_files", "score_cli", "score_masks", "write_scores"]

log = logging.getLogger(__name__)

_MAX_LISTED = 10


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
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"`{name}` must be an integer >= {lo}, got {value!r}.")
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


def _worst_png(
    records: Sequence[dict[str, Any]],
    n: int,
    path: Path,
    *,
    image_size: int,
    in_channels: int,
    num_classes: int,
) -> Path | None:
    from qg_lightning.quality.evaluation import save_worst_png

    scored = sorted((r for r in records if not r.get("error")), key=_sort_key)[: max(0, n)]
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


def _recorded_image_size(path: str) -> int | None:
    from qg_lightning.checkpoint import load_checkpoint

    hp = load_checkpoint(path, what="quality predictor checkpoint").get("datamodule_hyper_parameters")
    size = hp.get("image_size") if isinstance(hp, dict) else None
    return size if isinstance(size, int) else None


def _ensemble_image_size(paths: Sequence[str]) -> int | None:
    """The training size recorded in the first checkpoint; a warning when the others recorded another."""
    sizes = [_recorded_image_size(path) for path in paths]
    if len(set(sizes)) > 1:
        log.warning(
            "The predictors were trained at different image sizes (%s); scoring at the first one's. Pass "
            "--image-size to choose.",
            ", ".join(f"{path}: {size}" for path, size in zip(paths, sizes, strict=True)),
        )
    return sizes[0]


def score_cli(argv: Sequence[str]) -> int:
    """``qg-lightning score``: see ``--help``. Returns the exit code (0)."""
    from qg_lightning.quality.predictor import load_quality_predictors

    parser = argparse.ArgumentParser(
        prog="qg-lightning score",
        description="Score every mask in a folder with a quality predictor (predicted Dice), worst first.",
    )
    parser.add_argument(
        "--predictor",
        required=True,
        nargs="+",
        help="quality predictor checkpoint (.ckpt); several: their mean, and their disagreement as "
        "quality_spread (an ensemble, e.g. of seeds)",
    )
    parser.add_argument("--images", required=True, help="folder of images")
    parser.add_argument(
        "--masks", required=True, help="folder of masks, same ids (file names without extension)"
    )
    parser.add_argument("--out", required=True, help="CSV to write (sorted worst first)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size (default: the predictor's training size, else 128)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--worst", type=int, default=16, help="masks in the worst-cases overlay PNG (0: none)"
    )
    parser.add_argument("--skip-bad", action="store_true", help="record unreadable pairs and go on")
    parser.add_argument(
        "--tta",
        action="store_true",
        help="average the predictor over 4 flips of image and mask (4x the cost)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda:0', ...")
    ns = parser.parse_args(list(argv))

    missing = [f"--predictor '{path}'" for path in ns.predictor if not Path(path).is_file()]
    missing += [
        f"{flag} '{v}' (folder)"
        for flag, v in (("--images", ns.images), ("--masks", ns.masks))
        if not Path(v).expanduser().is_dir()
    ]
    if missing:
        raise FileNotFoundError("Not found: " + "; ".join(missing) + ". Check the paths.")
    out = Path(ns.out)
    if out.suffix.lower() != ".csv":
        raise ValueError(f"`--out` must be a .csv file path, got '{ns.out}'.")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if ns.device == "auto" else ns.device
    predictor = load_quality_predictors(ns.predictor, map_location=device, tta=ns.tta)
    recorded = None if ns.image_size else _ensemble_image_size(ns.predictor)
    image_size = ns.image_size or recorded or 128
    if ns.image_size is None and recorded is None:
        log.warning(
            "The predictor checkpoint does not record its training image size; using 128 (--image-size)."
        )

    pairs = pair_files(ns.images, ns.masks)
    unpaired_txt = out.parent / "unpaired.txt"
    problems = pairs.problem_lines()
    if problems:
        listed = "\n".join(f"  - {line}" for line in problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        log.warning(
            "%d file(s) do not pair up and are not scored (full list in %s):\n%s%s",
            len(problems),
            unpaired_txt,
            listed,
            more,
        )
    if not pairs.ids:
        raise ValueError(
            f"No image/mask pairs: no file in --images '{ns.images}' has a mask with the same id in --masks "
            f"'{ns.masks}' ({len(problems)} unpaired file(s)). Ids are file names without extension."
        )
    records = score_masks(
        predictor,
        pairs.image_paths,
        pairs.mask_paths,
        ids=pairs.ids,
        image_size=image_size,
        batch_size=ns.batch_size,
        skip_bad=ns.skip_bad,
        progress=not ns.no_progress,
    )
    bad = [f"unreadable: {r['image']} / {r['mask']} ({r['error']})" for r in records if r["error"]]
    if problems or bad:
        out.parent.mkdir(parents=True, exist_ok=True)
        unpaired_txt.write_text("\n".join(problems + bad) + "\n")
    write_scores(records, out)
    worst_path = None
    if ns.worst > 0:
        worst_path = _worst_png(
            records,
            ns.worst,
            out.with_name(f"{out.stem}_worst.png"),
            image_size=image_size,
            in_channels=predictor.in_channels,
            num_classes=predictor.num_classes,
        )
    empty = [r["id"] for r in records if not r["error"] and r["mask_fraction"] == 0]
    meta = {
        "predictor": str(ns.predictor[0]),
        "predictors": [str(path) for path in ns.predictor],
        "images": str(ns.images),
        "masks": str(ns.masks),
        "image_size": image_size,
        "num_classes": predictor.num_classes,
        "in_channels": predictor.in_channels,
        "tta": bool(ns.tta),
        "n_scored": sum(1 for r in records if not r["error"]),
        "n_empty_masks": len(empty),
        "n_unreadable": len(bad),
        "n_unpaired": len(problems),
        "unpaired_txt": str(unpaired_txt) if (problems or bad) else None,
        "worst_png": str(worst_path) if worst_path else None,
    }
    meta_path = out.with_name(f"{out.stem}_meta.json")
    meta_path.write_text(json.dumps(meta, indent=2))

    scored = sorted((r for r in records if not r["error"]), key=_sort_key)
    by = f" with the mean of {len(ns.predictor)} predictors" if len(ns.predictor) > 1 else ""
    lines = [f"Scored {meta['n_scored']} mask(s) at {image_size} px{by} -> {out} (worst first)"]
    if scored:
        lines.append("  worst: " + ", ".join(f"{r['id']} {r['quality']:.3f}" for r in scored[:5]))
    if empty:
        lines.append(
            f"  {len(empty)} empty mask(s) (mask_fraction 0), e.g. {', '.join(empty[:3])}: a predictor cannot "
            "tell whether an empty mask is right (no lesion) or a miss; check them by rule"
        )
    if problems or bad:
        lines.append(
            f"  {len(problems)} unpaired and {len(bad)} unreadable file(s), not scored: listed in "
            f"{unpaired_txt}"
        )
        lines += [f"    {line}" for line in (problems + bad)[:_MAX_LISTED]]
    if worst_path:
        lines.append(f"  worst cases: {worst_path}")
    lines.append(f"  settings: {meta_path}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0

"""``qg-lightning score``: score every mask of a folder with a quality predictor, worst first.

The command line of :mod:`qg_lightning.quality.scoring` (:func:`~qg_lightning.quality.scoring.pair_files`,
:func:`~qg_lightning.quality.scoring.score_masks`, :func:`~qg_lightning.quality.scoring.write_scores`): it
writes the CSV, the worst-cases PNG, ``unpaired.txt`` and the settings JSON, and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from qg_lightning.quality.scoring import (
    pair_files,
    save_worst_masks_png,
    score_masks,
    worst_first,
    write_scores,
)

__all__ = ["score_cli"]

log = logging.getLogger(__name__)

_MAX_LISTED = 10


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
    from qg_lightning.quality.network import load_quality_networks

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
    predictor = load_quality_networks(ns.predictor, map_location=device, tta=ns.tta)
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
        worst_path = save_worst_masks_png(
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

    scored = worst_first(records)
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

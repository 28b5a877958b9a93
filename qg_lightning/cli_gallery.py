"""``qg-lightning gallery``: one example of each corruption of the recipe, with its Dice, as a PNG
(:func:`~qg_lightning.quality.gallery.corruption_gallery` on a mask of a folder or of the embedded data).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from qg_lightning.quality.gallery import corruption_gallery

__all__ = ["gallery_cli"]


def gallery_cli(argv: Sequence[str]) -> int:
    """``qg-lightning gallery``: see ``--help``. Returns the exit code (0)."""
    from qg_lightning.data import SYNTHETIC_SEED, read_image, read_mask, scan_folder, synthetic_sample
    from qg_lightning.data.folder import check_mask_folder

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
    parser.add_argument(
        "--data.mask_dir", dest="mask_dir", default="masks",
        help="mask sub-folder of --data.root (default masks), e.g. masks_3class with --data.num_classes 3",
    )  # fmt: skip
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
        check_mask_folder(root, ns.mask_dir, option="--data.mask_dir", root_option="--data.root")
        index = scan_folder(root, num_classes=ns.num_classes, check=False, mask_dir=ns.mask_dir)
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

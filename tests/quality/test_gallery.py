"""Tests for qg_lightning.quality.gallery (one panel per corruption, the ``gallery`` command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qg_lightning.cli import main
from qg_lightning.data import generate_synthetic_dataset
from qg_lightning.quality import BLOB, CATASTROPHIC, HEAVY, MAIN
from qg_lightning.quality.gallery import corruption_gallery, gallery_panels

SIZE = 32


def _mask(size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[8:24, 10:26] = 255
    return mask


def test_one_panel_per_corruption() -> None:
    panels = gallery_panels(_mask(), seed=0)
    names = {*MAIN, *HEAVY, *CATASTROPHIC, *BLOB}
    assert len(panels) == len(names) and {p.name for p in panels} == names
    by_name = {p.name: p for p in panels}
    assert by_name["circle"].registries == ("main", "blob")
    assert by_name["empty"].dice == 0.0 and by_name["inverted"].dice == 0.0
    assert all(0.0 <= p.dice <= 1.0 and p.overlay.shape == (SIZE, SIZE, 3) for p in panels)
    assert by_name["erosion_5"].dice < 1.0 and "Dice" in by_name["erosion_5"].title


def test_panels_are_seeded() -> None:
    a = gallery_panels(_mask(), seed=3)
    b = gallery_panels(_mask(), seed=3)
    assert all((p.overlay == q.overlay).all() and p.dice == q.dice for p, q in zip(a, b, strict=True))


def test_multiclass_mask_adds_class_swap() -> None:
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[4:16, 4:28] = 1
    labels[16:28, 4:28] = 2
    names = [p.name for p in gallery_panels(labels, seed=0, registries=None)]
    assert "class_swap" in names
    with pytest.raises(ValueError, match="label map"):
        gallery_panels(np.zeros((2, 8, 8)))


def test_corruption_gallery_picture_with_image() -> None:
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    pic = corruption_gallery(_mask(), image=image, registries={"heavy": HEAVY}, ncols=4)
    assert pic.dtype == np.uint8 and pic.ndim == 3 and pic.shape[2] == 3
    with pytest.raises(ValueError, match="same size"):
        corruption_gallery(_mask(), image=np.zeros((8, 8, 3), np.uint8))


def test_gallery_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "g.png"
    assert main(["gallery", "--out", str(out), "--image-size", str(SIZE)]) == 0
    assert Image.open(out).size[0] > 0 and "embedded synthetic sample" in capsys.readouterr().out

    root = generate_synthetic_dataset(tmp_path / "data", n_images=3, image_size=SIZE)
    out2 = tmp_path / "g2.png"
    assert main(["gallery", "--out", str(out2), "--data.root", str(root), "--id", "syn_00001",
                 "--image-size", str(SIZE)]) == 0  # fmt: skip
    assert out2.is_file()
    with pytest.raises(ValueError, match="--id 'nope' is not an image/mask pair"):
        main(["gallery", "--out", str(out2), "--data.root", str(root), "--id", "nope"])
    with pytest.raises(FileNotFoundError, match="--data.root"):
        main(["gallery", "--out", str(out2), "--data.root", str(tmp_path / "absent")])


def test_gallery_cli_reads_a_second_mask_folder(three_class_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "g3.png"
    args = ["gallery", "--out", str(out), "--data.root", str(three_class_root), "--image-size", str(SIZE)]
    assert (
        main([*args, "--data.mask_dir", "masks_3class", "--data.num_classes", "3", "--id", "syn_00001"]) == 0
    )
    assert out.is_file() and "syn_00001" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="--data.mask_dir='masks_4class' names no sub-folder"):
        main([*args, "--data.mask_dir", "masks_4class"])

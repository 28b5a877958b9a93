"""Tests for qg_lightning.data.synthetic: determinism, format, layout, caching and speed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qg_lightning.data.folder import scan_folder
from qg_lightning.data.synthetic import (
    GENERATOR_VERSION,
    default_cache_dir,
    default_synthetic_root,
    generate_synthetic_dataset,
    synthetic_sample,
)


def test_sample_is_pure_and_seeded() -> None:
    a_img, a_mask = synthetic_sample(5, image_size=48, seed=3)
    b_img, b_mask = synthetic_sample(5, image_size=48, seed=3)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    other_index, _ = synthetic_sample(6, image_size=48, seed=3)
    other_seed, _ = synthetic_sample(5, image_size=48, seed=4)
    assert not np.array_equal(a_img, other_index)
    assert not np.array_equal(a_img, other_seed)


@pytest.mark.parametrize("size", [16, 37, 64])
def test_sample_format(size: int) -> None:
    image, mask = synthetic_sample(1, image_size=size, seed=0)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert mask.shape == (size, size) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 255}


def test_sample_statistics_are_varied() -> None:
    masks = [synthetic_sample(i, image_size=32, seed=0)[1] for i in range(200)]
    fractions = np.array([(m > 0).mean() for m in masks])
    empty = (fractions == 0).mean()
    assert 0.01 <= empty <= 0.12, empty  # about 5% without a lesion
    assert fractions.std() > 0.03  # lesion sizes vary
    assert fractions.max() < 0.6


def test_lesion_contrast_is_not_trivial() -> None:
    """Mean intensity inside vs outside the lesion: some images must be faint (not a threshold problem)."""
    gaps = []
    for i in range(60):
        image, mask = synthetic_sample(i, image_size=64, seed=0)
        if mask.any():
            gray = image.mean(-1)
            gaps.append(abs(gray[mask > 0].mean() - gray[mask == 0].mean()))
    gaps = np.array(gaps)
    assert (gaps < 12).mean() > 0.1  # a fair share of faint lesions
    assert (gaps > 25).mean() > 0.1  # and some obvious ones


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"image_size": 8}, "image_size"), ({"index": -1}, "index"), ({"image_size": 32.0}, "image_size")],
)
def test_sample_rejects_bad_arguments(kwargs: dict, name: str) -> None:
    args = {"index": 0, "image_size": 32, "seed": 0, **kwargs}
    index = args.pop("index")
    with pytest.raises(ValueError, match=name):
        synthetic_sample(index, **args)


def test_generate_layout_and_content(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "syn", n_images=6, image_size=32, seed=2, n_unlabeled=3)
    assert root == tmp_path / "syn"
    ids = sorted(p.stem for p in (root / "images").iterdir())
    assert ids == [f"syn_{i:05d}" for i in range(6)]
    assert sorted(p.stem for p in (root / "masks").iterdir()) == ids
    assert sorted(p.name for p in (root / "unlabeled").iterdir()) == [f"unl_{j:05d}.png" for j in range(3)]
    assert "n_images=6" in (root / "README.md").read_text()
    meta = json.loads((root / "synthetic_meta.json").read_text())
    assert (
        meta["n_images"] == 6 and meta["image_size"] == 32 and meta["seed"] == 2 and meta["n_unlabeled"] == 3
    )
    with Image.open(root / "images" / "syn_00003.png") as img:
        assert img.mode == "RGB" and img.size == (32, 32)
        on_disk = np.asarray(img)
    with Image.open(root / "masks" / "syn_00003.png") as msk:
        assert msk.mode == "L"
        mask_on_disk = np.asarray(msk)
    image, mask = synthetic_sample(3, image_size=32, seed=2)
    np.testing.assert_array_equal(on_disk, image)  # written in RGB order, losslessly
    np.testing.assert_array_equal(mask_on_disk, mask)
    unl, _ = synthetic_sample(6 + 1, image_size=32, seed=2)  # unlabeled samples follow the labeled ones
    with Image.open(root / "unlabeled" / "unl_00001.png") as img:
        np.testing.assert_array_equal(np.asarray(img), unl)
    index = scan_folder(root)
    assert index.ids == ids and len(index.unlabeled_paths) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_generate_is_idempotent_and_replaces_other_parameters(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "syn", n_images=4, image_size=24)
    stamp = (root / "images" / "syn_00000.png").stat().st_mtime_ns
    start = time.perf_counter()
    assert generate_synthetic_dataset(tmp_path / "syn", n_images=4, image_size=24) == root
    assert time.perf_counter() - start < 0.5
    assert (root / "images" / "syn_00000.png").stat().st_mtime_ns == stamp
    generate_synthetic_dataset(tmp_path / "syn", n_images=3, image_size=24)
    assert len(list((root / "images").iterdir())) == 3
    assert json.loads((root / "synthetic_meta.json").read_text())["n_images"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_generate_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="mine"):
        generate_synthetic_dataset(tmp_path / "mine", n_images=2, image_size=16)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(list((generate_synthetic_dataset(empty, n_images=2, image_size=16) / "masks").iterdir())) == 2


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"n_images": 0}, "n_images"), ({"n_unlabeled": -1}, "n_unlabeled")]
)
def test_generate_rejects_bad_arguments(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        generate_synthetic_dataset(tmp_path / "x", **{"image_size": 16, **kwargs})


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QG_LIGHTNING_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    root = default_synthetic_root(300, 128, 0)
    assert root.parent.parent == tmp_path / "cache"
    assert root.name == f"n300_px128_seed0_v{GENERATOR_VERSION}"
    assert default_synthetic_root(300, 64, 0) != root
    monkeypatch.delenv("QG_LIGHTNING_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "qg_lightning"


def test_generation_speed(tmp_path: Path) -> None:
    """300 images at 128 px should take a few seconds; check the per-image cost on 40 images."""
    start = time.perf_counter()
    generate_synthetic_dataset(tmp_path / "speed", n_images=40, image_size=128)
    per_image = (time.perf_counter() - start) / 40
    assert per_image < 0.05, f"{per_image * 1000:.1f} ms per image"

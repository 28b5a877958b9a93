"""Tests for qg_lightning.data.folder: reading, converting and validating the standard layout."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from qg_lightning.data.folder import (
    DataValidationError,
    check_mask_folder,
    read_image,
    read_mask,
    scan_folder,
)


def _image(size: tuple[int, int] = (16, 12), mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random PIL image of ``size`` (W, H) in ``mode``."""
    rng = np.random.default_rng(seed)
    w, h = size
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    data = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    if mode == "RGBA":
        data[..., 3] = 255
    return Image.fromarray(data[..., 0] if channels == 1 else data, mode)


def _mask(size: tuple[int, int] = (16, 12), values: tuple[int, ...] = (0, 255)) -> Image.Image:
    w, h = size
    data = np.full((h, w), values[0], np.uint8)
    for k, v in enumerate(values[1:], start=1):
        data[k :: len(values), :] = v
    return Image.fromarray(data, "L")


def _pair(
    root: Path, id_: str, *, ext: str = ".png", mode: str = "RGB", size=(16, 12), values=(0, 255)
) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    _image(size, mode).save(root / "images" / f"{id_}{ext}")
    _mask(size, values).save(root / "masks" / f"{id_}.png")


@pytest.fixture
def good_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _pair(root, "a")
    _pair(root, "b", ext=".jpg")
    _pair(root, "c", ext=".tif", mode="L")
    _pair(root, "d", ext=".bmp", values=(0, 1))
    return root


# ----------------------------------------------------------------------------- readers


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_read_image_converts_channels(tmp_path: Path, mode: str, in_channels: int) -> None:
    _image((10, 6), mode).save(tmp_path / "x.png")
    image = read_image(tmp_path / "x.png", in_channels)
    assert image.shape == (6, 10, in_channels) and image.dtype == np.uint8


def test_read_image_grayscale_to_rgb_replicates(tmp_path: Path) -> None:
    _image((5, 4), "L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png", 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


@pytest.mark.parametrize(
    ("values", "num_classes", "expected"),
    [
        ((0, 255), 2, {0, 1}),
        ((0, 1), 2, {0, 1}),
        ((0, 1, 2), 3, {0, 1, 2}),
        ((0, 255), 4, {0, 1}),
        ((0,), 2, {0}),
    ],
)
def test_read_mask_values(tmp_path: Path, values: tuple, num_classes: int, expected: set) -> None:
    _mask((8, 6), values).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", num_classes)
    assert mask.shape == (6, 8) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == expected


def test_read_mask_accepts_bilevel_palette_and_gray_rgb(tmp_path: Path) -> None:
    _mask((8, 6)).convert("1").save(tmp_path / "one.png")
    assert set(np.unique(read_mask(tmp_path / "one.png", 2)).tolist()) == {0, 1}
    pal = _mask((8, 6), (0, 1, 2)).convert("P")
    pal.save(tmp_path / "pal.png")
    assert set(np.unique(read_mask(tmp_path / "pal.png", 3)).tolist()) == {0, 1, 2}
    _mask((8, 6)).convert("RGB").save(tmp_path / "rgb.png")
    assert set(np.unique(read_mask(tmp_path / "rgb.png", 2)).tolist()) == {0, 1}


def test_readers_raise_validation_error(tmp_path: Path) -> None:
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(DataValidationError, match=r"zero\.png.*0 bytes"):
        read_image(tmp_path / "zero.png")
    _mask((4, 4), (0, 7)).save(tmp_path / "m.png")
    with pytest.raises(DataValidationError, match=r"m\.png.*values 7"):
        read_mask(tmp_path / "m.png", 2)
    with pytest.raises(ValueError, match="in_channels"):
        read_image(tmp_path / "m.png", 2)


# ----------------------------------------------------------------------------- scanning


def test_scan_good_folder(good_root: Path) -> None:
    index = scan_folder(good_root)
    assert index.ids == ["a", "b", "c", "d"]
    assert index.image_paths["b"].name == "b.jpg" and index.mask_paths["b"].name == "b.png"
    assert index.unlabeled_paths == {} and index.skipped == {} and index.decoded == {}


def test_scan_keeps_decoded_arrays(good_root: Path) -> None:
    index = scan_folder(good_root, keep_decoded=True, in_channels=1)
    image = index.decoded[str(index.image_paths["a"])]
    np.testing.assert_array_equal(image, read_image(index.image_paths["a"], 1))
    np.testing.assert_array_equal(index.decoded[str(index.mask_paths["d"])], read_mask(index.mask_paths["d"]))


def test_scan_unlabeled_folder(good_root: Path) -> None:
    (good_root / "unlabeled").mkdir()
    _image().save(good_root / "unlabeled" / "u1.jpg")
    _image(mode="L").save(good_root / "unlabeled" / "u2.png")
    (good_root / "unlabeled" / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    index = scan_folder(good_root)
    assert sorted(index.unlabeled_paths) == ["u1", "u2"]


def _error(root: Path, **kwargs) -> str:
    with pytest.raises(DataValidationError) as info:
        scan_folder(root, **kwargs)
    return str(info.value)


def test_truncated_png(good_root: Path) -> None:
    path = good_root / "images" / "a.png"
    _image((64, 64)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = _error(good_root)
    assert "images/a.png" in message and "truncated" in message


def test_zero_byte_mask(good_root: Path) -> None:
    (good_root / "masks" / "b.png").write_bytes(b"")
    message = _error(good_root)
    assert "masks/b.png" in message and "0 bytes" in message


def test_not_an_image(good_root: Path) -> None:
    (good_root / "images" / "a.png").write_bytes(b"this is text, not a PNG")
    assert "images/a.png: is not a readable image" in _error(good_root)


@pytest.mark.parametrize("ext", [".jpg", ".tif"])
def test_cmyk_image(good_root: Path, ext: str) -> None:
    _image().convert("CMYK").save(good_root / "images" / f"cmyk{ext}")
    _mask().save(good_root / "masks" / "cmyk.png")
    message = _error(good_root)
    assert (
        f"images/cmyk{ext}" in message and "mode CMYK" in message and "accepted: 8-bit grayscale" in message
    )


def test_16bit_png_gray_and_rgb(good_root: Path) -> None:
    gray16 = (np.arange(16 * 12, dtype=np.uint16).reshape(12, 16) * 300).astype(np.uint16)
    cv2.imwrite(str(good_root / "images" / "g16.png"), gray16)
    cv2.imwrite(
        str(good_root / "images" / "rgb16.png"), np.stack([gray16] * 3, -1)
    )  # Pillow reads as 8-bit RGB
    _mask().save(good_root / "masks" / "g16.png")
    _mask().save(good_root / "masks" / "rgb16.png")
    message = _error(good_root)
    assert "images/g16.png" in message and "images/rgb16.png" in message
    assert message.count("16/32-bit") == 2


def test_16bit_mask(good_root: Path) -> None:
    cv2.imwrite(str(good_root / "masks" / "a.png"), np.zeros((12, 16), np.uint16))
    message = _error(good_root)
    assert "masks/a.png" in message and "16/32-bit" in message


def test_mask_stray_values_are_listed(good_root: Path) -> None:
    _mask(values=(0, 1, 128, 255)).save(good_root / "masks" / "a.png")
    message = _error(good_root)
    assert "masks/a.png" in message and "values 128, 255" in message and "0..1" in message
    assert scan_folder(good_root, num_classes=256).ids  # fine as class indices when K is large enough


def test_colour_mask(good_root: Path) -> None:
    _image().save(good_root / "masks" / "a.png")
    assert "masks/a.png: is a colour (RGB) mask" in _error(good_root)


def test_transparent_image(good_root: Path) -> None:
    rgba = np.zeros((12, 16, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(good_root / "images" / "a.png")
    assert "images/a.png: has mode RGBA with transparent pixels" in _error(good_root)


def test_image_without_mask_and_mask_without_image(good_root: Path) -> None:
    _image().save(good_root / "images" / "lonely.png")
    _mask().save(good_root / "masks" / "orphan.png")
    message = _error(good_root)
    assert "images/lonely.png: image has no mask: expected masks/lonely.png" in message
    assert "masks/orphan.png: mask has no image: expected images/orphan." in message


def test_size_mismatch_names_both_sizes(good_root: Path) -> None:
    _mask((20, 10)).save(good_root / "masks" / "a.png")
    message = _error(good_root)
    assert "masks/a.png: is 20x10 (WxH) but its image images/a.png is 16x12" in message


def test_unsupported_extension_and_duplicate_id(good_root: Path) -> None:
    _image().save(good_root / "images" / "x.gif")
    _image().save(good_root / "images" / "a.jpeg")  # same id as a.png
    message = _error(good_root)
    assert "images/x.gif: has unsupported extension '.gif'" in message
    assert "images/a.png: has the same id 'a' as images/a.jpeg" in message


def test_all_problems_reported_at_once(good_root: Path) -> None:
    (good_root / "masks" / "b.png").write_bytes(b"")
    _mask(values=(0, 9)).save(good_root / "masks" / "c.png")
    _image().save(good_root / "images" / "lonely.png")
    message = _error(good_root)
    assert message.startswith("Found 3 problem(s)")
    assert all(name in message for name in ("masks/b.png", "masks/c.png", "images/lonely.png"))
    assert "skip_bad=True" in message


def test_skip_bad_warns_and_continues(good_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (good_root / "masks" / "b.png").write_bytes(b"")
    _image().save(good_root / "images" / "lonely.png")
    with caplog.at_level(logging.WARNING, logger="qg_lightning.data.folder"):
        index = scan_folder(good_root, skip_bad=True)
    assert index.ids == ["a", "c", "d"]
    assert set(index.skipped) == {"masks/b.png", "images/lonely.png"}
    assert "Skipping 2 bad file(s)" in caplog.text and "masks/b.png" in caplog.text


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        scan_folder(tmp_path / "does-not-exist")
    (tmp_path / "images").mkdir()
    message = _error(tmp_path)
    assert "no masks/ sub-folder" in message and "expected layout: ROOT/images/<id>" in message
    (tmp_path / "masks").mkdir()
    message = _error(tmp_path)
    assert "no image/mask pairs" in message and "expected layout" in message
    assert "no images/ or masks/" in _error(tmp_path / "images")


def test_a_missing_second_mask_folder_names_the_option(tmp_path: Path) -> None:
    for name in ("images", "masks", "masks_3class"):
        (tmp_path / name).mkdir()
    message = _error(tmp_path, mask_dir="masks_4class")
    assert "no masks_4class/ sub-folder (argument `mask_dir` is 'masks_4class'" in message
    assert "['masks', 'masks_3class']" in message  # the folders that could be meant
    check_mask_folder(tmp_path, "masks_3class")  # present: no error
    with pytest.raises(FileNotFoundError, match=r"--m='masks_4class'.*config key k\.m.*check --r\."):
        check_mask_folder(tmp_path, "masks_4class", key="k.m", option="--m", root_option="--r")
    with pytest.raises(ValueError, match="`mask_dir`='masks_3class' needs `root`"):
        check_mask_folder(None, "masks_3class")  # the embedded synthetic data has masks/ only
    check_mask_folder(None, "masks")
    check_mask_folder(tmp_path / "absent", "masks_3class")  # a missing root is the caller's to report


def test_skip_bad_with_nothing_left(tmp_path: Path) -> None:
    _pair(tmp_path, "a")
    (tmp_path / "masks" / "a.png").write_bytes(b"")
    assert "no valid image/mask pairs left" in _error(tmp_path, skip_bad=True)


def test_check_false_only_pairs(good_root: Path) -> None:
    (good_root / "masks" / "b.png").write_bytes(b"")
    assert scan_folder(good_root, check=False).ids == ["a", "b", "c", "d"]
    _image().save(good_root / "images" / "lonely.png")
    assert "images/lonely.png" in _error(good_root, check=False)


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"num_classes": 1}, "num_classes"), ({"in_channels": 4}, "in_channels")]
)
def test_bad_arguments(good_root: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        scan_folder(good_root, **kwargs)

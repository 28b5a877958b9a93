"""Tests for qg_lightning.data.transforms: named strict pipelines, seeding and weak/strong views."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from qg_lightning.data.transforms import (
    MAX_ROTATION,
    build_strong_photometric,
    build_transforms,
    reseed,
    weak_strong_views,
)

GEOMETRIC = (A.HorizontalFlip, A.VerticalFlip, A.Affine, A.Rotate, A.Resize)


def _random_image(h: int = 40, w: int = 52, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _quadrant_mask(h: int = 40, w: int = 52) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[: h // 2, : w // 2] = 1
    return mask


@pytest.mark.parametrize("name", ["none", "weak", "strong"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_pipelines_are_strict_and_resize(name: str, in_channels: int) -> None:
    pipeline = build_transforms(name, 24, in_channels=in_channels, seed=0)
    assert isinstance(pipeline, A.Compose) and pipeline.strict
    assert isinstance(pipeline.transforms[0], A.Resize)
    mask = _quadrant_mask() * 2
    out = pipeline(image=_random_image(c=in_channels), mask=mask)
    assert out["image"].shape == (24, 24, in_channels) and out["image"].dtype == np.uint8
    assert out["mask"].shape == (24, 24)
    assert set(np.unique(out["mask"]).tolist()) <= {0, 2}  # nearest: no interpolated label values


def test_pipeline_contents() -> None:
    assert [type(t) for t in build_transforms("none", 16).transforms] == [A.Resize]
    weak = build_transforms("weak", 16).transforms
    kinds = {type(t) for t in weak}
    assert {A.HorizontalFlip, A.VerticalFlip, A.Affine} <= kinds and kinds <= set(GEOMETRIC)
    affine = next(t for t in weak if isinstance(t, A.Affine))
    assert max(abs(v) for v in affine.rotate) <= MAX_ROTATION <= 20
    assert affine.mask_interpolation == 0  # cv2.INTER_NEAREST
    strong = {type(t) for t in build_transforms("strong", 16).transforms}
    assert {
        A.RandomBrightnessContrast,
        A.HueSaturationValue,
        A.RandomGamma,
        A.GaussianBlur,
        A.CoarseDropout,
    } <= strong
    photometric = build_strong_photometric(16).transforms
    assert not any(isinstance(t, GEOMETRIC) for t in photometric)
    assert A.HueSaturationValue not in {
        type(t) for t in build_strong_photometric(16, in_channels=1).transforms
    }


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"name": "medium", "image_size": 16}, "name"),
        ({"name": "weak", "image_size": 4}, "image_size"),
        ({"name": "weak", "image_size": 16, "in_channels": 2}, "in_channels"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_transforms(**kwargs)


def test_reseed_replays_and_varies() -> None:
    pipeline = build_transforms("strong", 32)
    image, mask = _random_image(), _quadrant_mask()
    reseed(pipeline, 11)
    first = pipeline(image=image, mask=mask)
    reseed(pipeline, 11)
    again = pipeline(image=image, mask=mask)
    np.testing.assert_array_equal(first["image"], again["image"])
    np.testing.assert_array_equal(first["mask"], again["mask"])
    outputs = set()
    for seed in range(8):
        reseed(pipeline, seed)
        outputs.add(pipeline(image=image)["image"].tobytes())
    assert len(outputs) > 4


def test_flips_are_independent() -> None:
    """Albumentations' own Compose(seed=...) couples both flips; reseed must not."""
    pipeline = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], strict=True)
    image = np.zeros((4, 4, 1), np.uint8)
    image[0, 0] = 255
    corners = {"none": 0, "h": 0, "v": 0, "both": 0}
    for seed in range(200):
        reseed(pipeline, seed)
        out = pipeline(image=image)["image"][..., 0]
        key = {(0, 0): "none", (0, 3): "h", (3, 0): "v", (3, 3): "both"}[tuple(np.argwhere(out == 255)[0])]
        corners[key] += 1
    assert all(20 < n < 80 for n in corners.values()), corners


def test_strong_geometry_matches_weak_for_same_seed() -> None:
    """Photometric ops and cutout leave the mask alone: strong's mask equals weak's for the same seed."""
    weak, strong = build_transforms("weak", 32), build_transforms("strong", 32)
    image, mask = _random_image(), _quadrant_mask()
    for seed in range(10):
        reseed(weak, seed)
        reseed(strong, seed)
        np.testing.assert_array_equal(
            weak(image=image, mask=mask)["mask"], strong(image=image, mask=mask)["mask"]
        )


def test_weak_strong_views_share_geometry() -> None:
    """A bright top-left quadrant must land in the same place in both views, and where the weak mask says."""
    image = np.full((40, 52, 3), 20, np.uint8)
    image[:20, :26] = 235
    mask = _quadrant_mask()
    weak, strong = build_transforms("weak", 32), build_strong_photometric(32)
    flips_seen = set()
    for seed in range(16):
        reseed(weak, seed)
        reseed(strong, seed + 1000)
        views = weak_strong_views(image, weak, strong, mask=mask)
        assert views["image"].shape == views["image_strong"].shape == (32, 32, 3)
        corner_mask = views["mask"].astype(bool)
        for view in (views["image"], views["image_strong"]):
            gray = view.astype(float).mean(-1)
            # the bright region (allowing for cutout holes) lies inside the weak mask
            assert gray[corner_mask].mean() > gray[~corner_mask].mean() + 30
        top, left = (
            corner_mask[:16].sum() > corner_mask[16:].sum(),
            corner_mask[:, :16].sum() > corner_mask[:, 16:].sum(),
        )
        flips_seen.add((bool(top), bool(left)))
    assert len(flips_seen) >= 3  # the test did exercise different flips
    no_mask = weak_strong_views(image, weak, strong)
    assert set(no_mask) == {"image", "image_strong"}

"""Named albumentations 2.0 pipelines (``none`` / ``weak`` / ``strong``) and weak-to-strong views.

Every pipeline is an ``A.Compose(..., strict=True)`` that first resizes to ``image_size x image_size``
(linear for the image, nearest for the mask):

* ``none``: resize only (validation, test, predict).
* ``weak``: resize, horizontal and vertical flips, a small rotation (``Affine``, up to 20 degrees, nearest
  for the mask). This is the "same flips/rotation" of METHOD.md and the weak view of FixMatch-style hosts.
* ``strong``: the weak geometry, then image-only photometric changes (brightness/contrast, hue/saturation,
  gamma), Gaussian blur and cutout (``CoarseDropout``; the mask is left untouched).

For weak-to-strong consistency, :func:`weak_strong_views` applies the weak pipeline once and the
photometric-only pipeline (:func:`build_strong_photometric`) to that result, so both views share the *same*
geometry.

Determinism. Albumentations keeps a random generator in every transform; ``A.Compose(seed=s)`` (and
``set_random_seed``) gives every child transform its *own* generator with the *same* seed, which makes, for
example, the horizontal and vertical flips always fire together (albumentations 2.0.8). :func:`reseed`
instead points every transform of a pipeline at one shared generator pair built from a single seed, so draws
are independent and reproducible. The data module calls it once per sample with a seed derived from
(base seed, stream, epoch, pass, index): see :mod:`qg_lightning.data.datamodule`.

Example:
    >>> import numpy as np
    >>> weak = build_transforms("weak", 32, seed=0)
    >>> out = weak(image=np.zeros((40, 50, 3), np.uint8), mask=np.zeros((40, 50), np.uint8))
    >>> out["image"].shape, out["mask"].shape
    ((32, 32, 3), (32, 32))
"""

from __future__ import annotations

import random
from typing import Any, Literal, get_args

import albumentations as A
import cv2
import numpy as np

from qg_lightning._validation import check_in_channels, check_int

__all__ = [
    "AugmentName",
    "build_strong_photometric",
    "build_transforms",
    "reseed",
    "weak_strong_views",
]

AugmentName = Literal["none", "weak", "strong"]

#: Largest rotation of the weak pipeline, in degrees (METHOD.md: "rotation up to 20 degrees").
MAX_ROTATION = 20.0


def _check_size(image_size: int) -> int:
    return check_int(image_size, "image_size", minimum=8)


def _resize(image_size: int) -> A.Resize:
    return A.Resize(
        image_size, image_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST
    )


def _weak_geometry() -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Affine(
            rotate=(-MAX_ROTATION, MAX_ROTATION),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
            p=0.5,
        ),
    ]


def _photometric(image_size: int, in_channels: int) -> list[A.BasicTransform]:
    ops: list[A.BasicTransform] = [
        A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.8)
    ]
    if in_channels == 3:
        ops.append(A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=25, val_shift_limit=0, p=0.5))
    ops += [
        A.RandomGamma(gamma_limit=(70, 150), p=0.5),
        A.GaussianBlur(blur_limit=0, sigma_limit=(0.1, max(0.2, 2.0 * image_size / 224)), p=0.3),
        A.CoarseDropout(
            num_holes_range=(1, 3),
            hole_height_range=(0.05, 0.25),
            hole_width_range=(0.05, 0.25),
            fill=0,
            p=0.5,
        ),
    ]
    return ops


def reseed(transform: A.BaseCompose | A.BasicTransform, seed: int) -> None:
    """Make every transform inside ``transform`` draw from one generator pair seeded with ``seed``.

    Unlike ``A.Compose.set_random_seed`` (same seed in every child, so e.g. both flips fire together) the
    draws of different transforms are independent; the same ``seed`` replays the same augmentation.

    Example:
        >>> t = build_transforms("strong", 16)
        >>> x = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
        >>> reseed(t, 5); a = t(image=x)["image"]
        >>> reseed(t, 5); b = t(image=x)["image"]
        >>> bool((a == b).all())
        True
    """
    rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    py_rng = random.Random(int(rng.integers(0, 2**63)))
    stack: list[Any] = [transform]
    while stack:
        node = stack.pop()
        node.random_generator = rng
        node.py_random = py_rng
        stack.extend(getattr(node, "transforms", []) or [])


def build_transforms(
    name: AugmentName, image_size: int, *, in_channels: int = 3, seed: int | None = None
) -> A.Compose:
    """Build the named pipeline (``"none"``, ``"weak"`` or ``"strong"``), strict, resizing to ``image_size``.

    Args:
        name: which pipeline (see the module docstring).
        image_size: output side in pixels.
        in_channels: 1 or 3 (colour operations are left out for grayscale).
        seed: if given, :func:`reseed` the pipeline (the data module reseeds per sample anyway).

    Returns:
        ``A.Compose`` taking ``image`` (``uint8 (H, W, C)``) and optionally ``mask`` (``uint8 (H, W)``).

    Raises:
        ValueError: unknown ``name``, bad ``image_size`` or ``in_channels``.

    Example:
        >>> t = build_transforms("none", 8)
        >>> t(image=np.zeros((4, 4, 3), np.uint8))["image"].shape
        (8, 8, 3)
    """
    if name not in get_args(AugmentName):
        raise ValueError(f"`name` must be one of {list(get_args(AugmentName))}, got {name!r}.")
    _check_size(image_size)
    check_in_channels(in_channels)
    ops: list[A.BasicTransform] = [_resize(image_size)]
    if name in ("weak", "strong"):
        ops += _weak_geometry()
    if name == "strong":
        ops += _photometric(image_size, in_channels)
    compose = A.Compose(ops, strict=True)
    if seed is not None:
        reseed(compose, seed)
    return compose


def build_strong_photometric(image_size: int, *, in_channels: int = 3, seed: int | None = None) -> A.Compose:
    """Image-only strong pipeline (no geometry, no resize) for the strong view of weak-to-strong methods.

    Args:
        image_size: size of the images it will see (scales the blur).
        in_channels: 1 or 3.
        seed: if given, :func:`reseed` the pipeline.

    Example:
        >>> t = build_strong_photometric(16, seed=0)
        >>> t(image=np.full((16, 16, 3), 128, np.uint8))["image"].shape
        (16, 16, 3)
    """
    _check_size(image_size)
    check_in_channels(in_channels)
    compose = A.Compose(_photometric(image_size, in_channels), strict=True)
    if seed is not None:
        reseed(compose, seed)
    return compose


def weak_strong_views(
    image: np.ndarray,
    weak: A.Compose,
    strong_photometric: A.Compose,
    *,
    mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Weak and strong views of one image with the same geometry.

    The weak pipeline runs once; the photometric-only strong pipeline runs on its output, so a pixel of the
    strong view sits exactly where it sits in the weak view (and in the weak mask).

    Args:
        image: ``uint8 (H, W, C)``.
        weak: geometric pipeline (e.g. ``build_transforms("weak", size)``).
        strong_photometric: image-only pipeline (e.g. ``build_strong_photometric(size)``).
        mask: optional ``uint8 (H, W)`` transformed with the weak geometry.

    Returns:
        ``{"image": weak view, "image_strong": strong view}`` plus ``"mask"`` when a mask was given.

    Example:
        >>> x = np.zeros((16, 16, 3), np.uint8); x[:8, :8] = 255
        >>> weak, strong = build_transforms("weak", 16, seed=1), build_strong_photometric(16, seed=1)
        >>> views = weak_strong_views(x, weak, strong)
        >>> views["image"].shape == views["image_strong"].shape
        True
    """
    out = weak(image=image, mask=mask) if mask is not None else weak(image=image)
    views = {"image": out["image"], "image_strong": strong_photometric(image=out["image"])["image"]}
    if mask is not None:
        views["mask"] = out["mask"]
    return views

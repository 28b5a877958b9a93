"""Batched, seeded, resolution-independent mask corruptions (Phase 1 of [0]).

Every public function here is pure and has the signature::

    fn(masks: Tensor, *, generator: torch.Generator | None = None, backend: Backend = "auto", **params) -> Tensor

``masks`` are foreground masks ``(B, C, H, W)`` (``C = K - 1``; ``C = 1`` for binary tasks) holding hard
values: ``float`` in ``{0, 1}`` (a value above 0.5 counts as foreground), ``bool`` or ``uint8`` in ``{0,
1}``. The result has the same shape and dtype and is again hard ``{0, 1}``. All per-sample random parameters
are drawn in one call of shape ``(B * C, ...)`` from ``generator`` on the masks' device, so the same seed
gives the same corruption.

``backend`` chooses where the pixel work runs (:data:`BACKENDS`): ``"auto"`` (default) runs it per mask with
OpenCV / NumPy for CPU tensors and batched with torch otherwise (CUDA tensors); ``"torch"`` forces the batched
torch path, also on CPU; ``"opencv"`` requires CPU tensors. Every random parameter is drawn with torch from
``generator``, batched and in the same order on both paths, so they make the same draws and agree pixel for
pixel up to float rounding ties (warps and blurs on large masks).

Sizes. METHOD.md gives every size in pixels at 224 x 224. Here every size is multiplied by ``H / 224`` (the
mask height), so a 64 px and a 512 px mask degrade alike. Kernel sizes are scaled through their radius,
``r = max(1, round((k - 1) / 2 * H / 224))``, and stay odd (``k = 2 r + 1``, at least 3 px).

Multi-class masks (``C > 1``). Each channel is corrupted on its own (with its own random parameters);
afterwards channels are made mutually exclusive again: a pixel claimed by several channels goes to the
channel that held it in the input, otherwise to the lowest channel index. :func:`class_swap` relabels a
region of one class to another.

Choices where METHOD.md leaves room (documented per function): square morphology kernels (as
``cv2.erode(m, np.ones((k, k)))``; outside the image counts as background for dilation and foreground for
erosion, the OpenCV default); OpenCV's sigma rule for a ``k``-tap Gaussian; Simard's elastic field
``alpha * G_sigma * U(-1, 1)``; albumentations' grid distortion; a moment-matched ellipse instead of a
contour fit; a ray-based star polygon instead of ``cv2.approxPolyDP``; the "larger" Gaussian blob keeps the
threshold level of the ``x 1.0`` blob (area ``x 1.44``); island centres near the boundary, hole and rectangle
centres on the foreground; ``drop_random_component`` leaves one-component masks unchanged.

This module is the public layer of the engine: argument checks and docstrings, then one call into the
internal modules (the package docstring, :mod:`qg_lightning.quality.corruptions`, describes them and the
implementation notes).

Example:
    >>> masks = torch.zeros(1, 1, 16, 16)
    >>> masks[..., 4:12, 4:12] = 1
    >>> torch.equal(erosion(masks, backend="opencv"), erosion(masks, backend="torch"))
    True

References:
    [0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation",
    arXiv:2606.01753, 2026.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from qg_lightning._validation import check_int
from qg_lightning.quality.corruptions import _direct as D
from qg_lightning.quality.corruptions import _plans as P
from qg_lightning.quality.corruptions._base import (
    BACKENDS,
    REFERENCE_SIZE,
    Backend,
    Generator,
    apply,
    check_backend,
    check_masks,
    check_range,
    finish,
    run,
    scaled_radius,
    to_u8,
    use_opencv,
)

__all__ = [
    "BACKENDS",
    "REFERENCE_SIZE",
    "Backend",
    "bounding_box",
    "circle",
    "class_swap",
    "closing",
    "convex_hull",
    "dilation",
    "drop_random_component",
    "elastic_warp",
    "empty",
    "erosion",
    "fitted_ellipse",
    "full",
    "gaussian_blob",
    "grid_distortion",
    "holes",
    "holes_and_islands",
    "identity",
    "inverted",
    "islands",
    "keep_largest_component",
    "opening",
    "polygon_approximation",
    "random_affine",
    "random_noise",
    "rectangular_dropout",
    "rotate",
    "scale",
    "scaled_radius",
    "shift",
    "smoothing",
    "jagged_band",
]


# ----------------------------------------------------------------------------------------------------------
# identity and catastrophic
# ----------------------------------------------------------------------------------------------------------


def identity(masks: Tensor, *, generator: Generator | None = None, backend: Backend = "auto") -> Tensor:
    """Return a copy of ``masks`` (the ``identity`` category, quality 1).

    Example:
        >>> identity(torch.ones(1, 1, 2, 2)).sum().item()
        4.0
    """
    check_masks(masks)
    check_backend(backend)
    return masks.clone()


def inverted(masks: Tensor, *, generator: Generator | None = None, backend: Backend = "auto") -> Tensor:
    """Swap foreground and background: ``1 - masks`` (catastrophic).

    Example:
        >>> inverted(torch.tensor([[[[0.0, 1.0]]]]))
        tensor([[[[1., 0.]]]])
    """
    return run(masks, *P.plan_catastrophic(0), generator, backend)


def empty(masks: Tensor, *, generator: Generator | None = None, backend: Backend = "auto") -> Tensor:
    """All background (catastrophic).

    Example:
        >>> empty(torch.ones(1, 1, 2, 2)).sum().item()
        0.0
    """
    return run(masks, *P.plan_catastrophic(1), generator, backend)


def full(masks: Tensor, *, generator: Generator | None = None, backend: Backend = "auto") -> Tensor:
    """All foreground (catastrophic). With several classes, the background goes to the first class.

    Example:
        >>> full(torch.zeros(1, 1, 2, 2)).sum().item()
        4.0
    """
    return run(masks, *P.plan_catastrophic(2), generator, backend)


def random_noise(
    masks: Tensor, *, p: float = 0.5, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Independent coin flips per pixel, foreground with probability ``p`` (catastrophic "random").

    Args:
        masks: foreground masks ``(B, C, H, W)``.
        p: foreground probability; 0.5 (fair coins) uses a fast bit-unpacking path.
        generator: source of randomness.
        backend: where the pixel work runs (:data:`BACKENDS`; module notes), as for every function here.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> random_noise(torch.zeros(1, 1, 2, 4), generator=g)
        tensor([[[[1., 1., 1., 1.],
                  [0., 1., 0., 0.]]]])
    """
    return run(masks, *P.plan_catastrophic(3, p), generator, backend)


# ----------------------------------------------------------------------------------------------------------
# morphology
# ----------------------------------------------------------------------------------------------------------


def erosion(
    masks: Tensor, *, kernel: int = 5, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Binary erosion with a square ``kernel`` (pixels at 224 px; scaled to ``H``). Never grows a mask.

    Example:
        >>> masks = torch.zeros(1, 1, 16, 16)
        >>> masks[..., 4:12, 4:12] = 1
        >>> erosion(masks, kernel=5).sum().item()  # 16 px: radius 1, the 8 x 8 square loses its outer ring
        36.0
    """
    return run(masks, *P.plan_morph(1, kernel), generator, backend)


def dilation(
    masks: Tensor, *, kernel: int = 5, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Binary dilation with a square ``kernel`` (pixels at 224 px; scaled to ``H``). Never shrinks a mask.

    Example:
        >>> masks = torch.zeros(1, 1, 16, 16)
        >>> masks[..., 4:12, 4:12] = 1
        >>> dilation(masks, kernel=5).sum().item()
        100.0
    """
    return run(masks, *P.plan_morph(0, kernel), generator, backend)


def opening(
    masks: Tensor, *, kernel: int = 5, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Erosion then dilation (removes thin parts); the result is a subset of the mask.

    Example:
        >>> masks = torch.zeros(1, 1, 16, 16)
        >>> masks[..., 4:12, 4:12] = 1
        >>> masks[..., 0, 0] = 1  # a speck
        >>> opening(masks, kernel=5).sum().item()
        64.0
    """
    return run(masks, *P.plan_morph(2, kernel), generator, backend)


def closing(
    masks: Tensor, *, kernel: int = 5, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Dilation then erosion (fills small gaps); the result contains the mask.

    Example:
        >>> masks = torch.zeros(1, 1, 16, 16)
        >>> masks[..., 4:12, 4:12] = 1
        >>> masks[..., 7, 7] = 0  # a pinhole
        >>> closing(masks, kernel=5).sum().item()
        64.0
    """
    return run(masks, *P.plan_morph(3, kernel), generator, backend)


# ----------------------------------------------------------------------------------------------------------
# shape approximation
# ----------------------------------------------------------------------------------------------------------


def fitted_ellipse(masks: Tensor, *, generator: Generator | None = None, backend: Backend = "auto") -> Tensor:
    """Replace each mask by the ellipse with its second moments (same area-weighted centroid and covariance).

    For an elliptical mask this is the mask itself; the ellipse has semi-axes ``2 sqrt(eigenvalues)`` of the
    pixel covariance. METHOD.md fits an ellipse to the largest contour with OpenCV; this batched moment fit
    agrees for one-component masks and, for several components, covers all of them. Empty masks stay empty.

    Example:
        >>> masks = torch.zeros(1, 1, 16, 16)
        >>> masks[..., 4:12, 6:10] = 1
        >>> fitted_ellipse(masks)[0, 0, 2:14, 5:11].int()
        tensor([[0, 0, 0, 0, 0, 0],
                [0, 0, 1, 1, 0, 0],
                [0, 1, 1, 1, 1, 0],
                [0, 1, 1, 1, 1, 0],
                [0, 1, 1, 1, 1, 0],
                [0, 1, 1, 1, 1, 0],
                [0, 1, 1, 1, 1, 0],
                [0, 1, 1, 1, 1, 0],
                [0, 1, 1, 1, 1, 0],
                [0, 1, 1, 1, 1, 0],
                [0, 0, 1, 1, 0, 0],
                [0, 0, 0, 0, 0, 0]], dtype=torch.int32)
    """

    return apply(masks, D.fitted_ellipse, backend)


def polygon_approximation(
    masks: Tensor, *, vertices: int = 5, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Approximate each mask by a polygon with ``vertices`` corners.

    Corners lie where ``vertices`` rays from the centroid, equally spaced with a random phase, last meet the
    mask; the polygon is star-shaped about the centroid (a batched stand-in for ``cv2.approxPolyDP`` with a
    fixed vertex count). Empty masks stay empty.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 32, 32)
        >>> masks[..., 8:24, 8:24] = 1
        >>> out = polygon_approximation(masks, vertices=3, generator=g)  # a triangle inside the square
        >>> out.sum().item(), bool((out <= masks).all())
        (95.0, True)
    """
    return run(masks, *P.plan_polygon(vertices), generator, backend)


def convex_hull(masks: Tensor, *, generator: Generator | None = None, backend: Backend = "auto") -> Tensor:
    """Convex hull of the foreground pixel centres (contains the mask).

    Batched: the hull is the intersection of the mask's supporting half-planes in 32 directions, clipped to
    its rows, evaluated row by row (at most 0.5 % of the radius larger than the exact hull).

    Example:
        >>> masks = torch.zeros(1, 1, 8, 8)
        >>> masks[0, 0, 1, 1] = masks[0, 0, 1, 6] = masks[0, 0, 6, 1] = 1
        >>> convex_hull(masks)[0, 0].int()
        tensor([[0, 0, 0, 0, 0, 0, 0, 0],
                [0, 1, 1, 1, 1, 1, 1, 0],
                [0, 1, 1, 1, 1, 1, 0, 0],
                [0, 1, 1, 1, 1, 0, 0, 0],
                [0, 1, 1, 1, 0, 0, 0, 0],
                [0, 1, 1, 0, 0, 0, 0, 0],
                [0, 1, 0, 0, 0, 0, 0, 0],
                [0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.int32)
    """

    return apply(masks, D.convex_hull, backend)


def bounding_box(masks: Tensor, *, generator: Generator | None = None, backend: Backend = "auto") -> Tensor:
    """Fill each mask's bounding box (contains the mask). Empty masks stay empty.

    Example:
        >>> masks = torch.zeros(1, 1, 6, 6)
        >>> masks[0, 0, 1, 2] = masks[0, 0, 3, 4] = 1
        >>> bounding_box(masks)[0, 0].int()
        tensor([[0, 0, 0, 0, 0, 0],
                [0, 0, 1, 1, 1, 0],
                [0, 0, 1, 1, 1, 0],
                [0, 0, 1, 1, 1, 0],
                [0, 0, 0, 0, 0, 0],
                [0, 0, 0, 0, 0, 0]], dtype=torch.int32)
    """

    return apply(masks, D.bounding_box, backend)


# ----------------------------------------------------------------------------------------------------------
# boundary
# ----------------------------------------------------------------------------------------------------------


def jagged_band(
    masks: Tensor, *, kernel: int = 3, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Re-draw every pixel of the band ``dilate(k) - erode(k)`` around the boundary as a fair coin flip.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 8, 8)
        >>> masks[..., 2:6, 2:6] = 1
        >>> jagged_band(masks, kernel=3, generator=g)[0, 0].int()
        tensor([[0, 0, 0, 0, 0, 0, 0, 0],
                [0, 1, 0, 1, 0, 1, 0, 0],
                [0, 0, 1, 0, 0, 0, 1, 0],
                [0, 1, 1, 1, 1, 0, 0, 0],
                [0, 0, 1, 1, 1, 1, 0, 0],
                [0, 1, 0, 1, 0, 0, 0, 0],
                [0, 1, 1, 1, 1, 1, 1, 0],
                [0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.int32)
    """
    check_int(kernel, "kernel", minimum=1)
    return apply(masks, partial(D.jagged_band, kernel=kernel, generator=generator), backend)


def smoothing(
    masks: Tensor, *, kernel: int = 11, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Gaussian blur with a ``kernel``-tap window (at 224 px) and re-threshold at 0.5.

    The standard deviation follows OpenCV's rule for a ``k``-tap kernel, ``0.3 ((k - 1) / 2 - 1) + 0.8``, and
    is scaled with the image like the kernel. Removes details thinner than the blur and rounds corners.

    Example:
        >>> masks = torch.zeros(1, 1, 64, 64)
        >>> masks[..., 16:48, 16:48] = 1
        >>> masks[..., 2, 2] = 1  # a speck, thinner than the blur
        >>> out = smoothing(masks, kernel=15)
        >>> out.sum().item(), out[0, 0, 2, 2].item()
        (1024.0, 0.0)
    """
    return run(masks, *P.plan_smoothing(kernel), generator, backend)


def elastic_warp(
    masks: Tensor,
    *,
    alpha: float = 30.0,
    sigma: float = 4.0,
    generator: Generator | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Elastic deformation [1]: displacement ``alpha * G_sigma * U(-1, 1)`` per axis, nearest-neighbour.

    ``alpha`` and ``sigma`` are in pixels at 224 px. The random field is drawn on a coarse grid (cells of
    ``0.75 sigma`` reference pixels, noise scaled to keep the field's statistics), smoothed there, upsampled
    bilinearly and scaled to the image, so the same warp geometry results at every resolution.

    [1] Simard et al., "Best practices for convolutional neural networks applied to visual document analysis",
    ICDAR 2003.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 96, 96)
        >>> masks[..., 24:72, 24:72] = 1
        >>> out = elastic_warp(masks, alpha=60.0, sigma=5.0, generator=g)
        >>> int(out.sum()), int((out != masks).sum())  # about the same area, a wobbly boundary
        (2317, 131)
    """
    return run(masks, *P.plan_elastic(alpha, sigma), generator, backend)


def grid_distortion(
    masks: Tensor,
    *,
    num_steps: int = 5,
    distort_limit: float = 0.2,
    generator: Generator | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Grid distortion (as albumentations' ``GridDistortion``): each of ``num_steps`` cells per axis is
    stretched by ``1 + U(-distort_limit, distort_limit)``; the stretched cells are rescaled to span the image.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 16, 16)
        >>> masks[..., 4:12, 4:12] = 1
        >>> grid_distortion(masks, num_steps=4, distort_limit=0.4, generator=g).sum().item()
        56.0
    """
    return run(masks, *P.plan_grid(num_steps, distort_limit), generator, backend)


# ----------------------------------------------------------------------------------------------------------
# structure
# ----------------------------------------------------------------------------------------------------------


def holes(
    masks: Tensor,
    *,
    count: int = 2,
    radius: tuple[float, float] = (3.0, 8.0),
    generator: Generator | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Punch ``count`` disk holes (radius ``U(radius)`` px at 224 px) centred on random foreground pixels.

    Only removes foreground. Empty masks stay empty.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 32, 32)
        >>> masks[..., 4:28, 4:28] = 1
        >>> holes(masks, count=2, radius=(20.0, 30.0), generator=g).sum().item()
        499.0
    """
    return run(masks, *P.plan_holes(count, radius), generator, backend)


def islands(
    masks: Tensor,
    *,
    count: int = 2,
    radius: tuple[float, float] = (3.0, 8.0),
    generator: Generator | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Add ``count`` disks (radius ``U(radius)`` px at 224 px) near the boundary: each centre is a random
    boundary pixel moved by ``U(0, 2) * radius`` in a random direction. Only adds foreground; on an empty mask
    the disks land anywhere.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 32, 32)
        >>> masks[..., 8:24, 8:24] = 1
        >>> islands(masks, count=2, radius=(20.0, 30.0), generator=g).sum().item()
        306.0
    """
    return run(masks, *P.plan_islands(count, radius), generator, backend)


def holes_and_islands(
    masks: Tensor,
    *,
    holes: int = 2,
    islands: int = 2,
    radius: tuple[float, float] = (5.0, 15.0),
    generator: Generator | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Punch ``holes`` holes, then add ``islands`` islands (see :func:`holes` and :func:`islands`).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 32, 32)
        >>> masks[..., 8:24, 8:24] = 1
        >>> holes_and_islands(masks, radius=(20.0, 30.0), generator=g).sum().item()
        241.0
    """
    return run(masks, *P.plan_spots(holes, islands, radius), generator, backend)


def keep_largest_component(
    masks: Tensor, *, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Keep only the largest 8-connected component (a subset of the mask).

    Example:
        >>> masks = torch.zeros(1, 1, 6, 6)
        >>> masks[..., 0:2, 0:2] = 1
        >>> masks[..., 3:6, 3:6] = 1
        >>> keep_largest_component(masks).sum().item()
        9.0
    """
    return run(masks, *P.plan_components(0), generator, backend)


def drop_random_component(
    masks: Tensor, *, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Remove one 8-connected component chosen uniformly; a mask with fewer than two components is unchanged.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 6, 6)
        >>> masks[..., 0:2, 0:2] = 1
        >>> masks[..., 3:6, 3:6] = 1
        >>> drop_random_component(masks, generator=g).sum().item()
        9.0
    """
    return run(masks, *P.plan_components(1), generator, backend)


def rectangular_dropout(
    masks: Tensor,
    *,
    fraction: tuple[float, float] = (0.1, 0.3),
    generator: Generator | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Erase one rectangle whose sides are ``U(fraction)`` of the image sides, centred on a random foreground
    pixel.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 20, 20)
        >>> masks[..., 4:16, 4:16] = 1
        >>> rectangular_dropout(masks, fraction=(0.3, 0.3), generator=g).sum().item()
        102.0
    """
    fraction = check_range(fraction, "fraction", 0.0, 1.0)

    return apply(masks, partial(D.rectangular_dropout, fraction=fraction, generator=generator), backend)


# ----------------------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------------------


def shift(
    masks: Tensor, *, max_fraction: float = 0.1, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Translate by a whole number of pixels, ``U(-max_fraction, max_fraction)`` of each side per axis.

    Area is preserved unless the mask crosses the border.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 20, 20)
        >>> masks[..., 8:12, 8:12] = 1
        >>> out = shift(masks, max_fraction=0.2, generator=g)
        >>> out.sum().item(), out[0, 0].nonzero().min(0).values.tolist()
        (16.0, [5, 5])
    """
    return run(masks, *P.plan_shift(max_fraction), generator, backend)


def scale(
    masks: Tensor,
    *,
    factor: tuple[float, float] = (0.75, 0.9),
    generator: Generator | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Scale about the mask's centroid by ``U(factor)`` (nearest neighbour).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 20, 20)
        >>> masks[..., 6:14, 6:14] = 1
        >>> scale(masks, factor=(0.5, 0.5), generator=g).sum().item()
        16.0
    """
    return run(masks, *P.plan_scale(factor), generator, backend)


def rotate(
    masks: Tensor, *, max_degrees: float = 15.0, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """Rotate about the mask's centroid by ``U(-max_degrees, max_degrees)`` degrees (nearest neighbour).

    Example:
        >>> g = torch.Generator().manual_seed(2)
        >>> masks = torch.zeros(1, 1, 20, 20)
        >>> masks[..., 4:16, 8:12] = 1  # a vertical bar, 48 pixels
        >>> rotate(masks, max_degrees=90.0, generator=g)[0, 0, 4:16, 4:16].sum(0).int().tolist()
        [0, 0, 2, 4, 8, 10, 10, 8, 4, 2, 0, 0]
    """
    return run(masks, *P.plan_rotate(max_degrees), generator, backend)


def random_affine(
    masks: Tensor,
    *,
    scale: tuple[float, float] = (0.9, 1.1),
    max_shift: float = 0.1,
    max_degrees: float = 15.0,
    generator: Generator | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Random affine map about the image centre: scale ``U(scale)``, rotation ``U(-max_degrees,
    max_degrees)``, shift ``U(-max_shift, max_shift)`` of each side (nearest neighbour).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 20, 20)
        >>> masks[..., 6:14, 6:14] = 1
        >>> random_affine(masks, generator=g).sum().item()
        65.0
    """
    return run(masks, *P.plan_affine(scale, max_shift, max_degrees), generator, backend)


# ----------------------------------------------------------------------------------------------------------
# blobs
# ----------------------------------------------------------------------------------------------------------


def gaussian_blob(
    masks: Tensor, *, std_factor: float = 1.0, generator: Generator | None = None, backend: Backend = "auto"
) -> Tensor:
    """A Gaussian blob at the centroid with the mask's per-axis spatial std times ``std_factor``, thresholded.

    The threshold is the level at which the ``std_factor = 1`` blob has the mask's area; a larger factor keeps
    that level, so its area grows by ``std_factor ** 2`` (the "larger Gaussian blob"). Level sets of an
    axis-aligned Gaussian are ellipses, so this is computed in closed form (no top-k over pixels); area
    falling outside the image is lost. Empty masks stay empty.

    Example:
        >>> masks = torch.zeros(1, 1, 32, 32)
        >>> masks[..., 8:24, 12:20] = 1
        >>> gaussian_blob(masks).sum().item(), gaussian_blob(masks, std_factor=1.2).sum().item()
        (132.0, 180.0)
    """
    return run(masks, *P.plan_blob(std_factor), generator, backend)


def circle(masks: Tensor, *, generator: Generator | None = None, backend: Backend = "auto") -> Tensor:
    """A disk at the centroid with the mask's area. Empty masks stay empty.

    Example:
        >>> masks = torch.zeros(1, 1, 32, 32)
        >>> masks[..., 8:24, 12:20] = 1
        >>> circle(masks).sum().item()
        124.0
    """
    return run(masks, *P.plan_circle(), generator, backend)


# ----------------------------------------------------------------------------------------------------------
# multi-class
# ----------------------------------------------------------------------------------------------------------


def class_swap(
    masks: Tensor,
    *,
    radius: tuple[float, float] = (0.15, 0.35),
    generator: Generator | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Relabel a region of one class to another class (multi-class masks; binary masks are returned
    unchanged).

    Per sample: a source class among those present, a target class among the other present classes (any other
    class when it is the only one), and a disk of radius ``U(radius)`` times the image height centred on a
    random pixel of the source class; source pixels inside the disk become the target class. Channels stay
    exclusive.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 2, 8, 8)
        >>> masks[:, 0, :, :4] = 1
        >>> masks[:, 1, :, 4:] = 1
        >>> class_swap(masks, generator=g).sum((2, 3))
        tensor([[41., 23.]])
    """
    check_masks(masks)
    check_backend(backend)
    radius = check_range(radius, "radius", 0.0, math.inf)
    if masks.shape[1] < 2 or masks.numel() == 0:
        return masks.clone()
    with torch.inference_mode():
        x = to_u8(masks)
        out = D.class_swap(x, use_opencv(x, backend), radius=radius, generator=generator)
    return finish(out, masks.dtype)

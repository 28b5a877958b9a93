"""Layer 2 of the corruption engine, OpenCV / NumPy side: per-mask pixel work for CPU tensors.

On one CPU thread OpenCV / NumPy per mask is several times cheaper than the batched torch ops on the sampler's
small sub-batches. Each function here repeats a primitive of :mod:`._torch_ops` with the same float32 formulas,
so that both paths agree pixel for pixel up to rounding ties. Random parameters are never drawn here with
NumPy: whatever is random comes from ``torch.rand(..., generator=...)`` in the same order as on the torch path.

Constants that depend only on a size or a parameter value (ramp windows, pixel grids, moment bases, the hull's
directions, Gaussian taps) are built once by functions under ``functools.lru_cache`` (bounded; the arrays they
return are read-only).

Example:
    >>> a = np.zeros((1, 5, 5), np.uint8)
    >>> a[0, 1:4, 1:4] = 1
    >>> area, cy, cx, vyy, vxx = np_moments(a)
    >>> area.tolist(), cy.tolist(), cx.tolist()
    ([9.0], [2.0], [2.0])
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
import torch
from torch import Tensor

from qg_lightning.quality.corruptions._base import EPS, HULL_DIRECTIONS, Generator, size_scale
from qg_lightning.quality.corruptions._torch_ops import gaussian_taps

__all__ = [
    "axis_basis",
    "connected_components",
    "elastic_taps",
    "hull_trig",
    "np_boundary",
    "np_disks",
    "np_ellipse_rows",
    "np_fill_rows",
    "np_moments",
    "np_morph",
    "np_random_points",
    "np_remap",
    "np_stacked",
    "np_unstacked",
    "pixel_grid",
    "ramp_windows",
    "smooth_taps",
    "square",
]


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@lru_cache(maxsize=64)
def axis_basis(length: int) -> tuple[np.ndarray, np.float32]:
    """Per axis length ``L``: the read-only centred ``(t, t * t)`` basis ``(L, 2)`` of :func:`np_moments` and
    ``(L - 1) / 2`` (float32)."""
    half = np.float32((length - 1) / 2)
    t = np.arange(length, dtype=np.float32) - half
    return _read_only(np.stack((t, t * t), 1)), half


def np_moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Area, centroid ``(cy, cx)`` and per-axis variances ``(vyy, vxx)`` of uint8 ``(N, H, W)`` masks as
    contiguous float32 arrays ``(N,)`` (the torch path's ``stats``, with few cheap OpenCV calls)."""
    n, h, w = a.shape
    rows = cv2.reduce(a.reshape(n * h, w), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32F).reshape(n, h)
    cols = np.stack([cv2.reduce(m, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32F)[0] for m in a]) if n else rows[:, :0]
    area = rows.sum(1, dtype=np.float32)
    safe = np.maximum(area, 1)[:, None]

    def axis(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        basis, half = axis_basis(counts.shape[1])
        moments = (counts @ basis) / safe
        mean, square = moments[:, 0], moments[:, 1]
        return mean + half, np.maximum(square - mean * mean, 0)

    cy, vyy = axis(rows)
    cx, vxx = axis(cols)
    return area, cy, cx, vyy, vxx


def np_random_points(a: np.ndarray, count: int, generator: Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """The torch path's ``random_points`` of uint8 ``(N, H, W)`` CPU masks (the same draws) as float32 NumPy
    arrays."""
    n, h, w = a.shape
    un = torch.rand((n, count, 2), generator=generator, device="cpu").numpy().astype(np.float64)
    rows = cv2.reduce(a.reshape(n * h, w), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32F).astype(np.float64)
    rows = rows.reshape(n, h)
    rows += rows.sum(1, keepdims=True) == 0  # an empty mask draws from every row
    cum = rows.cumsum(1)[:, None, :]  # (N, 1, H)
    row_idx = np.minimum((cum <= un[..., :1] * cum[..., -1:]).sum(-1), h - 1)  # (N, count)
    cum = a[np.arange(n)[:, None], row_idx].reshape(n * count, w).cumsum(1, dtype=np.float64)
    empty = cum[:, -1] == 0
    if empty.any():  # an empty row (of an empty mask) draws from every column
        cum[empty] = np.arange(1, w + 1, dtype=np.float64)
    col_idx = np.minimum((cum <= un[..., 1].reshape(-1, 1) * cum[:, -1:]).sum(-1), w - 1)
    return row_idx.astype(np.float32), col_idx.reshape(n, count).astype(np.float32)


def connected_components(x: Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-sample 8-connected component labels and sizes (OpenCV on every backend; the only per-sample loop of
    the torch path).

    Returns one ``(labels int32 (H, W), sizes int64 (n_labels,))`` pair per mask; label 0 is the background.
    """
    result = []
    for a in x.cpu().numpy():
        count, labels = cv2.connectedComponents(a, connectivity=8)
        sizes = np.bincount(labels.ravel(), minlength=count) if count > 1 else np.zeros(1, dtype=np.int64)
        result.append((labels, sizes))
    return result


@lru_cache(maxsize=64)
def square(r: int) -> np.ndarray:
    """Read-only all-ones ``(2 r + 1)`` square structuring element (OpenCV takes its separable fast path)."""
    return _read_only(np.ones((2 * r + 1, 2 * r + 1), np.uint8))


def np_morph(a: np.ndarray, op: int, r: int) -> np.ndarray:
    """OpenCV version of one morphology op (0 dilation, 1 erosion, 2 opening, 3 closing) on a uint8 ``(H, W)``
    mask (the torch path's border conventions)."""
    if r <= 0:
        return a.copy()
    k = square(r)
    if op == 0:
        return cv2.dilate(a, k)
    if op == 1:
        return cv2.erode(a, k)
    if op == 2:  # opening never adds pixels
        return cv2.dilate(cv2.erode(a, k), k) & a
    return cv2.erode(cv2.dilate(a, k), k) | a  # closing never removes pixels


def np_stacked(a: np.ndarray, gap: int, fill: int) -> np.ndarray:
    """Masks ``(N, H, W)`` stacked into one image ``(N (H + gap) - gap, W)`` with ``gap`` rows of ``fill``
    between them: one OpenCV call then filters every mask, exactly as one call per mask with the border
    ``fill`` (1 for erosion, 0 for dilation), when ``gap`` is at least the filter's radius."""
    n, h, w = a.shape
    buf = np.full((n, h + gap, w), fill, np.uint8)
    buf[:, :h] = a
    return buf.reshape(n * (h + gap), w)[: n * (h + gap) - gap]


def np_unstacked(image: np.ndarray, n: int, h: int, gap: int) -> np.ndarray:
    """Undo :func:`np_stacked`: the ``(N, H, W)`` view of the masks' rows (not contiguous when ``gap``)."""
    w = image.shape[1]
    if gap == 0:
        return image.reshape(n, h, w)
    full = np.empty((n * (h + gap), w), image.dtype)
    full[: image.shape[0]] = image
    return full.reshape(n, h + gap, w)[:, :h]


def np_boundary(a: np.ndarray) -> np.ndarray:
    """Inner boundary of uint8 ``(N, H, W)`` masks with OpenCV (one erosion of the stacked masks)."""
    n, h, _ = a.shape
    return a ^ np_unstacked(cv2.erode(np_stacked(a, 1, 1), square(1)), n, h, 1)


def np_disks(out: np.ndarray, cy: np.ndarray, cx: np.ndarray, r: np.ndarray, value: int) -> None:
    """Paint disks into uint8 ``(N, H, W)`` ``out`` in place with ``value``; exactly the pixels of the torch
    path's ``disks`` (same float32 formulas). ``cy``, ``cx``, radius ``r``: float32 ``(N, M)``; a negative
    radius paints nothing."""
    n, h, w = out.shape
    if r.size == 0 or r.max() < 0:
        return
    reach = math.ceil(float(r.max())) + 2
    size = 2 * reach + 1
    span = np.arange(size, dtype=np.int32)
    top = np.floor(cy).astype(np.int32) - reach  # (N, M): each disk in a size x size window
    left = np.floor(cx).astype(np.int32) - reach
    ys = (top[..., None] + span).astype(np.float32)  # (N, M, size)
    t = (ys - cy[..., None]) / np.maximum(r, np.float32(1e-6))[..., None]
    d = 1 - t * t
    half = r[..., None] * np.sqrt(np.maximum(d, 0))
    first = np.ceil(cx[..., None] - half - EPS).astype(np.int32) - left[..., None]  # window columns
    stop = np.where(d >= 0, np.floor(cx[..., None] + half + EPS).astype(np.int32) + 1, 0) - left[..., None]
    inside = (span >= first[..., None]) & (span < stop[..., None])  # (N, M, size, size)
    # every painted pixel at once: window pixels inside their disk and the image, for disks with r >= 0
    rows, cols = top[..., None] + span, left[..., None] + span  # (N, M, size)
    inside &= ((rows >= 0) & (rows < h))[..., :, None] & ((cols >= 0) & (cols < w))[..., None, :]
    inside &= (r >= 0)[..., None, None]
    flat = (rows + (np.arange(n, dtype=np.int64) * h)[:, None, None])[..., :, None] * w + cols[..., None, :]
    np.put(out, flat[inside], value)  # flat C-order indices, in place


@lru_cache(maxsize=64)
def ramp_windows(width: int) -> np.ndarray:
    """Read-only ``(W + 1, W)`` windows of a 0/1 ramp: window ``s`` is 1 from column ``W - s`` on."""
    ramp = np.zeros(2 * width + 1, np.uint8)
    ramp[width:] = 1
    return np.lib.stride_tricks.sliding_window_view(ramp, width)


def np_fill_rows(lo: np.ndarray, hi: np.ndarray, width: int) -> Tensor:
    """The torch path's ``fill_rows`` with NumPy (float32 ``lo``, ``hi`` ``(..., H)``, never NaN): the same
    pixels."""
    first = np.ceil(lo - EPS)
    stop = np.maximum(np.floor(hi + EPS) + 1, first)
    idx = (width - np.clip(np.stack((first, stop)), 0, width)).astype(np.int64)
    rows = ramp_windows(width)[idx]
    return torch.from_numpy(rows[0] ^ rows[1])


def np_ellipse_rows(
    cy: np.ndarray, cx: np.ndarray, ay: np.ndarray, ax: np.ndarray, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """The torch path's ``ellipse_rows`` with NumPy (float32, the same formulas)."""
    t = (np.arange(height, dtype=np.float32) - cy[..., None]) / np.maximum(ay, np.float32(1e-6))[..., None]
    with np.errstate(invalid="ignore"):
        half = np.nan_to_num(ax[..., None] * np.sqrt(1 - t * t), nan=-np.inf)
    return cx[..., None] - half, cx[..., None] + half


@lru_cache(maxsize=64)
def pixel_grid(h: int, w: int) -> np.ndarray:
    """Read-only float32 ``(H, W, 2)`` pixel coordinates ``(x, y)`` (the identity map of ``cv2.remap``)."""
    return _read_only(
        np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
    )


def np_remap(a: np.ndarray, map_x: np.ndarray, map_y: np.ndarray | None) -> np.ndarray:
    """Nearest-neighbour ``cv2.remap`` with background outside (``map_x``: float32 source x, ``map_y``
    source y; or ``map_x`` ``(H, W, 2)`` source (x, y) and ``map_y`` ``None``)."""
    return cv2.remap(a, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@lru_cache(maxsize=1)
def hull_trig() -> tuple[np.ndarray, np.ndarray]:
    """Read-only ``(cos, sin)`` float32 ``(D, 1)`` of the convex hull's support directions, computed with torch
    (so the NumPy path uses exactly the torch path's values)."""
    theta = (torch.arange(HULL_DIRECTIONS, device="cpu") + 0.5) * (2 * math.pi / HULL_DIRECTIONS)
    return _read_only(torch.cos(theta)[:, None].numpy()), _read_only(torch.sin(theta)[:, None].numpy())


@lru_cache(maxsize=1024)
def elastic_taps(sig: float) -> np.ndarray:
    """Read-only normalised float32 Gaussian taps of standard deviation ``sig`` (coarse-grid cells, a float32
    value) over ``+-ceil(3 sig)``."""
    sig = np.float32(sig)
    taps = np.arange(-math.ceil(3 * sig), math.ceil(3 * sig) + 1, dtype=np.float32)
    taps = np.exp(np.float32(-0.5) * (taps / sig) ** 2)
    taps /= taps.sum()
    return _read_only(taps)


@lru_cache(maxsize=1024)
def smooth_taps(h: int, w: int, kernels: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Per-mask read-only 1-D taps of the smoothing kernel's OpenCV path for masks ``(H, W)`` with ``kernels``
    taps at 224 px (computed as the torch path does, then cut to each mask's radius)."""
    kernel = torch.tensor(kernels, dtype=torch.float32, device="cpu")
    s = size_scale(h)
    sigma = (0.3 * ((kernel - 1) / 2 - 1) + 0.8) * s
    radius = torch.floor((kernel - 1) / 2 * s + 0.5).clamp_(min=1)
    max_radius = min(max(max(1, math.floor((k - 1) / 2 * s + 0.5)) for k in kernels), max(h, w) - 1)
    taps = gaussian_taps(sigma, radius, max_radius).numpy()
    return tuple(
        _read_only(t[max_radius - min(r, max_radius) : max_radius + min(r, max_radius) + 1])
        for t, r in zip(taps, radius.long().tolist(), strict=True)
    )

"""Layer 3 of the corruption engine: the pixel work of the corruptions without per-sample parameters.

Fitted ellipse, convex hull, bounding box, jagged band, rectangular dropout and class swap have nothing a
sampler could merge across registry entries, so they are not kernels (:mod:`._kernels`): each is one function
``fn(x, opencv, **params)`` on uint8 masks ``(N, H, W)`` (class swap: ``(B, C, H, W)``), ``opencv`` choosing
the path, called by its public wrapper in :mod:`.functional` (through ``_base.apply``).

Example:
    >>> x = torch.zeros(1, 6, 6, dtype=torch.uint8)
    >>> x[0, 1, 2] = x[0, 3, 4] = 1
    >>> int(bounding_box(x, True).sum()), int(bounding_box(x, False).sum())
    (9, 9)
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch import Tensor

from qg_lightning.quality.corruptions import _torch_ops as T
from qg_lightning.quality.corruptions._base import (
    HULL_DIRECTIONS,
    PIXEL_VARIANCE,
    Generator,
    coins,
    col_counts,
    row_counts,
    scaled_radius,
    uniform,
)
from qg_lightning.quality.corruptions._cv_ops import (
    hull_trig,
    np_fill_rows,
    np_moments,
    np_random_points,
    np_stacked,
    np_unstacked,
    square,
)
from qg_lightning.quality.corruptions._kernels import random_points

__all__ = [
    "bounding_box",
    "class_swap",
    "convex_hull",
    "fitted_ellipse",
    "jagged_band",
    "rectangular_dropout",
]


def fitted_ellipse(x: Tensor, opencv: bool) -> Tensor:
    """The ellipse with each mask's second moments (twice its standard deviations); empty masks stay empty."""
    if opencv:
        return _np_fitted_ellipse(x.numpy())
    n, h, w = x.shape
    area, cy, cx, vyy, vxx = T.stats(x)
    xs = torch.arange(w, device=x.device, dtype=torch.float32) - (w - 1) / 2
    row_x = (x.reshape(n * h, w).float() @ xs).view(n, h)  # centred sum of x per row
    dy = torch.arange(h, device=x.device, dtype=torch.float32) - cy[:, None]  # (N, H)
    vxy = (row_x * dy).sum(1) / area.clamp_min(1)  # sum(dy * row counts) = 0: x needs no re-centring
    vyy, vxx = vyy + PIXEL_VARIANCE, vxx + PIXEL_VARIANCE
    # inside: [dx dy] S^-1 [dx dy]^T <= 4 with S = [[vxx, vxy], [vxy, vyy]]
    det = (vxx * vyy - vxy * vxy).clamp_min(1e-6)
    a, b, c = (vyy / det)[:, None], (-vxy / det)[:, None], (vxx / det)[:, None]  # S^-1 = [[a, b], [b, c]]
    root = torch.nan_to_num(((b * dy) ** 2 - a * (c * dy * dy - 4)).sqrt(), nan=-math.inf) / a
    root = torch.where(area[:, None] > 0, root, -math.inf)  # rows the ellipse misses, empty masks: nothing
    centre = cx[:, None] - b * dy / a
    return T.fill_rows(centre - root, centre + root, w)


def _np_fitted_ellipse(a: np.ndarray) -> Tensor:
    """:func:`fitted_ellipse` on CPU masks with OpenCV / NumPy (the same float32 formulas)."""
    n, h, w = a.shape
    area, cy, cx, vyy, vxx = np_moments(a)
    xs = np.arange(w, dtype=np.float32) - np.float32((w - 1) / 2)
    row_x = (a.reshape(n * h, w).astype(np.float32) @ xs).reshape(n, h)  # centred sum of x per row
    dy = np.arange(h, dtype=np.float32) - cy[:, None]
    vxy = (row_x * dy).sum(1, dtype=np.float32) / np.maximum(area, 1)
    vyy, vxx = vyy + np.float32(PIXEL_VARIANCE), vxx + np.float32(PIXEL_VARIANCE)
    det = np.maximum(vxx * vyy - vxy * vxy, np.float32(1e-6))
    a_, b, c = (vyy / det)[:, None], (-vxy / det)[:, None], (vxx / det)[:, None]
    with np.errstate(invalid="ignore"):
        root = np.nan_to_num(np.sqrt((b * dy) ** 2 - a_ * (c * dy * dy - 4)), nan=-np.inf) / a_
    root = np.where(area[:, None] > 0, root, -np.inf)
    centre = cx[:, None] - b * dy / a_
    return np_fill_rows(centre - root, centre + root, w)


def convex_hull(x: Tensor, opencv: bool) -> Tensor:
    """Intersection of each mask's supporting half-planes in :data:`._base.HULL_DIRECTIONS` directions,
    clipped to its rows (contains the mask)."""
    if opencv:
        return _np_convex_hull(x.numpy())
    n, h, w = x.shape
    values, first = x.max(dim=2)  # first foreground column per row (the first maximum)
    last = (w - 1) - x.flip(2).max(dim=2)[1]
    has = values.bool()[:, None, :]  # (N, 1, H)
    ys = torch.arange(h, device=x.device, dtype=torch.float32)
    theta = (torch.arange(HULL_DIRECTIONS, device=x.device) + 0.5) * (2 * math.pi / HULL_DIRECTIONS)
    cos, sin = torch.cos(theta)[:, None], torch.sin(theta)[:, None]  # (D, 1)
    right = cos > 0
    # support h_d = max over the foreground of x cos + y sin; a row's extreme is its first or last pixel
    extreme = torch.where(right, last[:, None, :], first[:, None, :]).float()  # (N, D, H)
    support = torch.where(has, extreme * cos + ys * sin, -math.inf).amax(2, keepdim=True)  # (N, D, 1)
    bound = (support - ys * sin) / cos  # (N, D, H): x <= bound where cos > 0, x >= bound where cos < 0
    hi = torch.where(right, bound, math.inf).amin(1)
    lo = torch.where(right, -math.inf, bound).amax(1)
    row = torch.arange(h, device=x.device)  # rows outside the mask's vertical extent stay empty
    y_min = torch.where(has[:, 0], row, h).amin(1, keepdim=True)
    y_max = torch.where(has[:, 0], row, -1).amax(1, keepdim=True)
    lo = torch.where((row >= y_min) & (row <= y_max), lo, math.inf)
    return T.fill_rows(lo, hi, w) | x


def _np_convex_hull(a: np.ndarray) -> Tensor:
    """:func:`convex_hull` of uint8 ``(N, H, W)`` CPU masks with NumPy (the same float32 formulas)."""
    n, h, w = a.shape
    first = a.argmax(2)  # first foreground column per row
    last = (w - 1) - a[:, :, ::-1].argmax(2)
    has = a.max(2).astype(bool)[:, None, :]  # (N, 1, H)
    ys = np.arange(h, dtype=np.float32)
    cos, sin = hull_trig()
    right = cos > 0
    extreme = np.where(right, last[:, None, :], first[:, None, :]).astype(np.float32)  # (N, D, H)
    support = np.where(has, extreme * cos + ys * sin, -np.inf).max(2, keepdims=True)  # (N, D, 1)
    bound = (support - ys * sin) / cos
    hi = np.where(right, bound, np.inf).min(1)
    lo = np.where(right, -np.inf, bound).max(1)
    row = np.arange(h)
    y_min = np.where(has[:, 0], row, h).min(1, keepdims=True)
    y_max = np.where(has[:, 0], row, -1).max(1, keepdims=True)
    lo = np.where((row >= y_min) & (row <= y_max), lo, np.float32(np.inf))
    return torch.from_numpy(np_fill_rows(lo, hi, w).numpy() | a)


def bounding_box(x: Tensor, opencv: bool) -> Tensor:
    """Each mask's filled bounding box; empty masks stay empty."""
    n, h, w = x.shape
    if opencv:  # the same formulas with NumPy
        a = x.numpy()
        rows, cols = a.any(2), a.any(1)
        row, col = np.arange(h), np.arange(w, dtype=np.float32)
        y_min = np.where(rows, row, h).min(1, keepdims=True)
        y_max = np.where(rows, row, -1).max(1, keepdims=True)
        x_min = np.where(cols, col, np.float32(np.inf)).min(1, keepdims=True)
        x_max = np.where(cols, col, np.float32(-np.inf)).max(1, keepdims=True)
        lo = np.where((row >= y_min) & (row <= y_max), x_min, np.float32(np.inf))
        return np_fill_rows(lo, np.broadcast_to(x_max, (n, h)), w)
    rows, cols = row_counts(x) > 0, col_counts(x) > 0
    row = torch.arange(h, device=x.device)
    col = torch.arange(w, device=x.device, dtype=torch.float32)
    y_min = torch.where(rows, row, h).amin(1, keepdim=True)
    y_max = torch.where(rows, row, -1).amax(1, keepdim=True)
    x_min = torch.where(cols, col, math.inf).amin(1, keepdim=True)
    x_max = torch.where(cols, col, -math.inf).amax(1, keepdim=True)
    lo = torch.where((row >= y_min) & (row <= y_max), x_min, math.inf)
    return T.fill_rows(lo, x_max.expand(n, h), w)


def jagged_band(x: Tensor, opencv: bool, *, kernel: int, generator: Generator | None) -> Tensor:
    """Every pixel of the band ``dilate(k) - erode(k)`` re-drawn as a fair coin flip (``kernel`` at 224 px)."""
    r = scaled_radius(kernel, x.shape[1])
    flips = coins(x.numel(), generator, x.device).view(x.shape)
    if opencv:
        a, k = x.numpy(), square(r)
        n, h, _ = a.shape
        grown = np_unstacked(cv2.dilate(np_stacked(a, r, 0), k), n, h, r)
        band = grown ^ np_unstacked(cv2.erode(np_stacked(a, r, 1), k), n, h, r)  # erode <= a <= dilate
        return torch.from_numpy(a ^ ((a ^ flips.numpy()) & band))
    band = T.dilate(x, r) & (T.erode(x, r) ^ 1)
    return x ^ ((x ^ flips) & band)


def rectangular_dropout(
    x: Tensor, opencv: bool, *, fraction: tuple[float, float], generator: Generator | None
) -> Tensor:
    """One rectangle with sides ``U(fraction)`` of the image's erased around a random foreground pixel."""
    n, h, w = x.shape
    if opencv:  # the same draws and formulas with NumPy
        a = x.numpy()
        cy, cx = np_random_points(a, 1, generator)
        sides = uniform((n, 2), fraction[0], fraction[1], generator, x.device).numpy()
        half_h, half_w = sides[:, :1] * (h / 2), sides[:, 1:] * (w / 2)
        ys = np.arange(h, dtype=np.float32)
        lo = np.where(np.abs(ys - cy) <= half_h, cx - half_w, np.float32(np.inf))
        return torch.from_numpy(a & (np_fill_rows(lo, np.broadcast_to(cx + half_w, (n, h)), w).numpy() ^ 1))
    cy, cx = T.random_points(x, 1, generator)
    sides = uniform((n, 2), fraction[0], fraction[1], generator, x.device)
    half_h, half_w = sides[:, :1] * (h / 2), sides[:, 1:] * (w / 2)
    ys = torch.arange(h, device=x.device, dtype=torch.float32)
    lo = torch.where((ys - cy).abs() <= half_h, cx - half_w, math.inf)
    return x & (T.fill_rows(lo, (cx + half_w).expand(n, h), w) ^ 1)


def class_swap(
    x: Tensor, opencv: bool, *, radius: tuple[float, float], generator: Generator | None
) -> Tensor:
    """Relabel a disk of one present class to another class, per sample, on uint8 ``(B, C, H, W)``."""
    b, c, h, w = x.shape
    present = row_counts(x.reshape(b * c, h, w)).sum(1).view(b, c).clamp_max(1)  # (B, C) 0/1
    none = present.sum(1) == 0
    src = torch.multinomial(present + none[:, None], 1, generator=generator)  # (B, 1)
    others = present.scatter(1, src, 0)
    others = torch.where(others.sum(1, keepdim=True) > 0, others, torch.ones_like(others).scatter(1, src, 0))
    dst = torch.multinomial(others, 1, generator=generator)  # (B, 1)
    src_masks = x.gather(1, src[:, :, None, None].expand(b, 1, h, w))[:, 0]  # (B, H, W)
    cy, cx = random_points(src_masks, 1, generator, opencv)
    r = uniform((b, 1), radius[0], radius[1], generator, x.device) * h
    region = T.disks(cy, cx, r, h, w) & src_masks  # (B, H, W); empty when no class is present
    channels = torch.arange(c, device=x.device).view(1, c)
    src_onehot = (channels == src).view(b, c, 1, 1).to(torch.uint8)
    dst_onehot = (channels == dst).view(b, c, 1, 1).to(torch.uint8)
    region = region[:, None]
    return (x & ((region * src_onehot) ^ 1)) | (region * dst_onehot)

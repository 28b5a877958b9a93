"""Batched, seeded, resolution-independent mask corruptions (Phase 1 of [0]).

Every public function here is pure and has the signature::

    fn(masks: Tensor, *, generator: torch.Generator | None = None, **params) -> Tensor

``masks`` are foreground masks ``(B, C, H, W)`` (``C = K - 1``; ``C = 1`` for binary tasks) holding hard
values: ``float`` in ``{0, 1}`` (a value above 0.5 counts as foreground), ``bool`` or ``uint8`` in ``{0,
1}``. The result has the same shape and dtype and is again hard ``{0, 1}``. All per-sample random parameters
are drawn in one call of shape ``(B * C, ...)`` from ``generator`` on the masks' device, so the same seed
gives the same corruption.

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

Implementation notes (measured on one CPU thread with ``benchmarks/corruptions.py``):

* Internally masks are ``uint8`` ``{0, 1}`` tensors ``(N, H, W)`` with ``N = B * C``: bitwise ops on bytes
  are several times faster than ``float32`` ops and broadcasting ``uint8`` ops stay vectorised (``bool`` and
  ``torch.where`` ones do not); counts use byte lanes of 64-bit word sums (``sum(dtype=...)`` on ``uint8``
  first copies the whole tensor).
* Morphology: separable shifted ORs (``O(log k)`` passes per axis with van Herk style doubling); CPU
  ``max_pool2d`` is 50-100x slower.
* Shapes given by parameters (disks, ellipses, rectangles, convex polygons, convex hulls) are one
  ``[lo, hi]`` interval per row, painted by copying windows of a 0/1 ramp (no broadcast comparisons).
* Warps: whole-pixel shifts copy rows (``index_select`` over an ``unfold`` view); scalings and grid
  distortions gather rows, then columns; rotations, affine maps and elastic warps gather per pixel.
* Connected components (:func:`keep_largest_component`, :func:`drop_random_component`) have no cheap batched
  form: they loop over samples with ``cv2.connectedComponents`` inside one helper, ``_connected_components``.
* CPU tensors: the pixel work of the heavy kernels (morphology, blur, warps, disks, row-interval shapes,
  moments) runs per mask with OpenCV / NumPy, which on one CPU thread is several times cheaper than the
  batched torch ops on the sampler's small sub-batches (a torch op costs 3-10 us however small its input).
  Every random parameter is still drawn with torch from ``generator``, batched and in the same order, so the
  CPU path and the batched torch path (the one CUDA tensors take) make the same draws and agree pixel for
  pixel up to float rounding ties; the private switch ``_OPENCV_CPU`` forces the torch path (tests compare
  the two).
* Constants that depend only on the size or on a parameter value (ramp windows, pixel grids, moment bases,
  the hull's directions, Gaussian taps) are computed once and kept in small module-level caches; masks are
  stacked with gap rows so that one OpenCV morphology call serves a whole sub-batch.
* Most corruptions are thin wrappers around a few private *kernels* taking per-sample parameters (``_k_*``);
  :class:`~qg_lightning.quality.sampling.CorruptionSampler` runs all registry entries that share a kernel
  (e.g. ``shift_10``, ``scale_up`` and ``rotate_30``) as one call, because on CPU the cost of a call on a
  small sub-batch is dominated by the number of tensor operations, not by the pixels. Work runs under
  ``torch.inference_mode``; results are ordinary tensors.

References:
    [0] Abhishek & Hamarneh, "Quality-Guided Semi-Supervised Learning for Medical Image Segmentation",
    arXiv:2606.01753, 2026.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "REFERENCE_SIZE",
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

REFERENCE_SIZE = 224
"""Image side (pixels) at which METHOD.md states every corruption size."""

_HULL_DIRECTIONS = 32  # support directions of the convex-hull polygon: at most 0.5 % of the radius too large
_PIXEL_VARIANCE = 1.0 / 12.0  # variance of a unit pixel along one axis; keeps 1-pixel masks non-degenerate
_EPS = 1e-4
_SMALL_BLUR = 8 * 224 * 224  # pixels up to which shifted multiply-adds beat a depthwise convolution
_SMALL_IMAGE = 128 * 128  # pixels up to which one warp path for a mixed batch beats splitting it

Generator = torch.Generator


# ----------------------------------------------------------------------------------------------------------
# validation and dtype plumbing
# ----------------------------------------------------------------------------------------------------------


def _check_masks(masks: Tensor, name: str = "masks") -> None:
    if not isinstance(masks, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape (B, C, H, W), got {type(masks).__name__}.")
    if masks.ndim != 4:
        raise ValueError(
            f"`{name}` must be foreground masks of shape (B, C, H, W) (C = num_classes - 1), got shape "
            f"{tuple(masks.shape)}. Add the channel axis with `masks.unsqueeze(1)` for (B, H, W) binary "
            "masks."
        )
    if masks.is_complex() or not (masks.is_floating_point() or masks.dtype in (torch.bool, torch.uint8)):
        raise TypeError(
            f"`{name}` must be float (values in {{0, 1}}), bool or uint8 (values in {{0, 1}}), "
            f"got {masks.dtype}."
        )


def _to_u8(masks: Tensor) -> Tensor:
    """Hard ``uint8`` ``{0, 1}`` copy or view of validated masks (float: value > 0.5 is foreground)."""
    if masks.dtype == torch.uint8:
        return masks.contiguous()
    if masks.dtype == torch.bool:
        return masks.contiguous().view(torch.uint8)
    if masks.device.type == "cpu" and masks.dtype in (torch.float32, torch.float64):
        # NumPy's SIMD comparison is ~5x faster than torch's on one CPU thread
        return torch.from_numpy(np.greater(masks.detach().numpy(), 0.5, order="C").view(np.uint8))
    return (masks > 0.5).view(torch.uint8)


def _from_u8(x: Tensor, dtype: torch.dtype) -> Tensor:
    if dtype == torch.uint8:
        return x
    if dtype == torch.bool:
        return x.view(torch.bool)
    if x.device.type == "cpu" and dtype == torch.float32 and not torch.is_inference_mode_enabled():
        return torch.from_numpy(x.numpy().astype(np.float32))  # ~2x faster than Tensor.to on one thread
    return x.to(dtype)


def _exclusive(out: Tensor, orig: Tensor) -> Tensor:
    """Make ``uint8`` channels ``(B, C, H, W)`` mutually exclusive (original label first, then lowest
    index)."""
    score = out * (orig + 2)  # 0 = off, 2 = on, 3 = on and held this pixel in the input
    winner = score.argmax(dim=1, keepdim=True)  # first maximum -> lowest channel index among ties
    keep = torch.zeros_like(out).scatter_(1, winner, 1)
    return out & keep


def _finish(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Convert a uint8 result computed under ``torch.inference_mode`` to ``dtype`` as an ordinary tensor."""
    if not torch.is_inference_mode_enabled() and dtype in (torch.uint8, torch.bool):
        x = x.clone()  # a plain copy outside inference mode: callers may modify it in place
    return _from_u8(x, dtype)


def _apply(masks: Tensor, core: Callable[[Tensor], Tensor]) -> Tensor:
    """Run ``core`` on the ``(B * C, H, W)`` uint8 view of ``masks`` and restore shape, exclusivity and dtype.

    The work runs under ``torch.inference_mode`` (no autograd bookkeeping: cheaper small ops); the result is
    an ordinary tensor.
    """
    _check_masks(masks)
    if masks.numel() == 0:
        return masks.clone()
    with contextlib.nullcontext() if torch.is_inference_mode_enabled() else torch.inference_mode():
        x = _to_u8(masks)
        b, c, h, w = x.shape
        out = core(x.reshape(b * c, h, w)).reshape(b, c, h, w)
        if c > 1:
            out = _exclusive(out, x)
    return _finish(out, masks.dtype)


def _check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return value


def _check_range(value: tuple[float, float], name: str, low: float, high: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (low, high), got {value!r}.") from None
    if not (low <= lo <= hi <= high) or math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"`{name}` must satisfy {low} <= low <= high <= {high}, got {value!r}.")
    return lo, hi


def _check_float(value: float, name: str, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ValueError(f"`{name}` must be a number in [{low}, {high}], got {value!r}.")
    return float(value)


# ----------------------------------------------------------------------------------------------------------
# size scaling and random draws
# ----------------------------------------------------------------------------------------------------------


def scaled_radius(kernel: int, height: int) -> int:
    """Radius (pixels) of a ``kernel`` x ``kernel`` window given at 224 px, scaled to ``height``.

    ``r = max(1, round((kernel - 1) / 2 * height / 224))``; the scaled kernel is ``2 r + 1`` (odd, >= 3).

    Example:
        >>> scaled_radius(5, 224), scaled_radius(5, 448), scaled_radius(9, 64), scaled_radius(1, 64)
        (2, 4, 1, 0)
    """
    _check_positive_int(kernel, "kernel")
    r_ref = (kernel - 1) / 2
    if r_ref <= 0:
        return 0
    return max(1, math.floor(r_ref * height / REFERENCE_SIZE + 0.5))


def _scale(height: int) -> float:
    return height / REFERENCE_SIZE


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: Generator | None, device) -> Tensor:
    return torch.rand(shape, generator=generator, device=device) * (high - low) + low


def _coins(n: int, generator: Generator | None, device) -> Tensor:
    """``n`` fair coin flips as ``uint8`` ``{0, 1}``, 56 per 64-bit draw (a full-size ``torch.rand`` is 10x
    slower)."""
    words = -(-n // 56)
    draws = torch.empty(words, dtype=torch.int64, device=device).random_(0, 2**56, generator=generator)
    raw = draws.view(torch.uint8).view(words, 8)
    raw = raw[:, :7] if sys.byteorder == "little" else raw[:, 1:]
    if raw.device.type == "cpu":  # the same bits, unpacked by NumPy (several times cheaper)
        return torch.from_numpy(
            np.unpackbits(raw.numpy(), axis=1, count=None, bitorder="little").reshape(-1)[:n]
        )
    bits = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=device)
    return (raw.unsqueeze(-1) & bits).ne(0).view(torch.uint8).reshape(-1)[:n]


Kernel = Callable[[Tensor, dict, dict, "torch.Generator | None"], Tensor]


def _call(x: Tensor, kernel: Kernel, params: Mapping, generator: Generator | None) -> Tensor:
    """Run ``kernel`` on uint8 ``(N, H, W)`` masks with ``params`` given per mask (scalar or ``N`` values)."""
    n = x.shape[0]
    q = {}
    for name, value in params.items():
        if isinstance(value, (int, float)):
            q[name] = [float(value)] * n
        elif len(value) == n:
            q[name] = [float(v) for v in value]
        else:
            repeat = n // len(value)
            q[name] = [float(v) for v in value for _ in range(repeat)]
    table = torch.from_numpy(np.array(list(q.values()), dtype=np.float32))  # (K, N)
    if x.device.type != "cpu":
        table = table.to(x.device)
    return kernel(x, dict(zip(q, table.unbind(0), strict=True)), q, generator)


def _run(masks: Tensor, kernel: Kernel, params: Mapping, generator: Generator | None) -> Tensor:
    """Apply a parametrised kernel ``kernel(x, p, q, generator)`` to ``(B, C, H, W)`` masks.

    ``params`` map names to a scalar or a sequence of ``B`` per-sample values. The kernel receives them per
    mask ``(N = B * C)`` twice: ``p`` as float32 tensors ``(N,)`` (one tensor op builds them all) and ``q``
    as Python lists, which kernels use for control flow without synchronising on tensors.
    """
    return _apply(masks, lambda x: _call(x, kernel, params, generator))


def _run_u8(x: Tensor, kernel: Kernel, params: Mapping, generator: Generator | None) -> Tensor:
    """:func:`_run` on validated uint8 ``(B, C, H, W)`` masks under inference mode, without the dtype round
    trip (the sampler's inner loop)."""
    b, c, h, w = x.shape
    out = _call(x.reshape(b * c, h, w), kernel, params, generator).reshape(b, c, h, w)
    return _exclusive(out, x) if c > 1 else out


# ----------------------------------------------------------------------------------------------------------
# primitive helpers on uint8 (N, H, W), written for few tensor ops per call (the sampler's sub-batches are
# small)
# ----------------------------------------------------------------------------------------------------------


def _dilate_axis(x: Tensor, r: int, dim: int) -> Tensor:
    """OR over a window of ``2 r + 1`` along ``dim`` (zero padding), in ``O(log r)`` passes."""
    if r <= 0:
        return x
    n = x.shape[dim]
    k = 2 * r + 1
    shape = list(x.shape)
    shape[dim] = n + 2 * r
    y = x.new_zeros(shape)
    y.narrow(dim, r, n).copy_(x)
    w = 1  # y[i] holds the OR of the padded input over [i, i + w)
    while 2 * w <= k:
        length = y.shape[dim] - w
        y = y.narrow(dim, 0, length) | y.narrow(dim, w, length)
        w *= 2
    return y.narrow(dim, 0, n) | y.narrow(dim, k - w, n)


def _dilate(x: Tensor, r: int) -> Tensor:
    """Binary dilation of ``(N, H, W)`` uint8 masks with a ``(2 r + 1)`` square kernel."""
    return _dilate_axis(_dilate_axis(x, r, 2), r, 1)


def _erode(x: Tensor, r: int) -> Tensor:
    """Binary erosion with a ``(2 r + 1)`` square kernel; outside the image counts as foreground."""
    if r <= 0:
        return x
    return _dilate(x ^ 1, r) ^ 1


def _row_counts(x: Tensor) -> Tensor:
    """Foreground pixels per row, float32 ``(N, H)``.

    Fast path: rows are read as 64-bit words and summed; each byte lane then holds a partial count (at most
    ``W / 8 <= 255``, so lanes never carry) and the 8 lanes are added at the end. ``Tensor.sum(dtype=...)`` on
    uint8 first copies the whole tensor to the wider type and is ~10x slower.
    """
    n, h, w = x.shape
    if w % 8 == 0 and w <= 2040:
        try:
            packed = x.view(torch.int64).sum(-1)
        except RuntimeError:  # storage offset not 8-byte aligned
            packed = None
        if packed is not None:
            return packed.view(torch.uint8).view(n, h, 8).sum(-1, dtype=torch.float32)
    return x.sum(-1, dtype=torch.float32)


def _col_counts(x: Tensor) -> Tensor:
    """Foreground pixels per column, float32 ``(N, W)`` (byte lanes of 64-bit word sums, 255 rows at a
    time)."""
    n, h, w = x.shape
    if w % 8 == 0:
        try:
            words = x.view(torch.int64)
        except RuntimeError:
            words = None
        if words is not None:
            total = None
            for start in range(0, h, 255):  # a byte lane holds at most 255
                part = words[:, start : start + 255].sum(1).view(torch.uint8).view(n, w)
                total = part.float() if total is None else total + part
            return total
    return x.sum(1, dtype=torch.float32)


def _stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Area, centroid ``(cy, cx)`` and per-axis variances ``(vyy, vxx)`` of ``(N, H, W)`` masks, all ``(N,)``.

    Empty masks get area 0, the image centre and variance 0. Coordinates are centred for float32 precision.
    """
    if _opencv(x):
        return _np_stats(x.numpy())
    rows = _row_counts(x)
    area = rows.sum(1)
    safe = area.clamp_min(1.0)[:, None]

    def axis(counts: Tensor) -> tuple[Tensor, Tensor]:
        length = counts.shape[1]
        t = torch.arange(length, device=x.device, dtype=torch.float32) - (length - 1) / 2
        mean, square = (counts @ torch.stack((t, t * t), 1)).div_(safe).unbind(1)
        return mean + (length - 1) / 2, (square - mean * mean).clamp_min_(0.0)

    cy, vyy = axis(rows)
    cx, vxx = axis(_col_counts(x))
    return area, cy, cx, vyy, vxx


def _np_stats(a: np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`_stats` of uint8 ``(N, H, W)`` masks with OpenCV / NumPy (few cheap calls on CPU)."""
    return tuple(torch.from_numpy(v) for v in _np_moments(a))


_AXIS_BASIS: dict[int, tuple[np.ndarray, np.float32]] = {}
"""Per axis length ``L``: the centred ``(t, t * t)`` basis ``(L, 2)`` of :func:`_np_moments` and ``(L - 1) /
2`` (float32), built once per length."""


def _axis_basis(length: int) -> tuple[np.ndarray, np.float32]:
    basis = _AXIS_BASIS.get(length)
    if basis is None:
        half = np.float32((length - 1) / 2)
        t = np.arange(length, dtype=np.float32) - half
        basis = _AXIS_BASIS[length] = (np.stack((t, t * t), 1), half)
    return basis


def _np_moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_np_stats` as contiguous float32 NumPy arrays ``(N,)`` (area, cy, cx, vyy, vxx)."""
    n, h, w = a.shape
    rows = cv2.reduce(a.reshape(n * h, w), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32F).reshape(n, h)
    cols = np.stack([cv2.reduce(m, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32F)[0] for m in a]) if n else rows[:, :0]
    area = rows.sum(1, dtype=np.float32)
    safe = np.maximum(area, 1)[:, None]

    def axis(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        basis, half = _axis_basis(counts.shape[1])
        moments = (counts @ basis) / safe
        mean, square = moments[:, 0], moments[:, 1]
        return mean + half, np.maximum(square - mean * mean, 0)

    cy, vyy = axis(rows)
    cx, vxx = axis(cols)
    return area, cy, cx, vyy, vxx


def _fill_rows(lo: Tensor, hi: Tensor, width: int) -> Tensor:
    """Paint ``lo <= x <= hi`` per row: ``lo``, ``hi`` float ``(..., H)`` -> uint8 ``(..., H, W)``.

    Pixel centres sit at integer columns; ``lo > hi`` (use +-inf, never NaN) gives an empty row. Each row is a
    copy of one window of a 0/1 ramp (``index_select`` over an ``unfold`` view), which on CPU is far faster
    than broadcast comparisons.
    """
    ramp = torch.zeros(2 * width + 1, dtype=torch.uint8, device=lo.device)
    ramp[width:] = 1  # window s = ramp[s : s + W] is 1 from column W - s on
    first = (lo - _EPS).ceil_()
    stop = torch.maximum((hi + _EPS).floor_().add_(1), first)
    idx = torch.stack((first, stop)).clamp_(0, width).neg_().add_(width).long()
    rows = ramp.unfold(0, width, 1).index_select(0, idx.view(-1)).view(2, *lo.shape, width)
    return rows[0] ^ rows[1]


def _ellipse_rows(cy: Tensor, cx: Tensor, ay: Tensor, ax: Tensor, height: int) -> tuple[Tensor, Tensor]:
    """Row intervals of axis-aligned ellipses (centre and semi-axes ``(...,)``) -> ``(..., H)``.

    A negative semi-axis ``ax`` gives an empty shape.
    """
    ys = torch.arange(height, device=cy.device, dtype=torch.float32)
    t = (ys - cy[..., None]) / ay.clamp_min(1e-6)[..., None]
    half = torch.nan_to_num(ax[..., None] * (1 - t * t).sqrt(), nan=-math.inf)  # NaN: the row misses it
    return cx[..., None] - half, cx[..., None] + half


def _union(painted: Tensor) -> Tensor:
    """OR over dim 1 of uint8 ``(N, M, H, W)``."""
    out = painted[:, 0]
    for m in range(1, painted.shape[1]):
        out = out | painted[:, m]
    return out


def _disks(cy: Tensor, cx: Tensor, radius: Tensor, height: int, width: int) -> Tensor:
    """Union of disks (``(N, M)`` centres and radii; a negative radius draws nothing) as uint8 ``(N, H,
    W)``."""
    lo, hi = _ellipse_rows(cy, cx, radius, radius, height)
    return _union(_fill_rows(lo, hi, width))


def _convex_polygon_rows(py: Tensor, px: Tensor, height: int) -> tuple[Tensor, Tensor]:
    """Row intervals of convex polygons with vertices ``(..., P)`` (in order along the boundary)."""
    ys = torch.arange(height, device=py.device, dtype=torch.float32)
    y0, x0 = py[..., :, None], px[..., :, None]
    y1, x1 = py.roll(-1, dims=-1)[..., :, None], px.roll(-1, dims=-1)[..., :, None]
    dy = y1 - y0
    flat = dy.abs() < 1e-9  # horizontal edges: their end points come from the neighbouring edges
    t = (ys - y0) / torch.where(flat, 1.0, dy)
    valid = (t >= -1e-6) & (t <= 1 + 1e-6) & ~flat
    xs = x0 + t * (x1 - x0)
    return torch.where(valid, xs, math.inf).amin(dim=-2), torch.where(valid, xs, -math.inf).amax(dim=-2)


def _random_points(x: Tensor, count: int, generator: Generator | None) -> tuple[Tensor, Tensor]:
    """``count`` uniformly drawn foreground pixels per mask, ``(N, count)`` each (y, x); empty masks:
    anywhere.

    A row is drawn in proportion to its foreground pixels, then a foreground column of that row, both by
    inverting cumulative counts (float64, exact) at one uniform draw each (cheaper than ``torch.multinomial``).
    """
    n, h, w = x.shape
    if _opencv(x):  # the same draws, counted with OpenCV / NumPy
        return tuple(torch.from_numpy(v) for v in _np_random_points(x.numpy(), count, generator))
    u = torch.rand((n, count, 2), generator=generator, device=x.device)
    u = u.double()
    rows = _row_counts(x).double()
    rows += rows.sum(1, keepdim=True) == 0  # an empty mask draws from every row
    cum = rows.cumsum(1)
    row_idx = torch.searchsorted(cum, u[..., 0] * cum[:, -1:], right=True).clamp_max_(h - 1)  # (N, count)
    flat_rows = (row_idx + torch.arange(0, n * h, h, device=x.device)[:, None]).view(-1)
    picked = x.reshape(n * h, w).index_select(0, flat_rows).double()  # (N * count, W)
    picked += picked.sum(1, keepdim=True) == 0
    cum = picked.cumsum(1)
    col_idx = torch.searchsorted(cum, u[..., 1].reshape(-1, 1) * cum[:, -1:], right=True).clamp_max_(w - 1)
    return row_idx.float(), col_idx.view(n, count).float()


def _np_random_points(
    a: np.ndarray, count: int, generator: Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_random_points` of uint8 ``(N, H, W)`` CPU masks (the same draws) as float32 NumPy arrays."""
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


def _boundary(x: Tensor) -> Tensor:
    """Foreground pixels with a background 8-neighbour (inner boundary)."""
    return x & (_erode(x, 1) ^ 1)


def _select_rows(x: Tensor, idx: Tensor) -> Tensor:
    """``out[n, i] = x[n, idx[n, i]]`` for ``idx`` ``(N, M)`` long; indices outside ``[0, H)`` give zero
    rows."""
    n, h, w = x.shape
    padded = torch.cat((x.reshape(n * h, w), x.new_zeros(1, w)))
    flat = torch.where(
        (idx >= 0) & (idx < h), idx + torch.arange(0, n * h, h, device=x.device)[:, None], n * h
    )
    return padded.index_select(0, flat.view(-1)).view(n, idx.shape[1], w)


def _transpose(x: Tensor) -> Tensor:
    return x.transpose(1, 2).contiguous()


def _translate_rows(x: Tensor, src_row: Tensor, offset: Tensor, pad: int | None = None) -> Tensor:
    """Per-row integer translation: ``out[n, y, c] = x[n, src_row[n, y], c - offset[n, y]]``, zero outside.

    ``src_row`` ``(N, H)`` long (outside ``[0, H)`` gives a zero row) and ``offset`` long broadcastable to it;
    ``pad`` (default: computed) must bound ``|offset|``. Every output row is one window of a zero-padded copy,
    gathered by one ``index_select`` over an ``unfold`` view.
    """
    n, h, w = x.shape
    offset = offset.clamp(-w, w).expand_as(src_row)
    pad = min(w, int(offset.abs().max()) if pad is None else pad)
    row = w + 2 * pad
    body = n * h * row
    buf = x.new_zeros(body + row)  # the trailing `row` zeros serve every invalid row
    buf[:body].view(n, h, row)[:, :, pad : pad + w] = x
    start = (src_row + torch.arange(0, n * h, h, device=x.device)[:, None]) * row + (pad - offset)
    start = torch.where((src_row >= 0) & (src_row < h), start, body)
    return buf.unfold(0, w, 1).index_select(0, start.view(-1)).view(n, h, w)


def _remap_separable(x: Tensor, src_y: Tensor, src_x: Tensor) -> Tensor:
    """Nearest-neighbour warp whose source row depends on the output row only, and column on column only.

    ``src_y`` ``(N, H)`` and ``src_x`` ``(N, W)`` are float source coordinates (pixel centres at integers);
    sources outside the image give background. Rows, then (transposed) columns, are gathered as whole rows.
    """
    rows = _select_rows(x, torch.floor(src_y + 0.5).long())
    return _transpose(_select_rows(_transpose(rows), torch.floor(src_x + 0.5).long()))


def _remap(x: Tensor, src_y: Tensor, src_x: Tensor) -> Tensor:
    """Nearest-neighbour warp; sources outside the image give background.

    ``src_y`` and ``src_x`` are float ``(N, H, W)`` source coordinates **plus 1.5** (one pixel of zero padding
    plus rounding), which callers fold into their small per-row / per-column terms; both are overwritten.
    """
    n, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1))  # the zero border catches every source outside the image
    iy = src_y.clamp_(0, h + 1).floor_()
    ix = src_x.clamp_(0, w + 1).floor_()
    flat = iy.mul_(w + 2).add_(ix).long().view(n, h * w)
    return padded.view(n, -1).gather(1, flat).view(n, h, w)


def _affine_about(
    x: Tensor, cy: Tensor, cx: Tensor, angle: Tensor, inv_scale: Tensor, ty: Tensor, tx: Tensor
) -> Tensor:
    """Warp by ``p' = c + s R(angle) (p - c) + t`` (all ``(N,)``; ``inv_scale = 1 / s``), nearest
    neighbour."""
    n, h, w = x.shape
    cos, sin = (torch.cos(angle) * inv_scale)[:, None], (torch.sin(angle) * inv_scale)[:, None]
    dy = torch.arange(h, device=x.device, dtype=torch.float32) - (ty + cy)[:, None]  # (N, H)
    dx = torch.arange(w, device=x.device, dtype=torch.float32) - (tx + cx)[:, None]  # (N, W)
    # inverse map p = c + R(-angle) (p' - t - c) / s, plus 1.5 for `_remap`
    src_y = (cos * dy + (cy[:, None] + 1.5))[:, :, None] - (sin * dx)[:, None, :]
    src_x = (cos * dx + (cx[:, None] + 1.5))[:, None, :] + (sin * dy)[:, :, None]
    return _remap(x, src_y, src_x)


def _gaussian_taps(sigma: Tensor, radius: Tensor, max_radius: int) -> Tensor:
    """Per-sample normalised Gaussian taps ``(N, 2 R + 1)``; taps beyond a sample's ``radius`` are zero."""
    t = torch.arange(-max_radius, max_radius + 1, device=sigma.device, dtype=torch.float32)
    taps = torch.exp(-0.5 * (t / sigma.clamp_min(1e-6)[:, None]) ** 2) * (t.abs() <= radius[:, None])
    return taps / taps.sum(1, keepdim=True)


def _blur_vertical(values: Tensor, taps: Tensor) -> Tensor:
    """Blur float ``(N, H, W)`` along H with per-sample taps ``(N, 2 R + 1)`` (replicate padding).

    Large inputs: one depthwise convolution (``(k, 1)`` depthwise kernels are the fast oneDNN case on CPU,
    ``(1, k)`` ones are several times slower, so callers blur along W by transposing). Small inputs (the usual
    sub-batch): shifted multiply-adds, which avoid the convolution's fixed cost.
    """
    n, h, w = values.shape
    r = (taps.shape[1] - 1) // 2
    padded = F.pad(values.view(1, n, h, w), (0, 0, r, r), mode="replicate")
    if n * h * w > _SMALL_BLUR:
        return F.conv2d(padded, taps.view(n, 1, -1, 1), groups=n).view(n, h, w)
    padded = padded.view(n, h + 2 * r, w)
    out = padded[:, :h] * taps[:, :1, None]
    for k in range(1, 2 * r + 1):
        out.addcmul_(padded[:, k : k + h], taps[:, k : k + 1, None])
    return out


def _blur(values: Tensor, taps: Tensor) -> Tensor:
    """Separable per-sample Gaussian blur of float ``(N, H, W)``; returns the **transposed** result ``(N, W,
    H)``."""
    return _blur_vertical(_transpose(_blur_vertical(values, taps)), taps)


def _connected_components(x: Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-sample 8-connected component labels and sizes (OpenCV; the only per-sample loop in this module).

    Returns one ``(labels int32 (H, W), sizes int64 (n_labels,))`` pair per mask; label 0 is the background.
    """
    result = []
    for a in x.cpu().numpy():
        count, labels = cv2.connectedComponents(a, connectivity=8)
        sizes = np.bincount(labels.ravel(), minlength=count) if count > 1 else np.zeros(1, dtype=np.int64)
        result.append((labels, sizes))
    return result


# ----------------------------------------------------------------------------------------------------------
# per-mask OpenCV / NumPy pixel work for CPU tensors (parameters are always drawn with torch, batched)
# ----------------------------------------------------------------------------------------------------------

_OPENCV_CPU = True
"""CPU masks do the pixel work of the heavy kernels per mask with OpenCV / NumPy, which on one CPU thread is
several times faster than the batched torch ops on the small sub-batches the sampler makes. Every random
parameter is still drawn with torch, batched and in the same order, so both paths make the same draws and
agree up to rounding ties. ``False`` forces the batched torch path (the one CUDA tensors take); the tests
compare the two."""


def _opencv(x: Tensor) -> bool:
    """Whether ``x`` takes the per-mask OpenCV / NumPy path (CPU tensors, unless disabled)."""
    return _OPENCV_CPU and x.device.type == "cpu"


def _square(r: int) -> np.ndarray:
    """All-ones ``(2 r + 1)`` square structuring element (OpenCV takes its separable fast path)."""
    return np.ones((2 * r + 1, 2 * r + 1), np.uint8)


def _np_morph(a: np.ndarray, op: int, r: int) -> np.ndarray:
    """OpenCV version of one :func:`_k_morph` op on a uint8 ``(H, W)`` mask (same border conventions)."""
    if r <= 0:
        return a.copy()
    k = _square(r)
    if op == 0:
        return cv2.dilate(a, k)
    if op == 1:
        return cv2.erode(a, k)
    if op == 2:  # opening never adds pixels
        return cv2.dilate(cv2.erode(a, k), k) & a
    return cv2.erode(cv2.dilate(a, k), k) | a  # closing never removes pixels


def _np_stacked(a: np.ndarray, gap: int, fill: int) -> np.ndarray:
    """Masks ``(N, H, W)`` stacked into one image ``(N (H + gap) - gap, W)`` with ``gap`` rows of ``fill``
    between them: one OpenCV call then filters every mask, exactly as one call per mask with the border
    ``fill`` (1 for erosion, 0 for dilation), when ``gap`` is at least the filter's radius."""
    n, h, w = a.shape
    buf = np.full((n, h + gap, w), fill, np.uint8)
    buf[:, :h] = a
    return buf.reshape(n * (h + gap), w)[: n * (h + gap) - gap]


def _np_unstacked(image: np.ndarray, n: int, h: int, gap: int) -> np.ndarray:
    """Undo :func:`_np_stacked`: the ``(N, H, W)`` view of the masks' rows (not contiguous when ``gap``)."""
    w = image.shape[1]
    if gap == 0:
        return image.reshape(n, h, w)
    full = np.empty((n * (h + gap), w), image.dtype)
    full[: image.shape[0]] = image
    return full.reshape(n, h + gap, w)[:, :h]


def _np_boundary(a: np.ndarray) -> np.ndarray:
    """:func:`_boundary` of uint8 ``(N, H, W)`` masks with OpenCV (one erosion of the stacked masks)."""
    n, h, _ = a.shape
    return a ^ _np_unstacked(cv2.erode(_np_stacked(a, 1, 1), _square(1)), n, h, 1)


def _np_disks(out: np.ndarray, cy: np.ndarray, cx: np.ndarray, r: np.ndarray, value: int) -> None:
    """Paint disks into uint8 ``(N, H, W)`` ``out`` in place with ``value``; exactly the pixels of
    :func:`_disks` (same float32 formulas). ``cy``, ``cx``, radius ``r``: float32 ``(N, M)``; a negative
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
    first = np.ceil(cx[..., None] - half - _EPS).astype(np.int32) - left[..., None]  # window columns
    stop = np.where(d >= 0, np.floor(cx[..., None] + half + _EPS).astype(np.int32) + 1, 0) - left[..., None]
    inside = (span >= first[..., None]) & (span < stop[..., None])  # (N, M, size, size)
    # every painted pixel at once: window pixels inside their disk and the image, for disks with r >= 0
    rows, cols = top[..., None] + span, left[..., None] + span  # (N, M, size)
    inside &= ((rows >= 0) & (rows < h))[..., :, None] & ((cols >= 0) & (cols < w))[..., None, :]
    inside &= (r >= 0)[..., None, None]
    flat = (rows + (np.arange(n, dtype=np.int64) * h)[:, None, None])[..., :, None] * w + cols[..., None, :]
    np.put(out, flat[inside], value)  # flat C-order indices, in place


def _np_fill_rows(lo: np.ndarray, hi: np.ndarray, width: int) -> Tensor:
    """:func:`_fill_rows` with NumPy (float32 ``lo``, ``hi`` ``(..., H)``, never NaN): the same pixels."""
    first = np.ceil(lo - _EPS)
    stop = np.maximum(np.floor(hi + _EPS) + 1, first)
    idx = (width - np.clip(np.stack((first, stop)), 0, width)).astype(np.int64)
    rows = _ramp_windows(width)[idx]
    return torch.from_numpy(rows[0] ^ rows[1])


_RAMP_WINDOWS: dict[int, np.ndarray] = {}


def _ramp_windows(width: int) -> np.ndarray:
    """Read-only ``(W + 1, W)`` windows of a 0/1 ramp: window ``s`` is 1 from column ``W - s`` on (built once
    per width)."""
    windows = _RAMP_WINDOWS.get(width)
    if windows is None:
        ramp = np.zeros(2 * width + 1, np.uint8)
        ramp[width:] = 1
        windows = _RAMP_WINDOWS[width] = np.lib.stride_tricks.sliding_window_view(ramp, width)
    return windows


def _np_ellipse_rows(
    cy: np.ndarray, cx: np.ndarray, ay: np.ndarray, ax: np.ndarray, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_ellipse_rows` with NumPy (float32, the same formulas)."""
    t = (np.arange(height, dtype=np.float32) - cy[..., None]) / np.maximum(ay, np.float32(1e-6))[..., None]
    with np.errstate(invalid="ignore"):
        half = np.nan_to_num(ax[..., None] * np.sqrt(1 - t * t), nan=-np.inf)
    return cx[..., None] - half, cx[..., None] + half


_PIXEL_GRIDS: dict[tuple[int, int], np.ndarray] = {}


def _pixel_grid(h: int, w: int) -> np.ndarray:
    """Read-only float32 ``(H, W, 2)`` pixel coordinates ``(x, y)`` (the identity map of ``cv2.remap``),
    built once per size."""
    grid = _PIXEL_GRIDS.get((h, w))
    if grid is None:
        grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
        grid.flags.writeable = False
        _PIXEL_GRIDS[(h, w)] = grid
    return grid


def _np_remap(a: np.ndarray, map_x: np.ndarray, map_y: np.ndarray | None) -> np.ndarray:
    """Nearest-neighbour ``cv2.remap`` with background outside (``map_x``: float32 source x, ``map_y``
    source y; or ``map_x`` ``(H, W, 2)`` source (x, y) and ``map_y`` ``None``)."""
    return cv2.remap(a, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# ----------------------------------------------------------------------------------------------------------
# kernels: one implementation per corruption kind, with per-sample parameters ``p[name]`` of shape (N,)
# (the sampler runs several registry entries that share a kernel as one call)
# ----------------------------------------------------------------------------------------------------------


def _grow(x: Tensor, radius: list[int]) -> Tensor:
    """Dilate each mask by its own radius (square kernel); one doubling dilation per distinct radius."""
    distinct = sorted(set(radius))
    if len(distinct) == 1:
        return _dilate(x, distinct[0])
    rows = list(x.unbind(0))
    for r in distinct:
        if r == 0:
            continue
        idx = [i for i, ri in enumerate(radius) if ri == r]
        grown = _dilate(x.index_select(0, torch.tensor(idx, device=x.device)), r)
        for i, row in zip(idx, grown.unbind(0), strict=True):
            rows[i] = row
    return torch.stack(rows)


def _k_morph(x: Tensor, p: dict, q: dict, generator: Generator | None) -> Tensor:
    """Square-kernel morphology with per-sample ``op`` (0 dilation, 1 erosion, 2 opening, 3 closing) and
    ``kernel`` (pixels at 224 px). Erosion is dilation of the complement, so the image border counts as
    foreground for erosion, as in OpenCV."""
    n, h, _ = x.shape
    radius = [scaled_radius(int(k), h) for k in q["kernel"]]
    ops = [int(o) for o in q["op"]]
    if _opencv(x):
        a = x.numpy()
        return torch.from_numpy(
            np.stack([_np_morph(m, o, r) for m, o, r in zip(a, ops, radius, strict=True)])
        )

    def flags(values: list[bool]) -> Tensor:
        return torch.tensor(values, dtype=torch.uint8, device=x.device).view(n, 1, 1)

    first = flags([o in (1, 2) for o in ops])  # erode first: erosion and opening
    out = _grow(x ^ first, radius) ^ first
    if any(o >= 2 for o in ops):  # second half of opening (dilate) and closing (erode)
        second = flags([o == 3 for o in ops])
        out = _grow(out ^ second, [r if o >= 2 else 0 for r, o in zip(radius, ops, strict=True)]) ^ second
        # opening never adds and closing never removes pixels (the border convention could otherwise)
        out = (out & (x | flags([o != 2 for o in ops]))) | (x & flags([o == 3 for o in ops]))
    return out


def _k_catastrophic(x: Tensor, p: dict, q: dict, generator: Generator | None) -> Tensor:
    """``kind``: 0 inverted, 1 empty, 2 full, 3 coin flips with foreground probability ``p``."""
    n = x.shape[0]
    kind = p["kind"].view(n, 1, 1)
    out = ((x ^ 1) & (kind == 0).view(torch.uint8)) | (kind == 2).view(torch.uint8)
    if 3.0 in q["kind"]:
        if all(prob == 0.5 for prob in q["p"]):
            coins = _coins(x.numel(), generator, x.device).view(x.shape)
        else:
            uniform = torch.rand(x.shape, generator=generator, device=x.device)
            coins = (uniform < p["p"].view(n, 1, 1)).view(torch.uint8)
        out = out | (coins & (kind == 3).view(torch.uint8))
    return out


def _k_components(x: Tensor, p: dict, q: dict, generator: Generator | None) -> Tensor:
    """``mode``: 0 keeps the largest 8-connected component, 1 drops a uniformly chosen one (if >= 2)."""
    draws = torch.rand(x.shape[0], generator=generator, device=x.device).tolist()
    kept = []
    for u, drop_mode, (labels, sizes) in zip(draws, q["mode"], _connected_components(x), strict=True):
        n_comp = len(sizes) - 1
        if drop_mode:
            drop = min(int(u * n_comp), n_comp - 1) + 1 if n_comp >= 2 else -1
            kept.append((labels > 0) & (labels != drop))
        else:
            kept.append(labels == (int(np.argmax(sizes[1:])) + 1 if n_comp >= 1 else -1))
    return torch.from_numpy(np.stack(kept).view(np.uint8)).to(x.device)


def _k_spots(x: Tensor, p: dict, q: dict, generator: Generator | None) -> Tensor:
    """``holes`` disks removed around random foreground pixels, then ``islands`` disks added near the
    boundary.

    Radii ``U(r_lo, r_hi)`` px at 224 px. Island centres: a random boundary pixel moved ``U(0, 2) * radius``
    in a random direction.
    """
    n, h, w = x.shape
    s = _scale(h)
    max_holes, max_islands = int(max(q["holes"])), int(max(q["islands"]))
    if _opencv(x):
        return _np_spots(x, {k: v.numpy() for k, v in p.items()}, max_holes, max_islands, generator)
    n_holes, n_islands = p["holes"], p["islands"]
    span = (p["r_hi"] - p["r_lo"])[:, None]
    out = x
    if max_holes > 0:
        cy, cx = _random_points(x, max_holes, generator)
        r = (p["r_lo"][:, None] + torch.rand((n, max_holes), generator=generator, device=x.device) * span) * s
        r = torch.where(torch.arange(max_holes, device=x.device) < n_holes[:, None], r, -1.0)
        out = out & (_disks(cy, cx, r, h, w) ^ 1)
    if max_islands > 0:
        cy, cx = _random_points(_boundary(x), max_islands, generator)
        u = torch.rand((n, max_islands, 3), generator=generator, device=x.device)
        r = (p["r_lo"][:, None] + u[..., 0] * span) * s
        distance, angle = 2 * u[..., 1] * r, 2 * math.pi * u[..., 2]
        r = torch.where(torch.arange(max_islands, device=x.device) < n_islands[:, None], r, -1.0)
        out = out | _disks(cy + distance * torch.sin(angle), cx + distance * torch.cos(angle), r, h, w)
    return out


def _np_spots(x: Tensor, p: dict, max_holes: int, max_islands: int, generator: Generator | None) -> Tensor:
    """:func:`_k_spots` for CPU masks: the same draws and float32 formulas, disks painted with NumPy."""
    n, h, w = x.shape
    s = _scale(h)
    a = x.numpy()
    out = a.copy()
    span = (p["r_hi"] - p["r_lo"])[:, None]
    if max_holes > 0:
        cy, cx = _np_random_points(a, max_holes, generator)
        u = torch.rand((n, max_holes), generator=generator, device=x.device).numpy()
        r = np.where(np.arange(max_holes) < p["holes"][:, None], (p["r_lo"][:, None] + u * span) * s, -1.0)
        _np_disks(out, cy, cx, r, 0)
    if max_islands > 0:
        cy, cx = _np_random_points(_np_boundary(a), max_islands, generator)
        u = torch.rand((n, max_islands, 3), generator=generator, device=x.device).numpy()
        r = (p["r_lo"][:, None] + u[..., 0] * span) * s
        distance, angle = 2 * u[..., 1] * r, np.float32(2 * math.pi) * u[..., 2]
        r = np.where(np.arange(max_islands) < p["islands"][:, None], r, -1.0)
        cy, cx = cy + distance * np.sin(angle), cx + distance * np.cos(angle)
        _np_disks(out, cy, cx, r, 1)
    return torch.from_numpy(out)


def _k_geometry(x: Tensor, p: dict, q: dict, generator: Generator | None) -> Tensor:
    """Scale ``U(scale_lo, scale_hi)`` and rotate ``U(+-max_degrees)`` about the centroid (``centroid = 1``)
    or the image centre, then shift by ``U(+-max_shift)`` of each side (whole pixels when ``whole = 1``).

    Samples take the cheapest exact path: whole-pixel shifts copy rows, scalings gather rows and columns, and
    only rotations need a per-pixel gather. CPU masks: one ``cv2.warpAffine`` (nearest neighbour) per mask.
    """
    n, h, w = x.shape
    u = torch.rand((n, 4), generator=generator, device=x.device)
    if _opencv(x):
        return _np_geometry(x.numpy(), u.numpy(), {k: v.numpy() for k, v in p.items()}, q)
    factor = p["scale_lo"] + u[:, 0] * (p["scale_hi"] - p["scale_lo"])
    angle = (2 * u[:, 1] - 1) * p["max_degrees"] * (math.pi / 180)
    shift = (2 * u[:, 2:] - 1) * p["max_shift"][:, None] * torch.tensor([h, w], device=x.device)
    if all(q["whole"]):
        shift = torch.floor(shift + 0.5)
    elif any(q["whole"]):
        shift = torch.where(p["whole"][:, None] > 0, torch.floor(shift + 0.5), shift)
    paths: dict[str, list[int]] = {}
    for i in range(n):
        if q["max_degrees"][i]:
            paths.setdefault("rotate", []).append(i)
        elif q["scale_lo"][i] != 1 or q["scale_hi"][i] != 1 or not q["whole"][i]:
            paths.setdefault("separable", []).append(i)
        else:
            paths.setdefault("shift", []).append(i)
    if len(paths) > 1 and h * w <= _SMALL_IMAGE:  # few pixels: one general path costs less than splitting
        paths = {"rotate" if "rotate" in paths else "separable": list(range(n))}
    cy, cx = torch.full_like(factor, (h - 1) / 2), torch.full_like(factor, (w - 1) / 2)
    if any(q["centroid"][i] for key in ("rotate", "separable") for i in paths.get(key, [])):
        _, my, mx, _, _ = _stats(x)
        about = p["centroid"] > 0
        cy, cx = torch.where(about, my, cy), torch.where(about, mx, cx)
    ys = torch.arange(h, device=x.device, dtype=torch.float32)
    xs = torch.arange(w, device=x.device, dtype=torch.float32)
    parts, order = [], []
    for path, rows in paths.items():
        idx = torch.tensor(rows, device=x.device) if len(paths) > 1 else None
        sub, t, f = (x, shift, factor) if idx is None else (x[idx], shift[idx], factor[idx])
        c_y, c_x = (cy, cx) if idx is None else (cy[idx], cx[idx])
        if path == "shift":  # whole-pixel shifts: row copies
            pad = math.ceil(max(q["max_shift"][i] for i in rows) * max(h, w)) + 1
            t = t.long()
            parts.append(_translate_rows(sub, torch.arange(h, device=x.device) - t[:, :1], t[:, 1:], pad))
        elif path == "separable":
            inv = (1 / f)[:, None]
            src_y = (ys - (c_y + t[:, 0])[:, None]) * inv + c_y[:, None]
            src_x = (xs - (c_x + t[:, 1])[:, None]) * inv + c_x[:, None]
            parts.append(_remap_separable(sub, src_y, src_x))
        else:
            a = angle if idx is None else angle[idx]
            parts.append(_affine_about(sub, c_y, c_x, a, 1 / f, t[:, 0], t[:, 1]))
        order += rows
    if len(parts) == 1:
        return parts[0]
    inverse = torch.empty(n, dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(n)
    return torch.cat(parts).index_select(0, inverse.to(x.device))


def _np_geometry(a: np.ndarray, u: np.ndarray, p: dict, q: dict) -> Tensor:
    """:func:`_k_geometry` for CPU masks from its uniform draws ``u`` ``(N, 4)``: the same parameters, then
    one ``cv2.warpAffine`` (nearest neighbour) per mask."""
    n, h, w = a.shape
    factor = p["scale_lo"] + u[:, 0] * (p["scale_hi"] - p["scale_lo"])
    angle = (2 * u[:, 1] - 1) * p["max_degrees"] * np.float32(math.pi / 180)
    shift = (2 * u[:, 2:] - 1) * p["max_shift"][:, None] * np.array([h, w], np.float32)
    shift = np.where(p["whole"][:, None] > 0, np.floor(shift + np.float32(0.5)), shift)
    cy, cx = np.full(n, (h - 1) / 2), np.full(n, (w - 1) / 2)
    if any(q["centroid"]):
        _, my, mx, _, _ = _np_moments(a)
        about = p["centroid"] > 0
        cy, cx = np.where(about, my, cy), np.where(about, mx, cx)
    # inverse map p = c + R(-angle) (p' - t - c) / s, in float64 (OpenCV's matrix type)
    cos, sin = np.cos(angle.astype(np.float64)) / factor, np.sin(angle.astype(np.float64)) / factor
    oy, ox = shift[:, 0] + cy, shift[:, 1] + cx
    maps = np.stack((cos, sin, cx - cos * ox - sin * oy, -sin, cos, cy - cos * oy + sin * ox), 1)
    maps = maps.reshape(n, 2, 3)
    flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    out = np.empty_like(a)
    for m, mat, dst in zip(a, maps, out, strict=True):
        cv2.warpAffine(m, mat, (w, h), dst=dst, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return torch.from_numpy(out)


def _k_blob(x: Tensor, p: dict, q: dict, generator: Generator | None) -> Tensor:
    """Axis-aligned ellipse at the centroid with the mask's area times ``std_factor ** 2``: per-axis std
    shape, or a disk when ``isotropic = 1``."""
    n, h, w = x.shape
    if _opencv(x):
        area, cy, cx, vyy, vxx = _np_moments(x.numpy())
        iso = p["isotropic"].numpy() > 0
        sy = np.where(iso, np.float32(1), np.sqrt(vyy + np.float32(_PIXEL_VARIANCE)))
        sx = np.where(iso, np.float32(1), np.sqrt(vxx + np.float32(_PIXEL_VARIANCE)))
        k = p["std_factor"].numpy() * np.sqrt(area / (np.float32(math.pi) * sy * sx))
        lo, hi = _np_ellipse_rows(cy, cx, k * sy, np.where(area > 0, k * sx, np.float32(-1)), h)
        return _np_fill_rows(lo, hi, w)
    area, cy, cx, vyy, vxx = _stats(x)
    iso = p["isotropic"] > 0
    sy = torch.where(iso, 1.0, (vyy + _PIXEL_VARIANCE).sqrt())
    sx = torch.where(iso, 1.0, (vxx + _PIXEL_VARIANCE).sqrt())
    k = p["std_factor"] * (area / (math.pi * sy * sx)).sqrt()  # ellipse pi (k sy)(k sx) = area * factor^2
    lo, hi = _ellipse_rows(cy, cx, k * sy, torch.where(area > 0, k * sx, -1.0), h)
    return _fill_rows(lo, hi, w)


def _k_polygon(x: Tensor, p: dict, q: dict, generator: Generator | None) -> Tensor:
    """Star polygon with ``vertices`` corners where equally spaced rays (random phase) from the centroid last
    meet the mask; samples with fewer corners than the batch maximum repeat their last corner."""
    n, h, w = x.shape
    if _opencv(x):
        u = torch.rand((n, 1), generator=generator, device=x.device)
        return _np_polygon(x.numpy(), u.numpy(), p["vertices"].numpy())
    area, cy, cx, _, _ = _stats(x)
    count = p["vertices"][:, None]  # (N, 1)
    most = int(max(q["vertices"]))
    k = torch.minimum(torch.arange(most, device=x.device), count - 1)  # (N, V)
    angles = (torch.rand((n, 1), generator=generator, device=x.device) + k) * (2 * math.pi) / count
    sin, cos = torch.sin(angles), torch.cos(angles)
    steps = torch.arange(0, math.hypot(h, w), 0.75, device=x.device, dtype=torch.float32)  # (T,) along a ray
    iy = (cy[:, None, None] + sin[..., None] * steps + 1.5).clamp_(0, h + 1).floor_()  # (N, V, T), padded
    ix = (cx[:, None, None] + cos[..., None] * steps + 1.5).clamp_(0, w + 1).floor_()
    padded = F.pad(x, (1, 1, 1, 1)).view(n, -1)
    hit = padded.gather(1, iy.mul_(w + 2).add_(ix).long().view(n, -1)).view(n, most, -1)
    radius = (hit * steps).amax(-1)  # (N, V): the farthest foreground sample along each ray
    vy, vx = cy[:, None] + sin * radius, cx[:, None] + cos * radius
    # the star polygon is the union of the triangles (centroid, v_k, v_k+1)
    tri_y = torch.stack((cy[:, None].expand(n, most), vy, vy.roll(-1, 1)), dim=-1)  # (N, V, 3)
    tri_x = torch.stack((cx[:, None].expand(n, most), vx, vx.roll(-1, 1)), dim=-1)
    lo, hi = _convex_polygon_rows(tri_y, tri_x, h)  # (N, V, H)
    lo = torch.where(area[:, None, None] > 0, lo, math.inf)  # empty masks stay empty
    return _union(_fill_rows(lo, hi, w))


def _np_polygon(a: np.ndarray, u: np.ndarray, vertices: np.ndarray) -> Tensor:
    """:func:`_k_polygon` for CPU masks from its uniform draw ``u`` ``(N, 1)``: the same float32 formulas,
    and the union of the triangles' row intervals painted with ramp windows (as :func:`_np_fill_rows`)."""
    n, h, w = a.shape
    area, cy, cx = _np_moments(a)[:3]
    count = vertices[:, None]
    most = int(vertices.max())
    k = np.minimum(np.arange(most, dtype=np.float32), count - 1)  # (N, V)
    angles = (u + k) * np.float32(2 * math.pi) / count
    sin, cos = np.sin(angles), np.cos(angles)
    steps = np.arange(0, math.hypot(h, w), 0.75, dtype=np.float32)  # (T,) along a ray
    iy = np.floor(np.clip(cy[:, None, None] + sin[..., None] * steps + np.float32(1.5), 0, h + 1))
    ix = np.floor(np.clip(cx[:, None, None] + cos[..., None] * steps + np.float32(1.5), 0, w + 1))
    padded = np.zeros((n, h + 2, w + 2), np.uint8)
    padded[:, 1:-1, 1:-1] = a
    hit = np.take_along_axis(padded.reshape(n, -1), (iy * (w + 2) + ix).astype(np.int64).reshape(n, -1), 1)
    radius = (hit.reshape(n, most, -1) * steps).max(-1)  # (N, V): the farthest foreground sample on a ray
    vy, vx = cy[:, None] + sin * radius, cx[:, None] + cos * radius
    # triangles (centroid, v_k, v_k+1) and their row intervals, as _convex_polygon_rows: corners [..., :3],
    # each edge's end point (the next corner) [..., 1:]
    nxt = np.roll(np.arange(most), -1)
    corners_y, corners_x = np.empty((2, n, most, 4, 1), np.float32)
    corners_y[:, :, 0, 0] = corners_y[:, :, 3, 0] = cy[:, None]
    corners_x[:, :, 0, 0] = corners_x[:, :, 3, 0] = cx[:, None]
    corners_y[:, :, 1, 0], corners_y[:, :, 2, 0] = vy, vy[:, nxt]
    corners_x[:, :, 1, 0], corners_x[:, :, 2, 0] = vx, vx[:, nxt]
    tri_y, tri_x, y1, x1 = corners_y[:, :, :3], corners_x[:, :, :3], corners_y[:, :, 1:], corners_x[:, :, 1:]
    dy = y1 - tri_y
    flat = np.abs(dy) < 1e-9
    t = (np.arange(h, dtype=np.float32) - tri_y) / np.where(flat, np.float32(1), dy)  # (N, V, 3, H)
    valid = (t >= -1e-6) & (t <= 1 + 1e-6) & ~flat
    xs = tri_x + t * (x1 - tri_x)
    lo = np.where(valid, xs, np.inf).min(-2)
    hi = np.where(valid, xs, -np.inf).max(-2)  # (N, V, H)
    first = np.clip(np.ceil(lo - _EPS), 0, w)
    stop = np.clip(np.maximum(np.floor(hi + _EPS) + 1, first), 0, w)
    stop = np.where(area[:, None, None] > 0, stop, first)  # empty masks stay empty
    # union of the intervals [first, stop): each is a copy of two ramp windows (as _np_fill_rows), OR-ed
    windows = _ramp_windows(w)[(w - np.stack((first, stop))).astype(np.int64)]  # (2, N, V, H, W)
    return torch.from_numpy(np.bitwise_or.reduce(windows[0] ^ windows[1], axis=1))


def _k_smooth(x: Tensor, p: dict, q: dict, generator: Generator | None) -> Tensor:
    """Gaussian blur with ``kernel`` taps at 224 px (OpenCV's sigma rule), re-thresholded at 0.5."""
    n, h, w = x.shape
    if _opencv(x):
        out = np.empty(x.shape, np.float32)
        for i, (m, t) in enumerate(
            zip(x.numpy(), _np_smooth_taps(p["kernel"], q["kernel"], h, w), strict=True)
        ):
            out[i] = cv2.sepFilter2D(m, cv2.CV_32F, t, t, borderType=cv2.BORDER_REPLICATE)
        return torch.from_numpy(np.greater(out, 0.5).view(np.uint8))
    s = _scale(h)
    kernel = p["kernel"]
    sigma = (0.3 * ((kernel - 1) / 2 - 1) + 0.8) * s
    radius = torch.floor((kernel - 1) / 2 * s + 0.5).clamp_(min=1)
    max_radius = min(max(max(1, math.floor((k - 1) / 2 * s + 0.5)) for k in q["kernel"]), max(h, w) - 1)
    taps = _gaussian_taps(sigma, radius, max_radius)
    return _transpose((_blur(x.float(), taps) > 0.5).view(torch.uint8))


_ELASTIC_TAPS: dict[float, np.ndarray] = {}


def _elastic_taps(sig: np.float32) -> np.ndarray:
    """Normalised float32 Gaussian taps of standard deviation ``sig`` (coarse-grid cells) over ``+-ceil(3
    sig)``, cached by ``sig``."""
    taps = _ELASTIC_TAPS.get(float(sig))
    if taps is None:
        taps = np.arange(-math.ceil(3 * sig), math.ceil(3 * sig) + 1, dtype=np.float32)
        taps = np.exp(np.float32(-0.5) * (taps / sig) ** 2)
        taps /= taps.sum()
        if len(_ELASTIC_TAPS) > 1024:
            _ELASTIC_TAPS.clear()
        _ELASTIC_TAPS[float(sig)] = taps
    return taps


_SMOOTH_TAPS: dict[tuple, list[np.ndarray]] = {}


def _np_smooth_taps(kernel: Tensor, kernels: list[float], h: int, w: int) -> list[np.ndarray]:
    """Per-mask 1-D taps of :func:`_k_smooth`'s OpenCV path (computed as the torch path does, then cut to each
    mask's radius), cached by ``(h, w, kernels)``: the same inputs give the same taps."""
    key = (h, w, *kernels)
    cached = _SMOOTH_TAPS.get(key)
    if cached is None:
        s = _scale(h)
        sigma = (0.3 * ((kernel - 1) / 2 - 1) + 0.8) * s
        radius = torch.floor((kernel - 1) / 2 * s + 0.5).clamp_(min=1)
        max_radius = min(max(max(1, math.floor((k - 1) / 2 * s + 0.5)) for k in kernels), max(h, w) - 1)
        taps = _gaussian_taps(sigma, radius, max_radius).numpy()
        cached = [
            t[max_radius - min(r, max_radius) : max_radius + min(r, max_radius) + 1]
            for t, r in zip(taps, radius.long().tolist(), strict=True)
        ]
        if len(_SMOOTH_TAPS) > 1024:  # a bounded cache: the sampler makes few distinct sub-batches
            _SMOOTH_TAPS.clear()
        _SMOOTH_TAPS[key] = cached
    return cached


def _k_elastic(x: Tensor, p: dict, q: dict, generator: Generator | None) -> Tensor:
    """Elastic warp: displacement ``alpha * G_sigma * U(-1, 1)`` per axis (pixels at 224 px), nearest
    neighbour.

    The noise is drawn on a coarse grid (cells of ``0.75 sigma`` reference pixels but at least one image
    pixel, scaled so the smoothed field keeps its statistics), blurred there, upsampled bilinearly (cell
    centres, as ``cv2.resize``) and scaled to the image.
    """
    n, h, w = x.shape
    s = _scale(h)
    alpha, sigma = p["alpha"], p["sigma"]
    cell = max(min(q["sigma"]) * 0.75, 1.0, 1.0 / s)  # reference pixels per coarse-grid cell
    gh, gw = max(2, math.floor(h / (cell * s) + 0.5)), max(2, math.floor(w / (cell * s) + 0.5))
    uniform = torch.rand((2 * n, gh, gw), generator=generator, device=x.device)
    if _opencv(x):  # per mask: blur the (dy, dx) noise, upsample it as one (x, y) map, remap
        amplitude = (p["alpha"].numpy() * s / cell).repeat(2)[:, None, None]
        noise = (2 * uniform.numpy() - 1) * amplitude
        grid = _pixel_grid(h, w)
        out = np.empty(x.shape, np.uint8)
        for i, (m, sig) in enumerate(zip(x.numpy(), p["sigma"].numpy() / np.float32(cell), strict=True)):
            t = _elastic_taps(sig)
            field = [
                cv2.sepFilter2D(noise[2 * i + c], -1, t, t, borderType=cv2.BORDER_REPLICATE) for c in (1, 0)
            ]
            maps = cv2.resize(cv2.merge(field), (w, h), interpolation=cv2.INTER_LINEAR)
            out[i] = _np_remap(m, np.add(maps, grid, out=maps), None)
        return torch.from_numpy(out)
    amplitude = (alpha * s / cell).repeat_interleave(2).view(2 * n, 1, 1)
    noise = (2 * uniform - 1) * amplitude
    sig = (sigma / cell).repeat_interleave(2)
    radius = torch.ceil(3 * sig)
    taps = _gaussian_taps(sig, radius, math.ceil(3 * max(q["sigma"]) / cell))
    field = _transpose(_blur(noise, taps)).view(n, 2, gh, gw)
    field = F.interpolate(field, size=(h, w), mode="bilinear", align_corners=False)
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1) + 1.5
    xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w) + 1.5
    return _remap(x, field[:, 0].add_(ys), field[:, 1].add_(xs))


def _k_grid(x: Tensor, p: dict, q: dict, generator: Generator | None) -> Tensor:
    """Grid distortion: each of ``num_steps`` cells per axis is stretched by ``1 + U(+-distort_limit)``; the
    stretched cells are rescaled to span the image (as albumentations' ``GridDistortion``)."""
    n, h, w = x.shape
    steps = p["num_steps"]
    most = int(max(q["num_steps"]))
    uniform = torch.rand((n, 2, most), generator=generator, device=x.device)
    if _opencv(x):
        return _np_grid(x.numpy(), uniform.numpy(), steps.numpy(), p["distort_limit"].numpy())
    active = torch.arange(most, device=x.device) < steps[:, None]  # (N, S)
    draws = (2 * uniform - 1) * p["distort_limit"].view(n, 1, 1)
    cells = (1 + draws) * active[:, None, :]
    nodes = torch.cat((cells.new_zeros(n, 2, 1), cells.cumsum(-1)), -1)
    nodes = nodes / nodes[..., -1:]  # (N, 2, S + 1) in [0, 1]

    def axis_map(axis: int, size: int) -> Tensor:
        u = (torch.arange(size, device=x.device, dtype=torch.float32) + 0.5) / size * steps[:, None]  # (N, L)
        cell = torch.minimum(u.floor(), steps[:, None] - 1).long()
        start = nodes[:, axis].gather(1, cell)
        end = nodes[:, axis].gather(1, cell + 1)
        return (start + (u - cell) * (end - start)) * size - 0.5

    return _remap_separable(x, axis_map(0, h), axis_map(1, w))


def _np_grid(a: np.ndarray, uniform: np.ndarray, steps: np.ndarray, limit: np.ndarray) -> Tensor:
    """:func:`_k_grid` for CPU masks from its uniform draws ``(N, 2, S)`` (the same float32 formulas): whole
    rows, then whole columns are gathered through a zero row / column for sources outside the image."""
    n, h, w = a.shape
    most = uniform.shape[2]
    active = np.arange(most) < steps[:, None]
    cells = (1 + (2 * uniform - 1) * limit[:, None, None]) * active[:, None, :]
    nodes = np.concatenate((np.zeros((n, 2, 1), np.float32), cells.cumsum(-1, dtype=np.float32)), -1)
    nodes = nodes / nodes[..., -1:]
    sample = np.arange(n)[:, None]

    def axis_index(axis: int, size: int) -> np.ndarray:
        u = (np.arange(size, dtype=np.float32) + np.float32(0.5)) / np.float32(size) * steps[:, None]
        cell = np.minimum(np.floor(u), steps[:, None] - 1).astype(np.int64)
        start = nodes[:, axis][sample, cell]
        end = nodes[:, axis][sample, cell + 1]
        src = (start + (u - cell) * (end - start)) * np.float32(size) - np.float32(0.5)
        idx = np.floor(src + np.float32(0.5)).astype(np.int64)
        return np.where((idx >= 0) & (idx < size), idx, size)

    padded = np.zeros((n, h + 1, w + 1), np.uint8)
    padded[:, :h, :w] = a
    rows, cols = axis_index(0, h), axis_index(1, w)
    out = np.empty_like(a)
    for m, r, c, dst in zip(padded, rows, cols, out, strict=True):
        m.take(r, axis=0).take(c, axis=1, out=dst)
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------------------------------------
# identity and catastrophic
# ----------------------------------------------------------------------------------------------------------


def identity(masks: Tensor, *, generator: Generator | None = None) -> Tensor:
    """Return a copy of ``masks`` (the ``identity`` category, quality 1).

    Example:
        >>> identity(torch.ones(1, 1, 2, 2)).sum().item()
        4.0
    """
    _check_masks(masks)
    return masks.clone()


def _plan_catastrophic(kind: int, p: float = 0.5) -> tuple[Kernel, dict]:
    return _k_catastrophic, {"kind": float(kind), "p": _check_float(p, "p", 0.0, 1.0)}


def inverted(masks: Tensor, *, generator: Generator | None = None) -> Tensor:
    """Swap foreground and background: ``1 - masks`` (catastrophic).

    Example:
        >>> inverted(torch.tensor([[[[0.0, 1.0]]]]))
        tensor([[[[1., 0.]]]])
    """
    return _run(masks, *_plan_catastrophic(0), generator)


def empty(masks: Tensor, *, generator: Generator | None = None) -> Tensor:
    """All background (catastrophic).

    Example:
        >>> empty(torch.ones(1, 1, 2, 2)).sum().item()
        0.0
    """
    return _run(masks, *_plan_catastrophic(1), generator)


def full(masks: Tensor, *, generator: Generator | None = None) -> Tensor:
    """All foreground (catastrophic). With several classes, the background goes to the first class.

    Example:
        >>> full(torch.zeros(1, 1, 2, 2)).sum().item()
        4.0
    """
    return _run(masks, *_plan_catastrophic(2), generator)


def random_noise(masks: Tensor, *, p: float = 0.5, generator: Generator | None = None) -> Tensor:
    """Independent coin flips per pixel, foreground with probability ``p`` (catastrophic "random").

    Args:
        masks: foreground masks ``(B, C, H, W)``.
        p: foreground probability; 0.5 (fair coins) uses a fast bit-unpacking path.
        generator: source of randomness.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> random_noise(torch.zeros(1, 1, 2, 4), generator=g)
        tensor([[[[1., 1., 1., 1.],
                  [0., 1., 0., 0.]]]])
    """
    return _run(masks, *_plan_catastrophic(3, p), generator)


# ----------------------------------------------------------------------------------------------------------
# morphology
# ----------------------------------------------------------------------------------------------------------


def _plan_morph(op: int, kernel: int = 5) -> tuple[Kernel, dict]:
    return _k_morph, {"op": float(op), "kernel": float(_check_positive_int(kernel, "kernel"))}


def erosion(masks: Tensor, *, kernel: int = 5, generator: Generator | None = None) -> Tensor:
    """Binary erosion with a square ``kernel`` (pixels at 224 px; scaled to ``H``). Never grows a mask.

    Example:
        >>> masks = torch.zeros(1, 1, 16, 16)
        >>> masks[..., 4:12, 4:12] = 1
        >>> erosion(masks, kernel=5).sum().item()  # 16 px: radius 1, the 8 x 8 square loses its outer ring
        36.0
    """
    return _run(masks, *_plan_morph(1, kernel), generator)


def dilation(masks: Tensor, *, kernel: int = 5, generator: Generator | None = None) -> Tensor:
    """Binary dilation with a square ``kernel`` (pixels at 224 px; scaled to ``H``). Never shrinks a mask.

    Example:
        >>> masks = torch.zeros(1, 1, 16, 16)
        >>> masks[..., 4:12, 4:12] = 1
        >>> dilation(masks, kernel=5).sum().item()
        100.0
    """
    return _run(masks, *_plan_morph(0, kernel), generator)


def opening(masks: Tensor, *, kernel: int = 5, generator: Generator | None = None) -> Tensor:
    """Erosion then dilation (removes thin parts); the result is a subset of the mask.

    Example:
        >>> masks = torch.zeros(1, 1, 16, 16)
        >>> masks[..., 4:12, 4:12] = 1
        >>> masks[..., 0, 0] = 1  # a speck
        >>> opening(masks, kernel=5).sum().item()
        64.0
    """
    return _run(masks, *_plan_morph(2, kernel), generator)


def closing(masks: Tensor, *, kernel: int = 5, generator: Generator | None = None) -> Tensor:
    """Dilation then erosion (fills small gaps); the result contains the mask.

    Example:
        >>> masks = torch.zeros(1, 1, 16, 16)
        >>> masks[..., 4:12, 4:12] = 1
        >>> masks[..., 7, 7] = 0  # a pinhole
        >>> closing(masks, kernel=5).sum().item()
        64.0
    """
    return _run(masks, *_plan_morph(3, kernel), generator)


# ----------------------------------------------------------------------------------------------------------
# shape approximation
# ----------------------------------------------------------------------------------------------------------


def fitted_ellipse(masks: Tensor, *, generator: Generator | None = None) -> Tensor:
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

    def core(x: Tensor) -> Tensor:
        if _opencv(x):
            return _np_fitted_ellipse(x.numpy())
        n, h, w = x.shape
        area, cy, cx, vyy, vxx = _stats(x)
        xs = torch.arange(w, device=x.device, dtype=torch.float32) - (w - 1) / 2
        row_x = (x.reshape(n * h, w).float() @ xs).view(n, h)  # centred sum of x per row
        dy = torch.arange(h, device=x.device, dtype=torch.float32) - cy[:, None]  # (N, H)
        vxy = (row_x * dy).sum(1) / area.clamp_min(1)  # sum(dy * row counts) = 0: x needs no re-centring
        vyy, vxx = vyy + _PIXEL_VARIANCE, vxx + _PIXEL_VARIANCE
        # inside: [dx dy] S^-1 [dx dy]^T <= 4 with S = [[vxx, vxy], [vxy, vyy]]
        det = (vxx * vyy - vxy * vxy).clamp_min(1e-6)
        a, b, c = (vyy / det)[:, None], (-vxy / det)[:, None], (vxx / det)[:, None]  # S^-1 = [[a, b], [b, c]]
        root = torch.nan_to_num(((b * dy) ** 2 - a * (c * dy * dy - 4)).sqrt(), nan=-math.inf) / a
        root = torch.where(
            area[:, None] > 0, root, -math.inf
        )  # rows the ellipse misses, empty masks: nothing
        centre = cx[:, None] - b * dy / a
        return _fill_rows(centre - root, centre + root, w)

    return _apply(masks, core)


def _np_fitted_ellipse(a: np.ndarray) -> Tensor:
    """:func:`fitted_ellipse` on CPU masks with OpenCV / NumPy (the same float32 formulas)."""
    n, h, w = a.shape
    area, cy, cx, vyy, vxx = _np_moments(a)
    xs = np.arange(w, dtype=np.float32) - np.float32((w - 1) / 2)
    row_x = (a.reshape(n * h, w).astype(np.float32) @ xs).reshape(n, h)  # centred sum of x per row
    dy = np.arange(h, dtype=np.float32) - cy[:, None]
    vxy = (row_x * dy).sum(1, dtype=np.float32) / np.maximum(area, 1)
    vyy, vxx = vyy + np.float32(_PIXEL_VARIANCE), vxx + np.float32(_PIXEL_VARIANCE)
    det = np.maximum(vxx * vyy - vxy * vxy, np.float32(1e-6))
    a_, b, c = (vyy / det)[:, None], (-vxy / det)[:, None], (vxx / det)[:, None]
    with np.errstate(invalid="ignore"):
        root = np.nan_to_num(np.sqrt((b * dy) ** 2 - a_ * (c * dy * dy - 4)), nan=-np.inf) / a_
    root = np.where(area[:, None] > 0, root, -np.inf)
    centre = cx[:, None] - b * dy / a_
    return _np_fill_rows(centre - root, centre + root, w)


def _plan_polygon(vertices: int = 5) -> tuple[Kernel, dict]:
    return _k_polygon, {"vertices": float(_check_positive_int(vertices, "vertices", minimum=3))}


def polygon_approximation(masks: Tensor, *, vertices: int = 5, generator: Generator | None = None) -> Tensor:
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
    return _run(masks, *_plan_polygon(vertices), generator)


def convex_hull(masks: Tensor, *, generator: Generator | None = None) -> Tensor:
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

    def core(x: Tensor) -> Tensor:
        if _opencv(x):
            return _np_convex_hull(x.numpy())
        n, h, w = x.shape
        values, first = x.max(dim=2)  # first foreground column per row (the first maximum)
        last = (w - 1) - x.flip(2).max(dim=2)[1]
        has = values.bool()[:, None, :]  # (N, 1, H)
        ys = torch.arange(h, device=x.device, dtype=torch.float32)
        theta = (torch.arange(_HULL_DIRECTIONS, device=x.device) + 0.5) * (2 * math.pi / _HULL_DIRECTIONS)
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
        return _fill_rows(lo, hi, w) | x

    return _apply(masks, core)


_HULL_TRIG: list[tuple[np.ndarray, np.ndarray]] = []
"""``(cos, sin)`` float32 ``(D, 1)`` of the hull's support directions, computed once with torch (so the NumPy
path uses exactly the torch path's values)."""


def _hull_trig() -> tuple[np.ndarray, np.ndarray]:
    if not _HULL_TRIG:
        theta = (torch.arange(_HULL_DIRECTIONS, device="cpu") + 0.5) * (2 * math.pi / _HULL_DIRECTIONS)
        _HULL_TRIG.append((torch.cos(theta)[:, None].numpy(), torch.sin(theta)[:, None].numpy()))
    return _HULL_TRIG[0]


def _np_convex_hull(a: np.ndarray) -> Tensor:
    """:func:`convex_hull` of uint8 ``(N, H, W)`` CPU masks with NumPy (the same float32 formulas)."""
    n, h, w = a.shape
    first = a.argmax(2)  # first foreground column per row
    last = (w - 1) - a[:, :, ::-1].argmax(2)
    has = a.max(2).astype(bool)[:, None, :]  # (N, 1, H)
    ys = np.arange(h, dtype=np.float32)
    cos, sin = _hull_trig()
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
    return torch.from_numpy(_np_fill_rows(lo, hi, w).numpy() | a)


def bounding_box(masks: Tensor, *, generator: Generator | None = None) -> Tensor:
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

    def core(x: Tensor) -> Tensor:
        n, h, w = x.shape
        if _opencv(x):  # the same formulas with NumPy
            a = x.numpy()
            rows, cols = a.any(2), a.any(1)
            row, col = np.arange(h), np.arange(w, dtype=np.float32)
            y_min = np.where(rows, row, h).min(1, keepdims=True)
            y_max = np.where(rows, row, -1).max(1, keepdims=True)
            x_min = np.where(cols, col, np.float32(np.inf)).min(1, keepdims=True)
            x_max = np.where(cols, col, np.float32(-np.inf)).max(1, keepdims=True)
            lo = np.where((row >= y_min) & (row <= y_max), x_min, np.float32(np.inf))
            return _np_fill_rows(lo, np.broadcast_to(x_max, (n, h)), w)
        rows, cols = _row_counts(x) > 0, _col_counts(x) > 0
        row = torch.arange(h, device=x.device)
        col = torch.arange(w, device=x.device, dtype=torch.float32)
        y_min = torch.where(rows, row, h).amin(1, keepdim=True)
        y_max = torch.where(rows, row, -1).amax(1, keepdim=True)
        x_min = torch.where(cols, col, math.inf).amin(1, keepdim=True)
        x_max = torch.where(cols, col, -math.inf).amax(1, keepdim=True)
        lo = torch.where((row >= y_min) & (row <= y_max), x_min, math.inf)
        return _fill_rows(lo, x_max.expand(n, h), w)

    return _apply(masks, core)


# ----------------------------------------------------------------------------------------------------------
# boundary
# ----------------------------------------------------------------------------------------------------------


def jagged_band(masks: Tensor, *, kernel: int = 3, generator: Generator | None = None) -> Tensor:
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
    _check_positive_int(kernel, "kernel")

    def core(x: Tensor) -> Tensor:
        r = scaled_radius(kernel, x.shape[1])
        coins = _coins(x.numel(), generator, x.device).view(x.shape)
        if _opencv(x):
            a, k = x.numpy(), _square(r)
            n, h, _ = a.shape
            grown = _np_unstacked(cv2.dilate(_np_stacked(a, r, 0), k), n, h, r)
            band = grown ^ _np_unstacked(cv2.erode(_np_stacked(a, r, 1), k), n, h, r)  # erode <= a <= dilate
            return torch.from_numpy(a ^ ((a ^ coins.numpy()) & band))
        band = _dilate(x, r) & (_erode(x, r) ^ 1)
        return x ^ ((x ^ coins) & band)

    return _apply(masks, core)


def _plan_smoothing(kernel: int = 11) -> tuple[Kernel, dict]:
    return _k_smooth, {"kernel": float(_check_positive_int(kernel, "kernel"))}


def smoothing(masks: Tensor, *, kernel: int = 11, generator: Generator | None = None) -> Tensor:
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
    return _run(masks, *_plan_smoothing(kernel), generator)


def _plan_elastic(alpha: float = 30.0, sigma: float = 4.0) -> tuple[Kernel, dict]:
    return _k_elastic, {
        "alpha": _check_float(alpha, "alpha", 0.0),
        "sigma": _check_float(sigma, "sigma", 1e-3),
    }


def elastic_warp(
    masks: Tensor, *, alpha: float = 30.0, sigma: float = 4.0, generator: Generator | None = None
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
    return _run(masks, *_plan_elastic(alpha, sigma), generator)


def _plan_grid(num_steps: int = 5, distort_limit: float = 0.2) -> tuple[Kernel, dict]:
    return _k_grid, {
        "num_steps": float(_check_positive_int(num_steps, "num_steps")),
        "distort_limit": _check_float(distort_limit, "distort_limit", 0.0, 0.99),
    }


def grid_distortion(
    masks: Tensor, *, num_steps: int = 5, distort_limit: float = 0.2, generator: Generator | None = None
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
    return _run(masks, *_plan_grid(num_steps, distort_limit), generator)


# ----------------------------------------------------------------------------------------------------------
# structure
# ----------------------------------------------------------------------------------------------------------


def _plan_spots(
    holes: int = 0, islands: int = 0, radius: tuple[float, float] = (3.0, 8.0)
) -> tuple[Kernel, dict]:
    lo, hi = _check_range(radius, "radius", 0.0, math.inf)
    return _k_spots, {
        "holes": float(_check_positive_int(holes, "holes", minimum=0)),
        "islands": float(_check_positive_int(islands, "islands", minimum=0)),
        "r_lo": lo,
        "r_hi": hi,
    }


def _plan_holes(count: int = 2, radius: tuple[float, float] = (3.0, 8.0)) -> tuple[Kernel, dict]:
    return _plan_spots(holes=_check_positive_int(count, "count"), radius=radius)


def _plan_islands(count: int = 2, radius: tuple[float, float] = (3.0, 8.0)) -> tuple[Kernel, dict]:
    return _plan_spots(islands=_check_positive_int(count, "count"), radius=radius)


def holes(
    masks: Tensor,
    *,
    count: int = 2,
    radius: tuple[float, float] = (3.0, 8.0),
    generator: Generator | None = None,
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
    return _run(masks, *_plan_holes(count, radius), generator)


def islands(
    masks: Tensor,
    *,
    count: int = 2,
    radius: tuple[float, float] = (3.0, 8.0),
    generator: Generator | None = None,
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
    return _run(masks, *_plan_islands(count, radius), generator)


def holes_and_islands(
    masks: Tensor,
    *,
    holes: int = 2,
    islands: int = 2,
    radius: tuple[float, float] = (5.0, 15.0),
    generator: Generator | None = None,
) -> Tensor:
    """Punch ``holes`` holes, then add ``islands`` islands (see :func:`holes` and :func:`islands`).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 32, 32)
        >>> masks[..., 8:24, 8:24] = 1
        >>> holes_and_islands(masks, radius=(20.0, 30.0), generator=g).sum().item()
        241.0
    """
    return _run(masks, *_plan_spots(holes, islands, radius), generator)


def _plan_components(mode: int) -> tuple[Kernel, dict]:
    return _k_components, {"mode": float(mode)}


def keep_largest_component(masks: Tensor, *, generator: Generator | None = None) -> Tensor:
    """Keep only the largest 8-connected component (a subset of the mask).

    Example:
        >>> masks = torch.zeros(1, 1, 6, 6)
        >>> masks[..., 0:2, 0:2] = 1
        >>> masks[..., 3:6, 3:6] = 1
        >>> keep_largest_component(masks).sum().item()
        9.0
    """
    return _run(masks, *_plan_components(0), generator)


def drop_random_component(masks: Tensor, *, generator: Generator | None = None) -> Tensor:
    """Remove one 8-connected component chosen uniformly; a mask with fewer than two components is unchanged.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 6, 6)
        >>> masks[..., 0:2, 0:2] = 1
        >>> masks[..., 3:6, 3:6] = 1
        >>> drop_random_component(masks, generator=g).sum().item()
        9.0
    """
    return _run(masks, *_plan_components(1), generator)


def rectangular_dropout(
    masks: Tensor, *, fraction: tuple[float, float] = (0.1, 0.3), generator: Generator | None = None
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
    fraction = _check_range(fraction, "fraction", 0.0, 1.0)

    def core(x: Tensor) -> Tensor:
        n, h, w = x.shape
        if _opencv(x):  # the same draws and formulas with NumPy
            a = x.numpy()
            cy, cx = _np_random_points(a, 1, generator)
            sides = _uniform((n, 2), fraction[0], fraction[1], generator, x.device).numpy()
            half_h, half_w = sides[:, :1] * (h / 2), sides[:, 1:] * (w / 2)
            ys = np.arange(h, dtype=np.float32)
            lo = np.where(np.abs(ys - cy) <= half_h, cx - half_w, np.float32(np.inf))
            return torch.from_numpy(
                a & (_np_fill_rows(lo, np.broadcast_to(cx + half_w, (n, h)), w).numpy() ^ 1)
            )
        cy, cx = _random_points(x, 1, generator)
        sides = _uniform((n, 2), fraction[0], fraction[1], generator, x.device)
        half_h, half_w = sides[:, :1] * (h / 2), sides[:, 1:] * (w / 2)
        ys = torch.arange(h, device=x.device, dtype=torch.float32)
        lo = torch.where((ys - cy).abs() <= half_h, cx - half_w, math.inf)
        return x & (_fill_rows(lo, (cx + half_w).expand(n, h), w) ^ 1)

    return _apply(masks, core)


# ----------------------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------------------


def _geometry(
    centroid: bool, scale: tuple[float, float], max_degrees: float, max_shift: float, whole: bool
) -> tuple[Kernel, dict]:
    return _k_geometry, {
        "centroid": float(centroid),
        "scale_lo": scale[0],
        "scale_hi": scale[1],
        "max_degrees": max_degrees,
        "max_shift": max_shift,
        "whole": float(whole),
    }


def _plan_shift(max_fraction: float = 0.1) -> tuple[Kernel, dict]:
    return _geometry(False, (1.0, 1.0), 0.0, _check_float(max_fraction, "max_fraction", 0.0, 1.0), True)


def _plan_scale(factor: tuple[float, float] = (0.75, 0.9)) -> tuple[Kernel, dict]:
    return _geometry(True, _check_range(factor, "factor", 1e-3, math.inf), 0.0, 0.0, True)


def _plan_rotate(max_degrees: float = 15.0) -> tuple[Kernel, dict]:
    return _geometry(True, (1.0, 1.0), _check_float(max_degrees, "max_degrees", 0.0, 180.0), 0.0, True)


def _plan_affine(
    scale: tuple[float, float] = (0.9, 1.1), max_shift: float = 0.1, max_degrees: float = 15.0
) -> tuple[Kernel, dict]:
    return _geometry(
        False,
        _check_range(scale, "scale", 1e-3, math.inf),
        _check_float(max_degrees, "max_degrees", 0.0, 180.0),
        _check_float(max_shift, "max_shift", 0.0, 1.0),
        False,
    )


def shift(masks: Tensor, *, max_fraction: float = 0.1, generator: Generator | None = None) -> Tensor:
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
    return _run(masks, *_plan_shift(max_fraction), generator)


def scale(
    masks: Tensor, *, factor: tuple[float, float] = (0.75, 0.9), generator: Generator | None = None
) -> Tensor:
    """Scale about the mask's centroid by ``U(factor)`` (nearest neighbour).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = torch.zeros(1, 1, 20, 20)
        >>> masks[..., 6:14, 6:14] = 1
        >>> scale(masks, factor=(0.5, 0.5), generator=g).sum().item()
        16.0
    """
    return _run(masks, *_plan_scale(factor), generator)


def rotate(masks: Tensor, *, max_degrees: float = 15.0, generator: Generator | None = None) -> Tensor:
    """Rotate about the mask's centroid by ``U(-max_degrees, max_degrees)`` degrees (nearest neighbour).

    Example:
        >>> g = torch.Generator().manual_seed(2)
        >>> masks = torch.zeros(1, 1, 20, 20)
        >>> masks[..., 4:16, 8:12] = 1  # a vertical bar, 48 pixels
        >>> rotate(masks, max_degrees=90.0, generator=g)[0, 0, 4:16, 4:16].sum(0).int().tolist()
        [0, 0, 2, 4, 8, 10, 10, 8, 4, 2, 0, 0]
    """
    return _run(masks, *_plan_rotate(max_degrees), generator)


def random_affine(
    masks: Tensor,
    *,
    scale: tuple[float, float] = (0.9, 1.1),
    max_shift: float = 0.1,
    max_degrees: float = 15.0,
    generator: Generator | None = None,
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
    return _run(masks, *_plan_affine(scale, max_shift, max_degrees), generator)


# ----------------------------------------------------------------------------------------------------------
# blobs
# ----------------------------------------------------------------------------------------------------------


def _plan_blob(std_factor: float = 1.0) -> tuple[Kernel, dict]:
    return _k_blob, {"std_factor": _check_float(std_factor, "std_factor", 1e-3), "isotropic": 0.0}


def _plan_circle() -> tuple[Kernel, dict]:
    return _k_blob, {"std_factor": 1.0, "isotropic": 1.0}


def gaussian_blob(masks: Tensor, *, std_factor: float = 1.0, generator: Generator | None = None) -> Tensor:
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
    return _run(masks, *_plan_blob(std_factor), generator)


def circle(masks: Tensor, *, generator: Generator | None = None) -> Tensor:
    """A disk at the centroid with the mask's area. Empty masks stay empty.

    Example:
        >>> masks = torch.zeros(1, 1, 32, 32)
        >>> masks[..., 8:24, 12:20] = 1
        >>> circle(masks).sum().item()
        124.0
    """
    return _run(masks, *_plan_circle(), generator)


# ----------------------------------------------------------------------------------------------------------
# multi-class
# ----------------------------------------------------------------------------------------------------------


def class_swap(
    masks: Tensor, *, radius: tuple[float, float] = (0.15, 0.35), generator: Generator | None = None
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
    _check_masks(masks)
    radius = _check_range(radius, "radius", 0.0, math.inf)
    if masks.shape[1] < 2 or masks.numel() == 0:
        return masks.clone()
    with torch.inference_mode():
        out = _class_swap_u8(_to_u8(masks), radius, generator)
    return _finish(out, masks.dtype)


def _class_swap_u8(x: Tensor, radius: tuple[float, float], generator: Generator | None) -> Tensor:
    b, c, h, w = x.shape
    present = _row_counts(x.reshape(b * c, h, w)).sum(1).view(b, c).clamp_max(1)  # (B, C) 0/1
    none = present.sum(1) == 0
    src = torch.multinomial(present + none[:, None], 1, generator=generator)  # (B, 1)
    others = present.scatter(1, src, 0)
    others = torch.where(others.sum(1, keepdim=True) > 0, others, torch.ones_like(others).scatter(1, src, 0))
    dst = torch.multinomial(others, 1, generator=generator)  # (B, 1)
    src_masks = x.gather(1, src[:, :, None, None].expand(b, 1, h, w))[:, 0]  # (B, H, W)
    cy, cx = _random_points(src_masks, 1, generator)
    r = _uniform((b, 1), radius[0], radius[1], generator, x.device) * h
    region = _disks(cy, cx, r, h, w) & src_masks  # (B, H, W); empty when no class is present
    channels = torch.arange(c, device=x.device).view(1, c)
    src_onehot = (channels == src).view(b, c, 1, 1).to(torch.uint8)
    dst_onehot = (channels == dst).view(b, c, 1, 1).to(torch.uint8)
    region = region[:, None]
    return (x & ((region * src_onehot) ^ 1)) | (region * dst_onehot)


def _plan_holes_and_islands(
    holes: int = 2, islands: int = 2, radius: tuple[float, float] = (5.0, 15.0)
) -> tuple[Kernel, dict]:
    return _plan_spots(holes, islands, radius)


_PLANS: Mapping[Callable[..., Tensor], Callable[..., tuple[Kernel, dict]]] = MappingProxyType(
    {
        erosion: lambda kernel=5: _plan_morph(1, kernel),
        dilation: lambda kernel=5: _plan_morph(0, kernel),
        opening: lambda kernel=5: _plan_morph(2, kernel),
        closing: lambda kernel=5: _plan_morph(3, kernel),
        inverted: lambda: _plan_catastrophic(0),
        empty: lambda: _plan_catastrophic(1),
        full: lambda: _plan_catastrophic(2),
        random_noise: lambda p=0.5: _plan_catastrophic(3, p),
        keep_largest_component: lambda: _plan_components(0),
        drop_random_component: lambda: _plan_components(1),
        holes: _plan_holes,
        islands: _plan_islands,
        holes_and_islands: _plan_holes_and_islands,
        shift: _plan_shift,
        scale: _plan_scale,
        rotate: _plan_rotate,
        random_affine: _plan_affine,
        gaussian_blob: _plan_blob,
        circle: _plan_circle,
        polygon_approximation: _plan_polygon,
        smoothing: _plan_smoothing,
        elastic_warp: _plan_elastic,
        grid_distortion: _plan_grid,
    }
)
"""Public function -> ``plan(**params) -> (kernel, per-sample params)``. The sampler runs registry entries
that share a kernel (e.g. ``shift_10`` and ``rotate_30``) as one call with per-sample parameters."""

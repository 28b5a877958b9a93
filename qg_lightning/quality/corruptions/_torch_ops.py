"""Layer 2 of the corruption engine, torch side: batched primitives on ``uint8`` masks ``(N, H, W)``.

The batched torch path (the one CUDA tensors take, and CPU tensors under ``backend="torch"``) is built from
these. They are written for few tensor operations per call, because the sampler's sub-batches are small and a
torch operation costs 3-10 us however small its input.

Example:
    >>> x = torch.zeros(1, 5, 5, dtype=torch.uint8)
    >>> x[0, 2, 2] = 1
    >>> int(dilate(x, 1).sum()), int(erode(dilate(x, 1), 1).sum())
    (9, 1)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from qg_lightning.quality.corruptions._base import EPS, SMALL_BLUR, Generator, col_counts, row_counts

__all__ = [
    "affine_about",
    "blur",
    "blur_vertical",
    "boundary",
    "convex_polygon_rows",
    "dilate",
    "dilate_axis",
    "disks",
    "ellipse_rows",
    "erode",
    "fill_rows",
    "gaussian_taps",
    "random_points",
    "remap",
    "remap_separable",
    "select_rows",
    "stats",
    "translate_rows",
    "transpose",
    "union",
]


def dilate_axis(x: Tensor, r: int, dim: int) -> Tensor:
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


def dilate(x: Tensor, r: int) -> Tensor:
    """Binary dilation of ``(N, H, W)`` uint8 masks with a ``(2 r + 1)`` square kernel."""
    return dilate_axis(dilate_axis(x, r, 2), r, 1)


def erode(x: Tensor, r: int) -> Tensor:
    """Binary erosion with a ``(2 r + 1)`` square kernel; outside the image counts as foreground."""
    if r <= 0:
        return x
    return dilate(x ^ 1, r) ^ 1


def stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Area, centroid ``(cy, cx)`` and per-axis variances ``(vyy, vxx)`` of ``(N, H, W)`` masks, all ``(N,)``.

    Empty masks get area 0, the image centre and variance 0. Coordinates are centred for float32 precision.
    """
    rows = row_counts(x)
    area = rows.sum(1)
    safe = area.clamp_min(1.0)[:, None]

    def axis(counts: Tensor) -> tuple[Tensor, Tensor]:
        length = counts.shape[1]
        t = torch.arange(length, device=x.device, dtype=torch.float32) - (length - 1) / 2
        mean, square = (counts @ torch.stack((t, t * t), 1)).div_(safe).unbind(1)
        return mean + (length - 1) / 2, (square - mean * mean).clamp_min_(0.0)

    cy, vyy = axis(rows)
    cx, vxx = axis(col_counts(x))
    return area, cy, cx, vyy, vxx


def fill_rows(lo: Tensor, hi: Tensor, width: int) -> Tensor:
    """Paint ``lo <= x <= hi`` per row: ``lo``, ``hi`` float ``(..., H)`` -> uint8 ``(..., H, W)``.

    Pixel centres sit at integer columns; ``lo > hi`` (use +-inf, never NaN) gives an empty row. Each row is a
    copy of one window of a 0/1 ramp (``index_select`` over an ``unfold`` view), which on CPU is far faster
    than broadcast comparisons.
    """
    ramp = torch.zeros(2 * width + 1, dtype=torch.uint8, device=lo.device)
    ramp[width:] = 1  # window s = ramp[s : s + W] is 1 from column W - s on
    first = (lo - EPS).ceil_()
    stop = torch.maximum((hi + EPS).floor_().add_(1), first)
    idx = torch.stack((first, stop)).clamp_(0, width).neg_().add_(width).long()
    rows = ramp.unfold(0, width, 1).index_select(0, idx.view(-1)).view(2, *lo.shape, width)
    return rows[0] ^ rows[1]


def ellipse_rows(cy: Tensor, cx: Tensor, ay: Tensor, ax: Tensor, height: int) -> tuple[Tensor, Tensor]:
    """Row intervals of axis-aligned ellipses (centre and semi-axes ``(...,)``) -> ``(..., H)``.

    A negative semi-axis ``ax`` gives an empty shape.
    """
    ys = torch.arange(height, device=cy.device, dtype=torch.float32)
    t = (ys - cy[..., None]) / ay.clamp_min(1e-6)[..., None]
    half = torch.nan_to_num(ax[..., None] * (1 - t * t).sqrt(), nan=-math.inf)  # NaN: the row misses it
    return cx[..., None] - half, cx[..., None] + half


def union(painted: Tensor) -> Tensor:
    """OR over dim 1 of uint8 ``(N, M, H, W)``."""
    out = painted[:, 0]
    for m in range(1, painted.shape[1]):
        out = out | painted[:, m]
    return out


def disks(cy: Tensor, cx: Tensor, radius: Tensor, height: int, width: int) -> Tensor:
    """Union of disks (``(N, M)`` centres and radii; a negative radius draws nothing) as uint8 ``(N, H,
    W)``."""
    lo, hi = ellipse_rows(cy, cx, radius, radius, height)
    return union(fill_rows(lo, hi, width))


def convex_polygon_rows(py: Tensor, px: Tensor, height: int) -> tuple[Tensor, Tensor]:
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


def random_points(x: Tensor, count: int, generator: Generator | None) -> tuple[Tensor, Tensor]:
    """``count`` uniformly drawn foreground pixels per mask, ``(N, count)`` each (y, x); empty masks:
    anywhere.

    A row is drawn in proportion to its foreground pixels, then a foreground column of that row, both by
    inverting cumulative counts (float64, exact) at one uniform draw each (cheaper than ``torch.multinomial``).
    """
    n, h, w = x.shape
    u = torch.rand((n, count, 2), generator=generator, device=x.device)
    u = u.double()
    rows = row_counts(x).double()
    rows += rows.sum(1, keepdim=True) == 0  # an empty mask draws from every row
    cum = rows.cumsum(1)
    row_idx = torch.searchsorted(cum, u[..., 0] * cum[:, -1:], right=True).clamp_max_(h - 1)  # (N, count)
    flat_rows = (row_idx + torch.arange(0, n * h, h, device=x.device)[:, None]).view(-1)
    picked = x.reshape(n * h, w).index_select(0, flat_rows).double()  # (N * count, W)
    picked += picked.sum(1, keepdim=True) == 0
    cum = picked.cumsum(1)
    col_idx = torch.searchsorted(cum, u[..., 1].reshape(-1, 1) * cum[:, -1:], right=True).clamp_max_(w - 1)
    return row_idx.float(), col_idx.view(n, count).float()


def boundary(x: Tensor) -> Tensor:
    """Foreground pixels with a background 8-neighbour (inner boundary)."""
    return x & (erode(x, 1) ^ 1)


def select_rows(x: Tensor, idx: Tensor) -> Tensor:
    """``out[n, i] = x[n, idx[n, i]]`` for ``idx`` ``(N, M)`` long; indices outside ``[0, H)`` give zero
    rows."""
    n, h, w = x.shape
    padded = torch.cat((x.reshape(n * h, w), x.new_zeros(1, w)))
    flat = torch.where(
        (idx >= 0) & (idx < h), idx + torch.arange(0, n * h, h, device=x.device)[:, None], n * h
    )
    return padded.index_select(0, flat.view(-1)).view(n, idx.shape[1], w)


def transpose(x: Tensor) -> Tensor:
    return x.transpose(1, 2).contiguous()


def translate_rows(x: Tensor, src_row: Tensor, offset: Tensor, pad: int | None = None) -> Tensor:
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


def remap_separable(x: Tensor, src_y: Tensor, src_x: Tensor) -> Tensor:
    """Nearest-neighbour warp whose source row depends on the output row only, and column on column only.

    ``src_y`` ``(N, H)`` and ``src_x`` ``(N, W)`` are float source coordinates (pixel centres at integers);
    sources outside the image give background. Rows, then (transposed) columns, are gathered as whole rows.
    """
    rows = select_rows(x, torch.floor(src_y + 0.5).long())
    return transpose(select_rows(transpose(rows), torch.floor(src_x + 0.5).long()))


def remap(x: Tensor, src_y: Tensor, src_x: Tensor) -> Tensor:
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


def affine_about(
    x: Tensor, cy: Tensor, cx: Tensor, angle: Tensor, inv_scale: Tensor, ty: Tensor, tx: Tensor
) -> Tensor:
    """Warp by ``p' = c + s R(angle) (p - c) + t`` (all ``(N,)``; ``inv_scale = 1 / s``), nearest
    neighbour."""
    n, h, w = x.shape
    cos, sin = (torch.cos(angle) * inv_scale)[:, None], (torch.sin(angle) * inv_scale)[:, None]
    dy = torch.arange(h, device=x.device, dtype=torch.float32) - (ty + cy)[:, None]  # (N, H)
    dx = torch.arange(w, device=x.device, dtype=torch.float32) - (tx + cx)[:, None]  # (N, W)
    # inverse map p = c + R(-angle) (p' - t - c) / s, plus 1.5 for `remap`
    src_y = (cos * dy + (cy[:, None] + 1.5))[:, :, None] - (sin * dx)[:, None, :]
    src_x = (cos * dx + (cx[:, None] + 1.5))[:, None, :] + (sin * dy)[:, :, None]
    return remap(x, src_y, src_x)


def gaussian_taps(sigma: Tensor, radius: Tensor, max_radius: int) -> Tensor:
    """Per-sample normalised Gaussian taps ``(N, 2 R + 1)``; taps beyond a sample's ``radius`` are zero."""
    t = torch.arange(-max_radius, max_radius + 1, device=sigma.device, dtype=torch.float32)
    taps = torch.exp(-0.5 * (t / sigma.clamp_min(1e-6)[:, None]) ** 2) * (t.abs() <= radius[:, None])
    return taps / taps.sum(1, keepdim=True)


def blur_vertical(values: Tensor, taps: Tensor) -> Tensor:
    """Blur float ``(N, H, W)`` along H with per-sample taps ``(N, 2 R + 1)`` (replicate padding).

    Large inputs: one depthwise convolution (``(k, 1)`` depthwise kernels are the fast oneDNN case on CPU,
    ``(1, k)`` ones are several times slower, so callers blur along W by transposing). Small inputs (the usual
    sub-batch): shifted multiply-adds, which avoid the convolution's fixed cost.
    """
    n, h, w = values.shape
    r = (taps.shape[1] - 1) // 2
    padded = F.pad(values.view(1, n, h, w), (0, 0, r, r), mode="replicate")
    if n * h * w > SMALL_BLUR:
        return F.conv2d(padded, taps.view(n, 1, -1, 1), groups=n).view(n, h, w)
    padded = padded.view(n, h + 2 * r, w)
    out = padded[:, :h] * taps[:, :1, None]
    for k in range(1, 2 * r + 1):
        out.addcmul_(padded[:, k : k + h], taps[:, k : k + 1, None])
    return out


def blur(values: Tensor, taps: Tensor) -> Tensor:
    """Separable per-sample Gaussian blur of float ``(N, H, W)``; returns the **transposed** result ``(N, W,
    H)``."""
    return blur_vertical(transpose(blur_vertical(values, taps)), taps)

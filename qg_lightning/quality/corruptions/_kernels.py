"""Layer 3 of the corruption engine: the parametrised kernels, one per corruption kind.

A kernel has the signature of :data:`._base.Kernel`, ``kernel(x, p, q, generator, opencv)``: uint8 masks ``(N,
H, W)``, per-mask parameters ``p[name]`` (float32 tensors ``(N,)``) and ``q[name]`` (the same as Python lists),
the generator and whether to take the OpenCV / NumPy path. Per-mask parameters let the sampler run several
registry entries that share a kernel (e.g. ``shift_10``, ``scale_up`` and ``rotate_30``) as one call. Both
paths draw every random parameter with torch, batched and in the same order.

Example:
    >>> from qg_lightning.quality.corruptions._base import run
    >>> masks = torch.zeros(2, 1, 16, 16)
    >>> masks[..., 4:12, 4:12] = 1
    >>> run(masks, k_morph, {"op": [0, 1], "kernel": 5}, None, "auto").sum((1, 2, 3)).tolist()  # dilate, erode
    [100.0, 36.0]
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qg_lightning.quality.corruptions import _torch_ops as T
from qg_lightning.quality.corruptions._base import (
    EPS,
    PIXEL_VARIANCE,
    SMALL_IMAGE,
    Generator,
    coins,
    scaled_radius,
    size_scale,
)
from qg_lightning.quality.corruptions._cv_ops import (
    connected_components,
    elastic_taps,
    np_boundary,
    np_disks,
    np_ellipse_rows,
    np_fill_rows,
    np_moments,
    np_morph,
    np_random_points,
    np_remap,
    pixel_grid,
    ramp_windows,
    smooth_taps,
)

__all__ = [
    "k_blob",
    "k_catastrophic",
    "k_components",
    "k_elastic",
    "k_geometry",
    "k_grid",
    "k_morph",
    "k_polygon",
    "k_smooth",
    "k_spots",
    "random_points",
    "stats",
]


def stats(x: Tensor, opencv: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Area, centroid ``(cy, cx)`` and per-axis variances ``(vyy, vxx)`` of ``(N, H, W)`` masks, all ``(N,)``,
    on either path (empty masks: area 0, the image centre, variance 0)."""
    if opencv:
        return tuple(torch.from_numpy(v) for v in np_moments(x.numpy()))
    return T.stats(x)


def random_points(x: Tensor, count: int, generator: Generator | None, opencv: bool) -> tuple[Tensor, Tensor]:
    """``count`` uniformly drawn foreground pixels per mask, ``(N, count)`` each (y, x), on either path (the
    same draws); empty masks: anywhere."""
    if opencv:  # the same draws, counted with OpenCV / NumPy
        return tuple(torch.from_numpy(v) for v in np_random_points(x.numpy(), count, generator))
    return T.random_points(x, count, generator)


def _grow(x: Tensor, radius: list[int]) -> Tensor:
    """Dilate each mask by its own radius (square kernel); one doubling dilation per distinct radius."""
    distinct = sorted(set(radius))
    if len(distinct) == 1:
        return T.dilate(x, distinct[0])
    rows = list(x.unbind(0))
    for r in distinct:
        if r == 0:
            continue
        idx = [i for i, ri in enumerate(radius) if ri == r]
        grown = T.dilate(x.index_select(0, torch.tensor(idx, device=x.device)), r)
        for i, row in zip(idx, grown.unbind(0), strict=True):
            rows[i] = row
    return torch.stack(rows)


def k_morph(x: Tensor, p: dict, q: dict, generator: Generator | None, opencv: bool) -> Tensor:
    """Square-kernel morphology with per-sample ``op`` (0 dilation, 1 erosion, 2 opening, 3 closing) and
    ``kernel`` (pixels at 224 px). Erosion is dilation of the complement, so the image border counts as
    foreground for erosion, as in OpenCV."""
    n, h, _ = x.shape
    radius = [scaled_radius(int(k), h) for k in q["kernel"]]
    ops = [int(o) for o in q["op"]]
    if opencv:
        a = x.numpy()
        return torch.from_numpy(np.stack([np_morph(m, o, r) for m, o, r in zip(a, ops, radius, strict=True)]))

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


def k_catastrophic(x: Tensor, p: dict, q: dict, generator: Generator | None, opencv: bool) -> Tensor:
    """``kind``: 0 inverted, 1 empty, 2 full, 3 coin flips with foreground probability ``p`` (one path)."""
    n = x.shape[0]
    kind = p["kind"].view(n, 1, 1)
    out = ((x ^ 1) & (kind == 0).view(torch.uint8)) | (kind == 2).view(torch.uint8)
    if 3.0 in q["kind"]:
        if all(prob == 0.5 for prob in q["p"]):
            flips = coins(x.numel(), generator, x.device).view(x.shape)
        else:
            uniform = torch.rand(x.shape, generator=generator, device=x.device)
            flips = (uniform < p["p"].view(n, 1, 1)).view(torch.uint8)
        out = out | (flips & (kind == 3).view(torch.uint8))
    return out


def k_components(x: Tensor, p: dict, q: dict, generator: Generator | None, opencv: bool) -> Tensor:
    """``mode``: 0 keeps the largest 8-connected component, 1 drops a uniformly chosen one (if >= 2); OpenCV
    labels the components on both paths."""
    draws = torch.rand(x.shape[0], generator=generator, device=x.device).tolist()
    kept = []
    for u, drop_mode, (labels, sizes) in zip(draws, q["mode"], connected_components(x), strict=True):
        n_comp = len(sizes) - 1
        if drop_mode:
            drop = min(int(u * n_comp), n_comp - 1) + 1 if n_comp >= 2 else -1
            kept.append((labels > 0) & (labels != drop))
        else:
            kept.append(labels == (int(np.argmax(sizes[1:])) + 1 if n_comp >= 1 else -1))
    return torch.from_numpy(np.stack(kept).view(np.uint8)).to(x.device)


def k_spots(x: Tensor, p: dict, q: dict, generator: Generator | None, opencv: bool) -> Tensor:
    """``holes`` disks removed around random foreground pixels, then ``islands`` disks added near the
    boundary.

    Radii ``U(r_lo, r_hi)`` px at 224 px. Island centres: a random boundary pixel moved ``U(0, 2) * radius``
    in a random direction.
    """
    n, h, w = x.shape
    s = size_scale(h)
    max_holes, max_islands = int(max(q["holes"])), int(max(q["islands"]))
    if opencv:
        return _np_spots(x, {k: v.numpy() for k, v in p.items()}, max_holes, max_islands, generator)
    n_holes, n_islands = p["holes"], p["islands"]
    span = (p["r_hi"] - p["r_lo"])[:, None]
    out = x
    if max_holes > 0:
        cy, cx = T.random_points(x, max_holes, generator)
        r = (p["r_lo"][:, None] + torch.rand((n, max_holes), generator=generator, device=x.device) * span) * s
        r = torch.where(torch.arange(max_holes, device=x.device) < n_holes[:, None], r, -1.0)
        out = out & (T.disks(cy, cx, r, h, w) ^ 1)
    if max_islands > 0:
        cy, cx = T.random_points(T.boundary(x), max_islands, generator)
        u = torch.rand((n, max_islands, 3), generator=generator, device=x.device)
        r = (p["r_lo"][:, None] + u[..., 0] * span) * s
        distance, angle = 2 * u[..., 1] * r, 2 * math.pi * u[..., 2]
        r = torch.where(torch.arange(max_islands, device=x.device) < n_islands[:, None], r, -1.0)
        out = out | T.disks(cy + distance * torch.sin(angle), cx + distance * torch.cos(angle), r, h, w)
    return out


def _np_spots(x: Tensor, p: dict, max_holes: int, max_islands: int, generator: Generator | None) -> Tensor:
    """:func:`k_spots` for CPU masks: the same draws and float32 formulas, disks painted with NumPy."""
    n, h, w = x.shape
    s = size_scale(h)
    a = x.numpy()
    out = a.copy()
    span = (p["r_hi"] - p["r_lo"])[:, None]
    if max_holes > 0:
        cy, cx = np_random_points(a, max_holes, generator)
        u = torch.rand((n, max_holes), generator=generator, device=x.device).numpy()
        r = np.where(np.arange(max_holes) < p["holes"][:, None], (p["r_lo"][:, None] + u * span) * s, -1.0)
        np_disks(out, cy, cx, r, 0)
    if max_islands > 0:
        cy, cx = np_random_points(np_boundary(a), max_islands, generator)
        u = torch.rand((n, max_islands, 3), generator=generator, device=x.device).numpy()
        r = (p["r_lo"][:, None] + u[..., 0] * span) * s
        distance, angle = 2 * u[..., 1] * r, np.float32(2 * math.pi) * u[..., 2]
        r = np.where(np.arange(max_islands) < p["islands"][:, None], r, -1.0)
        cy, cx = cy + distance * np.sin(angle), cx + distance * np.cos(angle)
        np_disks(out, cy, cx, r, 1)
    return torch.from_numpy(out)


def k_geometry(x: Tensor, p: dict, q: dict, generator: Generator | None, opencv: bool) -> Tensor:
    """Scale ``U(scale_lo, scale_hi)`` and rotate ``U(+-max_degrees)`` about the centroid (``centroid = 1``)
    or the image centre, then shift by ``U(+-max_shift)`` of each side (whole pixels when ``whole = 1``).

    Samples take the cheapest exact path: whole-pixel shifts copy rows, scalings gather rows and columns, and
    only rotations need a per-pixel gather. OpenCV path: one ``cv2.warpAffine`` (nearest neighbour) per mask.
    """
    n, h, w = x.shape
    u = torch.rand((n, 4), generator=generator, device=x.device)
    if opencv:
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
    if len(paths) > 1 and h * w <= SMALL_IMAGE:  # few pixels: one general path costs less than splitting
        paths = {"rotate" if "rotate" in paths else "separable": list(range(n))}
    cy, cx = torch.full_like(factor, (h - 1) / 2), torch.full_like(factor, (w - 1) / 2)
    if any(q["centroid"][i] for key in ("rotate", "separable") for i in paths.get(key, [])):
        _, my, mx, _, _ = T.stats(x)
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
            parts.append(T.translate_rows(sub, torch.arange(h, device=x.device) - t[:, :1], t[:, 1:], pad))
        elif path == "separable":
            inv = (1 / f)[:, None]
            src_y = (ys - (c_y + t[:, 0])[:, None]) * inv + c_y[:, None]
            src_x = (xs - (c_x + t[:, 1])[:, None]) * inv + c_x[:, None]
            parts.append(T.remap_separable(sub, src_y, src_x))
        else:
            a = angle if idx is None else angle[idx]
            parts.append(T.affine_about(sub, c_y, c_x, a, 1 / f, t[:, 0], t[:, 1]))
        order += rows
    if len(parts) == 1:
        return parts[0]
    inverse = torch.empty(n, dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(n)
    return torch.cat(parts).index_select(0, inverse.to(x.device))


def _np_geometry(a: np.ndarray, u: np.ndarray, p: dict, q: dict) -> Tensor:
    """:func:`k_geometry` for CPU masks from its uniform draws ``u`` ``(N, 4)``: the same parameters, then
    one ``cv2.warpAffine`` (nearest neighbour) per mask."""
    n, h, w = a.shape
    factor = p["scale_lo"] + u[:, 0] * (p["scale_hi"] - p["scale_lo"])
    angle = (2 * u[:, 1] - 1) * p["max_degrees"] * np.float32(math.pi / 180)
    shift = (2 * u[:, 2:] - 1) * p["max_shift"][:, None] * np.array([h, w], np.float32)
    shift = np.where(p["whole"][:, None] > 0, np.floor(shift + np.float32(0.5)), shift)
    cy, cx = np.full(n, (h - 1) / 2), np.full(n, (w - 1) / 2)
    if any(q["centroid"]):
        _, my, mx, _, _ = np_moments(a)
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


def k_blob(x: Tensor, p: dict, q: dict, generator: Generator | None, opencv: bool) -> Tensor:
    """Axis-aligned ellipse at the centroid with the mask's area times ``std_factor ** 2``: per-axis std
    shape, or a disk when ``isotropic = 1``."""
    n, h, w = x.shape
    if opencv:
        area, cy, cx, vyy, vxx = np_moments(x.numpy())
        iso = p["isotropic"].numpy() > 0
        sy = np.where(iso, np.float32(1), np.sqrt(vyy + np.float32(PIXEL_VARIANCE)))
        sx = np.where(iso, np.float32(1), np.sqrt(vxx + np.float32(PIXEL_VARIANCE)))
        k = p["std_factor"].numpy() * np.sqrt(area / (np.float32(math.pi) * sy * sx))
        lo, hi = np_ellipse_rows(cy, cx, k * sy, np.where(area > 0, k * sx, np.float32(-1)), h)
        return np_fill_rows(lo, hi, w)
    area, cy, cx, vyy, vxx = T.stats(x)
    iso = p["isotropic"] > 0
    sy = torch.where(iso, 1.0, (vyy + PIXEL_VARIANCE).sqrt())
    sx = torch.where(iso, 1.0, (vxx + PIXEL_VARIANCE).sqrt())
    k = p["std_factor"] * (area / (math.pi * sy * sx)).sqrt()  # ellipse pi (k sy)(k sx) = area * factor^2
    lo, hi = T.ellipse_rows(cy, cx, k * sy, torch.where(area > 0, k * sx, -1.0), h)
    return T.fill_rows(lo, hi, w)


def k_polygon(x: Tensor, p: dict, q: dict, generator: Generator | None, opencv: bool) -> Tensor:
    """Star polygon with ``vertices`` corners where equally spaced rays (random phase) from the centroid last
    meet the mask; samples with fewer corners than the batch maximum repeat their last corner."""
    n, h, w = x.shape
    if opencv:
        u = torch.rand((n, 1), generator=generator, device=x.device)
        return _np_polygon(x.numpy(), u.numpy(), p["vertices"].numpy())
    area, cy, cx, _, _ = T.stats(x)
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
    lo, hi = T.convex_polygon_rows(tri_y, tri_x, h)  # (N, V, H)
    lo = torch.where(area[:, None, None] > 0, lo, math.inf)  # empty masks stay empty
    return T.union(T.fill_rows(lo, hi, w))


def _np_polygon(a: np.ndarray, u: np.ndarray, vertices: np.ndarray) -> Tensor:
    """:func:`k_polygon` for CPU masks from its uniform draw ``u`` ``(N, 1)``: the same float32 formulas,
    and the union of the triangles' row intervals painted with ramp windows (as ``np_fill_rows``)."""
    n, h, w = a.shape
    area, cy, cx = np_moments(a)[:3]
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
    # triangles (centroid, v_k, v_k+1) and their row intervals, as convex_polygon_rows: corners [..., :3],
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
    first = np.clip(np.ceil(lo - EPS), 0, w)
    stop = np.clip(np.maximum(np.floor(hi + EPS) + 1, first), 0, w)
    stop = np.where(area[:, None, None] > 0, stop, first)  # empty masks stay empty
    # union of the intervals [first, stop): each is a copy of two ramp windows (as np_fill_rows), OR-ed
    windows = ramp_windows(w)[(w - np.stack((first, stop))).astype(np.int64)]  # (2, N, V, H, W)
    return torch.from_numpy(np.bitwise_or.reduce(windows[0] ^ windows[1], axis=1))


def k_smooth(x: Tensor, p: dict, q: dict, generator: Generator | None, opencv: bool) -> Tensor:
    """Gaussian blur with ``kernel`` taps at 224 px (OpenCV's sigma rule), re-thresholded at 0.5."""
    n, h, w = x.shape
    if opencv:
        out = np.empty(x.shape, np.float32)
        for i, (m, t) in enumerate(zip(x.numpy(), smooth_taps(h, w, tuple(q["kernel"])), strict=True)):
            out[i] = cv2.sepFilter2D(m, cv2.CV_32F, t, t, borderType=cv2.BORDER_REPLICATE)
        return torch.from_numpy(np.greater(out, 0.5).view(np.uint8))
    s = size_scale(h)
    kernel = p["kernel"]
    sigma = (0.3 * ((kernel - 1) / 2 - 1) + 0.8) * s
    radius = torch.floor((kernel - 1) / 2 * s + 0.5).clamp_(min=1)
    max_radius = min(max(max(1, math.floor((k - 1) / 2 * s + 0.5)) for k in q["kernel"]), max(h, w) - 1)
    taps = T.gaussian_taps(sigma, radius, max_radius)
    return T.transpose((T.blur(x.float(), taps) > 0.5).view(torch.uint8))


def k_elastic(x: Tensor, p: dict, q: dict, generator: Generator | None, opencv: bool) -> Tensor:
    """Elastic warp: displacement ``alpha * G_sigma * U(-1, 1)`` per axis (pixels at 224 px), nearest
    neighbour.

    The noise is drawn on a coarse grid (cells of ``0.75 sigma`` reference pixels but at least one image
    pixel, scaled so the smoothed field keeps its statistics), blurred there, upsampled bilinearly (cell
    centres, as ``cv2.resize``) and scaled to the image.
    """
    n, h, w = x.shape
    s = size_scale(h)
    alpha, sigma = p["alpha"], p["sigma"]
    cell = max(min(q["sigma"]) * 0.75, 1.0, 1.0 / s)  # reference pixels per coarse-grid cell
    gh, gw = max(2, math.floor(h / (cell * s) + 0.5)), max(2, math.floor(w / (cell * s) + 0.5))
    uniform = torch.rand((2 * n, gh, gw), generator=generator, device=x.device)
    if opencv:  # per mask: blur the (dy, dx) noise, upsample it as one (x, y) map, remap
        amplitude = (p["alpha"].numpy() * s / cell).repeat(2)[:, None, None]
        noise = (2 * uniform.numpy() - 1) * amplitude
        grid = pixel_grid(h, w)
        out = np.empty(x.shape, np.uint8)
        for i, (m, sig) in enumerate(zip(x.numpy(), p["sigma"].numpy() / np.float32(cell), strict=True)):
            t = elastic_taps(float(sig))
            field = [
                cv2.sepFilter2D(noise[2 * i + c], -1, t, t, borderType=cv2.BORDER_REPLICATE) for c in (1, 0)
            ]
            maps = cv2.resize(cv2.merge(field), (w, h), interpolation=cv2.INTER_LINEAR)
            out[i] = np_remap(m, np.add(maps, grid, out=maps), None)
        return torch.from_numpy(out)
    amplitude = (alpha * s / cell).repeat_interleave(2).view(2 * n, 1, 1)
    noise = (2 * uniform - 1) * amplitude
    sig = (sigma / cell).repeat_interleave(2)
    radius = torch.ceil(3 * sig)
    taps = T.gaussian_taps(sig, radius, math.ceil(3 * max(q["sigma"]) / cell))
    field = T.transpose(T.blur(noise, taps)).view(n, 2, gh, gw)
    field = F.interpolate(field, size=(h, w), mode="bilinear", align_corners=False)
    ys = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1) + 1.5
    xs = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w) + 1.5
    return T.remap(x, field[:, 0].add_(ys), field[:, 1].add_(xs))


def k_grid(x: Tensor, p: dict, q: dict, generator: Generator | None, opencv: bool) -> Tensor:
    """Grid distortion: each of ``num_steps`` cells per axis is stretched by ``1 + U(+-distort_limit)``; the
    stretched cells are rescaled to span the image (as albumentations' ``GridDistortion``)."""
    n, h, w = x.shape
    steps = p["num_steps"]
    most = int(max(q["num_steps"]))
    uniform = torch.rand((n, 2, most), generator=generator, device=x.device)
    if opencv:
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

    return T.remap_separable(x, axis_map(0, h), axis_map(1, w))


def _np_grid(a: np.ndarray, uniform: np.ndarray, steps: np.ndarray, limit: np.ndarray) -> Tensor:
    """:func:`k_grid` for CPU masks from its uniform draws ``(N, 2, S)`` (the same float32 formulas): whole
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

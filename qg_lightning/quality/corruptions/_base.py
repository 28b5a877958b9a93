"""Layer 1 of the corruption engine: validation, the ``uint8`` mask plumbing, backends, random draws and the
kernel runner.

Every other module of the engine builds on these names (see the package docstring for the layout). Masks
travel between the layers as ``uint8`` ``{0, 1}`` tensors ``(N, H, W)`` with ``N = B * C``.

Example:
    >>> x = to_u8(torch.tensor([[[[0.2, 0.9]]]]))
    >>> x.dtype, x.tolist(), use_opencv(x, "auto"), use_opencv(x, "torch")
    (torch.uint8, [[[[0, 1]]]], True, False)
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from qg_lightning._validation import check_int

__all__ = [
    "BACKENDS",
    "EPS",
    "HULL_DIRECTIONS",
    "PIXEL_VARIANCE",
    "REFERENCE_SIZE",
    "SMALL_BLUR",
    "SMALL_IMAGE",
    "Backend",
    "Generator",
    "Kernel",
    "apply",
    "call",
    "check_backend",
    "check_masks",
    "check_range",
    "coins",
    "col_counts",
    "exclusive",
    "finish",
    "from_u8",
    "row_counts",
    "run",
    "run_u8",
    "scaled_radius",
    "size_scale",
    "to_u8",
    "uniform",
    "use_opencv",
]

REFERENCE_SIZE = 224
"""Image side (pixels) at which METHOD.md states every corruption size."""

HULL_DIRECTIONS = 32  # support directions of the convex-hull polygon: at most 0.5 % of the radius too large
PIXEL_VARIANCE = 1.0 / 12.0  # variance of a unit pixel along one axis; keeps 1-pixel masks non-degenerate
EPS = 1e-4
SMALL_BLUR = 8 * 224 * 224  # pixels up to which shifted multiply-adds beat a depthwise convolution
SMALL_IMAGE = 128 * 128  # pixels up to which one warp path for a mixed batch beats splitting it

Generator = torch.Generator

Backend = Literal["auto", "opencv", "torch"]
"""Where the pixel work of a corruption runs: ``"auto"`` (OpenCV / NumPy per mask for CPU tensors, batched torch
otherwise), ``"opencv"`` (CPU tensors only) or ``"torch"`` (the batched path CUDA tensors take, also on CPU).
Both paths make the same random draws; see the package notes."""

BACKENDS: tuple[str, ...] = ("auto", "opencv", "torch")
"""The valid values of ``backend``."""


# ----------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------


def check_backend(backend: str, name: str = "backend") -> str:
    """Return ``backend`` if it is one of :data:`BACKENDS`, else raise ``ValueError`` naming ``name``."""
    if backend not in BACKENDS:
        raise ValueError(f"`{name}` must be one of {BACKENDS}, got {backend!r}.")
    return backend


def use_opencv(x: Tensor, backend: str) -> bool:
    """Whether ``x`` takes the per-mask OpenCV / NumPy path under ``backend`` (see :data:`Backend`).

    Raises:
        ValueError: ``backend`` is not one of :data:`BACKENDS`, or it is ``"opencv"`` and ``x`` is not a CPU
            tensor.
    """
    if backend == "auto":
        return x.device.type == "cpu"
    if backend == "torch":
        return False
    check_backend(backend)
    if x.device.type != "cpu":
        raise ValueError(
            f"`backend='opencv'` works on CPU tensors only, got masks on {x.device}. Use backend='auto' (the "
            "torch path off the CPU) or move the masks to the CPU."
        )
    return True


def check_masks(masks: Tensor, name: str = "masks") -> None:
    """Raise ``TypeError`` / ``ValueError`` naming ``name`` unless ``masks`` are ``(B, C, H, W)`` float, bool or
    uint8."""
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


def check_range(value: tuple[float, float], name: str, low: float, high: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (low, high), got {value!r}.") from None
    if not (low <= lo <= hi <= high) or math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"`{name}` must satisfy {low} <= low <= high <= {high}, got {value!r}.")
    return lo, hi


# ----------------------------------------------------------------------------------------------------------
# dtype plumbing
# ----------------------------------------------------------------------------------------------------------


def to_u8(masks: Tensor) -> Tensor:
    """Hard ``uint8`` ``{0, 1}`` copy or view of validated masks (float: value > 0.5 is foreground)."""
    if masks.dtype == torch.uint8:
        return masks.contiguous()
    if masks.dtype == torch.bool:
        return masks.contiguous().view(torch.uint8)
    if masks.device.type == "cpu" and masks.dtype in (torch.float32, torch.float64):
        # NumPy's SIMD comparison is ~5x faster than torch's on one CPU thread
        return torch.from_numpy(np.greater(masks.detach().numpy(), 0.5, order="C").view(np.uint8))
    return (masks > 0.5).view(torch.uint8)


def from_u8(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``uint8`` ``{0, 1}`` masks as ``dtype`` (a view for ``uint8`` and ``bool``)."""
    if dtype == torch.uint8:
        return x
    if dtype == torch.bool:
        return x.view(torch.bool)
    if x.device.type == "cpu" and dtype == torch.float32 and not torch.is_inference_mode_enabled():
        return torch.from_numpy(x.numpy().astype(np.float32))  # ~2x faster than Tensor.to on one thread
    return x.to(dtype)


def exclusive(out: Tensor, orig: Tensor) -> Tensor:
    """Make ``uint8`` channels ``(B, C, H, W)`` mutually exclusive (original label first, then lowest
    index)."""
    score = out * (orig + 2)  # 0 = off, 2 = on, 3 = on and held this pixel in the input
    winner = score.argmax(dim=1, keepdim=True)  # first maximum -> lowest channel index among ties
    keep = torch.zeros_like(out).scatter_(1, winner, 1)
    return out & keep


def finish(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Convert a uint8 result computed under ``torch.inference_mode`` to ``dtype`` as an ordinary tensor."""
    if not torch.is_inference_mode_enabled() and dtype in (torch.uint8, torch.bool):
        x = x.clone()  # a plain copy outside inference mode: callers may modify it in place
    return from_u8(x, dtype)


def apply(masks: Tensor, core: Callable[[Tensor, bool], Tensor], backend: str) -> Tensor:
    """Run ``core(x, opencv)`` on the ``(B * C, H, W)`` uint8 view ``x`` of ``masks`` (``opencv``: whether
    ``backend`` sends ``x`` down the OpenCV / NumPy path) and restore shape, exclusivity and dtype.

    The work runs under ``torch.inference_mode`` (no autograd bookkeeping: cheaper small ops); the result is an
    ordinary tensor.
    """
    check_masks(masks)
    check_backend(backend)
    if masks.numel() == 0:
        return masks.clone()
    with contextlib.nullcontext() if torch.is_inference_mode_enabled() else torch.inference_mode():
        x = to_u8(masks)
        b, c, h, w = x.shape
        out = core(x.reshape(b * c, h, w), use_opencv(x, backend)).reshape(b, c, h, w)
        if c > 1:
            out = exclusive(out, x)
    return finish(out, masks.dtype)


# ----------------------------------------------------------------------------------------------------------
# size scaling, random draws and counts
# ----------------------------------------------------------------------------------------------------------


def scaled_radius(kernel: int, height: int) -> int:
    """Radius (pixels) of a ``kernel`` x ``kernel`` window given at 224 px, scaled to ``height``.

    ``r = max(1, round((kernel - 1) / 2 * height / 224))``; the scaled kernel is ``2 r + 1`` (odd, >= 3).

    Example:
        >>> scaled_radius(5, 224), scaled_radius(5, 448), scaled_radius(9, 64), scaled_radius(1, 64)
        (2, 4, 1, 0)
    """
    check_int(kernel, "kernel", minimum=1)
    r_ref = (kernel - 1) / 2
    if r_ref <= 0:
        return 0
    return max(1, math.floor(r_ref * height / REFERENCE_SIZE + 0.5))


def size_scale(height: int) -> float:
    """Factor from sizes at 224 px to sizes at ``height`` px."""
    return height / REFERENCE_SIZE


def uniform(shape: tuple[int, ...], low: float, high: float, generator: Generator | None, device) -> Tensor:
    return torch.rand(shape, generator=generator, device=device) * (high - low) + low


def coins(n: int, generator: Generator | None, device) -> Tensor:
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


def row_counts(x: Tensor) -> Tensor:
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


def col_counts(x: Tensor) -> Tensor:
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


# ----------------------------------------------------------------------------------------------------------
# the kernel runner
# ----------------------------------------------------------------------------------------------------------

Kernel = Callable[[Tensor, dict, dict, "torch.Generator | None", bool], Tensor]
"""``kernel(x, p, q, generator, opencv)``: uint8 ``(N, H, W)`` masks, per-mask parameters as float32 tensors
``p[name]`` ``(N,)`` and as Python lists ``q[name]``, the generator, and whether to take the OpenCV / NumPy
path; returns uint8 ``(N, H, W)``."""


def call(x: Tensor, kernel: Kernel, params: Mapping, generator: Generator | None, opencv: bool) -> Tensor:
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
    return kernel(x, dict(zip(q, table.unbind(0), strict=True)), q, generator, opencv)


def run(masks: Tensor, kernel: Kernel, params: Mapping, generator: Generator | None, backend: str) -> Tensor:
    """Apply a parametrised kernel ``kernel(x, p, q, generator, opencv)`` to ``(B, C, H, W)`` masks.

    ``params`` map names to a scalar or a sequence of ``B`` per-sample values. The kernel receives them per
    mask ``(N = B * C)`` twice: ``p`` as float32 tensors ``(N,)`` (one tensor op builds them all) and ``q``
    as Python lists, which kernels use for control flow without synchronising on tensors.
    """
    return apply(masks, lambda x, opencv: call(x, kernel, params, generator, opencv), backend)


def run_u8(x: Tensor, kernel: Kernel, params: Mapping, generator: Generator | None, backend: str) -> Tensor:
    """:func:`run` on validated uint8 ``(B, C, H, W)`` masks under inference mode, without the dtype round
    trip (the sampler's inner loop)."""
    b, c, h, w = x.shape
    opencv = use_opencv(x, backend)
    out = call(x.reshape(b * c, h, w), kernel, params, generator, opencv).reshape(b, c, h, w)
    return exclusive(out, x) if c > 1 else out

"""Batched, seeded augmentation on tensors for the quality predictor's training data.

Spatial augmentation is applied *jointly* to images and every mask of a sample (ground truth, snapshot masks)
before corruption; photometric augmentation is applied to images only, after corruption (METHOD.md). Per-sample
parameters are drawn in one call from an explicit ``torch.Generator``.

Implementation notes (speed on one CPU thread; see ``benchmarks/predictor_throughput.py``):

* :func:`apply_spatial` on CPU tensors warps with ``cv2.warpAffine`` (bilinear for images, with a zero border
  by default or a replicated one; nearest with a zero border for masks), several times cheaper than
  ``F.affine_grid`` + ``F.grid_sample``. OpenCV vectorises the 4-channel warp but not the 3-channel one, so
  ``uint8`` and ``float32`` planes are warped four at a time as one 4-channel image and split back: each
  plane gets exactly its single-plane warp, and an RGB image costs about 0.29 ms instead of 0.52 ms at 224 px
  (one thread, replicated border). A constant border costs about two thirds of a replicated one (0.20 ms
  against 0.31 ms for that 4-channel warp). CUDA tensors (and tensors that require grad) keep the batched
  ``grid_sample`` path. Both paths use the same geometry (``align_corners=False``, rotation about the image
  centre, flips); they agree up to OpenCV's fixed-point interpolation (1/32 pixel positions) and
  nearest-neighbour ties. ``backend="torch"`` forces the torch path on CPU too (the tests compare the two).
* :func:`photometric` folds brightness, contrast and saturation into one per-sample scale, a per-pixel gray
  term and a per-sample offset, so the whole jitter is the noise draw, a channel sum and three passes (a
  ``uint8`` batch adds its float conversion, with the ``1 / 255`` folded into the factors). A large CPU batch
  goes through these passes a chunk of samples at a time, so each chunk stays in cache.
* The Gaussian noise draw is one of the largest costs of a batch at 224 px on one CPU thread (``torch.randn``
  of the whole batch: about 23 ms for 32 RGB images). :func:`quantized_normal_` draws noise from 256 equally
  likely normal quantiles with one random byte per value, about 5x cheaper, and :func:`noise_window` lets a
  caller reuse one bank of such values for several batches (a random window of it per batch): each batch's
  noise is still independent per pixel, only batches that share a bank see overlapping stretches of it.
  ``QualityDataModule(noise_reuse=...)`` uses both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qg_lightning._validation import check_number
from qg_lightning.quality.corruptions import BACKENDS, Backend

__all__ = [
    "IMAGE_PADDINGS",
    "SpatialParams",
    "draw_spatial",
    "apply_spatial",
    "apply_spatial_masks",
    "photometric",
    "check_appearance",
    "draw_appearance",
    "apply_appearance",
    "noise_window",
    "quantized_normal_",
]


# dtypes cv2.warpAffine takes directly (OpenCV 4 and 5); other dtypes go through a lossless working dtype
_CV2_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.float32, torch.float64)

IMAGE_PADDINGS = ("zeros", "border")
"""What :func:`apply_spatial` fills an image with where the warp looks outside it: ``"zeros"`` (black, like
the masks' background, torchvision's ``fill=0``) or ``"border"`` (the nearest edge pixel repeated)."""


@dataclass(frozen=True)
class SpatialParams:
    """Per-sample spatial parameters: ``flip_h``/``flip_v`` bool ``(B,)``, ``angle`` radians ``(B,)``."""

    flip_h: Tensor
    flip_v: Tensor
    angle: Tensor


def draw_spatial(
    batch: int, *, max_rotation: float = 20.0, p_flip: float = 0.5, device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> SpatialParams:  # fmt: skip
    """Draw flips (each with ``p_flip``) and a rotation uniform in ``[-max_rotation, max_rotation]`` degrees.

    Example:
        >>> p = draw_spatial(3, generator=torch.Generator().manual_seed(0))
        >>> p.angle.shape, p.flip_h.dtype
        (torch.Size([3]), torch.bool)
    """
    u = torch.rand(batch, 3, device=device, generator=generator)
    angle = (u[:, 2] * 2 - 1) * math.radians(max_rotation)
    return SpatialParams(flip_h=u[:, 0] < p_flip, flip_v=u[:, 1] < p_flip, angle=angle)


def _theta(params: SpatialParams) -> Tensor:
    """``(B, 2, 3)`` output-to-input map in ``affine_grid``'s normalised coordinates."""
    b = params.angle.shape[0]
    cos, sin = torch.cos(params.angle), torch.sin(params.angle)
    sx = torch.where(params.flip_h, -1.0, 1.0).to(cos)
    sy = torch.where(params.flip_v, -1.0, 1.0).to(cos)
    theta = torch.zeros(b, 2, 3, device=cos.device, dtype=cos.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
    return theta


def _grid(params: SpatialParams, size: tuple[int, int], dtype: torch.dtype) -> Tensor:
    b = params.angle.shape[0]
    return F.affine_grid(_theta(params).to(dtype), [b, 1, *size], align_corners=False)


def _pixel_matrices(params: SpatialParams, h: int, w: int) -> np.ndarray:
    """``(B, 2, 3)`` float64 output-to-input map in pixel coordinates, the same map as :func:`_grid`.

    With ``align_corners=False`` a normalised ``x_n`` is pixel ``(x_n + 1) W / 2 - 1/2``, so the normalised
    map ``theta`` becomes, about the centre ``((W - 1) / 2, (H - 1) / 2)``, the linear part
    ``[[t00, t01 W / H], [t10 H / W, t11]]``.
    """
    t = _theta(params).detach().to("cpu", torch.float64).numpy()
    lin = t[:, :, :2] * np.array([[1.0, w / h], [h / w, 1.0]])
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    offset = centre - lin @ centre
    return np.concatenate([lin, offset[:, :, None]], axis=2)


def _cv2_warp(x: Tensor, mats: np.ndarray, *, linear: bool, replicate: bool = False) -> Tensor:
    """Warp each ``(H, W)`` plane of CPU ``x`` ``(B, C, H, W)`` with its sample's matrix; same dtype out.

    ``linear``: bilinear (images), else nearest (masks); the border is zero, or replicated with
    ``replicate``. The result is
    contiguous ``(B, C, H, W)``. ``uint8`` and ``float32`` tensors with several planes are warped four planes
    at a time as one 4-channel image (:func:`_warp_packed`); other dtypes and single planes plane by plane.
    """
    dtype = x.dtype
    if x.numel() == 0:
        return x.clone()
    if dtype in _CV2_DTYPES:
        work = x
    elif dtype == torch.bool:
        work = x.view(torch.uint8)
    elif dtype.is_floating_point:
        work = x.float()  # float16 / bfloat16 are exact in float32
    else:
        work = x.double()  # integer labels: exact up to 2**53
    flags = (cv2.INTER_LINEAR if linear else cv2.INTER_NEAREST) | cv2.WARP_INVERSE_MAP
    border = cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT
    if work.shape[1] > 1 and work.dtype in (torch.uint8, torch.float32):
        return torch.from_numpy(_warp_packed(work.detach(), mats, flags, border)).to(dtype)
    src = work.detach().contiguous().numpy()
    out = np.empty_like(src)
    h, w = src.shape[-2:]
    for i in range(src.shape[0]):
        m = mats[i]
        for c in range(src.shape[1]):
            cv2.warpAffine(src[i, c], m, (w, h), dst=out[i, c], flags=flags, borderMode=border, borderValue=0)
    return torch.from_numpy(out).to(dtype)


def _warp_packed(x: Tensor, mats: np.ndarray, flags: int, border: int) -> np.ndarray:
    """Warp ``uint8`` / ``float32`` ``x`` ``(B, C, H, W)``, ``C >= 2``, four planes per ``cv2.warpAffine`` call.

    OpenCV's warp is vectorised for 4-channel images but not for 3 (or 2): a 4-channel warp costs about what
    one 3-channel warp costs, so each group of up to four planes is packed into a 4-channel image (zero planes
    pad a short group), warped once and split back (``cv2.merge`` / ``cv2.split``: about 30 us at 224 px). For
    each plane this gives exactly the values of its own single-plane warp (tested), about 1.8x faster for RGB
    at 224 px. An RGB batch stored channels-last (``QualityDataModule``'s training cache) is packed with one
    ``cv2.cvtColor`` per sample.
    """
    b, c, h, w = x.shape
    out = np.empty((b, c, h, w), dtype=np.uint8 if x.dtype == torch.uint8 else np.float32)
    packed_in = np.empty((h, w, 4), dtype=out.dtype)
    packed_out = np.empty_like(packed_in)
    spare = [np.empty((h, w), dtype=out.dtype) for _ in range(3)]  # split targets of padding planes
    zero = np.zeros((h, w), dtype=out.dtype)
    hwc = x.permute(0, 2, 3, 1)
    interleaved = c in (3, 4) and hwc.is_contiguous()  # channels-last RGB(A): one sample is one image
    src_hwc = hwc.numpy() if interleaved else None
    src = None if interleaved else x.contiguous().numpy()
    for i in range(b):
        m = mats[i]
        for start in range(0, c, 4):
            k = min(4, c - start)
            targets = [out[i, start + j] for j in range(k)]
            if k == 1:  # a lone last plane (never for interleaved RGB(A))
                cv2.warpAffine(
                    src[i, start], m, (w, h), dst=targets[0], flags=flags, borderMode=border, borderValue=0
                )
                continue
            if interleaved and c == 4:
                packed = src_hwc[i]
            elif interleaved:
                packed = cv2.cvtColor(src_hwc[i], cv2.COLOR_RGB2RGBA, dst=packed_in)
            else:
                planes = [src[i, start + j] for j in range(k)] + [zero] * (4 - k)
                packed = cv2.merge(planes, dst=packed_in)
            cv2.warpAffine(packed, m, (w, h), dst=packed_out, flags=flags, borderMode=border, borderValue=0)
            got = cv2.split(packed_out, targets + spare[: 4 - k])
            if got[0] is not targets[0]:  # an OpenCV build that ignores the given planes
                out[i, start : start + k] = packed_out[..., :k].transpose(2, 0, 1)
    return out


def _torch_warp(x: Tensor, grid: Tensor, *, linear: bool, replicate: bool = False) -> Tensor:
    """Batched ``grid_sample`` of ``x`` ``(B, C, H, W)``; same dtype out (uint8 images are rounded)."""
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    out = F.grid_sample(work, grid.to(work.dtype), mode="bilinear" if linear else "nearest",
                        padding_mode="border" if replicate else "zeros", align_corners=False)  # fmt: skip
    if x.dtype.is_floating_point:
        return out.to(x.dtype)
    out = out.round_()
    return (out.clamp_(0, 255) if linear else out).to(x.dtype)  # linear: uint8 images only


def _use_opencv(tensors: tuple[Tensor, ...], backend: str) -> bool:
    """Whether :func:`apply_spatial` warps ``tensors`` with OpenCV under ``backend`` (see its docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")
    if backend == "torch":
        return False
    cpu = all(t.device.type == "cpu" and not t.requires_grad for t in tensors)
    if backend == "opencv" and not cpu:
        raise ValueError(
            "`backend='opencv'` warps CPU tensors that do not require grad only, got "
            f"{[(str(t.device), t.requires_grad) for t in tensors]} (device, requires_grad). Use backend='auto'."
        )
    return cpu


def apply_spatial(
    params: SpatialParams,
    images: Tensor,
    *masks: Tensor,
    image_padding: str = "zeros",
    backend: Backend = "auto",
) -> tuple[Tensor, ...]:
    """Warp images (bilinear) and masks (nearest, zero padding) with the same parameters.

    Output pixel ``(i, j)`` samples the input at the flipped and rotated position about the image centre
    (``F.affine_grid`` convention, ``align_corners=False``). CPU tensors are warped with OpenCV; CUDA tensors,
    and tensors that require grad, with ``F.grid_sample`` (module notes), unless ``backend`` says otherwise.

    Args:
        params: from :func:`draw_spatial`, batch size ``B``.
        images: ``(B, C, H, W)`` float, or ``uint8`` (warped in ``uint8``, rounded).
        masks: any number of ``(B, K, H, W)`` masks (any dtype; values are copied, returned in the same dtype).
        image_padding: what the images show where the warp looks outside them (:data:`IMAGE_PADDINGS`):
            ``"zeros"`` (default) black, consistent with the masks, which are background there;
            ``"border"`` the nearest edge pixel (slower on CPU).
        backend: ``"auto"`` (default) OpenCV for CPU tensors that do not require grad, else
            ``F.grid_sample``; ``"torch"`` always ``F.grid_sample`` (the path CUDA tensors take);
            ``"opencv"`` always OpenCV (CPU tensors without grad only). The two agree up to OpenCV's
            fixed-point interpolation and nearest-neighbour ties.

    Returns:
        The warped images, then each warped mask, in their input dtypes and shapes.

    Raises:
        ValueError: if a tensor is not 4-D or its batch size or spatial size differ from ``images``,
            ``image_padding`` is not one of :data:`IMAGE_PADDINGS`, or ``backend`` is not one of
            ``("auto", "opencv", "torch")`` or is ``"opencv"`` for a CUDA tensor or one that requires grad.
        TypeError: if ``images`` is neither floating point nor ``uint8``.

    Example:
        >>> p = SpatialParams(torch.tensor([True]), torch.tensor([False]), torch.zeros(1))
        >>> img = torch.arange(4.0).view(1, 1, 1, 4)
        >>> apply_spatial(p, img)[0].flatten().tolist()
        [3.0, 2.0, 1.0, 0.0]
    """
    if image_padding not in IMAGE_PADDINGS:
        raise ValueError(f"`image_padding` must be one of {IMAGE_PADDINGS}, got {image_padding!r}.")
    replicate = image_padding == "border"
    if images.dim() != 4:
        raise ValueError(f"`images` must be (B, C, H, W), got shape {tuple(images.shape)}.")
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise TypeError(f"`images` must be floating point or uint8, got {images.dtype}; convert it first.")
    b, h, w = images.shape[0], *images.shape[-2:]
    if params.angle.shape[0] != b:
        raise ValueError(f"`params` has batch size {params.angle.shape[0]} but `images` has {b}.")
    for k, m in enumerate(masks):
        if m.dim() != 4 or m.shape[0] != b or m.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"mask {k} must be (B, K, H, W) = ({b}, K, {h}, {w}) like `images`, got shape {tuple(m.shape)}."
            )
    if _use_opencv((images, *masks), backend):
        mats = _pixel_matrices(params, h, w)
        warped = _cv2_warp(images, mats, linear=True, replicate=replicate)
        return (warped, *(_cv2_warp(m, mats, linear=False) for m in masks))
    grid = _grid(params, (h, w), torch.float64 if images.dtype == torch.float64 else torch.float32)
    warped = _torch_warp(images, grid, linear=True, replicate=replicate)
    return (warped, *(_torch_warp(m, grid, linear=False) for m in masks))


def apply_spatial_masks(params: SpatialParams, mask: Tensor, *, backend: Backend = "auto") -> Tensor:
    """Warp one ``(B, K, H, W)`` mask (nearest, zero padding) as :func:`apply_spatial` warps its masks
    (``backend`` as there).

    Each plane is warped on its own, so warping a selection of planes gives exactly the selection of the
    warped planes: a caller can warp only the planes it picked after :func:`apply_spatial` ran.

    Example:
        >>> p = SpatialParams(torch.tensor([True]), torch.tensor([False]), torch.zeros(1))
        >>> apply_spatial_masks(p, torch.tensor([[[[1, 0, 0]]]], dtype=torch.uint8)).flatten().tolist()
        [0, 0, 1]
    """
    if mask.dim() != 4 or params.angle.shape[0] != mask.shape[0]:
        raise ValueError(
            f"`mask` must be (B, K, H, W) with B = {params.angle.shape[0]} like `params`, got shape "
            f"{tuple(mask.shape)}."
        )
    h, w = mask.shape[-2:]
    if _use_opencv((mask,), backend):
        return _cv2_warp(mask, _pixel_matrices(params, h, w), linear=False)
    return _torch_warp(mask, _grid(params, (h, w), torch.float32), linear=False)


def photometric(
    images: Tensor, *, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
    noise_std: float = 0.03, gamma: float = 0.0, channel_gain: float = 0.0,
    generator: torch.Generator | None = None, noise: Tensor | None = None, inplace: bool = False,
    appearance: tuple[Tensor, Tensor] | None = None,
) -> Tensor:  # fmt: skip
    """Image-only photometric jitter, per sample: brightness, contrast, saturation (RGB) and Gaussian noise;
    optionally gamma and per-channel gains first (another light source or camera, e.g. of another centre).

    With ``gamma`` or ``channel_gain`` above 0, each sample first becomes ``x0 = g_k x ** e`` per channel ``k``:
    the exponent ``e = (1 + gamma) ** u`` with ``u`` uniform in ``[-1, 1]`` (so ``e`` lies in
    ``[1 / (1 + gamma), 1 + gamma]``), each gain ``g_k`` uniform in ``[1 - channel_gain, 1 + channel_gain]``.
    For a ``uint8`` batch this is a table lookup that also does the float conversion (no extra pass); off
    (the default), nothing extra is drawn from ``generator``.
    Factors ``b``, ``c``, ``s`` are uniform in ``[1 - x, 1 + x]``; the noise std ``sigma`` is uniform in
    ``[0, noise_std]``. In order: ``x1 = b x``; contrast about the sample mean ``x2 = c (x1 - mean) + mean``;
    for 3-channel images saturation about the per-pixel channel mean ``x3 = s (x2 - gray) + gray``; then
    ``x3 + sigma * N(0, 1)`` per pixel and channel, clamped to ``[0, 1]``. These fold into
    ``b c (s x + (1 - s) gray(x)) + b (1 - c) mean(x) + noise`` (``s = 1`` without saturation), which is
    how it is computed: the float conversion of a ``uint8`` batch, the channel sum, then ``base + x * scale``,
    ``+ noise * sigma`` and the clamp, each one pass.

    Args:
        images: ``(B, C, H, W)`` float in ``[0, 1]`` (not modified unless ``inplace``), or ``uint8`` read as
            ``x / 255`` (never modified; the result is a new float32 tensor, with the ``1 / 255`` folded into
            the per-sample factors instead of a separate division pass).
        brightness, contrast, saturation: jitter ranges (``0`` turns one off).
        noise_std: largest noise std.
        gamma: exponent range, ``e`` in ``[1 / (1 + gamma), 1 + gamma]`` (``0`` turns it off).
        channel_gain: per-channel gain range, in ``[0, 1)`` (``0`` turns it off).
        generator: source of all randomness (one ``(B, 4)`` uniform draw, then ``(B, 1 + C)`` for ``gamma`` /
            ``channel_gain`` when one is on, then the noise).
        noise: standard normal values of ``images``' shape to use instead of drawing them (e.g. from
            :func:`noise_window`); not modified. Default: a fresh ``torch.randn`` draw from ``generator``.
        inplace: write the result into ``images`` (saves allocating a batch-sized tensor; the same values up
            to float rounding order).
        appearance: per-sample ``(exponent (B,), gains (B, C))`` to apply instead of drawing them (then
            ``gamma`` and ``channel_gain`` are not used and nothing is drawn for them), e.g. from
            :func:`draw_appearance` with some rows replaced by fixed values.

    Returns:
        ``(B, C, H, W)`` new tensor (``images`` itself if ``inplace``), same dtype (float32 for ``uint8``), in
        ``[0, 1]``.

    Raises:
        ValueError: if ``noise`` does not have the shape of ``images``, ``gamma`` / ``channel_gain`` is out
            of range, or ``appearance`` does not fit the batch.
        TypeError: if ``images`` is neither floating point nor ``uint8``.

    Example:
        >>> out = photometric(torch.full((2, 3, 4, 4), 0.5), generator=torch.Generator().manual_seed(0))
        >>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
        (torch.Size([2, 3, 4, 4]), True, True)
        >>> photometric(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8), noise_std=0.0).dtype
        torch.float32
        >>> warm = photometric(torch.full((1, 3, 2, 2), 128, dtype=torch.uint8), gamma=0.25, channel_gain=0.15,
        ...                    generator=torch.Generator().manual_seed(0))
        >>> warm.shape
        torch.Size([1, 3, 2, 2])
    """
    check_appearance(gamma, channel_gain)
    if noise is not None and noise.shape != images.shape:
        raise ValueError(
            f"`noise` must have the shape of `images` {tuple(images.shape)}, got {tuple(noise.shape)}."
        )
    if images.dtype == torch.uint8:  # read as x / 255; the 1/255 is folded into the per-sample factors
        unit, dtype = 1.0 / 255.0, torch.float32
    elif images.is_floating_point():
        unit, dtype = 1.0, images.dtype
    else:
        raise TypeError(f"`images` must be floating point or uint8, got {images.dtype}; convert it first.")
    b, c = images.shape[:2]
    u = torch.rand(b, 4, 1, 1, 1, device=images.device, generator=generator, dtype=dtype)
    bright, contr = 1 + brightness * (2 * u[:, 0] - 1), 1 + contrast * (2 * u[:, 1] - 1)  # (B, 1, 1, 1)
    sat = 1 + saturation * (2 * u[:, 2] - 1) if c == 3 else None
    sigma = noise_std * u[:, 3]
    lut, target = None, None  # the (B, C, 256) conversion table of uint8 images; the caller's float images
    if appearance is None and (gamma > 0 or channel_gain > 0):
        appearance = draw_appearance(b, c, gamma=gamma, channel_gain=channel_gain, device=images.device,
                                     generator=generator)  # fmt: skip
    if appearance is not None:
        exponent, gain = _check_appearance_values(appearance, b, c, images.device)
        if images.dtype == torch.uint8:  # g x ** e of every 8-bit level: the float conversion's table
            levels = torch.arange(256, device=images.device, dtype=torch.float32) / 255
            lut = (levels ** exponent[:, :, None] * gain[:, :, None]).contiguous()  # (B, C, 256)
            unit = 1.0
        else:  # a new tensor; an in-place call copies the result back at the end
            target = images if inplace else None
            images = images.clamp(0, 1).pow_(exponent.to(dtype)[:, :, None, None])
            images.mul_(gain.to(dtype)[:, :, None, None])
            inplace = True
    fresh = noise is None
    if noise is None:
        noise = torch.randn(images.shape, device=images.device, generator=generator, dtype=dtype)
    noise = noise.to(dtype)
    if images.dtype == torch.uint8:  # a new float tensor, filled chunk by chunk
        out = torch.empty(images.shape, device=images.device, dtype=dtype)
    elif inplace:
        out = images
    else:
        out = noise if fresh else torch.empty_like(images)  # a fresh draw is filled in place
    in_place = images.dtype == torch.uint8 or inplace  # the jitter runs in ``out``'s own memory
    step = _photometric_chunk(images)
    for i in range(0, b, step):
        part = slice(i, i + step)
        _photometric_part(
            images[part], out[part], noise[part], bright[part], contr[part], None if sat is None else sat[part],
            sigma[part], unit, in_place=in_place, lut=None if lut is None else lut[part],
        )  # fmt: skip
    return out if target is None else target.copy_(out)


_PHOTOMETRIC_SPLIT = 1 << 21  # values per batch above which photometric works in chunks
_PHOTOMETRIC_PART = 1 << 20  # values per chunk: with its noise, a few MB that stay in cache between passes


def _photometric_chunk(images: Tensor) -> int:
    """Samples per chunk of :func:`photometric`: the whole batch when it is small (fewer calls), else chunks of
    about a million values, so the five passes over a chunk find it in cache (at 224 px and 32 RGB images,
    chunks of 6 take 7.7-8.2 ms on one CPU thread where the whole batch takes 10.3-10.6 ms; the values are
    those of one pass over the batch, since every operation is per sample, except that a per-sample mean can
    round differently in its last bit)."""
    b = images.shape[0]
    per_sample = math.prod(images.shape[1:])
    if images.device.type != "cpu" or b * per_sample <= _PHOTOMETRIC_SPLIT:
        return max(b, 1)
    chunks = -(-b // max(1, _PHOTOMETRIC_PART // per_sample))
    return -(-b // chunks)


def _photometric_part(
    images: Tensor, out: Tensor, noise: Tensor, bright: Tensor, contr: Tensor, sat: Tensor | None,
    sigma: Tensor, unit: float, *, in_place: bool, lut: Tensor | None = None,
) -> None:  # fmt: skip
    """:func:`photometric` on a chunk of samples, written into ``out``: with ``in_place``, ``out`` is ``images``
    itself or (``uint8`` images) receives their float conversion first; otherwise it may be ``noise``.
    ``lut``: ``(B, C, 256)`` float32 values of the 8-bit levels, used for the conversion instead of a copy."""
    if lut is not None:
        x = _convert_with_table(images, lut, out)
    else:
        x = out.copy_(images) if images.dtype == torch.uint8 else images  # uint8: converted into the result
    if sat is not None:  # channel sum as two adds (cheaper than ``sum(dim=1)`` or ``mean``): gray = sum / 3
        gray, unit_gray = torch.add(x[:, 0:1], x[:, 1:2]).add_(x[:, 2:3]), unit / 3
    else:
        gray, unit_gray = None, unit
    mean = (gray if gray is not None else x).mean(dim=(1, 2, 3), keepdim=True) * unit_gray
    scale, offset = bright * contr, bright * (1 - contr) * mean
    if gray is not None:
        base = gray.mul_(scale * (1 - sat) * unit_gray).add_(offset)  # (B, 1, H, W)
        scale = scale * sat
    else:
        base = offset
    if in_place:  # base + x * scale, then + noise * sigma, in ``x`` (three passes with the clamp)
        torch.addcmul(base, x, scale * unit, out=x).addcmul_(noise, sigma).clamp_(0, 1)
        return
    torch.addcmul(base, noise, sigma, out=out)  # noise * sigma + gray term + offset
    out.addcmul_(x, scale * unit).clamp_(0, 1)


def check_appearance(gamma: float, channel_gain: float) -> None:
    """Refuse a ``gamma`` / ``channel_gain`` of :func:`photometric` that is not a number in range, naming it."""
    check_number(gamma, "gamma", low=0, high=math.inf, high_open=True, hint="0 turns it off.")  # not inf
    check_number(channel_gain, "channel_gain", low=0, high=1, high_open=True, hint="0 turns it off.")


def draw_appearance(
    n: int, channels: int, *, gamma: float, channel_gain: float, device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Random per-sample appearance of :func:`photometric`: exponents ``(n,)`` and channel gains ``(n, C)``.

    The exponent is ``(1 + gamma) ** u`` with ``u`` uniform in ``[-1, 1]``, each gain uniform in
    ``[1 - channel_gain, 1 + channel_gain]``; one ``(n, 1 + C)`` uniform draw from ``generator``. With both at
    0 every value is 1 (still one draw).

    Example:
        >>> e, g = draw_appearance(4, 3, gamma=0.2, channel_gain=0.1, generator=torch.Generator().manual_seed(0))
        >>> e.shape, g.shape, bool(((1 / 1.2 <= e) & (e <= 1.2)).all()), bool(((g - 1).abs() <= 0.1).all())
        (torch.Size([4]), torch.Size([4, 3]), True, True)
    """
    check_appearance(gamma, channel_gain)
    v = torch.rand(n, 1 + channels, device=device, generator=generator, dtype=torch.float32)
    return (1 + gamma) ** (2 * v[:, 0] - 1), 1 + channel_gain * (2 * v[:, 1:] - 1)


def apply_appearance(images: Tensor, exponent: Tensor, gain: Tensor) -> Tensor:
    """``clamp(gain_k * x ** exponent, 0, 1)`` per sample and channel of float ``[0, 1]`` images ``(N, C, H, W)``
    (a new tensor): what :func:`photometric` does first with the same values, without the rest of its jitter.

    Example:
        >>> apply_appearance(torch.full((1, 3, 1, 1), 0.25), torch.tensor([0.5]), torch.tensor([[1.0, 2.0, 5.0]]))
        tensor([[[[0.5000]],
        <BLANKLINE>
                 [[1.0000]],
        <BLANKLINE>
                 [[1.0000]]]])
    """
    exponent, gain = _check_appearance_values((exponent, gain), *images.shape[:2], images.device)
    return images.clamp(0, 1).pow(exponent[:, :, None, None]).mul_(gain[:, :, None, None]).clamp_(0, 1)


def _check_appearance_values(
    appearance: tuple[Tensor, Tensor], n: int, channels: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """``(exponent (n,), gain (n, C))`` as float32 ``(n, 1)`` and ``(n, C)`` on ``device``, or a ``ValueError``."""
    exponent, gain = appearance
    if tuple(exponent.shape) != (n,) or tuple(gain.shape) != (n, channels):
        raise ValueError(
            f"`appearance` must be (exponent of shape ({n},), gains of shape ({n}, {channels})) for these images, "
            f"got shapes {tuple(exponent.shape)} and {tuple(gain.shape)}."
        )
    return exponent.to(device, torch.float32).view(n, 1), gain.to(device, torch.float32)


def _lut_into(src: np.ndarray, table: np.ndarray, dst: np.ndarray) -> None:
    """``dst[...] = table[src]`` by OpenCV's table lookup, written into ``dst``'s memory (copied there for an
    OpenCV build that ignores ``dst``)."""
    got = cv2.LUT(src, table, dst=dst)
    if got is not dst and not np.shares_memory(got, dst):
        dst[...] = got


def _convert_with_table(images: Tensor, lut: Tensor, out: Tensor) -> Tensor:
    """``out[b, k] = lut[b, k][images[b, k]]`` for ``uint8`` images ``(B, C, H, W)`` and float32 ``lut``
    ``(B, C, 256)``; returns ``out``. CPU: one OpenCV lookup per plane, writing into ``out``'s memory."""
    b, c = images.shape[:2]
    if images.device.type == "cpu" and out.is_contiguous() and images.is_contiguous():
        src, dst, table = images.numpy(), out.detach().numpy(), lut.numpy()
        for i in range(b):
            for k in range(c):
                _lut_into(src[i, k], table[i, k].reshape(1, 256), dst[i, k])
        return out
    index = images.reshape(b, c, -1).long()
    return out.copy_(torch.gather(lut, 2, index).view(images.shape))


def noise_window(bank: Tensor, shape: Sequence[int], *, generator: torch.Generator | None = None) -> Tensor:
    """A view of ``shape`` on a random contiguous stretch of ``bank`` (standard normal values), no copy.

    Drawing a bank once (``torch.randn`` of, say, twice a batch's size) and taking a window per batch replaces
    most of the noise draws of :func:`photometric` with a memory read. Within a window the values are the bank's
    independent N(0, 1) draws; windows taken from one bank overlap.

    Args:
        bank: standard normal values, any shape (read as flat; must be contiguous).
        shape: the shape of the window, e.g. a batch's ``(B, C, H, W)``.
        generator: source of the window's start (on ``bank``'s device).

    Returns:
        A view of ``bank`` with ``shape``.

    Raises:
        ValueError: if ``bank`` is not contiguous or holds fewer values than ``shape`` needs.

    Example:
        >>> bank = torch.randn(100, generator=torch.Generator().manual_seed(0))
        >>> w = noise_window(bank, (2, 3, 4), generator=torch.Generator().manual_seed(1))
        >>> w.shape, w.data_ptr() >= bank.data_ptr()
        (torch.Size([2, 3, 4]), True)
    """
    n = math.prod(shape)
    if not bank.is_contiguous():
        raise ValueError("`bank` must be contiguous; pass `bank.contiguous()`.")
    if bank.numel() < n:
        raise ValueError(
            f"`bank` holds {bank.numel()} values but a window of shape {tuple(shape)} needs {n}; draw a larger bank."
        )
    start = int(torch.randint(0, bank.numel() - n + 1, (1,), device=bank.device, generator=generator))
    return bank.view(-1)[start : start + n].view(*shape)


_LEVELS = 256
_LUT_CHUNK = 1 << 20  # values per random draw + lookup: the bytes stay in cache between the two


@lru_cache(maxsize=1)
def _normal_levels() -> np.ndarray:
    """``(1, 256)`` float32: the N(0, 1) quantiles at ``(k + 1/2) / 256``, rescaled to unit variance."""
    z = np.array([NormalDist().inv_cdf((k + 0.5) / _LEVELS) for k in range(_LEVELS)])
    z /= math.sqrt(float(np.mean(z * z)))  # symmetric, so the mean is exactly 0
    return z.astype(np.float32).reshape(1, _LEVELS)


def quantized_normal_(out: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``out`` in place with standard normal noise quantised to 256 levels; cheap on CPU.

    Each value is one of the 256 N(0, 1) quantiles at ``(k + 1/2) / 256`` (rescaled to unit variance, so mean 0
    and variance 1 exactly; the largest magnitude is 2.9), picked by a uniform random byte. The bytes come
    from ``generator`` as 64-bit draws (8 values per draw) and an OpenCV table lookup turns them into floats:
    about 5x cheaper than ``torch.Tensor.normal_`` on one CPU thread (9 ms instead of 52 ms for 9.6 million
    values). For image noise of a few percent of the intensity range the levels are far finer than an 8-bit
    image's, and only the tails beyond 2.9 standard deviations (0.4% of a true normal's values) are missing.
    The same generator state gives the same values. CUDA tensors, and tensors that are not contiguous float32,
    get exact ``normal_`` instead.

    Args:
        out: the tensor to fill (any shape).
        generator: source of randomness (on ``out``'s device).

    Returns:
        ``out``.

    Example:
        >>> z = quantized_normal_(torch.empty(100_000), generator=torch.Generator().manual_seed(0))
        >>> abs(float(z.mean())) < 0.02, abs(float(z.std()) - 1) < 0.02, len(z.unique())
        (True, True, 256)
    """
    if out.device.type != "cpu" or out.dtype != torch.float32 or not out.is_contiguous():
        return out.normal_(generator=generator)
    n = out.numel()
    flat = out.detach().view(-1).numpy()  # shares memory with `out`
    levels = _normal_levels()
    words = torch.empty(-(-min(n, _LUT_CHUNK) // 8), dtype=torch.int64, device=out.device)
    for start in range(0, n, _LUT_CHUNK):
        m = min(_LUT_CHUNK, n - start)
        draw = words[: -(-m // 8)].random_(-(2**63), None, generator=generator)  # all 64 bits uniform
        src = draw.view(torch.uint8).numpy()[:m].reshape(1, m)
        dst = flat[start : start + m].reshape(1, m)
        _lut_into(src, levels, dst)
    return out

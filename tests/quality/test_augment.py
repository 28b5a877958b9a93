import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qg_lightning.quality import augment
from qg_lightning.quality.augment import (
    SpatialParams,
    apply_appearance,
    apply_spatial,
    apply_spatial_masks,
    draw_appearance,
    draw_spatial,
    noise_window,
    photometric,
    quantized_normal_,
)


def test_same_seed_same_draw_and_ranges():
    a = draw_spatial(64, max_rotation=20, generator=torch.Generator().manual_seed(1))
    b = draw_spatial(64, max_rotation=20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.angle, b.angle) and torch.equal(a.flip_h, b.flip_h)
    assert a.angle.abs().max() <= math.radians(20) + 1e-6
    assert 0 < a.flip_h.float().mean() < 1


def test_joint_warp_keeps_image_and_mask_aligned():
    img = torch.zeros(1, 1, 32, 32)
    img[..., 4:12, 20:28] = 1.0
    mask = (img > 0.5).to(torch.uint8)
    for flip_h, flip_v, angle in [(True, False, 0.0), (False, True, 0.0), (True, True, math.radians(15))]:
        p = SpatialParams(torch.tensor([flip_h]), torch.tensor([flip_v]), torch.tensor([angle]))
        w_img, w_mask = apply_spatial(p, img, mask)
        assert w_mask.dtype == torch.uint8
        inside = w_img[w_mask.bool()]
        assert inside.numel() > 0 and inside.mean() > 0.8
    p = SpatialParams(torch.tensor([True]), torch.tensor([False]), torch.tensor([0.0]))
    assert torch.equal(apply_spatial(p, img, mask)[1], mask.flip(-1))


def test_photometric_changes_only_values_within_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    y = photometric(x, generator=g)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.equal(x, y)
    y2 = photometric(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)
    gray = photometric(torch.rand(2, 1, 8, 8), generator=g)
    assert gray.shape == (2, 1, 8, 8)


# ------------------------------------------------------------------------------------------ fused photometric
def _photometric_reference(x, u, noise, brightness=0.2, contrast=0.2, saturation=0.2, noise_std=0.03):
    """The unfused formula, pass by pass, for given uniforms ``u`` (B, 4, 1, 1, 1) and noise."""
    x = x * (1 + brightness * (2 * u[:, 0] - 1))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + contrast * (2 * u[:, 1] - 1)) + mean
    if x.shape[1] == 3:
        gray = x.mean(dim=1, keepdim=True)
        x = (x - gray) * (1 + saturation * (2 * u[:, 2] - 1)) + gray
    return (x + noise * (noise_std * u[:, 3])).clamp(0, 1)


WIDE = {"brightness": 0.5, "contrast": 0.7, "saturation": 0.9, "noise_std": 0.1}


@pytest.mark.parametrize("channels", [3, 1, 2])
@pytest.mark.parametrize("ranges", [{}, WIDE])
def test_photometric_matches_unfused_formula(channels, ranges):
    x = torch.rand(4, channels, 12, 20)
    x[0] = 0.5  # flat sample
    y = photometric(x, generator=torch.Generator().manual_seed(5), **ranges)
    g = torch.Generator().manual_seed(5)  # same draws in the same order: uniforms, then the noise
    u = torch.rand(4, 4, 1, 1, 1, generator=g)
    noise = torch.randn(x.shape, generator=g)
    assert torch.allclose(y, _photometric_reference(x, u, noise, **ranges), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("inplace", [False, True])
def test_large_cpu_batches_are_jittered_in_chunks_with_the_same_formula(dtype, inplace):
    x = torch.randint(
        0, 256, (11, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    x = x if dtype == torch.uint8 else x.float() / 255
    assert 1 < augment._photometric_chunk(x) < 11  # 2.2 million values: chunks of a few samples
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    y = photometric(
        x.clone(), generator=torch.Generator().manual_seed(5), noise=noise, inplace=inplace, **WIDE
    )
    u = torch.rand(11, 4, 1, 1, 1, generator=torch.Generator().manual_seed(5))
    reference = _photometric_reference(x.float() / 255 if dtype == torch.uint8 else x, u, noise, **WIDE)
    assert y.dtype == torch.float32 and torch.allclose(y, reference, atol=1e-5, rtol=0)
    assert augment._photometric_chunk(x[:, :, :128]) == 11  # small batches: one pass


def test_photometric_leaves_input_and_dtype_alone():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    before = x.clone()
    y = photometric(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, before) and y.dtype == torch.float64 and y.data_ptr() != x.data_ptr()
    off = photometric(x, brightness=0, contrast=0, saturation=0, noise_std=0)
    assert torch.allclose(off, x)


@pytest.mark.parametrize("channels", [3, 1])
def test_photometric_uses_given_noise_without_touching_it(channels):
    x = torch.rand(3, channels, 10, 14)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    before = noise.clone()
    y = photometric(x, generator=torch.Generator().manual_seed(5), noise=noise, **WIDE)
    u = torch.rand(3, 4, 1, 1, 1, generator=torch.Generator().manual_seed(5))  # the uniforms come first
    assert torch.allclose(y, _photometric_reference(x, u, noise, **WIDE), atol=1e-5, rtol=0)
    assert torch.equal(noise, before)
    with pytest.raises(ValueError, match="shape of `images`"):
        photometric(x, noise=noise[:2])


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("given_noise", [False, True])
def test_photometric_in_place_matches_out_of_place(channels, given_noise):
    x = torch.rand(3, channels, 10, 14)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) if given_noise else None
    y = photometric(x, generator=torch.Generator().manual_seed(5), noise=noise, **WIDE)
    z = x.clone()
    out = photometric(z, generator=torch.Generator().manual_seed(5), noise=noise, inplace=True, **WIDE)
    assert out.data_ptr() == z.data_ptr() and torch.allclose(out, y, atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("given_noise", [False, True])
def test_photometric_reads_uint8_as_x_over_255(channels, given_noise):
    x8 = torch.randint(0, 256, (3, channels, 10, 14), dtype=torch.uint8)
    before = x8.clone()
    noise = torch.randn(x8.shape, generator=torch.Generator().manual_seed(1)) if given_noise else None
    y = photometric(x8, generator=torch.Generator().manual_seed(5), noise=noise, inplace=True, **WIDE)
    ref = photometric(x8.float() / 255, generator=torch.Generator().manual_seed(5), noise=noise, **WIDE)
    assert y.dtype == torch.float32 and torch.allclose(y, ref, atol=1e-6, rtol=0)
    assert torch.equal(x8, before)  # a uint8 input is never written, even with inplace=True
    with pytest.raises(TypeError, match="floating point or uint8"):
        photometric(x8.to(torch.int16))


APPEARANCE = {"gamma": 0.3, "channel_gain": 0.2}


def _appearance_reference(x, seed, channels, gamma=0.3, channel_gain=0.2, **ranges):
    """gain_k * x ** e first (uniforms, then the (B, 1 + C) appearance draw), then the usual jitter."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(x.shape[0], 4, 1, 1, 1, generator=g)
    v = torch.rand(x.shape[0], 1 + channels, generator=g)
    noise = torch.randn(x.shape, generator=g)
    e = ((1 + gamma) ** (2 * v[:, :1] - 1))[:, :, None, None]
    gain = (1 + channel_gain * (2 * v[:, 1:] - 1))[:, :, None, None]
    return _photometric_reference(x.pow(e) * gain, u, noise, **ranges)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("ranges", [{}, WIDE])
def test_appearance_jitter_applies_gamma_and_channel_gains_first(channels, ranges):
    x8 = torch.randint(
        0, 256, (5, channels, 9, 13), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    reference = _appearance_reference(x8.float() / 255, 7, channels, **ranges)
    for images in (x8, x8.float() / 255):  # uint8: one table lookup per plane; float: pow and multiply
        y = photometric(images, generator=torch.Generator().manual_seed(7), **APPEARANCE, **ranges)
        assert y.dtype == torch.float32 and torch.allclose(y, reference, atol=1e-5, rtol=0)


def test_appearance_jitter_on_uint8_equals_float_and_in_place_keeps_the_buffer():
    x8 = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    a = photometric(x8, generator=torch.Generator().manual_seed(1), **APPEARANCE, **WIDE)
    x = x8.float() / 255
    b = photometric(x.clone(), generator=torch.Generator().manual_seed(1), **APPEARANCE, **WIDE)
    z = x.clone()
    c = photometric(z, generator=torch.Generator().manual_seed(1), inplace=True, **APPEARANCE, **WIDE)
    assert c.data_ptr() == z.data_ptr() and torch.allclose(a, b, atol=1e-6, rtol=0) and torch.equal(b, c)
    strided = x8.transpose(2, 3)  # not contiguous: the gather path (as on CUDA) instead of OpenCV's lookup
    d = photometric(strided, generator=torch.Generator().manual_seed(1), **APPEARANCE, **WIDE)
    e = photometric(strided.contiguous(), generator=torch.Generator().manual_seed(1), **APPEARANCE, **WIDE)
    assert torch.allclose(d, e, atol=1e-6, rtol=0)


def test_appearance_jitter_off_draws_nothing_and_changes_nothing():
    x = torch.rand(3, 3, 8, 8)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(
        photometric(x, generator=g1), photometric(x, generator=g2, gamma=0.0, channel_gain=0.0)
    )
    assert torch.equal(g1.get_state(), g2.get_state())


def test_appearance_jitter_spans_its_ranges():
    flat = torch.full((4000, 3, 1, 1), 128, dtype=torch.uint8)
    off = {"brightness": 0, "contrast": 0, "saturation": 0, "noise_std": 0}
    y = photometric(flat, generator=torch.Generator().manual_seed(0), channel_gain=0.2, **off)
    ratio = y.flatten(1) / (128 / 255)  # the gains, one per channel and sample
    assert 0.8 - 1e-5 <= ratio.min() < 0.81 and 1.19 < ratio.max() <= 1.2 + 1e-5
    assert abs(float(ratio.mean()) - 1) < 0.01 and float((ratio[:, 0] - ratio[:, 1]).abs().mean()) > 0.1
    y = photometric(flat, generator=torch.Generator().manual_seed(0), gamma=0.5, **off)
    exponent = torch.log(y[:, 0].flatten()) / math.log(128 / 255)  # one exponent for all channels
    assert torch.allclose(y[:, 0], y[:, 2])
    assert 1 / 1.5 - 1e-4 <= exponent.min() < 0.7 and 1.45 < exponent.max() <= 1.5 + 1e-4


@pytest.mark.parametrize("as_uint8", [True, False])
def test_given_appearance_is_applied_exactly_as_a_drawn_one(as_uint8):
    """``appearance=`` takes the place of the drawn exponent and gains, and nothing is drawn for them."""
    x8 = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    images = x8 if as_uint8 else x8.float() / 255
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(6))
    drawn = photometric(images, generator=torch.Generator().manual_seed(3), noise=noise, **APPEARANCE, **WIDE)
    g = torch.Generator().manual_seed(3)
    torch.rand(6, 4, 1, 1, 1, generator=g)  # photometric's own first draw, then the appearance
    exponent, gain = draw_appearance(6, 3, generator=g, **APPEARANCE)
    g1 = torch.Generator().manual_seed(3)
    given = photometric(images, generator=g1, noise=noise, appearance=(exponent, gain), **WIDE)
    assert torch.equal(given, drawn)
    # nothing but the (B, 4) factors was drawn, whatever gamma / channel_gain say
    g2 = torch.Generator().manual_seed(3)
    photometric(images, generator=g2, noise=noise, appearance=(exponent, gain), **APPEARANCE, **WIDE)
    assert torch.equal(g1.get_state(), g2.get_state())
    torch.rand(6, 4, 1, 1, 1, generator=g2.manual_seed(3))
    assert torch.equal(g1.get_state(), g2.get_state())
    # no cast: the plain jitter's values
    ones = (torch.ones(6), torch.ones(6, 3))
    plain = photometric(images, generator=torch.Generator().manual_seed(3), noise=noise, **WIDE)
    cast_free = photometric(
        images, generator=torch.Generator().manual_seed(3), noise=noise, appearance=ones, **WIDE
    )
    assert torch.allclose(cast_free, plain, atol=1e-6, rtol=0)


def test_draw_appearance_is_seeded_and_within_its_ranges():
    e, g = draw_appearance(5000, 3, gamma=0.25, channel_gain=0.15, generator=torch.Generator().manual_seed(0))
    e2, g2 = draw_appearance(
        5000, 3, gamma=0.25, channel_gain=0.15, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(e, e2) and torch.equal(g, g2) and e.shape == (5000,) and g.shape == (5000, 3)
    assert 1 / 1.25 - 1e-6 <= e.min() < 0.81 and 1.24 < e.max() <= 1.25 + 1e-6
    assert 0.85 - 1e-6 <= g.min() < 0.86 and 1.14 < g.max() <= 1.15 + 1e-6
    e0, g0 = draw_appearance(4, 1, gamma=0.0, channel_gain=0.0)
    assert torch.equal(e0, torch.ones(4)) and torch.equal(g0, torch.ones(4, 1))
    with pytest.raises(ValueError, match="`channel_gain` must be"):
        draw_appearance(4, 3, gamma=0.1, channel_gain=1.5)


def test_apply_appearance_is_the_cast_alone_and_refuses_a_misfit():
    x = torch.rand(4, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    exponent, gain = torch.tensor([0.8, 1.0, 1.2, 1.1]), torch.tensor([[1.1, 0.9, 1.0]]).repeat(4, 1)
    y = apply_appearance(x, exponent, gain)
    assert torch.allclose(y, (x ** exponent.view(4, 1, 1, 1) * gain.view(4, 3, 1, 1)).clamp(0, 1))
    assert y.data_ptr() != x.data_ptr() and 0 <= float(y.min()) and float(y.max()) <= 1
    with pytest.raises(ValueError, match=r"`appearance` must be .*\(4, 3\)"):
        apply_appearance(x, exponent, gain[:, :1])
    with pytest.raises(ValueError, match="`appearance`"):
        photometric(x, appearance=(exponent[:2], gain[:2]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"gamma": -0.1}, "`gamma` must be a number >= 0"), ({"channel_gain": 1.0}, r"`channel_gain` must be .*\[0, 1\)"),
     ({"gamma": True}, "`gamma`"), ({"channel_gain": "0.1"}, "`channel_gain`")],
)  # fmt: skip
def test_appearance_jitter_refuses_bad_ranges(kwargs, match):
    with pytest.raises(ValueError, match=match):
        photometric(torch.rand(1, 3, 4, 4), **kwargs)


@pytest.mark.parametrize("n", [1, 7, 8, 1000, (1 << 20) + 13])  # below a draw, a draw, a chunk and a bit
def test_quantized_normal_is_seeded_and_standard_normal_on_256_levels(n):
    out = torch.full((n,), math.nan)
    got = quantized_normal_(out, generator=torch.Generator().manual_seed(0))
    assert got is out and not out.isnan().any()
    again = quantized_normal_(torch.empty(n), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    levels = torch.from_numpy(augment._normal_levels()[0])
    assert torch.isin(out, levels).all()
    assert len(levels.unique()) == 256 and abs(float(levels.double().mean())) < 1e-6
    assert abs(float(levels.double().square().mean()) - 1) < 1e-6 and float(levels.abs().max()) < 2.9
    if n > 1000:  # the distribution: moments and quantiles of N(0, 1), every level about equally likely
        assert abs(float(out.mean())) < 0.005 and abs(float(out.std()) - 1) < 0.005
        for q, z in ((0.025, -1.96), (0.16, -0.994), (0.5, 0.0), (0.84, 0.994), (0.975, 1.96)):
            assert abs(float(out.quantile(q)) - z) < 0.02
        counts = torch.bincount(torch.bucketize(out, levels), minlength=256).float()
        assert counts.min() > 0.9 * n / 256 and counts.max() < 1.1 * n / 256


def test_quantized_normal_falls_back_to_normal_where_it_cannot_look_up():
    for out in (torch.empty(64, dtype=torch.float64), torch.empty(8, 8).t()):
        quantized_normal_(out, generator=torch.Generator().manual_seed(0))
        assert len(out.unique()) == out.numel()  # exact normal draws, not 256 levels
    seeded = [
        quantized_normal_(torch.empty(8, 8).t(), generator=torch.Generator().manual_seed(3)) for _ in range(2)
    ]
    assert torch.equal(*seeded)


def test_noise_window_is_a_seeded_view_of_the_bank():
    bank = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    a = noise_window(bank, (2, 3, 5, 5), generator=torch.Generator().manual_seed(1))
    b = noise_window(bank, (2, 3, 5, 5), generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 3, 5, 5) and torch.equal(a, b)
    assert a.untyped_storage().data_ptr() == bank.untyped_storage().data_ptr()  # no copy
    start = a.storage_offset()
    assert torch.equal(a.flatten(), bank[start : start + 150])
    starts = {
        noise_window(bank, (150,), generator=torch.Generator().manual_seed(s)).storage_offset()
        for s in range(20)
    }
    assert len(starts) > 10 and max(starts) <= 850  # random starts, always inside the bank
    assert torch.equal(noise_window(bank, (1000,)), bank)  # a full-size window is the bank
    with pytest.raises(ValueError, match="holds 1000 values"):
        noise_window(bank, (2, 3, 13, 13))
    with pytest.raises(ValueError, match="contiguous"):
        noise_window(torch.randn(10, 10).t(), (5,))


# ------------------------------------------------------------------------------- OpenCV vs torch spatial path
def _smooth(b, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(b, c, h // 4, w // 4, generator=g), size=(h, w), mode="bilinear")


def _both_paths(params, *tensors, **kwargs):
    fast = apply_spatial(params, *tensors, **kwargs)
    slow = apply_spatial(params, *tensors, backend="torch", **kwargs)
    return fast, slow


@pytest.mark.parametrize("image_padding", ["zeros", "border"])
@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_opencv_path_agrees_with_torch_path(size, image_padding):
    img = _smooth(6, 3, *size)
    labels = (img[:, :1] * 3).long().clamp(max=2)  # 0..2
    soft = img[:, 1:]  # float "masks" keep their values
    probs = (img * 255).round().to(torch.uint8)  # uint8 probabilities, several channels
    params = draw_spatial(6, max_rotation=30, generator=torch.Generator().manual_seed(2))
    tensors = (img, labels, labels.bool(), labels.to(torch.uint8), soft, probs)
    fast, slow = _both_paths(params, *tensors, image_padding=image_padding)
    assert (fast[0] - slow[0]).abs().mean() < 1e-4 and (fast[0] - slow[0]).abs().max() < 1e-2
    for t, a, b in zip(tensors[1:], fast[1:], slow[1:], strict=True):
        assert a.dtype == b.dtype == t.dtype and a.shape == b.shape == t.shape
        assert (a == b).float().mean() > 0.99
    assert set(fast[1].unique().tolist()) <= {0, 1, 2}


def test_uint8_images_round_trip_on_both_paths():
    img = _smooth(4, 3, 32, 32, seed=1)
    u8 = (img * 255).round().to(torch.uint8)
    params = draw_spatial(4, generator=torch.Generator().manual_seed(3))
    fast, slow = _both_paths(params, u8)
    reference = apply_spatial(params, u8.float() / 255)[0]
    for out in (fast[0], slow[0]):
        assert out.dtype == torch.uint8
        assert (out.float() / 255 - reference).abs().max() <= 1.0 / 255 + 1e-6


def _plane_by_plane(x, params, *, linear, replicate=False):
    """Reference: every (H, W) plane warped on its own with cv2.warpAffine."""
    h, w = x.shape[-2:]
    mats = augment._pixel_matrices(params, h, w)
    itp = cv2.INTER_LINEAR if linear else cv2.INTER_NEAREST
    border = cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT
    src = x.contiguous().numpy()
    out = np.empty_like(src)
    for i in range(src.shape[0]):
        for c in range(src.shape[1]):
            out[i, c] = cv2.warpAffine(src[i, c], mats[i], (w, h), flags=itp | cv2.WARP_INVERSE_MAP,
                                       borderMode=border, borderValue=0)  # fmt: skip
    return torch.from_numpy(out)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 9])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("image_padding", ["zeros", "border"])
def test_packed_warps_give_each_plane_its_own_warp(channels, dtype, channels_last, image_padding):
    img = _smooth(5, channels, 24, 40, seed=4)
    img = (img * 255).round().to(torch.uint8) if dtype == torch.uint8 else img
    if channels_last:
        img = img.contiguous(memory_format=torch.channels_last)
    mask = (img > img.float().mean()).to(dtype)  # several mask planes: nearest, zero border
    params = draw_spatial(5, max_rotation=30, generator=torch.Generator().manual_seed(6))
    warped_img, warped_mask = apply_spatial(params, img, mask, image_padding=image_padding)
    reference = _plane_by_plane(img, params, linear=True, replicate=image_padding == "border")
    if dtype == torch.uint8:
        assert torch.equal(warped_img, reference)
    else:  # OpenCV 5's vectorised multi-channel float warp may round one float32 step off its 1-channel path
        assert (warped_img - reference).abs().max() <= 1e-6
    assert torch.equal(warped_mask, _plane_by_plane(mask, params, linear=False))
    assert warped_img.is_contiguous() and warped_mask.is_contiguous() and warped_img.dtype == dtype


def test_rgb_images_are_warped_as_one_four_channel_image_per_sample(monkeypatch):
    img = (_smooth(5, 3, 24, 40) * 255).round().to(torch.uint8)
    params = draw_spatial(5, generator=torch.Generator().manual_seed(1))
    shapes, real = [], augment.cv2.warpAffine
    monkeypatch.setattr(
        augment.cv2, "warpAffine", lambda src, *a, **k: shapes.append(src.shape) or real(src, *a, **k)
    )
    for layout in (torch.contiguous_format, torch.channels_last):
        shapes.clear()
        apply_spatial(params, img.contiguous(memory_format=layout))
        assert shapes == [(24, 40, 4)] * 5  # OpenCV's vectorised 4-channel warp, once per sample


@pytest.mark.parametrize("use_opencv", [True, False])
def test_exact_geometry_flips_and_quarter_turn(use_opencv):
    backend = "auto" if use_opencv else "torch"
    img = torch.rand(2, 3, 16, 16)
    mask = (torch.rand(2, 2, 16, 16) > 0.5).to(torch.uint8)
    flips = SpatialParams(torch.tensor([True, True]), torch.tensor([False, True]), torch.zeros(2))
    w_img, w_mask = apply_spatial(flips, img, mask, backend=backend)
    assert torch.allclose(w_img[0], img[0].flip(-1), atol=1e-5)
    assert torch.equal(w_mask[1], mask[1].flip(-1, -2))
    quarter = SpatialParams(torch.tensor([False]), torch.tensor([False]), torch.tensor([math.pi / 2]))
    w_img, w_mask = apply_spatial(quarter, img[:1], mask[:1], backend=backend)
    # output (i, j) reads input (j, W - 1 - i): rot90 with k = 1
    assert torch.allclose(w_img, img[:1].rot90(1, dims=(-2, -1)), atol=1e-4)
    assert torch.equal(w_mask, mask[:1].rot90(1, dims=(-2, -1)))


@pytest.mark.parametrize("use_opencv", [True, False])
def test_image_padding_zeros_blacks_out_the_corners_border_repeats_the_edge(use_opencv):
    backend = "auto" if use_opencv else "torch"
    img = torch.full((1, 3, 32, 32), 0.5)
    mask = torch.ones(1, 1, 32, 32, dtype=torch.uint8)
    params = SpatialParams(torch.tensor([False]), torch.tensor([False]), torch.tensor([math.radians(45)]))
    zeros, zmask = apply_spatial(params, img, mask, backend=backend)  # the default padding
    border, bmask = apply_spatial(params, img, mask, image_padding="border", backend=backend)
    assert torch.equal(zmask, bmask) and zmask[0, 0, 0, 0] == 0  # masks: background outside either way
    assert torch.equal(zeros[..., 0, 0], torch.zeros(1, 3))  # outside the frame: black, like the mask
    assert torch.allclose(border, img, atol=1e-5)  # a constant image stays constant with repeated edges
    centre = (slice(None), slice(None), slice(12, 20), slice(12, 20))
    assert torch.allclose(zeros[centre], img[centre], atol=1e-5)  # inside, the two agree
    assert zeros[zmask.expand_as(zeros) == 0].mean() < 0.1  # where the mask was cut off, the image is black


def test_apply_spatial_rejects_bad_shapes_and_dtypes():
    params = draw_spatial(2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="images"):
        apply_spatial(params, torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="mask 0"):
        apply_spatial(params, torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 9))
    with pytest.raises(ValueError, match="batch size"):
        apply_spatial(params, torch.rand(3, 1, 8, 8))
    with pytest.raises(TypeError, match="images"):
        apply_spatial(params, torch.zeros(2, 1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="image_padding.*'reflect'"):
        apply_spatial(params, torch.rand(2, 1, 8, 8), image_padding="reflect")
    with pytest.raises(ValueError, match="`backend` must be one of"):
        apply_spatial(params, torch.rand(2, 1, 8, 8), backend="cuda")
    with pytest.raises(ValueError, match="backend='opencv'"):
        apply_spatial(params, torch.rand(2, 1, 8, 8, requires_grad=True), backend="opencv")
    with pytest.raises(ValueError, match="`backend` must be one of"):
        apply_spatial_masks(params, torch.zeros(2, 1, 8, 8), backend="cv2")


def test_tensors_that_require_grad_take_the_differentiable_torch_path():
    img = torch.rand(2, 1, 8, 8, requires_grad=True)
    params = draw_spatial(2, generator=torch.Generator().manual_seed(0))
    (out,) = apply_spatial(params, img)
    out.sum().backward()
    assert img.grad is not None and img.grad.shape == img.shape


@pytest.mark.parametrize("use_opencv", [True, False])
def test_warping_picked_mask_planes_equals_picking_warped_planes(use_opencv):
    """What lets QualityDataModule warp only each sample's chosen snapshot mask, after the image warp."""
    backend = "auto" if use_opencv else "torch"
    g = torch.Generator().manual_seed(4)
    params = draw_spatial(6, max_rotation=30.0, generator=g)
    images = torch.randint(0, 256, (6, 3, 20, 24), dtype=torch.uint8, generator=g)
    planes = torch.randint(0, 256, (6, 5, 20, 24), dtype=torch.uint8, generator=g)
    _, warped = apply_spatial(params, images, planes, backend=backend)
    pick = torch.tensor([0, 4, 2, 2, 1, 3])
    alone = apply_spatial_masks(params, planes[torch.arange(6), pick].unsqueeze(1), backend=backend)
    assert alone.dtype == torch.uint8 and torch.equal(alone, warped[torch.arange(6), pick].unsqueeze(1))
    with pytest.raises(ValueError, match=r"`mask` must be \(B, K, H, W\) with B = 6"):
        apply_spatial_masks(params, planes[:2], backend=backend)

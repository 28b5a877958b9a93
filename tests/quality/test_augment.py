import math

import torch

from qg_lightning.quality.augment import SpatialParams, apply_spatial, draw_spatial, photometric


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

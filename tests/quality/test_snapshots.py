import torch

from qg_lightning.masks import foreground_from_labels, labels_from_logits
from qg_lightning.methods.networks import SegmentationNet
from qg_lightning.quality.snapshots import (
    predict_snapshot_masks,
    predict_snapshot_probs,
    threshold_snapshot_probs,
)


def _net(num_classes: int) -> SegmentationNet:
    torch.manual_seed(0)
    return SegmentationNet("Unet", "resnet18", None, 3, num_classes).eval()


def test_probs_at_half_reproduce_the_hard_binary_mask():
    net = _net(2)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    probs = predict_snapshot_probs(net, images, 2, batch_size=3)
    assert probs.shape == (4, 1, 32, 32) and probs.dtype == torch.uint8
    hard = predict_snapshot_masks(net, images, 2).float()
    soft = threshold_snapshot_probs(probs, torch.full((4,), 0.5))
    # identical up to pixels whose probability rounds to exactly 0.5
    assert (soft == hard).float().mean() > 0.99


def test_threshold_is_monotone_per_sample():
    probs = torch.randint(
        0, 256, (3, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    low = threshold_snapshot_probs(probs, torch.tensor([0.2, 0.5, 0.8]))
    high = threshold_snapshot_probs(probs, torch.tensor([0.3, 0.6, 0.9]))
    assert (high <= low).all()  # a higher threshold never adds foreground
    assert low[0].sum() > low[1].sum() > low[2].sum()
    assert set(low.unique().tolist()) <= {0.0, 1.0}


def test_multiclass_masks_never_overlap_and_follow_argmax_at_half():
    net = _net(4)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    probs = predict_snapshot_probs(net, images, 4)
    assert probs.shape == (2, 3, 32, 32)
    for t in (0.1, 0.5, 0.9):
        masks = threshold_snapshot_probs(probs, torch.full((2,), t))
        assert masks.sum(1).max() <= 1  # one class per pixel
    # where the background is the least likely class, t = 0.5 agrees with the argmax mask
    logits = net(images)
    argmax = foreground_from_labels(labels_from_logits(logits, 4), 4)
    fg_sure = torch.softmax(logits, 1)[:, 0] < 0.2
    masks = threshold_snapshot_probs(probs, torch.full((2,), 0.5))
    assert torch.equal(masks.permute(0, 2, 3, 1)[fg_sure], argmax.permute(0, 2, 3, 1)[fg_sure].float())

import pytest
import torch

from qg_lightning.masks import (
    check_num_classes,
    foreground_from_labels,
    labels_from_foreground,
    labels_from_logits,
    logit_channels,
    probs_from_logits,
)


@pytest.mark.parametrize("bad", [0, 1, 2.0, True, "2"])
def test_check_num_classes_rejects(bad):
    with pytest.raises(ValueError, match="num_classes"):
        check_num_classes(bad)


def test_roundtrip_labels_foreground():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (3, 8, 8), generator=g)
    fg = foreground_from_labels(labels, 4)
    assert fg.shape == (3, 3, 8, 8) and fg.dtype == torch.float32
    assert torch.equal(labels_from_foreground(fg), labels)


def test_logit_helpers_binary_and_multiclass():
    assert logit_channels(2) == 1 and logit_channels(5) == 5
    logits = torch.randn(2, 1, 4, 4)
    assert torch.equal(labels_from_logits(logits, 2), (logits[:, 0] > 0).long())
    assert probs_from_logits(logits, 2).shape == (2, 1, 4, 4)
    mlogits = torch.randn(2, 3, 4, 4)
    probs = probs_from_logits(mlogits, 3)
    assert probs.shape == (2, 2, 4, 4)
    assert torch.equal(labels_from_logits(mlogits, 3), mlogits.argmax(1))


def test_wrong_shapes():
    with pytest.raises(ValueError, match="label map"):
        foreground_from_labels(torch.zeros(2, 1, 4, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="foreground masks"):
        labels_from_foreground(torch.zeros(4, 4))


@pytest.mark.parametrize("num_classes", [2, 4])
def test_foreground_from_labels_dtypes_agree(num_classes):
    labels = torch.randint(0, num_classes, (2, 5, 7), generator=torch.Generator().manual_seed(0))
    ref = foreground_from_labels(labels, num_classes)
    assert ref.dtype == torch.float32
    for source in (labels, labels.to(torch.uint8), labels.to(torch.int32)):
        hot = foreground_from_labels(source, num_classes, dtype=torch.uint8)
        assert hot.dtype == torch.uint8 and torch.equal(hot.float(), ref)
        assert torch.equal(foreground_from_labels(source, num_classes), ref)
    # a non-contiguous uint8 view (the CPU NumPy path) gives the same one-hot masks
    view = labels.to(torch.uint8).transpose(1, 2)
    assert torch.equal(foreground_from_labels(view, num_classes), ref.transpose(2, 3))

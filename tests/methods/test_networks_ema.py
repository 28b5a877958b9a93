import pytest
import torch
from torch import nn

from qg_lightning.methods import EMATeacher, build_segmenter, ema_decay


def test_segmenter_shapes_binary_multiclass_gray():
    net = build_segmenter("Unet", "resnet18", None, in_channels=1, num_classes=2)
    assert net(torch.rand(2, 1, 64, 64)).shape == (2, 1, 64, 64)
    net = build_segmenter("FPN", "resnet18", None, in_channels=3, num_classes=4)
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_unknown_arch_and_encoder():
    with pytest.raises(ValueError, match="Unknown `arch='UNett'`.*unet"):
        build_segmenter("UNett")
    with pytest.raises(ValueError, match="resnet18"):
        build_segmenter("Unet", "resnt18")


def test_bad_input_size_and_channels():
    net = build_segmenter("Unet", "resnet18", None, in_channels=3)
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.rand(1, 3, 50, 64))
    with pytest.raises(ValueError, match="in_channels"):
        net(torch.rand(1, 1, 64, 64))


def test_ema_decay_schedule():
    assert ema_decay(0) == 0.5 and ema_decay(1000) == 0.999 and ema_decay(10**6) == 0.999
    with pytest.raises(ValueError):
        ema_decay(-1)


def test_ema_teacher_update_buffers_and_nonfinite():
    student = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    teacher = EMATeacher(student, decay=0.99, initial_decay=0.5, warmup_steps=10)
    student.train()
    student(torch.randn(4, 1, 8, 8))  # changes BN running stats
    with torch.no_grad():
        student[0].weight.add_(1.0)
    before = teacher.module[0].weight.clone()
    teacher.update(student)
    assert torch.allclose(teacher.module[0].weight, 0.5 * before + 0.5 * student[0].weight)
    assert torch.equal(teacher.module[1].running_mean, student[1].running_mean)
    assert int(teacher.num_updates) == 1
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training
    with torch.no_grad():
        student[0].weight[0, 0, 0, 0] = float("nan")
    snapshot = teacher.module[0].weight.clone()
    with pytest.raises(FloatingPointError, match="0.weight"):
        teacher.update(student)
    assert torch.equal(teacher.module[0].weight, snapshot)
    assert "num_updates" in teacher.state_dict()

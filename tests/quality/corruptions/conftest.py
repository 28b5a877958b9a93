"""Masks shared by the corruption tests: filled ellipses and small batches of varied shapes.

The fixtures hand out the drawing functions (sizes differ from test to test), as ``run_script`` does in
``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
import torch


def _ellipse(size: int, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0) -> torch.Tensor:
    """Float mask (H, W) of a filled ellipse given in fractions of the side."""
    m = np.zeros((size, size), np.uint8)
    centre = (round(cx * size), round(cy * size))
    cv2.ellipse(m, centre, (max(1, round(rx * size)), max(1, round(ry * size))), angle, 0, 360, 1, -1)
    return torch.from_numpy(m).float()


def _batch(size: int = 48) -> torch.Tensor:
    """(4, 1, S, S): a disk, a tilted ellipse, two blobs (two components), an irregular star-like shape."""
    star = np.zeros((size, size), np.uint8)
    t = np.linspace(0, 2 * np.pi, 9)[:-1]
    r = np.where(np.arange(8) % 2 == 0, 0.35, 0.18) * size
    pts = np.stack([size / 2 + r * np.cos(t), size / 2 + r * np.sin(t)], 1).astype(np.int32)
    cv2.fillPoly(star, [pts], 1)
    two = _ellipse(size, 0.3, 0.3, 0.12, 0.12) + _ellipse(size, 0.7, 0.65, 0.18, 0.15)
    masks = [
        _ellipse(size, 0.5, 0.5, 0.25, 0.25),
        _ellipse(size, 0.45, 0.55, 0.15, 0.3, angle=30),
        two.clamp(max=1),
        torch.from_numpy(star).float(),
    ]
    return torch.stack(masks).unsqueeze(1)


def _multiclass(size: int = 48) -> torch.Tensor:
    """(2, 2, S, S) mutually exclusive two-class masks."""
    a = _ellipse(size, 0.5, 0.4, 0.25, 0.2)
    b = _ellipse(size, 0.5, 0.65, 0.2, 0.2) * (1 - a)
    first = torch.stack([a, b])
    second = torch.stack([_ellipse(size, 0.3, 0.3, 0.15, 0.15), _ellipse(size, 0.7, 0.7, 0.15, 0.15)])
    return torch.stack([first, second])


@pytest.fixture
def ellipse() -> Callable[..., torch.Tensor]:
    """:func:`_ellipse`: ``ellipse(size, cy, cx, ry, rx, angle=0.0)``, a float (H, W) filled ellipse."""
    return _ellipse


@pytest.fixture
def mask_batch() -> Callable[..., torch.Tensor]:
    """:func:`_batch`: ``mask_batch(size=48)``, four binary masks (4, 1, S, S) of different shapes."""
    return _batch


@pytest.fixture
def multiclass_batch() -> Callable[..., torch.Tensor]:
    """:func:`_multiclass`: ``multiclass_batch(size=48)``, two exclusive two-class masks (2, 2, S, S)."""
    return _multiclass

from __future__ import annotations

import torch

from qg_lightning.guidance.visualize import quality_grid, weight_colors


def test_weight_colors_red_to_green_and_nan_grey() -> None:
    colors = weight_colors(torch.tensor([0.0, 1.0, float("nan")]))
    assert colors[0, 0] > colors[0, 1] and colors[1, 1] > colors[1, 0]
    torch.testing.assert_close(colors[2], torch.full((3,), 0.5))


def test_quality_grid_shape_range_and_colours() -> None:
    images = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(3, 2, 16, 16)
    masks[:, 0, 4:12, 4:12] = 1
    weights, quality = torch.tensor([0.0, 0.5, 1.0]), torch.tensor([0.3, 0.7, 1.0])
    grid = quality_grid(images, masks, weights, quality, nrow=3, frame=2)
    assert grid.shape == (3, 16 + 4 + 4, 3 * (16 + 4) + 4 * 2)
    assert grid.min() >= 0 and grid.max() <= 1
    # first tile: frame pixel has the quality colour, outline pixel the weight colour
    torch.testing.assert_close(grid[:, 2, 2], weight_colors(quality[:1])[0])
    torch.testing.assert_close(grid[:, 2 + 2 + 4, 2 + 2 + 4], weight_colors(weights[:1])[0])

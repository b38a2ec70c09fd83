"""PNG grids: layout and where the mask is drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.generation import sample_grid
from medgen.metrics.images import side_by_side, titled, to_uint8, to_uint8_hwc


def test_grid_layout_and_mask_overlay_position():
    images = torch.full((6, 2, 8, 8), -1.0)  # two channels, e.g. dual mode
    masks = torch.zeros(6, 1, 8, 8, dtype=torch.uint8)
    masks[0, 0, 2, 5] = 1
    grid = np.asarray(sample_grid(images, masks, ncols=4, tile_px=16, gap=4))
    # cell = 3 tiles of 16 px + 2 gaps of 2; row = 4 cells + 3 gaps of 8; 2 rows + 1 gap of 8
    assert grid.shape == (16 * 2 + 8, (3 * 16 + 2 * 2) * 4 + 3 * 8, 3)
    red = (grid[..., 0] > 150) & (grid[..., 1] < 100)
    rows, cols = np.nonzero(red)
    # the mask tile is the third tile of the first cell: x offset 2 * (16 + 2), pixel (2, 5) at 2x
    assert rows.min() == 2 * 2 and cols.min() == 2 * 18 + 5 * 2 and red.sum() == 4


def test_masks_only_grid_is_white_on_black():
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    masks[1, 0, 0, 0] = 1
    grid = np.asarray(sample_grid(None, masks, ncols=2, tile_px=4, gap=2))
    assert grid.shape == (4, 4 + 4 + 4, 3)
    assert (grid[0, 8] == 255).all() and (grid[0, 0] == 0).all()


def test_titled_and_side_by_side_sizes():
    grid = sample_grid(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), tile_px=4)
    labelled = titled(grid, "generated")
    assert labelled.width == grid.width and labelled.height > grid.height
    both = side_by_side(labelled, grid, gap=10)
    assert both.size == (labelled.width + 10 + grid.width, labelled.height)


def test_intensity_mapping_and_shape_checks():
    assert to_uint8(torch.tensor([-2.0, -1.0, 0.0, 1.0])).tolist() == [0, 0, 128, 255]
    # one mapping for figures and for the metrics' 8-bit images (clean-fid)
    images = torch.linspace(-1.5, 1.5, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert (to_uint8_hwc(images) == to_uint8(images).transpose(0, 2, 3, 1)).all()
    with pytest.raises(ValueError, match="disagree"):
        sample_grid(torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4))

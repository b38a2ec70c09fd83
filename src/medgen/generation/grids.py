"""PNG grids of slices and masks (PIL images, saved by the catalog's pillow datasets).

Every sample is one cell: a grey tile per image channel, then its mask drawn in red on
the first channel (or white on black when there is no image, e.g. generated masks), so a
glance shows whether the lesion in the image sits where its mask says. Tiles, panels and
captions come from `medgen.metrics.images`, shared with the other packages' figures.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from medgen.metrics.images import stack, tile, to_uint8

MASK_RGB = np.array([255, 40, 40], dtype=np.float32)


def mask_overlay(gray: np.ndarray | None, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """RGB ``[H, W, 3]``: ``gray`` with the mask blended in red (white mask on black if no image)."""
    mask = mask.astype(bool)
    if gray is None:
        return np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
    rgb = np.repeat(gray[..., None].astype(np.float32), 3, axis=2)
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * MASK_RGB
    return rgb.round().astype(np.uint8)


def sample_grid(
    images: torch.Tensor | None,
    masks: torch.Tensor,
    ncols: int = 4,
    tile_px: int = 96,
    gap: int = 4,
) -> Image.Image:
    """Grid of ``ncols`` samples per row; each sample = its image channels + mask overlay.

    Args:
        images: ``[N, C, H, W]`` in [-1, 1], or None to draw masks only.
        masks: ``[N, 1, H, W]``, non-zero = lesion.
        tile_px: each tile is upscaled (nearest) by the integer factor closest to this size.
    """
    n, _, height, width = masks.shape
    if images is not None and (images.shape[0] != n or images.shape[2:] != masks.shape[2:]):
        raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} disagree")
    if n == 0:
        raise ValueError("nothing to draw: zero samples")
    scale = max(1, round(tile_px / max(height, width)))
    gray = to_uint8(images) if images is not None else None
    mask_np = masks.detach().cpu().numpy()[:, 0] > 0
    cells = []
    for i in range(n):
        tiles = [] if gray is None else [tile(channel, scale) for channel in gray[i]]
        tiles.append(tile(mask_overlay(None if gray is None else gray[i, 0], mask_np[i]), scale))
        cells.append(stack(tiles, gap // 2, axis=1))
    ncols = max(1, min(ncols, n))
    rows = [stack(cells[r : r + ncols], gap * 2, axis=1) for r in range(0, n, ncols)]
    return Image.fromarray(stack(rows, gap * 2, axis=0))

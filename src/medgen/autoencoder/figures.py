"""PNG figures of the autoencoder pipeline: reconstructions next to their inputs, and
generated volumes as three orthogonal central slices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from medgen.generation.grids import stack, tile, titled, to_uint8


def orthogonal_views(volume: torch.Tensor) -> list[np.ndarray]:
    """Axial, coronal and sagittal central slices of a ``[X, Y, Z]`` RAS volume in [-1, 1], as
    uint8 images in radiological display orientation (anterior / superior at the top)."""
    if volume.ndim != 3:
        raise ValueError(f"expected one [X, Y, Z] volume, got shape {tuple(volume.shape)}")
    array = to_uint8(volume)
    x, y, z = (s // 2 for s in array.shape)
    return [
        np.flipud(array[:, :, z].T),  # axial: rows posterior→anterior flipped, columns x
        np.flipud(array[:, y, :].T),  # coronal: superior at the top
        np.flipud(array[x, :, :].T),  # sagittal: superior at the top
    ]


def volume_grid(
    volumes: torch.Tensor, captions: Sequence[str] | None = None, tile_px: int = 96, gap: int = 4
) -> Image.Image:
    """One row per volume ``[N, C, X, Y, Z]``: the three orthogonal views of channel 0."""
    if volumes.ndim != 5 or len(volumes) == 0:
        raise ValueError(f"expected [N, C, X, Y, Z] volumes, got shape {tuple(volumes.shape)}")
    scale = max(1, round(tile_px / max(volumes.shape[2:])))
    rows = []
    for i, volume in enumerate(volumes):
        row = Image.fromarray(stack([tile(v, scale) for v in orthogonal_views(volume[0])], gap, 1))
        rows.append(np.asarray(titled(row, captions[i]) if captions else row))
    return Image.fromarray(stack(rows, gap * 2, axis=0))


def reconstruction_grid(
    originals: torch.Tensor, reconstructions: torch.Tensor, ncols: int = 8, tile_px: int = 96
) -> Image.Image:
    """Originals (top) above their reconstructions (bottom), channel 0 of ``[N, C, H, W]``."""
    if originals.shape != reconstructions.shape or originals.ndim != 4:
        raise ValueError(
            f"originals {tuple(originals.shape)} and reconstructions "
            f"{tuple(reconstructions.shape)} must be equal [N, C, H, W] shapes"
        )
    n = min(ncols, len(originals))
    scale = max(1, round(tile_px / max(originals.shape[2:])))
    rows = [
        stack([tile(image, scale) for image in to_uint8(batch[:n, 0])], 4, axis=1)
        for batch in (originals, reconstructions)
    ]
    return Image.fromarray(stack(rows, 8, axis=0))

"""PNG figures of volumes and reconstructions: validation inputs next to their
reconstructions, and volumes (real or generated) as three orthogonal central slices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from medgen.autoencoder.latents import select_channels
from medgen.datasets import TensorBundle
from medgen.metrics.images import side_by_side, stack, tile, titled, to_uint8


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


@torch.no_grad()
def reconstruction_figure(
    autoencoder: Any,
    val: TensorBundle,
    *,
    per_channel: bool,
    modalities: list[str] | None = None,
    n: int = 8,
) -> Image.Image:
    """Validation inputs above their posterior-mean reconstructions (first channel; 3D:
    orthogonal views of the first volumes). ``modalities``: the autoencoder's input channels."""
    images = select_channels(val, modalities)[0][:n]
    if per_channel:
        images = images[:, :1]
    recon = autoencoder.decode(autoencoder.encode(images)).clamp(-1, 1)
    if images.ndim == 5:
        count = min(2, len(images))
        return side_by_side(
            titled(volume_grid(images[:count]), "validation volumes"),
            titled(volume_grid(recon[:count]), "reconstructions"),
        )
    return titled(
        reconstruction_grid(images, recon), "validation slices (top), reconstructions (bottom)"
    )

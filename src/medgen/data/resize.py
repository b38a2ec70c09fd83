"""Resizing ``[N, C, *spatial]`` tensors (2D or 3D): one place for the filter each kind of data needs.

* Intensities (`resize_images`): antialiased bilinear in 2D, because a plain bilinear
  downsample aliases the thin cortex into stripes; trilinear in 3D, where torch has no
  antialiased filter.
* Label maps (`resize_labels`): nearest-exact, so every pixel keeps one of the original
  label values.
* Binary masks that are compared with resized images (`resize_binary_masks`, evaluation):
  area average, then > 0.5. Nearest keeps or drops a lesion pixel by its position alone;
  the area rule keeps a downsampled lesion's area about right, which the mask metrics
  (lesion area fraction, Dice) measure.

Each returns its input unchanged when it already has the size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _same_size(x: torch.Tensor, size: Sequence[int]) -> bool:
    return tuple(x.shape[2:]) == tuple(size)


def resize_images(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Intensities at ``size`` as float32 (antialiased bilinear in 2D, trilinear in 3D)."""
    size = tuple(int(s) for s in size)
    if _same_size(images, size):
        return images
    if len(size) == 2:
        return F.interpolate(
            images.float(), size=size, mode="bilinear", align_corners=False, antialias=True
        )
    return F.interpolate(images.float(), size=size, mode="trilinear", align_corners=False)


def resize_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Label maps at ``size`` (nearest-exact), in their own dtype."""
    size = tuple(int(s) for s in size)
    if _same_size(labels, size):
        return labels
    return F.interpolate(labels.float(), size=size, mode="nearest-exact").to(labels.dtype)


def resize_binary_masks(masks: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``masks > 0`` as float {0, 1} at ``size``: area average, then > 0.5."""
    binary = (masks > 0).float()
    size = tuple(int(s) for s in size)
    if _same_size(binary, size):
        return binary
    return (F.interpolate(binary, size=size, mode="area") > 0.5).float()

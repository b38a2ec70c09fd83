"""Conversions between medgen's image convention and what metric libraries expect.

medgen images are float arrays/tensors shaped [N, C, H, W] with intensities in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def as_tensor(images: ArrayLike, ndim: int | None = 4) -> torch.Tensor:
    """Float32 CPU tensor, checking the number of dimensions and finiteness."""
    tensor = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    tensor = tensor.detach().to(device="cpu", dtype=torch.float32)
    if ndim is not None and tensor.ndim != ndim:
        raise ValueError(f"expected a {ndim}D array, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError("images contain NaN or Inf values")
    return tensor


def as_tensor_pair(images_a: ArrayLike, images_b: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Two equally shaped [N, C, H, W] or [N, C, D, H, W] tensors (see :func:`as_tensor`)."""
    a, b = as_tensor(images_a, ndim=None), as_tensor(images_b, ndim=None)
    if a.shape != b.shape:
        raise ValueError(
            f"paired images must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.ndim not in (4, 5):
        raise ValueError(f"expected [N, C, H, W] or [N, C, D, H, W], got shape {tuple(a.shape)}")
    return a, b


def to_uint8_hwc(images: ArrayLike) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C] in [0, 255].

    The mapping is round((x + 1) * 127.5) after clipping to [-1, 1], i.e. exactly
    what saving the image as an 8-bit PNG would store. clean-fid is defined on
    8-bit images (it reads PNG/JPEG files), so quantising here makes the
    in-memory path give the same features as ``cleanfid.fid.compute_fid`` on a
    folder of PNGs written from the same arrays.
    """
    tensor = as_tensor(images)
    scaled = torch.round((tensor.clamp(-1.0, 1.0) + 1.0) * 127.5)
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def grayscale_channel_groups(images: torch.Tensor) -> list[torch.Tensor]:
    """Split [N, C, H, W] into the 1- or 3-channel images a 2D backbone can read.

    C == 3 is taken as RGB. Any other C (1 for one MRI sequence, 2 for a paired
    T1 pre/post-contrast slice) is split into C grayscale images [N, 1, H, W]:
    MRI channels are different sequences, not colours, so each is scored on its
    own and callers average over channels.
    """
    if images.shape[1] == 3:
        return [images]
    return [images[:, c : c + 1] for c in range(images.shape[1])]


def to_three_channels(images: torch.Tensor) -> torch.Tensor:
    """Repeat a single grayscale channel to the three input channels ImageNet nets expect."""
    if images.shape[1] == 1:
        return images.repeat(1, 3, 1, 1)
    if images.shape[1] == 3:
        return images
    raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]}")

"""Tiny slice bundles in the format of data_processing's ``slices_2d_{split}``."""

from __future__ import annotations

import torch

from medgen.datasets import TensorBundle

MODALITIES = ["t1_pre", "t1_gd", "flair", "bravo"]


def synthetic_slices(
    n: int = 12, size: int = 32, seed: int = 0, spacing_mm: float = 6.0
) -> TensorBundle:
    """An elliptic 'brain' per slice; every other slice has a square lesion (labels 1-3)."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = (size - 1) / 2
    brain = ((rows - centre) / (0.42 * size)) ** 2 + ((cols - centre) / (0.34 * size)) ** 2 <= 1
    seg = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    for i in range(0, n, 2):
        r, c = torch.randint(size // 3, 2 * size // 3, (2,), generator=g).tolist()
        seg[i, 0, r : r + 3, c : c + 3] = 2
        seg[i, 0, r + 1, c + 1] = 3
    images = torch.full((n, len(MODALITIES), size, size), -1.0)
    images[:, :, brain] = 0.1 * torch.randn(n, len(MODALITIES), int(brain.sum()), generator=g)
    images = torch.where(seg > 0, 0.9, images).clamp(-1, 1)
    tensors = {
        "images": images,
        "seg": seg,
        "tissue": (brain.to(torch.uint8) * 2).expand(n, 1, size, size).clone(),
        "subject_index": torch.arange(n) // 4,
        "slice_index": torch.arange(n) % 4,
    }
    metadata = {
        "modalities": list(MODALITIES),
        "size": size,
        "pixel_spacing_mm": spacing_mm,
        "orientation": "axial; rows anterior->posterior, columns left->right",
        "intensity_range": [-1.0, 1.0],
    }
    return TensorBundle(tensors, metadata)

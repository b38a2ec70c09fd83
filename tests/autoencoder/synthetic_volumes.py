"""Tiny volume bundles in the format of data_processing's ``volumes_3d_{split}``."""

from __future__ import annotations

import torch

from medgen.datasets import TensorBundle

MODALITIES = ["t1_pre", "t1_gd", "flair", "bravo"]


def synthetic_volumes(n: int = 4, shape=(16, 16, 16), seed: int = 0) -> TensorBundle:
    """An ellipsoid 'brain' per volume; odd volumes hold a cubic lesion (lesion_present 1)."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape), indexing="ij")
    brain = sum(((a - (s - 1) / 2) / (0.4 * s)) ** 2 for a, s in zip(axes, shape, strict=True)) <= 1
    images = torch.full((n, len(MODALITIES), *shape), -1.0)
    images[:, :, brain] = 0.1 * torch.randn(n, len(MODALITIES), int(brain.sum()), generator=g)
    seg = torch.zeros(n, 1, *shape, dtype=torch.uint8)
    for i in range(1, n, 2):
        x, y, z = torch.randint(shape[0] // 3, shape[0] // 2, (3,), generator=g).tolist()
        seg[i, 0, x : x + 3, y : y + 3, z : z + 3] = 3
    images = torch.where(seg > 0, 0.9, images).clamp(-1, 1)
    return TensorBundle(
        {
            "images": images,
            "seg": seg,
            "lesion_present": (seg.flatten(1).amax(1) > 0).to(torch.int64),
            "subject_index": torch.arange(n),
        },
        {
            "modalities": list(MODALITIES),
            "size": list(shape),
            "voxel_spacing_mm": [3.0, 3.0, 3.0],
            "orientation": "RAS voxel order [x, y, z]",
            "intensity_range": [-1.0, 1.0],
            "split": "synthetic",
        },
    )

"""Random patches of training volumes, the data of the patch-volume autoencoder's stage 1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class RandomPatchDataset(Dataset):
    """Random crops of ``patch_size`` from volumes ``[N, C, *S]``: ``crops_per_volume * N`` items.

    Item ``i`` is a crop of volume ``i % N`` at a corner drawn from NumPy's generator seeded
    with ``[seed, i]``: the same index always gives the same crop, so an exactly resumed run sees
    exactly the same data, and nothing depends on the global RNG or on worker processes.
    """

    def __init__(
        self,
        images: torch.Tensor,
        patch_size: Sequence[int],
        crops_per_volume: int = 16,
        seed: int = 0,
    ) -> None:
        size = tuple(images.shape[2:])
        if len(patch_size) != len(size) or any(
            p > s for p, s in zip(patch_size, size, strict=True)
        ):
            raise ValueError(
                f"patch_size {tuple(patch_size)} does not fit in volumes of size {size}"
            )
        self.images, self.patch_size = images, tuple(patch_size)
        self.crops_per_volume, self.seed = crops_per_volume, seed

    def __len__(self) -> int:
        return self.images.shape[0] * self.crops_per_volume

    def __getitem__(self, index: int) -> torch.Tensor:
        volume = self.images[index % self.images.shape[0]]
        # SeedSequence mixes (seed, index) into independent streams; torch's 64-bit seeds
        # would not (the Mersenne Twister keeps only 32 bits of them).
        rng = np.random.default_rng([self.seed, index])
        corner = [
            int(rng.integers(0, s - p + 1))
            for s, p in zip(volume.shape[1:], self.patch_size, strict=True)
        ]
        return volume[
            (slice(None), *(slice(c, c + p) for c, p in zip(corner, self.patch_size, strict=True)))
        ]

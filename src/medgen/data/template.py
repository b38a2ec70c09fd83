"""The MNI152 2009 brain template and tissue maps that ship inside nilearn (no download)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from nilearn import datasets as nilearn_datasets


@dataclass(frozen=True)
class BrainTemplate:
    """T1 intensities in [0, 1], grey/white-matter probabilities, a brain mask, the affine."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    affine: np.ndarray

    @property
    def csf(self) -> np.ndarray:
        """CSF probability: what is brain but neither grey nor white matter."""
        return np.clip(self.brain - self.gm - self.wm, 0.0, 1.0)

    @property
    def voxel_size_mm(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


@lru_cache(maxsize=2)
def load_brain_template(resolution_mm: int = 2) -> BrainTemplate:
    """Load the MNI152 2009 template at 1 or 2 mm, the two resolutions nilearn ships."""
    if resolution_mm not in (1, 2):
        raise ValueError(f"nilearn ships the MNI152 template at 1 or 2 mm, not {resolution_mm} mm")
    t1_img = nilearn_datasets.load_mni152_template(resolution=resolution_mm)

    def voxels(img) -> np.ndarray:
        return np.clip(np.asarray(img.get_fdata(), dtype=np.float32), 0.0, 1.0)

    return BrainTemplate(
        t1=voxels(t1_img),
        gm=voxels(nilearn_datasets.load_mni152_gm_template(resolution=resolution_mm)),
        wm=voxels(nilearn_datasets.load_mni152_wm_template(resolution=resolution_mm)),
        brain=voxels(nilearn_datasets.load_mni152_brain_mask(resolution=resolution_mm)),
        affine=np.asarray(t1_img.affine, dtype=np.float64),
    )

"""Shared fixtures: tiny NIfTI subjects written to temporary folders."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHAPE = (20, 24, 18)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def tiny_subject_images(seed: int = 0, shape=SHAPE, affine=AFFINE) -> dict[str, nib.Nifti1Image]:
    """A small but valid subject: four modalities, a lesion label map, tissue, one mask."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    centre = np.array(shape)[:, None, None, None] / 2
    brain = (((grid - centre) / (np.array(shape)[:, None, None, None] / 2.5)) ** 2).sum(0) <= 1
    images = {}
    for k, name in enumerate(("t1_pre", "t1_gd", "flair", "bravo")):
        data = (brain * (500 + 100 * k) + rng.normal(0, 10, shape)).astype(np.float32)
        images[name] = nib.Nifti1Image(data, affine)
    seg = np.zeros(shape, np.uint8)
    seg[8:11, 10:13, 7:10] = 3
    seg[9, 11, 8] = 1
    images["seg"] = nib.Nifti1Image(seg, affine)
    images["tissue"] = nib.Nifti1Image((brain * 2).astype(np.uint8), affine)
    mask = np.zeros(shape, np.uint8)
    mask[4:7, 5:8, 4:7] = 1
    images["mask-0000"] = nib.Nifti1Image(mask, affine)
    return images


def write_subject(root: Path, subject: str, images: dict[str, nib.Nifti1Image]) -> Path:
    folder = root / subject
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, image in images.items():
        nib.save(image, folder / f"{subject}-{suffix}.nii.gz")
    return folder


@pytest.fixture
def tiny_cohort(tmp_path: Path) -> Path:
    """Three valid subjects in BraTS layout under tmp_path/cohort."""
    root = tmp_path / "cohort"
    for index in range(3):
        write_subject(root, f"SUBJ-{index:05d}-000", tiny_subject_images(seed=index))
    return root

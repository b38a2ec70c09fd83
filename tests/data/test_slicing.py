from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medgen.data.slicing import (
    SliceConfig,
    VolumeConfig,
    axial_plane,
    extract_slices,
    extract_volumes,
    load_volumes,
)
from medgen.datasets import SubjectFolderDataset
from tests.conftest import write_subject

SHAPE = (12, 16, 10)


def _cohort(tmp_path: Path) -> dict:
    """Preprocessed-style subjects: images in [-1, 1], tissue marks slices z=3..6 only."""
    root = tmp_path / "pre"
    for index in range(2):
        images = {}
        for k, m in enumerate(("t1_pre", "flair")):
            data = np.full(SHAPE, -1.0, np.float32)
            data[:, :, 3:7] = 0.1 * (k + 1) + 0.01 * index
            images[m] = nib.Nifti1Image(data, np.eye(4))
        tissue = np.zeros(SHAPE, np.uint8)
        tissue[:, :, 3:7] = 3
        seg = np.zeros(SHAPE, np.uint8)
        seg[2:5, 4:8, 4:6] = 3
        images["tissue"] = nib.Nifti1Image(tissue, np.eye(4))
        images["seg"] = nib.Nifti1Image(seg, np.eye(4))
        write_subject(root, f"S-{index}", images)
    return SubjectFolderDataset(path=str(root)).load()


def test_axial_plane_orientation():
    volume = np.zeros((3, 4, 2))
    volume[0, 3, 1] = 1  # left-most x, most anterior y, slice z=1
    plane = axial_plane(volume)
    assert plane.shape == (2, 4, 3)
    assert plane[1, 0, 0] == 1  # top row (anterior), first column (left)


def test_slices_keep_only_brain_and_resize(tmp_path: Path):
    records = _cohort(tmp_path)
    loaded = load_volumes(records, ["S-0", "S-1"], ["t1_pre", "flair"])
    bundle = extract_slices(
        loaded, SliceConfig(modalities=("t1_pre", "flair"), size=8, min_brain_fraction=0.5), "train"
    )
    assert bundle["images"].shape == (8, 2, 8, 8)  # 4 brain slices x 2 subjects
    assert bundle["slice_index"].tolist() == [3, 4, 5, 6, 3, 4, 5, 6]
    assert bundle["subject_index"].tolist() == [0] * 4 + [1] * 4
    assert bundle["seg"].dtype == torch.uint8
    assert set(bundle["seg"].unique().tolist()) == {0, 3}
    assert bundle["seg"][1].sum() > 0 and bundle["seg"][0].sum() == 0  # lesion only on z=4..5
    # 16x12 in-plane is padded with background to 16x16 before resizing: rows stay
    # uniform, the centre keeps the tissue value and the padded border is background
    image = bundle["images"][0, 0]
    assert torch.allclose(image[:, 3:5], torch.full((8, 2), 0.1), atol=1e-5)
    assert (image[:, 0] < -0.5).all() and (image[:, 7] < -0.5).all()
    assert bundle.metadata["subjects"] == ["S-0", "S-1"]
    assert bundle.metadata["modalities"] == ["t1_pre", "flair"]
    assert bundle.metadata["pixel_spacing_mm"] == 2.0  # 16 voxels of 1 mm shown in 8 pixels


def test_volumes_and_lesion_label(tmp_path: Path):
    records = _cohort(tmp_path)
    bundle = extract_volumes(
        load_volumes(records, ["S-1"], ["t1_pre"]),
        VolumeConfig(modalities=("t1_pre",), size=(6, 8, 5)),
        "val",
    )
    assert bundle["images"].shape == (1, 1, 6, 8, 5)
    assert bundle["seg"].shape == (1, 1, 6, 8, 5)
    assert bundle["lesion_present"].tolist() == [1]
    assert bundle["subject_index"].tolist() == [0]
    # 12x16x10 voxels of 1 mm resized to 6x8x5: 2 mm voxels (what generated NIfTIs use)
    assert bundle.metadata["voxel_spacing_mm"] == [2.0, 2.0, 2.0]
    assert bundle["images"].min() >= -1 and bundle["images"].max() <= 1

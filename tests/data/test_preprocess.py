from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgen.data.preprocess import (
    PreprocessConfig,
    percentile_bounds,
    preprocess_subject,
    scale_to_unit_range,
)
from medgen.data.validation import ValidationRules
from medgen.datasets import SubjectFolderDataset
from tests.conftest import AFFINE, tiny_subject_images, write_subject

CONFIG = PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), spatial_size=(24, 24, 20))


def _record(root: Path, images) -> object:
    write_subject(root, "S-00001-000", images)
    return SubjectFolderDataset(path=str(root)).load()["S-00001-000"]


def _to_lps(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """Same world-space image stored with x and y flipped (LPS voxel order)."""
    data = np.asarray(image.dataobj)[::-1, ::-1, :]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = image.shape[0] - 1
    flip[1, 3] = image.shape[1] - 1
    return nib.Nifti1Image(np.ascontiguousarray(data), image.affine @ flip)


def test_lps_input_gives_the_same_ras_output(tmp_path: Path):
    images = tiny_subject_images()
    ras = preprocess_subject(_record(tmp_path / "ras", images), ValidationRules(), CONFIG)
    lps = preprocess_subject(
        _record(tmp_path / "lps", {k: _to_lps(v) for k, v in images.items()}),
        ValidationRules(),
        CONFIG,
    )
    assert nib.aff2axcodes(lps.images["t1_pre"].affine) == ("R", "A", "S")
    for suffix in images:
        np.testing.assert_allclose(lps.images[suffix].affine, ras.images[suffix].affine, atol=1e-5)
        np.testing.assert_allclose(
            lps.images[suffix].get_fdata(), ras.images[suffix].get_fdata(), atol=1e-4
        )


def test_geometry_intensities_and_labels(tmp_path: Path):
    images = tiny_subject_images()
    out = preprocess_subject(_record(tmp_path, images), ValidationRules(), CONFIG)
    for suffix, image in out.images.items():
        assert image.shape == CONFIG.spatial_size, suffix
        np.testing.assert_allclose(image.header.get_zooms()[:3], CONFIG.spacing_mm)
    for modality in ("t1_pre", "t1_gd", "flair", "bravo"):
        data = out.images[modality].get_fdata()
        assert data.min() >= -1.0 - 1e-4 and data.max() <= 1.0 + 1e-4
        assert data.max() > 0.9 and data.min() < -0.9
    # label maps: nearest neighbour, same values and voxel counts (the grid is unchanged here)
    for suffix in ("seg", "tissue", "mask-0000"):
        before = np.asarray(images[suffix].dataobj)
        after = np.asarray(out.images[suffix].dataobj)
        assert after.dtype == np.uint8
        assert sorted(np.unique(after)) == sorted(np.unique(before))
        for value in np.unique(before):
            assert (after == value).sum() == (before == value).sum() or value == 0


def test_resampling_to_coarser_spacing(tmp_path: Path):
    fine = {
        k: nib.Nifti1Image(np.asarray(v.dataobj), np.diag([1.0, 1.0, 1.0, 1.0]))
        for k, v in tiny_subject_images().items()
    }
    config = PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), spatial_size=(12, 12, 10))
    out = preprocess_subject(_record(tmp_path, fine), ValidationRules(), config)
    np.testing.assert_allclose(out.images["t1_pre"].header.get_zooms()[:3], (2.0, 2.0, 2.0))
    assert out.images["seg"].shape == (12, 12, 10)


def test_voided_image_is_scaled_like_its_source(tmp_path: Path):
    images = tiny_subject_images()
    source = np.asarray(images["t1_pre"].dataobj)
    mask = np.asarray(images["mask-0000"].dataobj) > 0
    images["t1n"] = images["t1_pre"]
    images["t1n-voided-0000"] = nib.Nifti1Image(
        np.where(mask, 0, source).astype(np.float32), AFFINE
    )
    out = preprocess_subject(_record(tmp_path, images), ValidationRules(), CONFIG)
    full = out.images["t1n"].get_fdata()
    voided = out.images["t1n-voided-0000"].get_fdata()
    out_mask = np.asarray(out.images["mask-0000"].dataobj) > 0
    np.testing.assert_allclose(voided[~out_mask], full[~out_mask], atol=1e-3)


def test_percentile_scaling_closed_form():
    volume = np.arange(101, dtype=np.float32)
    bounds = percentile_bounds(volume, (10, 90))
    assert bounds == (10.0, 90.0)
    np.testing.assert_allclose(
        scale_to_unit_range(np.array([10.0, 50.0, 90.0, 200.0]), bounds), [-1, 0, 1, 1]
    )
    with pytest.raises(ValueError, match="constant image"):
        percentile_bounds(np.ones(10), (1, 99))


def test_bad_parameters():
    with pytest.raises(ValueError, match="Unknown preprocessing"):
        PreprocessConfig.from_params({"spacing": [1, 1, 1]})
    with pytest.raises(ValueError, match="percentiles"):
        PreprocessConfig.from_params({"percentiles": [99, 1]})

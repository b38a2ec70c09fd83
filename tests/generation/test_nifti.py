"""A generated 2D slice written as NIfTI lands where it belongs in RAS world space."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.datasets import NiftiDataset
from medgen.generation import nifti_to_slice, slice_affine, slice_to_nifti


def test_written_slice_maps_rows_to_minus_y_and_columns_to_plus_x(tmp_path: Path):
    height, width, spacing = 6, 8, 3.0
    image = torch.full((1, height, width), -1.0)
    image[0, 1, 6] = 1.0  # row 1 (anterior), column 6 (patient's right)
    path = tmp_path / "slice.nii.gz"
    NiftiDataset(filepath=str(path)).save(slice_to_nifti(image, spacing))

    written = nib.load(path)
    assert written.shape == (width, height, 1)
    assert nib.aff2axcodes(written.affine) == ("R", "P", "S")
    assert written.header.get_zooms() == (3.0, 3.0, 3.0)
    assert written.header.get_xyzt_units()[0] == "mm"
    voxel = np.argwhere(np.asarray(written.dataobj) > 0)[0]
    x, y, z = nib.affines.apply_affine(written.affine, voxel)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    assert x == pytest.approx((6 - centre[0]) * spacing)  # right of centre: +x
    assert y == pytest.approx(-(1 - centre[1]) * spacing)  # above centre row: anterior, +y
    assert z == 0
    np.testing.assert_array_equal(nifti_to_slice(written), image[0].numpy())


def test_neighbouring_pixels_are_one_spacing_apart_in_world():
    affine = slice_affine(2.5, 4, 4)
    origin = nib.affines.apply_affine(affine, [0, 0, 0])
    next_column = nib.affines.apply_affine(affine, [1, 0, 0])
    next_row = nib.affines.apply_affine(affine, [0, 1, 0])
    np.testing.assert_allclose(next_column - origin, [2.5, 0, 0])
    np.testing.assert_allclose(next_row - origin, [0, -2.5, 0])


def test_masks_are_uint8_and_bad_inputs_fail():
    mask = torch.zeros(1, 4, 4, dtype=torch.uint8)
    assert slice_to_nifti(mask, 1.0).get_data_dtype() == np.uint8
    assert slice_to_nifti(torch.zeros(4, 4), 1.0).get_data_dtype() == np.float32
    with pytest.raises(ValueError, match="2D"):
        slice_to_nifti(torch.zeros(2, 4, 4), 1.0)
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        slice_affine(0.0, 4, 4)

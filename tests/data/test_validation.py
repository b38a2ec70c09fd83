"""Each bad input gets an error naming the subject, the file and the reason."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medgen.data.validation import SubjectValidationError, ValidationRules, validate_subject
from medgen.datasets import SubjectFolderDataset
from tests.conftest import AFFINE, SHAPE, tiny_subject_images, write_subject

SUBJECT = "SUBJ-00007-000"


def _validate(root: Path):
    record = SubjectFolderDataset(path=str(root)).load()[SUBJECT]
    return validate_subject(record, ValidationRules())


def _write(tmp_path: Path, **replace) -> Path:
    images = tiny_subject_images()
    for suffix, image in replace.items():
        if image is None:
            images.pop(suffix)
        else:
            images[suffix] = image
    root = tmp_path / "cohort"
    write_subject(root, SUBJECT, images)
    return root


def test_valid_subject_is_described(tmp_path: Path):
    assert _validate(_write(tmp_path)) == {"shape": list(SHAPE), "voxel_mm": [2.0, 2.0, 2.0]}


def _expect(root: Path, suffix: str, reason: str):
    with pytest.raises(SubjectValidationError) as info:
        _validate(root)
    error = info.value
    assert error.subject == SUBJECT
    assert error.file.endswith(f"{SUBJECT}-{suffix}.nii.gz")
    assert reason in error.reason
    assert SUBJECT in str(error) and suffix in str(error)


def test_truncated_file(tmp_path: Path):
    root = _write(tmp_path)
    path = root / SUBJECT / f"{SUBJECT}-flair.nii.gz"
    path.write_bytes(path.read_bytes()[:300])
    _expect(root, "flair", "truncated or corrupt gzip")


def test_not_a_nifti_file(tmp_path: Path):
    root = _write(tmp_path)
    (root / SUBJECT / f"{SUBJECT}-bravo.nii.gz").write_bytes(b"<html>404 not found</html>" * 30)
    _expect(root, "bravo", "not a NIfTI")


def test_nan_and_inf_voxels(tmp_path: Path):
    data = tiny_subject_images()["t1_gd"].get_fdata().astype(np.float32)
    data[1, 1, 1] = np.nan
    data[2, 2, 2] = np.inf
    _expect(_write(tmp_path, t1_gd=nib.Nifti1Image(data, AFFINE)), "t1_gd", "2 NaN/Inf voxels")


def test_4d_file(tmp_path: Path):
    volume = np.zeros((*SHAPE, 2), np.float32)
    _expect(
        _write(tmp_path, t1_pre=nib.Nifti1Image(volume, AFFINE)),
        "t1_pre",
        "expected a 3D volume, got 4D",
    )


def test_shape_mismatch(tmp_path: Path):
    small = nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), AFFINE)
    _expect(_write(tmp_path, seg=small), "seg", "shape (10, 10, 10) differs")


def test_affine_mismatch(tmp_path: Path):
    shifted = AFFINE.copy()
    shifted[0, 3] += 1.5
    seg = tiny_subject_images()["seg"]
    _expect(
        _write(tmp_path, seg=nib.Nifti1Image(np.asarray(seg.dataobj), shifted)),
        "seg",
        "affine differs",
    )


def test_affine_within_tolerance_is_accepted(tmp_path: Path):
    nudged = AFFINE.copy()
    nudged[0, 3] += 1e-5
    seg = tiny_subject_images()["seg"]
    _validate(_write(tmp_path, seg=nib.Nifti1Image(np.asarray(seg.dataobj), nudged)))


def test_non_binary_mask(tmp_path: Path):
    mask = np.asarray(tiny_subject_images()["mask-0000"].dataobj).copy()
    mask[0, 0, 0] = 2
    _expect(
        _write(tmp_path, **{"mask-0000": nib.Nifti1Image(mask, AFFINE)}),
        "mask-0000",
        "expected a binary mask",
    )


def test_non_integer_labels(tmp_path: Path):
    seg = np.asarray(tiny_subject_images()["seg"].dataobj).astype(np.float32)
    seg[0, 0, 0] = 0.5
    _expect(_write(tmp_path, seg=nib.Nifti1Image(seg, AFFINE)), "seg", "non-integer")


def test_missing_modality(tmp_path: Path):
    _expect(_write(tmp_path, flair=None), "flair", "missing required file 'flair'")


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match="Unknown validation parameters"):
        ValidationRules.from_params({"required_imgs": ["t1"]})

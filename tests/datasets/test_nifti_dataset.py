import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from kedro.io.core import DatasetError, Version
from nibabel.testing import data_path

from medgen import atomic_io
from medgen.datasets import NiftiDataset, NiftiReadError


@pytest.mark.parametrize("name", ["image.nii", "image.nii.gz"])
def test_round_trip_keeps_voxels_affine_and_header(tmp_path: Path, name: str):
    affine = np.array([[-1.5, 0, 0, 90], [0, 1.5, 0, -126], [0, 0, 3.0, -72], [0, 0, 0, 1]])
    data = np.random.default_rng(0).integers(-300, 3000, size=(7, 6, 5)).astype(np.int16)
    image = nib.Nifti1Image(data, affine)
    image.header["descrip"] = b"medgen round trip"
    image.header.set_xyzt_units("mm", "sec")

    dataset = NiftiDataset(filepath=str(tmp_path / name))
    dataset.save(image)
    loaded = dataset.load()

    np.testing.assert_array_equal(np.asarray(loaded.dataobj), data)
    np.testing.assert_allclose(loaded.affine, affine)
    assert loaded.get_data_dtype() == np.int16
    assert loaded.header["descrip"].tobytes().rstrip(b"\0") == b"medgen round trip"
    assert loaded.header.get_xyzt_units() == ("mm", "sec")
    # the file is a normal NIfTI that nibabel reads on its own
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / name).dataobj), data)


def test_loads_nibabel_shipped_example():
    loaded = NiftiDataset(filepath=os.path.join(data_path, "anatomical.nii")).load()
    reference = nib.load(os.path.join(data_path, "anatomical.nii"))
    np.testing.assert_array_equal(loaded.get_fdata(), reference.get_fdata())
    np.testing.assert_allclose(loaded.affine, reference.affine)


def test_versioned_saves_keep_every_version(tmp_path: Path):
    path = str(tmp_path / "v.nii.gz")
    first = NiftiDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z"))
    first.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)))
    second = NiftiDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z"))
    second.save(nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4)))
    assert NiftiDataset(filepath=path, version=Version(None, None)).load().get_fdata().max() == 1.0
    old = NiftiDataset(filepath=path, version=Version("2026-01-01T00.00.00.000Z", None)).load()
    assert old.get_fdata().max() == 0.0


def test_truncated_gzip_names_file_and_reason(tmp_path: Path):
    path = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 16).astype(np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(NiftiReadError, match=r"cut\.nii\.gz: truncated or corrupt gzip"):
        NiftiDataset(filepath=str(path)).load()


def test_truncated_uncompressed_voxels_are_reported(tmp_path: Path):
    path = tmp_path / "cut.nii"
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 16).astype(np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(NiftiReadError, match="truncated voxel data"):
        NiftiDataset(filepath=str(path)).load()


def test_non_nifti_file_is_reported(tmp_path: Path):
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(gzip.compress(b"patient notes, not an image" * 40))
    with pytest.raises(NiftiReadError, match="not a NIfTI-1 or NIfTI-2 image"):
        NiftiDataset(filepath=str(path)).load()


def test_nibabels_nifti2_example_loads_and_round_trips_as_nifti2(tmp_path: Path):
    source = Path(data_path) / "example_nifti2.nii.gz"
    reference = nib.load(source)  # nibabel's own reader, independently of the dataset
    loaded = NiftiDataset(filepath=str(source)).load()
    assert isinstance(loaded, nib.Nifti2Image) and loaded.header["sizeof_hdr"] == 540
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), np.asarray(reference.dataobj))
    np.testing.assert_array_equal(loaded.affine, reference.affine)

    copy = NiftiDataset(filepath=str(tmp_path / "copy.nii.gz"))
    copy.save(loaded)
    again = copy.load()
    assert isinstance(again, nib.Nifti2Image)
    np.testing.assert_array_equal(np.asarray(again.dataobj), np.asarray(reference.dataobj))
    np.testing.assert_array_equal(again.affine, reference.affine)


def test_truncated_nifti2_header_is_reported(tmp_path: Path):
    raw = gzip.decompress((Path(data_path) / "example_nifti2.nii.gz").read_bytes())
    path = tmp_path / "cut2.nii"
    path.write_bytes(raw[:400])
    with pytest.raises(NiftiReadError, match="truncated header"):
        NiftiDataset(filepath=str(path)).load()


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path: Path, monkeypatch):
    path = tmp_path / "keep.nii.gz"
    dataset = NiftiDataset(filepath=str(path))
    dataset.save(nib.Nifti1Image(np.full((3, 3, 3), 7, np.int16), np.eye(4)))

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_io.os, "replace", broken_replace)
    with pytest.raises(DatasetError, match="disk full"):
        dataset.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.int16), np.eye(4)))
    monkeypatch.undo()
    assert np.asarray(dataset.load().dataobj).max() == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nii.gz"]


def test_written_files_get_the_usual_permissions(tmp_path: Path):
    """Atomic writes go through mkstemp (mode 0600); the result must honour the umask instead."""
    path = tmp_path / "shared.nii.gz"
    NiftiDataset(filepath=str(path)).save(nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_fsspec_memory_filesystem_round_trip():
    """Non-local protocols go through fsspec (object stores publish whole objects)."""
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    dataset = NiftiDataset(filepath="memory://medgen-test/image.nii.gz")
    dataset.save(nib.Nifti1Image(data, np.eye(4)))
    assert dataset.exists()
    np.testing.assert_array_equal(dataset.load().get_fdata(), data)

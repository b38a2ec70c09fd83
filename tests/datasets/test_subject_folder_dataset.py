import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from kedro.io.core import DatasetError

from medgen.datasets import LazySubject, NiftiReadError, SubjectFolderDataset, SubjectPayload
from tests.conftest import tiny_subject_images, write_subject


def _payload(value: float = 1.0) -> SubjectPayload:
    image = nib.Nifti1Image(np.full((4, 4, 4), value, np.float32), np.diag([2, 2, 2, 1.0]))
    label = nib.Nifti1Image(
        np.eye(4, dtype=np.uint8)[:, :, None].repeat(4, 2), np.diag([2, 2, 2, 1.0])
    )
    return SubjectPayload(
        images={"t1_pre": image, "seg": label}, metadata={"lesions": [], "value": value}
    )


def test_save_then_load_round_trip(tmp_path: Path):
    dataset = SubjectFolderDataset(path=str(tmp_path / "c"), progress=False)
    dataset.save({"S-00001-000": _payload(1.0), "S-00002-000": _payload(2.0)})
    assert (tmp_path / "c/S-00001-000/S-00001-000-t1_pre.nii.gz").is_file()

    records = dataset.load()
    assert sorted(records) == ["S-00001-000", "S-00002-000"]
    record = records["S-00002-000"]
    assert sorted(record.files) == ["seg", "t1_pre"]
    assert record.metadata == {"lesions": [], "value": 2.0}
    assert record.load("t1_pre").get_fdata().mean() == 2.0
    np.testing.assert_array_equal(np.asarray(record.load("seg").dataobj)[:, :, 0], np.eye(4))
    with pytest.raises(NiftiReadError, match="has no 'flair' file"):
        record.load("flair")


def test_lazy_subject_is_rebuilt_only_when_its_fingerprint_changes(tmp_path: Path):
    calls = []

    def build(value):
        def _build():
            calls.append(value)
            return _payload(value)

        return _build

    dataset = SubjectFolderDataset(path=str(tmp_path / "c"), progress=False)
    dataset.save({"S-1": LazySubject("fp-a", build(1.0))})
    dataset.save({"S-1": LazySubject("fp-a", build(5.0))})
    assert calls == [1.0]  # unchanged fingerprint: reused, not rebuilt
    assert dataset.load()["S-1"].load("t1_pre").get_fdata().mean() == 1.0

    dataset.save({"S-1": LazySubject("fp-b", build(3.0))})
    assert calls == [1.0, 3.0]
    assert dataset.load()["S-1"].load("t1_pre").get_fdata().mean() == 3.0


def test_deleted_file_forces_rebuild(tmp_path: Path):
    dataset = SubjectFolderDataset(path=str(tmp_path / "c"), progress=False)
    dataset.save({"S-1": LazySubject("fp", lambda: _payload(1.0))})
    (tmp_path / "c/S-1/S-1-seg.nii.gz").unlink()
    rebuilt = []
    dataset.save({"S-1": LazySubject("fp", lambda: rebuilt.append(1) or _payload(1.0))})
    assert rebuilt == [1]
    assert (tmp_path / "c/S-1/S-1-seg.nii.gz").is_file()


def test_failed_build_keeps_earlier_subjects(tmp_path: Path):
    dataset = SubjectFolderDataset(path=str(tmp_path / "c"), progress=False)
    dataset.save({"S-1": LazySubject("fp", lambda: _payload(1.0))})

    def explode():
        raise RuntimeError("generator bug")

    with pytest.raises(DatasetError, match="generator bug"):
        dataset.save(
            {"S-1": LazySubject("fp", lambda: _payload(1.0)), "S-2": LazySubject("x", explode)}
        )
    assert dataset.load()["S-1"].load("t1_pre").get_fdata().mean() == 1.0
    assert not (tmp_path / "c/S-2").exists()


def test_stale_subjects_written_by_medgen_are_removed_but_foreign_ones_kept(tmp_path: Path):
    root = tmp_path / "c"
    dataset = SubjectFolderDataset(path=str(root), progress=False)
    dataset.save({"S-1": _payload(), "S-2": _payload()})
    write_subject(root, "FOREIGN-1", tiny_subject_images())
    dataset.save({"S-1": _payload()})
    assert sorted(p.name for p in root.iterdir()) == ["FOREIGN-1", "S-1"]


def test_foreign_data_with_aliases(tiny_cohort: Path):
    for folder in tiny_cohort.iterdir():
        for suffix, alias in (("t1_pre", "t1n"), ("t1_gd", "t1c")):
            (folder / f"{folder.name}-{suffix}.nii.gz").rename(
                folder / f"{folder.name}-{alias}.nii.gz"
            )
    (tiny_cohort / "SUBJ-00000-000" / "README.txt").write_text("ignored")
    dataset = SubjectFolderDataset(
        path=str(tiny_cohort), suffix_aliases={"t1n": "t1_pre", "t1c": "t1_gd"}, read_only=True
    )
    record = dataset.load()["SUBJ-00000-000"]
    assert {"t1_pre", "t1_gd", "flair", "bravo", "seg"} <= set(record.files)
    assert record.metadata == {}
    assert len(record.fingerprint) == 20


def test_read_only_refuses_writes_but_accepts_an_empty_plan(tiny_cohort: Path):
    dataset = SubjectFolderDataset(path=str(tiny_cohort), read_only=True)
    dataset.save({})
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save({"S-9": _payload()})


def test_parallel_workers_write_the_same_files_as_serial(tmp_path: Path):
    serial = SubjectFolderDataset(path=str(tmp_path / "serial"), progress=False)
    parallel = SubjectFolderDataset(path=str(tmp_path / "parallel"), workers=2, progress=False)
    plan = {f"S-{i}": LazySubject(f"fp{i}", _Builder(float(i))) for i in range(3)}
    serial.save(plan)
    parallel.save(plan)
    for i in range(3):
        for suffix in ("t1_pre", "seg"):
            a = (tmp_path / f"serial/S-{i}/S-{i}-{suffix}.nii.gz").read_bytes()
            b = (tmp_path / f"parallel/S-{i}/S-{i}-{suffix}.nii.gz").read_bytes()
            assert a == b
        manifest = json.loads((tmp_path / f"parallel/S-{i}/.medgen-subject.json").read_text())
        assert manifest["fingerprint"] == f"fp{i}"


class _Builder:
    """Picklable build function (worker processes receive it by value)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self) -> SubjectPayload:
        return _payload(self.value)


def test_empty_folder_is_an_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="No subject folders"):
        SubjectFolderDataset(path=str(tmp_path / "empty")).load()


def test_fsspec_memory_filesystem_round_trip():
    dataset = SubjectFolderDataset(path="memory://medgen-cohort", progress=False)
    dataset.save({"S-1": LazySubject("fp", lambda: _payload(4.0))})
    record = dataset.load()["S-1"]
    assert record.fingerprint == "fp"
    assert record.load("t1_pre").get_fdata().mean() == 4.0

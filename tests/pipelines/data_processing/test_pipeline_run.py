"""Test-size runs of data_processing through Kedro, as a user would run it.

One fresh run, then a re-run after corrupting two subjects (skip policy), then a run with
the fail policy. Runs happen in a temporary copy of the project (conf/ + pyproject.toml),
so data/ and mlflow.db are written there, never in the checkout.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medgen.datasets import TensorDataset
from tests.kedro_project import make_project, run_pipeline

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


def run(project: Path, monkeypatch, **params) -> float:
    start = time.perf_counter()
    run_pipeline(project, "data_processing", params)
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def first_run(project: Path) -> dict:
    with pytest.MonkeyPatch.context() as monkeypatch:
        seconds = run(project, monkeypatch)
    summary = json.loads((project / "data/08_reporting/data_summary.json").read_text())
    return {"seconds": seconds, "summary": summary}


def test_fresh_run_builds_cohort_and_model_inputs(project: Path, first_run: dict):
    summary = first_run["summary"]
    assert summary["subjects_total"] == 5 and summary["subjects_valid"] == 5
    assert summary["rejected"] == []
    assert summary["subjects_per_split"] == {"train": 3, "val": 1, "test": 1}
    assert summary["slice_shape"] == [4, 32, 32]
    assert summary["volume_shape"] == [4, 24, 32, 24]
    assert summary["elapsed_seconds"] > 0
    splits = summary["splits"]
    assert set(splits["train"]).isdisjoint(splits["val"]) and set(splits["train"]).isdisjoint(
        splits["test"]
    )

    subjects = sorted(p.name for p in (project / "data/01_raw/cohort").iterdir())
    assert subjects == [f"BraTS-SYN-{i:05d}-000" for i in range(5)]
    assert len(list((project / "data/01_raw/cohort" / subjects[0]).glob("*.nii.gz"))) == 12

    captions = pd.read_csv(project / "data/01_raw/captions.csv")
    assert list(captions.columns) == ["path", "text", "modality"] and len(captions) == 20
    ratings = pd.read_csv(project / "data/01_raw/ratings.csv")
    assert ratings["rating"].between(1, 3).all()

    for split in ("train", "val", "test"):
        bundle = TensorDataset(
            filepath=str(project / f"data/05_model_input/slices_2d_{split}.safetensors")
        ).load()
        assert len(bundle) == summary["slices_per_split"][split] > 0
        assert bundle["images"].min() >= -1 and bundle["images"].max() <= 1
        assert bundle.metadata["subjects"] == splits[split]
    assert (project / "mlflow.db").is_file()


def _corrupt_two_subjects(cohort: Path) -> None:
    flair = cohort / "BraTS-SYN-00001-000" / "BraTS-SYN-00001-000-flair.nii.gz"
    flair.write_bytes(flair.read_bytes()[:1000])
    import nibabel as nib

    path = cohort / "BraTS-SYN-00003-000" / "BraTS-SYN-00003-000-t1_gd.nii.gz"
    image = nib.load(path)
    data = image.get_fdata(dtype=np.float32)
    data[40, 50, 40] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), path)


def test_rerun_with_two_corrupted_subjects_skips_them(project: Path, first_run: dict, monkeypatch):
    preprocessed = (
        project
        / "data/02_intermediate/preprocessed_cohort/BraTS-SYN-00000-000/.medgen-subject.json"
    )
    written_before = preprocessed.stat().st_mtime_ns
    _corrupt_two_subjects(project / "data/01_raw/cohort")

    seconds = run(project, monkeypatch)
    summary = json.loads((project / "data/08_reporting/data_summary.json").read_text())
    assert summary["subjects_valid"] == 3
    reasons = {r["subject"]: r["reason"] for r in summary["rejected"]}
    assert set(reasons) == {"BraTS-SYN-00001-000", "BraTS-SYN-00003-000"}
    assert "truncated or corrupt gzip" in reasons["BraTS-SYN-00001-000"]
    assert "1 NaN/Inf voxels" in reasons["BraTS-SYN-00003-000"]
    rejected = pd.read_csv(project / "data/08_reporting/rejected_subjects.csv")
    assert sorted(rejected["subject"]) == ["BraTS-SYN-00001-000", "BraTS-SYN-00003-000"]
    assert rejected["file"].str.endswith(("-flair.nii.gz", "-t1_gd.nii.gz")).all()
    # unchanged subjects were reused, not regenerated or re-preprocessed
    assert preprocessed.stat().st_mtime_ns == written_before
    assert seconds < first_run["seconds"]
    all_ids = sum(summary["splits"].values(), [])
    assert "BraTS-SYN-00001-000" not in all_ids and len(all_ids) == 3


def test_fail_policy_stops_and_keeps_earlier_outputs(project: Path, first_run: dict, monkeypatch):
    summary_path = project / "data/08_reporting/data_summary.json"
    if "BraTS-SYN-00001-000" not in json.dumps(json.loads(summary_path.read_text())["rejected"]):
        _corrupt_two_subjects(project / "data/01_raw/cohort")
    before = summary_path.read_bytes()
    with pytest.raises(Exception, match=r"BraTS-SYN-00001-000.*flair\.nii\.gz.*truncated"):
        run(project, monkeypatch, on_bad_subject="fail")
    assert summary_path.read_bytes() == before
    assert (project / "data/05_model_input/slices_2d_train.safetensors").is_file()
    assert not list(project.rglob("*.tmp"))

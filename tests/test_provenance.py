"""Every MLflow run records where it came from, and the same configuration and seed give the
same metrics.

The MLflow checks read the shared test-size run of all six pipelines back with
``MlflowClient`` (`tests.whole_project_run`); the repeatability check runs the evaluation
pipeline again, from scratch, in a second project holding the same upstream outputs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from kedro.io import DataCatalog
from mlflow.tracking import MlflowClient

from medgen.hooks import provenance
from tests.kedro_project import REPO, make_project, run_pipeline
from tests.whole_project_run import ProjectRun, whole_project_run


@pytest.fixture(scope="session")
def project_run(tmp_path_factory) -> ProjectRun:
    return whole_project_run(tmp_path_factory)


@pytest.fixture(scope="module")
def client(project_run: ProjectRun) -> MlflowClient:
    return MlflowClient(tracking_uri=project_run.tracking_uri)


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- the functions behind the hook, on small inputs -----------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_git_state_names_the_commit_and_a_dirty_tree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = provenance.git_state(repo)
    assert clean["commit"] == _git(repo, "rev-parse", "HEAD") and clean["dirty"] is False
    assert clean["diff_sha256"] is None
    (repo / "a.py").write_text("x = 2\n")
    dirty = provenance.git_state(repo)
    assert dirty["dirty"] is True and dirty["changed_files"] == 1
    (repo / "a.py").write_text("x = 3\n")
    assert provenance.git_state(repo)["diff_sha256"] != dirty["diff_sha256"]  # told apart
    assert provenance.git_state(tmp_path / "nowhere")["commit"].startswith("unknown (no git")


def test_fingerprints_hash_paths_and_contents_and_models_skip_checkpoints(tmp_path):
    # absolute paths, as Kedro makes every relative catalog path of a project
    catalog = DataCatalog.from_config(
        {
            "model": {
                "type": "partitions.PartitionedDataset",
                "path": str(tmp_path / "data/06_models/m"),
                "dataset": "json.JSONDataset",
                "filename_suffix": "/model.json",
                "metadata": {"kedro-viz": {"layer": "models"}},
            },
            "single": {"type": "json.JSONDataset", "filepath": str(tmp_path / "data/x.json")},
        }
    )
    for relative, text in (
        ("data/06_models/m/a/model.json", "1"),
        ("data/06_models/m/a/checkpoints/latest.json", "2"),
        ("data/06_models/m/b/model.json", "3"),
        ("data/x.json", "4"),
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    files = provenance.dataset_files(catalog.get("model"), tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [
        "data/06_models/m/a/model.json",
        "data/06_models/m/b/model.json",
    ]
    expected = _sha256(
        "".join(
            f"data/06_models/m/{k}/model.json\0{_sha256(v.encode())}\n"
            for k, v in (("a", "1"), ("b", "3"))
        ).encode()
    )
    prints, errors = provenance.data_fingerprints(catalog, ["model", "single"], tmp_path)
    assert errors == {}
    assert prints["model"] == {"sha256": expected, "files": 2, "bytes": 2}
    assert prints["single"]["files"] == 1
    assert provenance.datasets_in_layers(catalog, ["model", "single"], ["models"]) == ["model"]


# ---- the shared test-size run, read back with MlflowClient -----------------------------


def test_run_is_tagged_with_git_state_package_versions_and_data_fingerprints(
    project_run: ProjectRun, client: MlflowClient
):
    tags = client.get_run(project_run.run_id).data.tags
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tags["git.commit"] == head
    assert tags["git.dirty"] in {"True", "False"} and tags["git.branch"]
    assert tags["version.torch"] == importlib.metadata.version("torch") and tags["python"]
    # the raw cohort: each subject's own fingerprint, read here from its manifest
    cohort = project_run.data / "01_raw/cohort"
    lines = "".join(
        f"{folder.name}\0{json.loads((folder / '.medgen-subject.json').read_text())['fingerprint']}\n"
        for folder in sorted(p for p in cohort.iterdir() if p.is_dir())
    )
    assert tags["fingerprint.raw_cohort"] == _sha256(lines.encode())
    for split in ("train", "val", "test"):
        relative = f"data/05_model_input/slices_2d_{split}.safetensors"
        content = _sha256((project_run.root / relative).read_bytes())
        assert tags[f"fingerprint.slices_2d_{split}"] == _sha256(
            f"{relative}\0{content}\n".encode()
        )
    assert "fingerprint.volumes_3d_train" in tags and "fingerprint.latents_2d_train" in tags
    # a transcoded entry's "@", which MLflow refuses in a key, became "_"
    assert "fingerprint.text2image.captions_2d_images" in tags
    assert "provenance.errors" not in tags


def test_run_records_the_resolved_parameters_and_every_package(
    project_run: ProjectRun, client: MlflowClient, tmp_path
):
    run = client.get_run(project_run.run_id)
    assert run.data.params["cohort.n_subjects"] == "5"  # conf/test over conf/base
    assert run.data.params["evaluation.scoring.floors.min_patients_per_half"] == "3"
    folder = Path(client.download_artifacts(project_run.run_id, "provenance", str(tmp_path)))
    parameters = json.loads((folder / "parameters.json").read_text())
    assert parameters["cohort"]["n_subjects"] == 5
    assert parameters["evaluation.scoring"]["reference_splits"] == ["val", "test"]
    assert {"latent_diffusion.shared", "inpainting.sampling", "evaluation.seed"} <= set(parameters)
    torch_line = f"torch=={importlib.metadata.version('torch')}"
    assert torch_line in (folder / "packages.txt").read_text().splitlines()
    record = json.loads((folder / "provenance.json").read_text())
    assert record["git"]["commit"] == run.data.tags["git.commit"]
    assert record["fingerprints"]["raw_cohort"]["subjects"] == 5
    assert record["run_params"]["env"] == "test" and record["errors"] == {}


def test_run_logs_metrics_report_summaries_and_models(
    project_run: ProjectRun, client: MlflowClient, tmp_path
):
    logged = set(_artifacts(client, project_run.run_id))
    expected = {
        "data/08_reporting/evaluation/metrics.json",
        "data/08_reporting/evaluation/report.html",
        "data/08_reporting/data_summary.json",
        "data/08_reporting/latent_diffusion/summary.json",
        "data/08_reporting/latent_diffusion_3d/summary.json",
        "data/08_reporting/inpainting/summary.json",
        "data/08_reporting/text2image/summary.json",
        "data/08_reporting/autoencoder/summary.json",
        "data/06_models/evaluation/in_domain_backbone.safetensors",
        "data/06_models/inpainting/diffusion.safetensors",
        "data/06_models/latent_diffusion/dit_3d.safetensors",
        "data/06_models/text2image/generator.safetensors",
    }
    assert expected <= logged, sorted(expected - logged)
    assert any(p.startswith("data/06_models/latent_diffusion/rflow_") for p in logged)
    assert not [p for p in logged if p.endswith(".pt")]  # checkpoints are not models
    metrics = client.download_artifacts(
        project_run.run_id, "data/08_reporting/evaluation/metrics.json", str(tmp_path)
    )
    assert Path(metrics).read_bytes() == project_run.metrics.read_bytes()


# ---- same seed and configuration, same numbers ------------------------------------------

EVALUATION_OUTPUTS = ("06_models/evaluation", "08_reporting/evaluation")


@pytest.mark.slow
def test_the_evaluation_pipeline_repeats_its_metrics_exactly(project_run: ProjectRun, tmp_path):
    """A second project with the same upstream outputs (and none of evaluation's own: its
    feature network and segmenter are trained again) writes the same metrics.json."""
    again = make_project(tmp_path / "again")
    shutil.copytree(project_run.data, again / "data")
    for relative in EVALUATION_OUTPUTS:
        shutil.rmtree(again / "data" / relative)
    run_pipeline(again, "evaluation")
    first = project_run.metrics.read_text()
    second = (again / "data/08_reporting/evaluation/metrics.json").read_text()
    assert json.loads(first)["sources"], "the shared run evaluated nothing"
    assert second == first

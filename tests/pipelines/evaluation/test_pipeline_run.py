"""A test-size run of `evaluation` through Kedro, as a user would run it.

The tmp project gets tiny real slices and one fake latent_diffusion samples.safetensors
written with TensorDataset (no other pipeline runs); data/ and mlflow.db live there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from medgen.datasets import TensorDataset
from tests.evaluation.evaluation_helpers import generated_bundle, loss_summary, real_slices
from tests.kedro_project import make_project, run_pipeline

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"))
    data = root / "data"
    for split, n, seed in (("train", 24, 0), ("val", 12, 3), ("test", 16, 5)):
        TensorDataset(filepath=str(data / f"05_model_input/slices_2d_{split}.safetensors")).save(
            real_slices(n, seed=seed)
        )
    TensorDataset(
        filepath=str(data / "07_model_output/latent_diffusion/ddpm_bravo/samples.safetensors")
    ).save(generated_bundle("bravo"))
    summary = data / "08_reporting/latent_diffusion/summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps(loss_summary()))
    return root


@pytest.fixture(scope="module")
def run(project: Path) -> Path:
    run_pipeline(project, "evaluation")
    return project / "data"


def test_run_writes_backbone_metrics_and_report(run: Path):
    assert (run / "06_models/evaluation/in_domain_backbone.safetensors").is_file()
    metrics = json.loads((run / "08_reporting/evaluation/metrics.json").read_text())
    statuses = {s["source"]: s["status"] for s in metrics["sources"]}
    assert statuses == {
        "data_processing": "not present",  # this project holds model inputs, no data summary
        "autoencoder": "not present",
        "latent_diffusion/ddpm_bravo": "evaluated",
        "inpainting": "not present",
        "text2image_rlhf": "not present",
    }
    # in the data flow's order
    assert [s["source"] for s in metrics["sources"]][:3] == [
        "data_processing",
        "autoencoder",
        "latent_diffusion/ddpm_bravo",
    ]
    fid = next(r for r in metrics["sources"][2]["metrics"] if r["metric"] == "fid")
    assert fid["floor"] is None and "halves have 3 and 2" in fid["details"]["no_floor"]
    assert metrics["reference"]["n_patients"] == 5 and metrics["status"] == "ok"
    report = (run / "08_reporting/evaluation/report.html").read_text()
    assert "latent_diffusion/ddpm_bravo" in report and "data:image/png;base64," in report
    assert "training loss" in report  # the summary's history became loss curves


def test_run_logs_the_numbers_to_mlflow(run: Path, project: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("medgen-test")
    (latest,) = client.search_runs(
        [experiment.experiment_id], order_by=["start_time DESC"], max_results=1
    )
    logged = latest.data.metrics
    assert "evaluation/latent_diffusion/ddpm_bravo/fid/in_domain" in logged
    assert "evaluation/latent_diffusion/ddpm_bravo/ms_ssim_diversity/none/floor" in logged
    # 5 held-out patients (2 val + 3 test) split 3 + 2: fewer than the 3 per half a FID
    # floor needs, so there is none to log
    assert "evaluation/latent_diffusion/ddpm_bravo/fid/in_domain/floor" not in logged

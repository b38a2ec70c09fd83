"""The diagnostics as a researcher finds them in MLflow: metric names, steps, figures."""

from __future__ import annotations

import pytest
from diagnostics_helpers import FakeSource
from training_tasks import mlp, regression_data

from medgen.training import MlflowCallback, TrainingConfig, train
from medgen.training.diagnostics import diffusion_diagnostics, engine_diagnostics
from medgen.training.diagnostics_config import LoggingConfig


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # faster to create than sqlite
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    mlflow.set_experiment("medgen-diagnostics-tests")
    yield mlflow
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


class Scorer:
    def __call__(self, samples, metrics):
        return {"ssim": 0.25}


def test_metrics_and_figures_land_under_the_jobs_names(mlflow_store, tmp_path):
    mlflow = mlflow_store
    source = FakeSource()
    logging = LoggingConfig.from_params(
        {"validation": {"every": 4, "samples": 2}, "intermediate_steps": {"every": 8, "frames": 2}}
    )
    config = TrainingConfig(
        max_steps=8,
        batch_size=4,
        lr=0.05,
        log_every=4,
        progress=False,
        device="cpu",
        logging=logging,
    )
    callbacks = [
        *diffusion_diagnostics(source, Scorer()),
        *engine_diagnostics(),
        MlflowCallback(prefix="job", artifact_path="jobs/job"),
    ]
    with mlflow.start_run() as run:
        train(
            mlp(),
            source.loss_fn,
            regression_data(n=16),
            config,
            checkpoint_dir=tmp_path / "ckpt",
            callbacks=callbacks,
        )
    client = mlflow.tracking.MlflowClient()

    def steps(name):
        return [m.step for m in client.get_metric_history(run.info.run_id, f"job/{name}")]

    assert steps("parameters") == [0] and steps("flops_per_sample") == [1]
    assert steps("grad_norm") == [8] and steps("samples_per_second") == [8]  # every 10: last
    assert steps("validation/ssim") == [4, 8]
    timestep_metrics = [
        k for k in client.get_run(run.info.run_id).data.metrics if "timestep_loss/" in k
    ]
    assert timestep_metrics and all(steps(k[len("job/") :]) for k in timestep_metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "jobs/job/diagnostics")}
    assert artifacts == {
        f"jobs/job/diagnostics/{name}.png"
        for name in (
            "validation_step_00000004",
            "validation_step_00000008",
            "trajectory_step_00000008",
            "worst_batch_epoch_0001",
            "worst_batch_epoch_0002",
            "timestep_loss_heatmap",
        )
    }
    params = client.get_run(run.info.run_id).data.params
    assert params["job.validation.reference"] == "fake reference"
    assert params["job.logging.validation.every"] == "4"  # the config, one param per leaf
    assert not (tmp_path / "ckpt" / "diagnostics").exists()  # with a run, nothing on the side

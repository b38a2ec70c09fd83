from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from training_tasks import mlp, mse_loss, regression_data

from medgen.training import (
    JobSpec,
    MlflowCallback,
    TrainingConfig,
    launch,
    save_loss_curve,
    train,
    train_worker,
)

CONFIG = TrainingConfig(
    max_steps=6, batch_size=8, lr=0.01, log_every=2, val_every=3, progress=False, device="cpu"
)


def val_fn(net):
    return {"mse": 0.5}


def test_save_loss_curve_writes_a_png(tmp_path):
    history = train(mlp(), mse_loss, regression_data(32), CONFIG, val_fn=val_fn).history
    path = save_loss_curve(history, tmp_path / "sub" / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_bar_runs_without_changing_results():
    quiet = train(mlp(), mse_loss, regression_data(32), CONFIG)
    shown = train(mlp(), mse_loss, regression_data(32), replace(CONFIG, progress=True))
    assert torch.equal(quiet.model_state["0.weight"], shown.model_state["0.weight"])


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    # The file store is much faster to create than sqlite's migrations; fine for a test.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    # A Kedro run earlier in this process (kedro-mlflow) may have made another store's
    # experiment the active one; select one that exists in this store.
    mlflow.set_experiment("medgen-training-tests")
    yield mlflow
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def test_mlflow_callback_logs_into_the_active_run_only(mlflow_store, tmp_path):
    mlflow = mlflow_store
    callback = MlflowCallback()
    # No active run: nothing is logged and no run gets created.
    train(mlp(), mse_loss, regression_data(32), CONFIG, val_fn=val_fn, callbacks=[callback])
    assert callback.log_artifact(tmp_path) is False
    assert mlflow.search_runs(search_all_experiments=True).empty

    with mlflow.start_run() as run:
        train(
            mlp(),
            mse_loss,
            regression_data(32),
            CONFIG,
            val_fn=val_fn,
            callbacks=[MlflowCallback()],
        )
    client = mlflow.tracking.MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.params["train.max_steps"] == "6" and data.params["train.lr"] == "0.01"
    assert data.params["train.world_size"] == "1"
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [2, 4, 6]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mse")] == [3, 6]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "training")]
    assert artifacts == ["training/train_loss_curve.png"]


def test_job_spec_reattaches_rank0_to_the_parent_run(mlflow_store):
    mlflow = mlflow_store
    spec = JobSpec(factory="training_tasks:ddp_task", config=CONFIG.to_dict())
    with mlflow.start_run() as run:
        # launch() with one process runs in-process and fills in the active run.
        launch(train_worker, spec, {"nproc_per_node": 1})
    # What a spawned rank 0 does: start_run(run_id=...) on a closed run, then log.
    attached = replace(
        spec,
        mlflow_run_id=run.info.run_id,
        mlflow_tracking_uri=mlflow.get_tracking_uri(),
        config=replace(CONFIG, max_steps=8).to_dict(),
    )
    result = train_worker(attached)
    assert result.steps == 8 and mlflow.active_run() is None
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "train/loss")
    # Same param values are skipped, so the second run only adds metrics.
    assert [m.step for m in history] == [2, 4, 6, 2, 4, 6, 8]

"""The one training job: identity, checkpoint folder, staging, launch, and the rank-0 result
that every node gets back."""

from __future__ import annotations

import json
import math
import socket
from dataclasses import replace

import pytest
import torch
import training_tasks
from training_tasks import mlp, mse_loss, regression_bundle, regression_data, regression_task

from medgen.training import (
    ConfigError,
    NonFiniteLossError,
    TrainingConfig,
    TrainingError,
    TrainingJob,
    TrainingResult,
    load_checkpoint,
    run_job,
    train,
)
from medgen.training.checkpoint import JOB_FILE
from medgen.training.job import INPUTS_DIR

CONFIG = TrainingConfig(
    max_steps=6,
    batch_size=4,
    lr=0.05,
    ema_decay=0.8,
    log_every=1,
    checkpoint_every=2,
    seed=5,
    progress=False,
    device="cpu",
)


def job(checkpoint_dir, **changes) -> TrainingJob:
    fields = {
        "name": "regression",
        "factory": regression_task,
        "config": CONFIG,
        "checkpoint_dir": checkpoint_dir,
        "data": {"regression": regression_bundle()},
    }
    return TrainingJob(**{**fields, **changes})


def assert_same_result(a: TrainingResult, b: TrainingResult) -> None:
    assert a.steps == b.steps and a.history == b.history and a.epochs == b.epochs
    for key in a.model_state:
        assert torch.equal(a.model_state[key], b.model_state[key]), key
    assert a.ema_state.keys() == b.ema_state.keys()
    for key in a.ema_state:
        assert torch.equal(a.ema_state[key], b.ema_state[key]), key


def test_a_job_equals_training_the_factorys_task_directly(tmp_path):
    outcome = run_job(job(tmp_path / "ckpt"))
    assert outcome.resumed_from_step == 0 and not outcome.skipped
    direct = train(mlp(), mse_loss, regression_data(32), CONFIG)
    assert_same_result(outcome.result, direct)
    # Staged once, identity written beside the checkpoints.
    assert (tmp_path / "ckpt" / INPUTS_DIR / "regression.safetensors").is_file()
    identity = json.loads((tmp_path / "ckpt" / JOB_FILE).read_text())
    assert identity["factory"] == "training_tasks:regression_task"
    assert identity["training"]["max_steps"] == 6 and "progress" not in identity["training"]


def test_the_final_checkpoint_holds_the_result_rank_0_returns(tmp_path):
    outcome = run_job(job(tmp_path))
    assert_same_result(TrainingResult.from_checkpoint(tmp_path / "latest.pt"), outcome.result)


def test_a_finished_job_is_read_back_a_changed_one_retrains_and_bookkeeping_does_not_count(
    tmp_path,
):
    first = run_job(job(tmp_path / "ckpt"))
    again = run_job(job(tmp_path / "ckpt", config=replace(CONFIG, log_every=3, progress=True)))
    assert again.skipped and again.resumed_from_step == 6
    assert_same_result(again.result, first.result)

    wider = run_job(job(tmp_path / "ckpt", options={"hidden": 8}))
    assert not wider.skipped and wider.resumed_from_step == 0
    assert wider.result.model_state["0.weight"].shape == (8, 6)
    assert (tmp_path / "ckpt.stale" / "latest.pt").is_file()

    other_data = run_job(
        job(
            tmp_path / "ckpt",
            options={"hidden": 8},
            data={"regression": training_tasks.regression_bundle(n=40)},
        )
    )
    assert other_data.resumed_from_step == 0 and not other_data.skipped


def test_a_killed_job_resumes_from_its_latest_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError) as info:
        run_job(job(tmp_path, runtime_options={"nan_at_call": 5}))  # NaN at step 5
    error = info.value
    assert error.step == 5 and math.isnan(error.loss)
    assert load_checkpoint(error.checkpoint_path)["step"] == 4  # the last good checkpoint
    # runtime options are not identity: the same job continues from step 4 and finishes.
    resumed = run_job(job(tmp_path))
    assert resumed.resumed_from_step == 4 and resumed.result.steps == 6
    straight = run_job(job(tmp_path / "straight"))
    assert_same_result(resumed.result, straight.result)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"factory": lambda data: None}, "module-level function"),
        ({"config": CONFIG.to_dict()}, "must be a TrainingConfig"),
        ({"options": {"hidden": torch.ones(1)}}, "options must be JSON values"),
        ({"resources": {"nproc_per_nod": 2}}, "did you mean 'nproc_per_node'"),
    ],
)
def test_bad_jobs_are_refused_before_any_work(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        run_job(job(tmp_path / "ckpt", **changes))
    assert not (tmp_path / "ckpt").exists()


def test_without_a_checkpoint_dir_the_job_trains_in_a_temporary_folder():
    outcome = run_job(job(None))
    assert outcome.result.steps == 6 and not outcome.result.latest_checkpoint.exists()
    with pytest.raises(ConfigError, match="multi-node run needs a checkpoint_dir"):
        job(None, resources={"nnodes": 2})


def test_a_node_without_rank_0_that_cannot_see_its_checkpoint_says_so(tmp_path, monkeypatch):
    # What `launch` returns on a node that does not host rank 0; no checkpoint is shared here.
    monkeypatch.setattr("medgen.training.job.launch", lambda *args, **kwargs: None)
    with pytest.raises(TrainingError, match="file system every node shares"):
        run_job(job(tmp_path / "ckpt"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_every_node_of_a_two_node_job_gets_rank_0s_result(tmp_path, forkserver):
    """Two `kedro run` processes as two nodes (one worker each) of one gloo job: the node
    without rank 0 reads rank 0's result back, so both return the same outcome, equal to one
    process with the same global batch."""
    resources = {
        "nnodes": 2,
        "nproc_per_node": 1,
        "backend": "gloo",
        "rdzv_endpoint": f"localhost:{_free_port()}",
        "rdzv_id": "medgen-test-two-nodes",
        "rdzv_timeout": 120,
        "start_method": "forkserver",
    }
    nodes = [
        forkserver.Process(
            target=training_tasks.run_regression_job_as_node,
            args=(str(tmp_path / "ckpt"), resources, str(tmp_path / f"node{i}.pt")),
        )
        for i in range(2)
    ]
    for node in nodes:
        node.start()
    for node in nodes:
        node.join(300)
        assert node.exitcode == 0
    outcomes = [torch.load(tmp_path / f"node{i}.pt", weights_only=True) for i in range(2)]
    assert outcomes[0]["history"] == outcomes[1]["history"]
    for key in outcomes[0]["model"]:
        assert torch.equal(outcomes[0]["model"][key], outcomes[1]["model"][key]), key
        assert torch.equal(outcomes[0]["ema"][key], outcomes[1]["ema"][key]), key

    single = train(mlp(), mse_loss, regression_data(32), replace(CONFIG, batch_size=8))
    for key, value in single.model_state.items():
        torch.testing.assert_close(outcomes[0]["model"][key], value, rtol=0, atol=1e-5)
    assert [r["loss"] for r in outcomes[0]["history"] if r["kind"] == "step"] == pytest.approx(
        [r["loss"] for r in single.history if r["kind"] == "step"], abs=1e-5
    )

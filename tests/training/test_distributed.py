"""Two CPU processes with gloo, started by the same `launch` a Kedro node uses."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from training_tasks import ddp_worker, mlp, mse_loss, regression_data

from medgen.training import JobSpec, TrainingConfig, launch, load_checkpoint, train

CONFIG = TrainingConfig(
    max_steps=6,
    batch_size=4,
    lr=0.05,
    max_grad_norm=0.5,
    ema_decay=0.8,
    warmup_steps=2,
    log_every=1,
    checkpoint_every=3,
    seed=5,
    progress=False,
    device="cpu",
)


def test_launch_with_one_process_runs_in_process(tmp_path):
    spec = JobSpec(
        factory="training_tasks:ddp_task",
        config=CONFIG.to_dict(),
        factory_kwargs={"out_dir": str(tmp_path)},
    )
    result = launch(ddp_worker, spec, {"nproc_per_node": 1, "nnodes": 1})
    assert result.steps == 6
    assert torch.equal(
        torch.load(tmp_path / "rank0.pt", weights_only=True)["0.weight"],
        result.model_state["0.weight"],
    )


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(tmp_path, forkserver):
    spec = JobSpec(
        factory="training_tasks:ddp_task",
        config=CONFIG.to_dict(),
        factory_kwargs={"out_dir": str(tmp_path)},
        checkpoint_dir=str(tmp_path / "ckpt"),
    )
    resources = {
        "nproc_per_node": 2,
        "nnodes": 1,
        "backend": "gloo",
        "rdzv_endpoint": "localhost:0",
        "rdzv_timeout": 120,
        # Production default is spawn; forkserver (set up by the fixture)
        # only saves each worker from importing torch again.
        "start_method": "forkserver",
    }
    result = launch(ddp_worker, spec, resources, log_dir=tmp_path / "logs")

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key  # DDP keeps replicas identical
        assert torch.equal(rank0[key], result.model_state[key])  # launch returns rank 0's

    # One process, per-step batch 8 = 2 ranks x 4: DistributedSampler shards the same
    # seeded permutation, and DDP averages the two half-batch gradients.
    single = train(mlp(), mse_loss, regression_data(32), replace(CONFIG, batch_size=8))
    for key, value in single.model_state.items():
        torch.testing.assert_close(result.model_state[key], value, rtol=0, atol=1e-5)
        torch.testing.assert_close(result.ema_state[key], single.ema_state[key], rtol=0, atol=1e-5)
    ddp_losses = [r["loss"] for r in result.history if r["kind"] == "step"]
    single_losses = [r["loss"] for r in single.history if r["kind"] == "step"]
    assert ddp_losses == pytest.approx(single_losses, abs=1e-5)
    assert result.epochs == single.epochs == 6 * 4 / 16  # epochs counted per rank shard

    # Only rank 0 wrote checkpoints, and they carry both ranks' RNG states.
    state = load_checkpoint(tmp_path / "ckpt" / "latest.pt")
    assert state["step"] == 6 and state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])

"""Training through the engine: resume when the checkpoints match, start afresh when not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medgen.generation import prepare_slices, train_diffusion_model
from medgen.training.checkpoint import JOB_FILE
from tests.generation.synthetic_slices import MODALITIES, synthetic_slices

TASK = {"strategy": {"name": "rflow"}, "mode": "bravo", "modalities": MODALITIES}
BACKBONE = {
    "channels": [8, 16],
    "attention_levels": [False, False],
    "num_head_channels": 8,
    "norm_num_groups": 8,
}


def training(max_steps: int) -> dict:
    return {
        "max_steps": max_steps,
        "batch_size": 4,
        "ema_decay": 0.9,
        "log_every": 1,
        "progress": False,
        "lr": 1e-3,
    }


def test_a_finished_job_is_reused_and_a_new_configuration_starts_afresh(tmp_path: Path):
    data = prepare_slices(synthetic_slices(n=8, size=16), 8)
    checkpoints = tmp_path / "rflow_bravo" / "checkpoints"
    common = {"task_config": TASK, "resources": None, "checkpoint_dir": checkpoints}

    first = train_diffusion_model(data, backbone=BACKBONE, training=training(2), **common)
    assert first.resumed_from_step == 0 and first.result.steps == 2
    assert first.result.ema_state is not None
    assert (checkpoints / "latest.pt").is_file() and (checkpoints / JOB_FILE).is_file()

    again = train_diffusion_model(data, backbone=BACKBONE, training=training(2), **common)
    assert again.skipped and again.resumed_from_step == 2 and again.result.steps == 2

    # max_steps shapes the lr schedule: a longer run is another job, trained afresh, so a
    # resumed run always equals an uninterrupted one.
    longer = train_diffusion_model(data, backbone=BACKBONE, training=training(4), **common)
    assert longer.resumed_from_step == 0 and longer.result.steps == 4
    assert [r["step"] for r in longer.result.history if r["kind"] == "step"] == [1, 2, 3, 4]

    wider = {**BACKBONE, "channels": [8, 24]}
    fresh = train_diffusion_model(data, backbone=wider, training=training(1), **common)
    assert fresh.resumed_from_step == 0 and fresh.result.steps == 1
    stale = checkpoints.with_name("checkpoints.stale")
    assert (stale / "latest.pt").is_file()
    identity = json.loads((checkpoints / JOB_FILE).read_text())
    assert identity["options"]["backbone"]["channels"] == [8, 24]


def test_bad_training_parameters_fail_before_any_work(tmp_path: Path):
    data = prepare_slices(synthetic_slices(n=4, size=8), 8)
    with pytest.raises(Exception, match="max_step"):
        train_diffusion_model(
            data,
            task_config=TASK,
            backbone=BACKBONE,
            training={"max_step": 1},
            resources=None,
            checkpoint_dir=tmp_path / "c",
        )
    assert not (tmp_path / "c").exists()

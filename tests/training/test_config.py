from __future__ import annotations

import json

import pytest

from medgen.training import ConfigError, Resources, TrainingConfig
from medgen.training.distributed import resolve_factory


def test_round_trip_through_json():
    config = TrainingConfig.from_dict(
        {
            "max_steps": 50,
            "betas": [0.8, 0.95],
            "ema_decay": 0.99,
            "precision": "bf16",
            "val_every": 5,
            "early_stopping_metric": "loss",
            "early_stopping_patience": 2,
        }
    )
    assert config.betas == (0.8, 0.95)
    as_json = json.dumps(config.to_dict())
    assert TrainingConfig.from_dict(json.loads(as_json)) == config
    assert TrainingConfig.from_dict(None) == TrainingConfig()


def test_unknown_key_names_it_and_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"'max_step' \(did you mean 'max_steps'\?\)"):
        TrainingConfig.from_dict({"max_step": 10})


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"lr": 0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"accum_steps": True}, "accum_steps"),
        ({"betas": [0.9]}, "betas"),
        ({"betas": [0.9, 1.0]}, "betas"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"max_grad_norm": 0}, "max_grad_norm"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"precision": "fp8"}, "precision"),
        ({"warmup_steps": 10, "max_steps": 10}, "warmup_steps"),
        ({"early_stopping_mode": "avg"}, "early_stopping_mode"),
        ({"early_stopping_metric": "loss"}, "early_stopping_metric"),  # no val_every
        ({"val_every": 2, "early_stopping_patience": 3}, "early_stopping_patience"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"progress": "yes"}, "progress"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_values_are_rejected_with_the_key_named(params, key):
    with pytest.raises(ConfigError, match=rf"\b{key}="):
        TrainingConfig.from_dict(params)


def test_resources_defaults_and_validation():
    res = Resources.from_dict({"nproc_per_node": 2, "rdzv_id": 1234})
    assert (res.world_size, res.rdzv_id, res.backend) == (2, "1234", "auto")
    with pytest.raises(ConfigError, match="'nproc_per_nodes' .*did you mean 'nproc_per_node'"):
        Resources.from_dict({"nproc_per_nodes": 2})
    with pytest.raises(ConfigError, match="backend"):
        Resources.from_dict({"backend": "mpi"})
    with pytest.raises(ConfigError, match="nnodes"):
        Resources.from_dict({"nnodes": 0})
    with pytest.raises(ConfigError, match="host:port"):
        Resources.from_dict({"rdzv_endpoint": "localhost"})


def test_factory_references_resolve_or_fail_clearly():
    assert resolve_factory("medgen.training.config:TrainingConfig") is TrainingConfig
    with pytest.raises(ConfigError, match="package.module:function"):
        resolve_factory("medgen.training.config.TrainingConfig")
    with pytest.raises(ConfigError, match="cannot import"):
        resolve_factory("medgen.training.config:NoSuchThing")

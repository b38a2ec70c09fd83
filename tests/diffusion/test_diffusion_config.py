"""Strategy configs round-trip through JSON and validate their values."""

from __future__ import annotations

import json

import pytest
import torch
from diffusion_helpers import tiny_unet

from medgen.diffusion import (
    STRATEGIES,
    DDPMStrategy,
    DiffusionStrategy,
    RectifiedFlowStrategy,
    build_strategy,
)

CONFIGS = [
    ("ddpm", {}),
    (
        "ddpm",
        {
            "num_train_timesteps": 500,
            "schedule": "scaled_linear_beta",
            "schedule_args": {"beta_start": 0.0015, "beta_end": 0.0195},
            "prediction_type": "v_prediction",
            "sampler": "ddim",
            "num_inference_steps": 25,
            "eta": 0.5,
            "clip_sample": False,
            "min_snr_gamma": 5.0,
            "cond_drop_prob": 0.15,
        },
    ),
    ("ddpm", {"sampler": "ddpm", "schedule": "cosine", "schedule_args": {"s": 0.008}}),
    ("rflow", {}),
    (
        "rflow",
        {
            "num_train_timesteps": 1000,
            "use_discrete_timesteps": False,
            "timestep_sampling": "logit-normal",
            "logit_normal_loc": 0.3,
            "logit_normal_scale": 0.8,
            "use_timestep_transform": True,
            "base_img_size_numel": 4096,
            "num_inference_steps": 12,
            "min_snr_gamma": 5.0,
            "cond_drop_prob": 0.1,
        },
    ),
]


@pytest.mark.parametrize("name, options", CONFIGS)
def test_json_round_trip_rebuilds_an_equivalent_strategy(name, options):
    strategy = build_strategy(name, options)
    config = strategy.to_config()
    assert config["name"] == name and {k: config[k] for k in options} == options
    restored = DiffusionStrategy.from_config(json.loads(json.dumps(config)))
    assert type(restored) is type(strategy) and restored.to_config() == config
    model = tiny_unet(2, 1)
    torch.nn.init.normal_(model.out[2].conv.weight, std=0.05)
    x0, cond = torch.rand(2, 1, 8, 8) * 2 - 1, -torch.ones(2, 1, 8, 8)
    losses = [
        s.training_loss(model, x0, cond, torch.Generator().manual_seed(0))
        for s in (strategy, restored)
    ]
    assert torch.equal(*losses)


def test_from_config_on_subclass_and_errors():
    assert isinstance(
        RectifiedFlowStrategy.from_config({"num_inference_steps": 5}), RectifiedFlowStrategy
    )
    with pytest.raises(ValueError, match="config names strategy 'rflow'"):
        DDPMStrategy.from_config({"name": "rflow"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_steps'\]"):
        build_strategy("rflow", {"num_steps": 30})
    with pytest.raises(KeyError, match="unknown diffusion strategy 'edm'"):
        build_strategy("edm")
    with pytest.raises(ValueError, match="got a config for 'ddpm'"):
        build_strategy("rflow", {"name": "ddpm"})
    assert STRATEGIES.names() == ["ddpm", "rflow"]


@pytest.mark.parametrize(
    "name, options",
    [
        ("ddpm", {"prediction_type": "sample"}),
        ("ddpm", {"prediction_type": "score"}),
        ("ddpm", {"sampler": "euler"}),
        ("ddpm", {"num_inference_steps": 2000}),
        ("ddpm", {"min_snr_gamma": 0.0}),
        ("rflow", {"timestep_sampling": "beta"}),
        ("rflow", {"cond_drop_prob": 1.5}),
        ("rflow", {"num_inference_steps": 0}),
        ("rflow", {"logit_normal_scale": -1.0}),
    ],
)
def test_invalid_options_raise(name, options):
    with pytest.raises(ValueError):
        build_strategy(name, options)

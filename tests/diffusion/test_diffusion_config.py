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

#: Every option of each strategy set away from its default (a new strategy adds its row).
NON_DEFAULT_CONFIGS = [
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
    (
        "edm",
        {
            "sigma_data": 1.0,
            "sigma_min": 0.01,
            "sigma_max": 40.0,
            "rho": 5.0,
            "p_mean": -1.0,
            "p_std": 1.4,
            "num_inference_steps": 9,
            "cond_drop_prob": 0.2,
        },
    ),
]

CONFIGS = (
    [(name, {}) for name in STRATEGIES]
    + NON_DEFAULT_CONFIGS
    + [("ddpm", {"sampler": "ddpm", "schedule": "cosine", "schedule_args": {"s": 0.008}})]
)


def test_every_registered_strategy_has_a_non_default_config_row():
    assert {name for name, _ in NON_DEFAULT_CONFIGS} == set(STRATEGIES.names())


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
    with pytest.raises(KeyError, match="unknown diffusion strategy 'score_sde'"):
        build_strategy("score_sde")
    with pytest.raises(ValueError, match="got a config for 'ddpm'"):
        build_strategy("rflow", {"name": "ddpm"})
    assert STRATEGIES.names() == ["ddpm", "edm", "rflow"]


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
        ("edm", {"sigma_data": 0.0}),
        ("edm", {"sigma_min": 80.0}),
        ("edm", {"sigma_min": 0.0}),
        ("edm", {"rho": 0.0}),
        ("edm", {"p_std": -1.0}),
        ("edm", {"num_inference_steps": 0}),
        ("edm", {"cond_drop_prob": -0.1}),
    ],
)
def test_invalid_options_raise(name, options):
    with pytest.raises(ValueError):
        build_strategy(name, options)


def test_edm_refuses_min_snr_weighting_with_the_reason():
    with pytest.raises(ValueError, match=r"min_snr_gamma does not apply.*λ\(σ\)"):
        build_strategy("edm", {"min_snr_gamma": 5.0})

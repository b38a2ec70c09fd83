"""The per-sample loss terms: same scalar as before, x̂0 from every prediction type, time as a
fraction, and the regional split."""

from __future__ import annotations

import math

import pytest
import torch
from diffusion_helpers import MODALITIES, tiny_unet, toy_batch

from medgen.diffusion import STRATEGIES, DiffusionTask, build_mode, build_strategy
from medgen.diffusion.loss_details import (
    TrainingTerms,
    loss_details,
    predicted_x0,
    time_bin_labels,
    time_fraction,
)
from medgen.diffusion.rng import randn

PREDICTIONS = [
    ("ddpm", {}),
    ("ddpm", {"prediction_type": "v_prediction"}),
    ("rflow", {}),
    ("rflow", {"use_discrete_timesteps": False}),
    ("edm", {}),
]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_observing_the_loss_leaves_its_scalar_unchanged(name):
    task = DiffusionTask(
        build_strategy(name, {"min_snr_gamma": None}), build_mode("bravo", MODALITIES)
    )
    model = tiny_unet(task.in_channels, task.out_channels)
    batch = toy_batch(batch=3, size=16)
    seen = []
    plain = task.loss(model, batch, torch.Generator().manual_seed(4))
    task.loss_observers.append(seen.append)
    observed = task.loss(model, batch, torch.Generator().manual_seed(4))
    z0, cond = task.prepare(batch)
    direct = task.strategy.training_loss(model, z0, cond, torch.Generator().manual_seed(4))
    assert torch.equal(plain, observed) and torch.equal(plain, direct)
    (details,) = seen
    assert torch.allclose(details.per_sample.mean(), observed.detach())
    assert details.per_sample.shape == (3,) and details.perceptual is None


@pytest.mark.parametrize(("name", "options"), PREDICTIONS)
def test_the_exact_prediction_gives_back_x0(name, options):
    strategy = build_strategy(name, options)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 2, 8, 8, generator=g) * 2 - 1
    noise = randn(x0.shape, g)
    t = strategy.sample_timesteps(x0, g)
    x_t = strategy.add_noise(x0, noise, t)
    target = strategy.training_target(x0, noise, t)
    assert torch.allclose(predicted_x0(strategy, x_t, target, t), x0, atol=1e-3)


def test_time_fraction_and_labels():
    ddpm, rflow, edm = (build_strategy(n) for n in ("ddpm", "rflow", "edm"))
    t = torch.tensor([0, 250, 999])
    assert torch.allclose(time_fraction(ddpm, t), torch.tensor([0.0, 0.25, 0.999]))
    assert time_bin_labels(ddpm, 4) == ["t_0000-0250", "t_0250-0500", "t_0500-0750", "t_0750-1000"]
    assert torch.allclose(time_fraction(rflow, torch.tensor([500.0])), torch.tensor([0.5]))
    # EDM: the quantile of σ under ln σ ~ N(p_mean, p_std²); the median σ is exp(p_mean)
    sigma = torch.tensor([math.exp(edm.p_mean), math.exp(edm.p_mean + edm.p_std)])
    assert torch.allclose(time_fraction(edm, sigma), torch.tensor([0.5, 0.8413]), atol=1e-4)
    labels = time_bin_labels(edm, 2)
    assert labels == [
        f"sigma_0-{math.exp(edm.p_mean):.3g}",
        f"sigma_{math.exp(edm.p_mean):.3g}-inf",
    ]


def test_the_regional_split_of_a_constructed_mask():
    strategy = build_strategy("rflow")
    prediction = torch.zeros(2, 2, 4, 4)
    target = torch.ones(2, 2, 4, 4)
    target[0, :, :2, :2] = 3.0  # squared error 9 inside sample 0's mask, 1 elsewhere
    weights = torch.tensor([1.0, 2.0])
    region = torch.zeros(2, 1, 4, 4)
    region[0, 0, :2, :2] = 1.0
    terms = TrainingTerms(
        per_sample=torch.tensor([0.0, 0.0]),
        x0=target,
        x_t=target,
        timesteps=torch.tensor([1, 2]),
        prediction=prediction,
        target=target,
        weights=weights,
        known=None,
    )
    task = DiffusionTask(strategy, build_mode("bravo", MODALITIES))
    details = loss_details(task, terms, terms.per_sample, None, region)
    # sample 0: 4 voxels x 2 channels inside (error 9), 24 outside (error 1); sample 1: none
    # inside, 32 outside with error 1 weighted by 2
    assert details.region_counts.tolist() == [8.0, 0.0]
    assert details.region_sums.tolist() == [72.0, 0.0]
    assert details.outside_counts.tolist() == [24.0, 32.0]
    assert details.outside_sums.tolist() == [24.0, 64.0]


def test_the_mask_of_a_lesion_mode_and_of_inpainting_is_the_region_the_loss_sees():
    task = DiffusionTask(build_strategy("ddpm"), build_mode("bravo", MODALITIES))
    model = tiny_unet(task.in_channels, task.out_channels)
    batch = toy_batch(batch=2, size=16)
    seen = []
    task.loss_observers.append(seen.append)
    task.loss(model, batch)
    assert torch.equal(seen[0].region, (batch["seg"] > 0).float())
    unconditional = DiffusionTask(build_strategy("ddpm"), build_mode("seg", MODALITIES))
    unconditional.loss_observers.append(seen.append)
    unconditional.loss(tiny_unet(1, 1), batch)
    assert seen[1].region is None and seen[1].region_sums is None

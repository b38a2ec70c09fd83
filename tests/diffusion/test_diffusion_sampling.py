"""Sampling loops: shapes in 2D/3D, exact network-call counts, determinism, and agreement with
MONAI's own DiffusionInferer. The tables cover every registered strategy."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import CountingModel, tiny_unet
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDIMScheduler, RFlowScheduler

from medgen.diffusion import (
    STRATEGIES,
    DDPMStrategy,
    RectifiedFlowStrategy,
    build_strategy,
    lesion_condition,
)

#: Every registered strategy with its defaults (DDPM samples with DDIM), plus DDPM's ancestral
#: sampler, which runs all its (here 12) training steps.
SAMPLERS = {name: (name, {}) for name in STRATEGIES} | {
    "ddpm_ancestral": ("ddpm", {"sampler": "ddpm", "num_train_timesteps": 12}),
}


def _cond(shape, seed=0):
    return lesion_condition(torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.6)


@pytest.mark.parametrize("key", list(SAMPLERS))
@pytest.mark.parametrize("spatial_dims, spatial", [(2, (16, 16)), (3, (8, 8, 8))])
@pytest.mark.parametrize("conditional", [False, True])
def test_sample_shapes(key, spatial_dims, spatial, conditional):
    name, options = SAMPLERS[key]
    strategy = build_strategy(name, options)
    target_channels = 2
    model = tiny_unet(target_channels + int(conditional), target_channels, spatial_dims)
    cond = _cond((3, 1, *spatial)) if conditional else None
    steps = 12 if key == "ddpm_ancestral" else 3
    out = strategy.sample(
        model, (3, target_channels, *spatial), cond, num_steps=steps, guidance_scale=2.0
    )
    assert out.shape == (3, target_channels, *spatial)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "key, steps",
    [(name, steps) for name in STRATEGIES for steps in (1, 5)]
    + [("ddpm", 7), ("ddpm_ancestral", 12)],
)
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_network_calls_per_sample_are_reported_exactly(key, steps, guidance_scale):
    name, options = SAMPLERS[key]
    strategy = build_strategy(name, options)
    model = CountingModel(tiny_unet(2, 1))
    strategy.sample(
        model, (2, 1, 8, 8), _cond((2, 1, 8, 8)), num_steps=steps, guidance_scale=guidance_scale
    )
    # num_sampling_steps is the NFE: `steps` for first-order samplers, at most order × steps
    nfe = strategy.num_sampling_steps(steps)
    assert len(model.calls) == nfe and steps <= nfe <= strategy.order * steps
    assert strategy.num_solver_steps(steps) == steps
    if strategy.order == 1:
        assert nfe == steps
    # classifier-free guidance batches cond + null cond: 2B per call, still `nfe` calls
    batch = 2 if guidance_scale == 1.0 else 4
    assert all(call["x"].shape[0] == batch for call in model.calls)
    # time runs from noise to data; each step starts at a new time
    times = [call["timesteps"][0].item() for call in model.calls]
    assert times == sorted(times, reverse=True) and len(set(times)) == steps


def test_rflow_sampling_starts_at_pure_noise_time():
    model = CountingModel(tiny_unet(1, 1))
    RectifiedFlowStrategy(num_inference_steps=4).sample(model, (1, 1, 8, 8))
    assert [c["timesteps"].item() for c in model.calls] == [1000, 750, 500, 250]


def test_ddpm_sampler_requires_all_training_steps():
    strategy = DDPMStrategy(sampler="ddpm", num_train_timesteps=12)
    with pytest.raises(ValueError, match="runs all 12 training steps"):
        strategy.sample(tiny_unet(1, 1), (1, 1, 8, 8), num_steps=5)
    with pytest.raises(ValueError, match="sampler: ddim"):
        DDPMStrategy(sampler="ddpm", num_inference_steps=50)


@pytest.mark.parametrize(
    "key, options",
    [(name, {}) for name in SAMPLERS] + [("ddpm", {"eta": 1.0})],
)
def test_same_seed_same_samples(key, options):
    name, base = SAMPLERS[key]
    strategy = build_strategy(name, {**base, **options})
    model = tiny_unet(2, 1)
    torch.nn.init.normal_(model.out[2].conv.weight, std=0.05)  # non-zero output layer
    cond = _cond((2, 1, 8, 8))
    steps = 12 if key == "ddpm_ancestral" else 4

    def run(seed):
        return strategy.sample(
            model,
            (2, 1, 8, 8),
            cond,
            num_steps=steps,
            guidance_scale=2.0,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(run(5), run(5))
    assert not torch.allclose(run(5), run(6))


@pytest.mark.parametrize(
    "name, options",
    [(name, {"cond_drop_prob": 0.3}) for name in STRATEGIES]
    + [("rflow", {"timestep_sampling": "logit-normal"})],
)
def test_training_loss_is_deterministic_given_generator(name, options):
    model = tiny_unet(2, 1)
    x0, cond = torch.rand(2, 1, 8, 8) * 2 - 1, _cond((2, 1, 8, 8))
    strategy = build_strategy(name, options)
    losses = [
        strategy.training_loss(model, x0, cond, torch.Generator().manual_seed(s)) for s in (1, 1, 2)
    ]
    assert torch.equal(losses[0], losses[1]) and not torch.equal(losses[0], losses[2])
    assert losses[0].ndim == 0 and torch.isfinite(losses[0])


def _monai_reference(strategy, scheduler, model, shape, cond, guidance_scale, steps):
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(11))
    ours = strategy.sample(
        model,
        shape,
        cond,
        num_steps=steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(11),
    )
    if isinstance(scheduler, RFlowScheduler):
        scheduler.set_timesteps(steps, input_img_size_numel=shape[2] * shape[3])
    else:
        scheduler.set_timesteps(steps)
    reference = DiffusionInferer(scheduler).sample(
        input_noise=noise,
        diffusion_model=model,
        scheduler=scheduler,
        conditioning=cond,
        mode="concat",
        verbose=False,
        cfg=None if guidance_scale == 1.0 else guidance_scale,
        cfg_fill_value=0.0,  # our null condition
    )
    return ours, reference


@pytest.mark.parametrize("guidance_scale", [1.0, 2.0])
@pytest.mark.parametrize("kind", ["ddim", "rflow"])
def test_matches_monai_diffusion_inferer(kind, guidance_scale):
    model = tiny_unet(2, 1, seed=3)
    torch.nn.init.normal_(model.out[2].conv.weight, std=0.05)
    cond = _cond((2, 1, 8, 8), seed=4)
    if kind == "ddim":
        strategy, scheduler = DDPMStrategy(), DDIMScheduler()
    else:
        strategy, scheduler = RectifiedFlowStrategy(), RFlowScheduler(spatial_dim=2)
    ours, reference = _monai_reference(
        strategy, scheduler, model, (2, 1, 8, 8), cond, guidance_scale, 6
    )
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)

"""Denoising as an MDP: the strategies' Gaussian transitions and DDPO's pieces."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler
from torch import nn

from medgen.diffusion import build_strategy
from medgen.diffusion.policy_gradient import (
    gaussian_kl,
    gaussian_log_prob,
    group_advantages,
    ppo_loss,
    sample_trajectory,
    step_distribution,
)
from tests.diffusion.diffusion_helpers import tiny_unet

SHAPE = (3, 1, 16, 16)


def _strategy(name: str, **options):
    defaults = {
        "ddpm": {"sampler": "ddim", "num_inference_steps": 8},
        "rflow": {"num_inference_steps": 8},
    }[name]
    return build_strategy(name, {**defaults, **options})


def _noise(seed: int = 1) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["ddpm", "rflow"])
def test_zero_noise_level_is_the_deterministic_sampler(name):
    strategy = _strategy(name)
    model = tiny_unet(1, 1).eval()
    reference = strategy.sample(model, SHAPE, noise=_noise())
    trajectory = sample_trajectory(strategy, model, SHAPE, num_steps=8, noise_level=0.0,
                                   noise=_noise())  # fmt: skip
    torch.testing.assert_close(trajectory.final, reference, rtol=1e-5, atol=1e-5)
    assert trajectory.states.shape == (9, *SHAPE)
    assert trajectory.stochastic_steps == []


def test_ddim_eta_one_step_is_monai_step_with_its_noise():
    """Mean and σ are MONAI DDIMScheduler.step's, with the noise it would draw."""
    strategy = _strategy("ddpm", prediction_type="v_prediction")
    scheduler = DDIMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    scheduler.set_timesteps(8)
    times = strategy.policy_times(SHAPE, 8)
    assert times == scheduler.timesteps.tolist()
    x, prediction = _noise(2), _noise(3) * 0.5
    for step in (0, 3):
        mean, std = strategy.transition(prediction, x, step, times, noise_level=1.0)
        expected, _ = scheduler.step(
            prediction, times[step], x, eta=1.0, generator=torch.Generator().manual_seed(7)
        )
        drawn = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(mean + std * drawn, expected, rtol=1e-5, atol=1e-5)
        assert std > 0
    _, last_std = strategy.transition(prediction, x, len(times) - 1, times, noise_level=1.0)
    assert last_std == 0.0  # ᾱ = 1 after the last step: deterministic


class GaussianOptimum(nn.Module):
    """The exact prediction of the best network for data x0 ~ N(0, c²) per element."""

    def __init__(self, strategy, c: float) -> None:
        super().__init__()
        self.strategy, self.c = strategy, c
        self.anchor = nn.Parameter(torch.zeros(()))  # gives model_device something to read

    def forward(self, x, timesteps):
        c2 = self.c**2
        if self.strategy.name == "rflow":
            s = timesteps.float().view(-1, 1, 1, 1) / self.strategy.num_train_timesteps
            variance = (1 - s) ** 2 * c2 + s**2
            return ((1 - s) * c2 - s) / variance * x  # E[x0 − ε | x_s]
        alpha = self.strategy.alphas_cumprod[timesteps.long()].view(-1, 1, 1, 1)
        return (1 - alpha) ** 0.5 / (alpha * c2 + 1 - alpha) * x  # E[ε | x_t]


@pytest.mark.parametrize("name", ["ddpm", "rflow"])
def test_stochastic_sampler_keeps_the_data_marginal(name):
    """With the exact network, the stochastic chain ends at the data distribution's variance (the
    SDE / DDPM posterior have the flow's / DDIM's marginals).

    DDIM runs all 1000 steps: MONAI's strided grid (``linspace(T−1, 0, n)``) and its previous
    timestep ``t − T // n`` disagree slightly for n < T, a discretisation error of the sampler
    itself (a deterministic 50-step DDIM ends 8 % low here), not of the transition."""
    c = 0.5
    strategy = _strategy(name, clip_sample=False) if name == "ddpm" else _strategy(name)
    model = GaussianOptimum(strategy, c)
    shape = (2000, 1, 4, 4)
    generator = torch.Generator().manual_seed(0)
    steps = 1000 if name == "ddpm" else 50
    trajectory = sample_trajectory(
        strategy, model, shape, num_steps=steps, noise_level=1.0, generator=generator
    )
    assert trajectory.final.var().item() == pytest.approx(c**2, rel=0.06)
    assert len(trajectory.stochastic_steps) == steps - (name == "ddpm")


def test_first_update_ratio_is_exactly_one_and_gradients_reach_the_generator():
    strategy = _strategy("rflow")
    model = tiny_unet(1, 1)
    trajectory = sample_trajectory(
        strategy, model, SHAPE, num_steps=8, noise_level=0.7,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    advantages = torch.tensor([1.0, -0.5, -0.5])
    total = 0.0
    for step in trajectory.stochastic_steps:
        mean, std = step_distribution(
            strategy, model, trajectory.states[step], step, trajectory.times, None,
            guidance_scale=1.0, noise_level=0.7,
        )  # fmt: skip
        log_prob = gaussian_log_prob(trajectory.states[step + 1], mean, std)
        loss, stats = ppo_loss(log_prob, trajectory.log_probs[step], advantages, 0.2)
        assert stats["ratio"] == 1.0 and stats["clip_fraction"] == 0.0
        total = total + loss
    total.backward()
    norms = [p.grad.abs().sum().item() for p in model.parameters() if p.grad is not None]
    assert norms and sum(norms) > 0


def test_ppo_clip_stops_the_gradient_beyond_the_trust_region():
    old = torch.zeros(2)
    new = torch.tensor([0.5, 0.5], requires_grad=True)  # ratio e^0.5 ≈ 1.65 > 1.2
    loss, stats = ppo_loss(new, old, torch.tensor([1.0, 1.0]), clip_range=0.2)
    loss.backward()
    assert stats["clip_fraction"] == 1.0
    assert torch.equal(new.grad, torch.zeros(2))  # positive advantage, ratio above 1 + ε


def test_gaussian_log_prob_and_kl_match_torch_distributions():
    x, mean, ref = _noise(1), _noise(2), _noise(3)
    std = 0.3
    normal = torch.distributions.Normal(mean, std)
    expected = normal.log_prob(x).flatten(1).mean(1)
    torch.testing.assert_close(gaussian_log_prob(x, mean, std), expected)
    kl = torch.distributions.kl_divergence(normal, torch.distributions.Normal(ref, std))
    torch.testing.assert_close(gaussian_kl(mean, ref, std), kl.flatten(1).mean(1))
    assert torch.equal(gaussian_log_prob(x, mean, 0.0), torch.zeros(3))


def test_group_advantages_are_signed_per_prompt():
    rewards = torch.tensor([1.0, 3.0, 10.0, 10.0, 5.0])
    groups = torch.tensor([0, 0, 1, 1, 2])
    advantages = group_advantages(rewards, groups)
    torch.testing.assert_close(advantages[:2], torch.tensor([-1.0, 1.0]), atol=1e-5, rtol=0)
    assert advantages[2:].tolist() == [0.0, 0.0, 0.0]  # equal rewards, a single image: no signal


def test_edm_has_no_policy():
    strategy = build_strategy("edm", {"num_inference_steps": 4})
    with pytest.raises(NotImplementedError, match="edm has no stochastic sampler"):
        sample_trajectory(strategy, tiny_unet(1, 1), SHAPE, num_steps=4)

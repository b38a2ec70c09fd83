"""Denoising as a Markov decision process: trajectories with log-probabilities, and DDPO's loss.

Black et al. 2023, "Training Diffusion Models with Reinforcement Learning"
(https://arxiv.org/abs/2305.13301). A stochastic sampler is a policy: the state is ``(x_t, t,
prompt)``, the action is ``x_{t-1}``, drawn from the Gaussian the strategy's
:meth:`~medgen.diffusion.base.DiffusionStrategy.transition` gives (DDIM with η = 1 for DDPM, the
flow's reverse SDE for rectified flow). A reward arrives only for the final image. Because every
action is Gaussian, its log-probability under the current network is differentiable, and the
policy gradient is ``E[A · ∇ log π(x_{t-1} | x_t)]`` summed over steps. PPO's clipped objective
(Schulman et al. 2017) lets one batch of trajectories serve several updates: the importance ratio
``π_θ / π_old`` is exactly 1 at the first update and the clip keeps later ones near the sampling
policy.

What keeps it sound (and what the published RLHF code it replaces lacked):

* the advantage is signed: rewards are normalised per prompt (:func:`group_advantages`), so
  below-average images of a prompt are pushed *down*, not merely up less;
* the generator itself is updated, through its own sampling distribution;
* a KL penalty to a frozen reference network (:func:`gaussian_kl`, exact for two Gaussians with
  the same σ) keeps the policy near the model it started from.

Log-probabilities are averaged over the action's elements, as DDPO's implementation does: a
per-element mean keeps the ratio's scale independent of the image size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from medgen.diffusion.base import DiffusionStrategy, model_device
from medgen.diffusion.guidance import guided_model
from medgen.diffusion.rng import randn

#: Steps whose σ is below this are deterministic (DDIM's last step): they carry no log-probability.
MIN_STD = 1e-6


@dataclass
class Trajectory:
    """One batch of sampled denoising chains.

    ``states`` ``[S+1, B, C, *spatial]`` (noise first, the sample last); ``log_probs`` ``[S, B]``
    of each step under the sampling policy (0 for deterministic steps); ``stds`` the σ of each
    step; ``times`` the strategy's times (``policy_times``); ``cond`` the batch's condition."""

    states: torch.Tensor
    log_probs: torch.Tensor
    stds: list[float]
    times: list[float]
    cond: torch.Tensor | None

    @property
    def final(self) -> torch.Tensor:
        return self.states[-1]

    @property
    def stochastic_steps(self) -> list[int]:
        """The steps that are actions of the policy (σ > 0)."""
        return [i for i, std in enumerate(self.stds) if std > MIN_STD]


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Per-sample mean over elements of ``log N(x; mean, std²)``, shape ``[B]``."""
    if std <= MIN_STD:
        return torch.zeros(x.shape[0], device=x.device, dtype=mean.dtype)
    log_density = -((x - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    return log_density.flatten(1).mean(dim=1)


def gaussian_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: float) -> torch.Tensor:
    """Per-sample mean over elements of KL(N(mean, σ²) ‖ N(ref_mean, σ²)) = (Δμ)² / 2σ²."""
    if std <= MIN_STD:
        return torch.zeros(mean.shape[0], device=mean.device, dtype=mean.dtype)
    return ((mean - ref_mean) ** 2 / (2 * std**2)).flatten(1).mean(dim=1)


def step_distribution(
    strategy: DiffusionStrategy,
    model: nn.Module,
    x: torch.Tensor,
    step: int,
    times: Sequence[float],
    cond: torch.Tensor | None,
    *,
    guidance_scale: float,
    noise_level: float,
) -> tuple[torch.Tensor, float]:
    """``(mean, std)`` of the policy's action at ``step`` (the guided prediction, then the
    strategy's transition); differentiable in the network's parameters."""
    denoise = guided_model(model, cond, guidance_scale, forward=strategy.predict)
    # integer timesteps (DDPM) stay int64, continuous ones (flow) float32, as in `sample`
    t = torch.full((x.shape[0],), times[step], device=x.device)
    prediction = denoise(x, t)
    return strategy.transition(prediction, x, step, times, noise_level)


@torch.no_grad()
def sample_trajectory(
    strategy: DiffusionStrategy,
    model: nn.Module,
    shape: Sequence[int],
    cond: torch.Tensor | None = None,
    *,
    num_steps: int,
    guidance_scale: float = 1.0,
    noise_level: float = 1.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> Trajectory:
    """Sample ``shape`` ``[B, C, *spatial]`` with the stochastic sampler, keeping every state and
    each step's log-probability under the sampling network (DDPO's "old" policy)."""
    device = model_device(model)
    times = strategy.policy_times(shape, num_steps)
    x = noise.to(device) if noise is not None else randn(shape, generator, device)
    cond = None if cond is None else cond.to(device)
    states, log_probs, stds = [x], [], []
    for step in range(len(times)):
        mean, std = step_distribution(
            strategy, model, x, step, times, cond,
            guidance_scale=guidance_scale, noise_level=noise_level,
        )  # fmt: skip
        x = mean + std * randn(mean.shape, generator, device) if std > MIN_STD else mean
        states.append(x)
        log_probs.append(gaussian_log_prob(x, mean, std))
        stds.append(std)
    return Trajectory(torch.stack(states), torch.stack(log_probs), stds, times, cond)


def group_advantages(
    rewards: torch.Tensor, groups: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Rewards normalised within each group (the images of one prompt): ``(r − mean) / (std +
    eps)``; a group of one image, or of equal rewards, gets advantage 0 (it carries no signal)."""
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    for group in groups.unique():
        members = groups == group
        values = rewards[members].float()
        if values.numel() < 2:
            continue
        advantages[members] = (values - values.mean()) / (values.std(unbiased=False) + eps)
    return advantages


def ppo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate ``mean(max(−A·r, −A·clip(r, 1−ε, 1+ε)))`` with ``r = exp(log π −
    log π_old)``; also the clip fraction, the mean ratio and an estimate of KL(old ‖ new)."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {
            "ratio": float(ratio.mean()),
            "clip_fraction": float(((ratio - 1.0).abs() > clip_range).float().mean()),
            "approx_kl": float((0.5 * (log_prob - old_log_prob) ** 2).mean()),
        }
    return loss, stats

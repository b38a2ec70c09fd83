"""Min-SNR-γ weights (Hang et al. 2023) against hand computations, and their use in the losses."""

from __future__ import annotations

import math

import pytest
import torch

from medgen.diffusion import (
    DDPMStrategy,
    RectifiedFlowStrategy,
    min_snr_weight,
    snr_from_flow_sigma,
)

INF = math.inf


@pytest.mark.parametrize(
    "target, snr, gamma, expected",
    [
        ("epsilon", 10.0, 5.0, 0.5),  # min(10, 5) / 10
        ("epsilon", 2.0, 5.0, 1.0),
        ("epsilon", 0.0, 5.0, 1.0),  # limit
        ("epsilon", INF, 5.0, 0.0),
        ("sample", 10.0, 5.0, 5.0),
        ("sample", 2.0, 5.0, 2.0),
        ("v_prediction", 10.0, 5.0, 5.0 / 11.0),
        ("v_prediction", 2.0, 5.0, 2.0 / 3.0),
        ("flow_velocity", 4.0, 5.0, 4.0 / 9.0),  # sigma = 1/3: min((2/3)^2, 5/9)
        ("flow_velocity", 16.0, 5.0, 0.2),  # sigma = 1/5: min(0.64, 5 * 0.04)
        ("flow_velocity", 0.0, 5.0, 0.0),  # pure noise
        ("flow_velocity", INF, 5.0, 0.0),  # clean data
        ("epsilon", 3.0, 1.0, 1.0 / 3.0),
    ],
)
def test_min_snr_weight_table(target, snr, gamma, expected):
    weight = min_snr_weight(torch.tensor([snr]), gamma, target)
    assert weight.item() == pytest.approx(expected, abs=1e-6)


def test_flow_weight_equals_x0_space_weight_converted_by_sigma():
    sigma = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    gamma = 5.0
    weight = min_snr_weight(snr_from_flow_sigma(sigma), gamma, "flow_velocity").double()
    # x0 = x_t + sigma v  =>  |x0 err|^2 = sigma^2 |v err|^2; x0-space weight is min(SNR, gamma)
    expected = torch.minimum((1 - sigma) ** 2, gamma * sigma**2)
    torch.testing.assert_close(weight, expected, atol=1e-6, rtol=1e-5)
    assert weight.max() <= 1.0


def test_invalid_gamma_and_target():
    with pytest.raises(ValueError, match="> 0"):
        min_snr_weight(torch.ones(1), 0.0, "epsilon")
    with pytest.raises(ValueError):
        min_snr_weight(torch.ones(1), 5.0, "score")


class OffsetOracle(torch.nn.Module):
    """Returns the exact target plus 1 everywhere, so each per-sample MSE is exactly 1 and the
    loss equals the mean of the weights; records the timesteps it was called with."""

    def __init__(self, x0, target_fn):
        super().__init__()
        self.x0, self.target_fn, self.timesteps = x0, target_fn, None

    def forward(self, x, timesteps):
        self.timesteps = timesteps
        return self.target_fn(x, timesteps, self.x0) + 1.0


def _ddpm_eps(x, t, x0):
    abar = DDPMStrategy().alphas_cumprod[t].view(-1, 1, 1, 1)
    return (x - abar.sqrt() * x0) / (1 - abar).sqrt()


def _flow_v(x, t, x0):
    sigma = (t / 1000).view(-1, 1, 1, 1)
    return x0 - (x - (1 - sigma) * x0) / sigma


def test_ddpm_loss_applies_epsilon_min_snr_weights():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(32, 1, 4, 4, generator=g) * 2 - 1
    model = OffsetOracle(x0, _ddpm_eps)
    loss = DDPMStrategy(min_snr_gamma=5.0).training_loss(model, x0, generator=g)
    betas = torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)[model.timesteps]
    snr = abar / (1 - abar)
    expected = (torch.clamp(snr, max=5.0) / snr).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert expected.item() < 0.99  # some timesteps were actually down-weighted
    unweighted = DDPMStrategy().training_loss(OffsetOracle(x0, _ddpm_eps), x0, generator=g)
    assert unweighted.item() == pytest.approx(1.0, rel=1e-4)


def test_rflow_loss_applies_flow_min_snr_weights():
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(32, 1, 4, 4, generator=g) * 2 - 1
    model = OffsetOracle(x0, _flow_v)
    strategy = RectifiedFlowStrategy(use_discrete_timesteps=False, min_snr_gamma=5.0)
    loss = strategy.training_loss(model, x0, generator=g)
    sigma = model.timesteps.double() / 1000
    expected = torch.minimum((1 - sigma) ** 2, 5.0 * sigma**2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)

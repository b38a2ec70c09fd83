"""Forward (noising) processes and training targets of the strategies, checked by hand and
against MONAI's schedulers."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import RFlowScheduler

from medgen.diffusion import DDPMStrategy, RectifiedFlowStrategy


def hand_alphas_cumprod(schedule: str, steps: int, beta_start=1e-4, beta_end=2e-2) -> torch.Tensor:
    if schedule == "linear_beta":
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    else:  # scaled_linear_beta
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


@pytest.mark.parametrize(
    "schedule, schedule_args",
    [("linear_beta", {}), ("scaled_linear_beta", {"beta_start": 5e-4, "beta_end": 1e-2})],
)
@pytest.mark.parametrize("shape", [(3, 2, 8, 8), (2, 1, 4, 4, 4)])
def test_ddpm_noising_is_closed_form(schedule, schedule_args, shape):
    strategy = DDPMStrategy(schedule=schedule, schedule_args=schedule_args)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    timesteps = torch.tensor([0, 499, 999][: shape[0]])
    abar = hand_alphas_cumprod(schedule, 1000, **schedule_args)[timesteps]
    abar = abar.view(-1, *([1] * (len(shape) - 1)))
    expected = abar.sqrt() * x0.double() + (1 - abar).sqrt() * noise.double()
    torch.testing.assert_close(
        strategy.add_noise(x0, noise, timesteps).double(), expected, atol=1e-5, rtol=0
    )


class DDPMOracle(torch.nn.Module):
    """Knows x0 and recovers the exact target from (x_t, t) via the closed form."""

    def __init__(self, x0, prediction_type, target_channels):
        super().__init__()
        self.x0, self.prediction_type, self.c = x0, prediction_type, target_channels
        self.abar = hand_alphas_cumprod("linear_beta", 1000).float()
        self.seen_cond = None

    def forward(self, x, timesteps):
        x_t, self.seen_cond = x[:, : self.c], x[:, self.c :]
        abar = self.abar[timesteps].view(-1, 1, 1, 1)
        eps = (x_t - abar.sqrt() * self.x0) / (1 - abar).sqrt()
        if self.prediction_type == "epsilon":
            return eps
        return abar.sqrt() * eps - (1 - abar).sqrt() * self.x0  # v (Salimans & Ho 2022)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddpm_training_loss_uses_closed_form_target(prediction_type):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(6, 2, 8, 8, generator=g) * 2 - 1
    cond = torch.where(torch.rand(6, 1, 8, 8, generator=g) > 0.5, 1.0, -1.0)
    oracle = DDPMOracle(x0, prediction_type, 2)
    strategy = DDPMStrategy(prediction_type=prediction_type)
    loss = strategy.training_loss(oracle, x0, cond, generator=g)
    assert loss.ndim == 0 and loss.item() < 1e-8
    assert torch.equal(oracle.seen_cond, cond)  # concatenated after the target channels
    # A wrong prediction is penalised.
    assert (
        strategy.training_loss(lambda x, t: torch.zeros_like(x[:, :2]), x0, cond, generator=g) > 0.1
    )


@pytest.mark.parametrize("shape", [(4, 2, 8, 8), (2, 1, 4, 4, 4)])
def test_rflow_interpolation_matches_monai_and_hand_formula(shape):
    strategy = RectifiedFlowStrategy()
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    timesteps = torch.tensor([0, 250, 999, 1000][: shape[0]])
    sigma = (timesteps.float() / 1000).view(-1, *([1] * (len(shape) - 1)))
    x_t = strategy.add_noise(x0, noise, timesteps)
    torch.testing.assert_close(x_t, (1 - sigma) * x0 + sigma * noise, atol=1e-6, rtol=0)
    assert torch.equal(x_t, RFlowScheduler().add_noise(x0, noise, timesteps))
    assert torch.equal(x_t[0], x0[0])  # t = 0 is data
    if shape[0] == 4:
        assert torch.equal(x_t[3], noise[3])  # t = T is noise


def test_rflow_training_loss_targets_velocity_x0_minus_noise():
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(5, 1, 8, 8, generator=g) * 2 - 1

    def oracle(x, timesteps):  # v = x0 - eps, eps recovered from x_t = (1-s) x0 + s eps
        sigma = (timesteps / 1000).view(-1, 1, 1, 1)
        eps = (x - (1 - sigma) * x0) / sigma
        return x0 - eps

    # continuous timesteps: t = 0 (where eps is unrecoverable) has probability zero
    strategy = RectifiedFlowStrategy(use_discrete_timesteps=False)
    assert strategy.training_loss(oracle, x0, generator=g).item() < 1e-6
    assert strategy.training_loss(lambda x, t: x0, x0, generator=g).item() > 0.5


@pytest.mark.parametrize(
    "options, shape",
    [
        ({}, (64, 1, 16, 16)),
        ({"use_discrete_timesteps": False}, (64, 1, 16, 16)),
        ({"use_timestep_transform": True}, (64, 1, 64, 64)),
        ({"use_timestep_transform": True, "base_img_size_numel": 4096}, (64, 1, 8, 8, 8)),
    ],
)
def test_rflow_uniform_timesteps_equal_monai_sample_timesteps(options, shape):
    strategy = RectifiedFlowStrategy(**options)
    base = options.get("base_img_size_numel", 32 ** (len(shape) - 2))
    monai = RFlowScheduler(
        use_discrete_timesteps=options.get("use_discrete_timesteps", True),
        use_timestep_transform=options.get("use_timestep_transform", False),
        base_img_size_numel=base,
    )
    x = torch.zeros(shape)
    torch.manual_seed(7)
    expected = monai.sample_timesteps(x)
    ours = strategy.sample_timesteps(x, torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours.double(), expected.double(), atol=1e-4, rtol=0)
    assert 0 <= ours.min() and ours.max() < 1000


def test_rflow_timestep_shift_moves_time_towards_noise_for_larger_images():
    strategy = RectifiedFlowStrategy(use_timestep_transform=True)
    small = strategy.sample_timesteps(torch.zeros(256, 1, 32, 32), torch.Generator().manual_seed(0))
    large = strategy.sample_timesteps(torch.zeros(256, 1, 64, 64), torch.Generator().manual_seed(0))
    u = torch.rand(256, generator=torch.Generator().manual_seed(0))
    s = torch.floor(u * 1000) / 1000  # discrete draw, then ratio 2 shift 2s / (1 + s)
    torch.testing.assert_close(small.double(), (s * 1000).double(), atol=1e-3, rtol=0)  # ratio 1
    torch.testing.assert_close(large.double(), (2 * s / (1 + s) * 1000).double(), atol=1e-3, rtol=0)
    # the sampling grid is shifted the same way: [1000, 750, 500, 250] -> 2s/(1+s)
    grid = strategy.sampling_timesteps((1, 1, 64, 64), 4)
    assert grid == pytest.approx([1000, 857, 666, 400], abs=1)
    assert RectifiedFlowStrategy().sampling_timesteps((1, 1, 64, 64), 4) == [1000, 750, 500, 250]


def test_rflow_logit_normal_timesteps_follow_monai_distribution():
    n = 20000
    strategy = RectifiedFlowStrategy(timestep_sampling="logit-normal", logit_normal_loc=0.5)
    ours = strategy.sample_timesteps(
        torch.zeros(n, 1, 4, 4), torch.Generator().manual_seed(0)
    ).float()
    torch.manual_seed(0)
    monai = (
        RFlowScheduler(sample_method="logit-normal", loc=0.5)
        .sample_timesteps(torch.zeros(n, 1, 4, 4))
        .float()
    )
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    torch.testing.assert_close(torch.quantile(ours, q), torch.quantile(monai, q), atol=12.0, rtol=0)
    assert torch.quantile(ours, 0.5).item() == pytest.approx(
        1000 * torch.sigmoid(torch.tensor(0.5)).item(), abs=10
    )

"""EDM (Karras et al. 2022) against independent computations: the preconditioning, the ρ-schedule
(hand formula and diffusers' EDMEulerScheduler), Heun's network-evaluation count, Heun on Gaussian
data where the exact denoiser and the exact probability-flow solution are known, and the loss
weighting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import EDMEulerScheduler
from diffusion_helpers import CountingModel, tiny_unet

from medgen.diffusion import EDMPreconditioner, EDMStrategy, karras_sigmas, lesion_condition
from medgen.diffusion.guidance import guided_model, null_condition


def hand_coefficients(sigma: float, sigma_data: float) -> dict[str, float]:
    """Karras et al. 2022, Table 1 ("Ours"), written out with the math module."""
    total = sigma**2 + sigma_data**2
    return {
        "c_skip": sigma_data**2 / total,
        "c_out": sigma * sigma_data / math.sqrt(total),
        "c_in": 1 / math.sqrt(total),
        "c_noise": math.log(sigma) / 4,
    }


@pytest.mark.parametrize("sigma", [0.002, 0.1, 0.5, 1.0, 80.0])
@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_preconditioning_coefficients_match_the_paper_and_diffusers(sigma, sigma_data):
    preconditioner = EDMPreconditioner(sigma_data)
    sigmas = torch.tensor([sigma], dtype=torch.float64)
    ours = {name: getattr(preconditioner, name)(sigmas).item() for name in hand_coefficients(1, 1)}
    assert ours == pytest.approx(hand_coefficients(sigma, sigma_data), rel=1e-12, abs=0)
    # diffusers' EDM scheduler, read back through its public preconditioning calls
    diffusers = EDMEulerScheduler(sigma_data=sigma_data)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    theirs = {
        "c_skip": diffusers.precondition_outputs(one, zero, sigmas).item(),
        "c_out": diffusers.precondition_outputs(zero, one, sigmas).item(),
        "c_in": diffusers.precondition_inputs(one, sigmas).item(),
        "c_noise": diffusers.precondition_noise(sigmas).item(),
    }
    assert ours == pytest.approx(theirs, rel=1e-12, abs=0)


def test_preconditioning_known_values_and_loss_weight():
    preconditioner = EDMPreconditioner(0.5)
    sigma = torch.tensor([0.5], dtype=torch.float64)
    assert preconditioner.c_skip(sigma).item() == pytest.approx(0.5)
    assert preconditioner.c_out(sigma).item() == pytest.approx(math.sqrt(0.125))
    assert preconditioner.c_in(sigma).item() == pytest.approx(math.sqrt(2))
    assert preconditioner.c_noise(sigma).item() == pytest.approx(math.log(0.5) / 4)
    sigmas = torch.logspace(-3, 2, 11, dtype=torch.float64)
    weight = preconditioner.loss_weight(sigmas)
    torch.testing.assert_close(weight, (sigmas**2 + 0.25) / (sigmas * 0.5) ** 2)
    # λ = 1 / c_out²: the weighted denoiser error is the plain error of the network output
    torch.testing.assert_close(weight * preconditioner.c_out(sigmas) ** 2, torch.ones(11).double())


class RecordingAffineNet(torch.nn.Module):
    """F(z, t) = 2 z[:, :1] − z[:, 1:] + t: records what the network is fed."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs, self.timesteps = [], []

    def forward(self, z, timesteps):
        self.inputs.append(z.clone())
        self.timesteps.append(timesteps.clone())
        return 2 * z[:, :1] - z[:, 1:2] + timesteps.view(-1, 1, 1, 1)


def test_predict_wraps_the_network_in_the_preconditioner():
    strategy = EDMStrategy()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 4, 4, generator=g) * 5
    cond = lesion_condition(torch.rand(3, 1, 4, 4, generator=g) > 0.5)
    sigma = torch.tensor([0.01, 1.0, 60.0])
    net = RecordingAffineNet()
    out = strategy.predict(net, x, sigma, cond)
    coefficients = [hand_coefficients(s, 0.5) for s in sigma.tolist()]
    per_sample = {
        k: torch.tensor([c[k] for c in coefficients]).view(-1, 1, 1, 1) for k in coefficients[0]
    }
    scaled = per_sample["c_in"] * x
    assert torch.allclose(net.inputs[0][:, :1], scaled) and torch.equal(net.inputs[0][:, 1:], cond)
    torch.testing.assert_close(net.timesteps[0], per_sample["c_noise"].flatten())
    network = 2 * scaled - cond + per_sample["c_noise"]
    torch.testing.assert_close(out, per_sample["c_skip"] * x + per_sample["c_out"] * network)


@pytest.mark.parametrize("num_steps", [2, 5, 18, 40])
@pytest.mark.parametrize("sigma_min, sigma_max, rho", [(0.002, 80.0, 7.0), (0.01, 10.0, 3.0)])
def test_rho_schedule_closed_form_endpoints_and_monotonicity(num_steps, sigma_min, sigma_max, rho):
    sigmas = EDMStrategy(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho).sampling_sigmas(
        num_steps
    )
    ramp = np.linspace(0.0, 1.0, num_steps)
    closed_form = (
        sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    ) ** rho
    np.testing.assert_allclose(sigmas[:-1], closed_form, rtol=1e-12)
    assert sigmas[0] == pytest.approx(sigma_max, rel=1e-12)
    assert sigmas[-2] == pytest.approx(sigma_min, rel=1e-12) and sigmas[-1] == 0.0
    assert all(a > b for a, b in zip(sigmas, sigmas[1:], strict=False))
    reference = EDMEulerScheduler(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    reference.set_timesteps(num_steps)
    np.testing.assert_allclose(sigmas, reference.sigmas.double().numpy(), rtol=1e-6)


def test_one_step_schedule_is_sigma_max_then_zero():
    assert karras_sigmas(1, 0.002, 80.0, 7.0) == [80.0, 0.0]
    with pytest.raises(ValueError, match=">= 1"):
        karras_sigmas(0, 0.002, 80.0, 7.0)


@pytest.mark.parametrize("num_steps", [1, 2, 4, 18])
@pytest.mark.parametrize("guidance_scale", [1.0, 2.0])
def test_heun_evaluates_twice_per_step_but_once_on_the_last(num_steps, guidance_scale):
    strategy = EDMStrategy()
    model = CountingModel(tiny_unet(2, 1))
    cond = lesion_condition(
        torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5
    )
    strategy.sample(model, (2, 1, 8, 8), cond, num_steps=num_steps, guidance_scale=guidance_scale)
    assert len(model.calls) == strategy.num_sampling_steps(num_steps) == 2 * num_steps - 1
    assert all(c["x"].shape[0] == (2 if guidance_scale == 1.0 else 4) for c in model.calls)
    # the network sees c_noise of σ_0; σ_1, σ_1; ...; σ_{N-1}, σ_{N-1}: Heun's end-point slope,
    # then the next step's start, and no call at σ_N = 0
    sigmas = strategy.sampling_sigmas(num_steps)
    expected = [sigmas[0]] + [s for s in sigmas[1:-1] for _ in range(2)]
    seen = [c["timesteps"][0].item() for c in model.calls]
    np.testing.assert_allclose(seen, [math.log(s) / 4 for s in expected], rtol=1e-6)
    assert strategy.num_sampling_steps() == 35  # 18 steps by default (the paper's CIFAR-10)


MEAN, STD = 0.3, 0.4  # Gaussian toy data: every pixel ~ N(MEAN, STD²), independently


def exact_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[y | y + σ n = x] for y ~ N(MEAN, STD²)."""
    return MEAN + STD**2 / (STD**2 + sigma**2) * (x - MEAN)


class GaussianOracle(torch.nn.Module):
    """The network output that makes EDM's D exactly :func:`exact_denoiser`: the paper's
    preconditioning inverted by hand (σ from c_noise = ¼ ln σ, x from c_in x), in float64."""

    def __init__(self, sigma_data: float) -> None:
        super().__init__()
        self.sigma_data = sigma_data

    def forward(self, x_in, c_noise):
        sigma = torch.exp(4 * c_noise.double()).view(-1, 1, 1, 1)
        total = sigma**2 + self.sigma_data**2
        x = x_in.double() * total.sqrt()
        c_skip, c_out = self.sigma_data**2 / total, sigma * self.sigma_data / total.sqrt()
        return ((exact_denoiser(x, sigma) - c_skip * x) / c_out).float()


def exact_flow_solution(x_start: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """dx/dσ = (x − D(x; σ)) / σ = (x − MEAN) σ / (STD² + σ²) gives x − MEAN ∝ √(STD² + σ²)."""
    return MEAN + (x_start.double() - MEAN) * STD / math.sqrt(STD**2 + sigma_max**2)


def euler_on_the_same_schedule(x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    x = x.double()
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        x = x + (sigma_next - sigma) * (x - exact_denoiser(x, torch.tensor(sigma).double())) / sigma
    return x


def test_heun_converges_at_second_order_and_beats_euler_at_equal_nfe():
    """Through the whole sampling path (noise draw, preconditioning, solver) with the exact
    denoiser. Heun's error falls ~4x per doubling of steps, Euler's ~2x. (With ≤ 8 Heun steps
    Euler wins on this toy: the first step, from σ_max = 80 down to a few units, is too long for
    the trapezoidal rule, so the paper's sampler needs enough steps to pay off.)"""
    strategy = EDMStrategy()
    shape, seed = (64, 1, 4, 4), 3
    # the initial noise as sample() draws it: σ_max · N(0, I) from the generator
    x_start = strategy.sigma_max * torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    exact = exact_flow_solution(x_start, strategy.sigma_max)
    heun_errors, euler_errors = [], []
    for steps in (16, 32, 64):
        samples = strategy.sample(
            GaussianOracle(strategy.sigma_data),
            shape,
            num_steps=steps,
            generator=torch.Generator().manual_seed(seed),
        )
        heun_errors.append((samples.double() - exact).abs().max().item())
        euler = euler_on_the_same_schedule(
            x_start, strategy.sampling_sigmas(strategy.num_sampling_steps(steps))
        )
        euler_errors.append((euler - exact).abs().max().item())
    assert heun_errors[-1] < 1e-2, heun_errors
    assert all(h < e for h, e in zip(heun_errors, euler_errors, strict=True)), (
        heun_errors,
        euler_errors,
    )
    for coarse, fine in zip(heun_errors, heun_errors[1:], strict=False):
        assert coarse / fine > 3.5, heun_errors
    for coarse, fine in zip(euler_errors, euler_errors[1:], strict=False):
        assert 1.5 < coarse / fine < 2.5, euler_errors


def test_guidance_combines_preconditioned_denoisers_in_one_call():
    strategy = EDMStrategy()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 4, 4, generator=g) * 3
    cond = lesion_condition(torch.rand(3, 1, 4, 4, generator=g) > 0.5)
    sigma = torch.full((3,), 2.0)
    net = RecordingAffineNet()
    out = guided_model(net, cond, 3.0, forward=strategy.predict)(x, sigma)
    assert len(net.inputs) == 1 and net.inputs[0].shape == (6, 2, 4, 4)
    with_cond = strategy.predict(RecordingAffineNet(), x, sigma, cond)
    without = strategy.predict(RecordingAffineNet(), x, sigma, null_condition(cond))
    torch.testing.assert_close(out, without + 3.0 * (with_cond - without))


def test_training_sigmas_are_log_normal_with_the_paper_parameters():
    strategy = EDMStrategy()
    sigmas = strategy.sample_timesteps(
        torch.zeros(20000, 1, 2, 2), torch.Generator().manual_seed(4)
    )
    normal = torch.randn(20000, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(sigmas, torch.exp(-1.2 + 1.2 * normal))
    assert sigmas.log().mean().item() == pytest.approx(-1.2, abs=0.03)
    assert sigmas.log().std().item() == pytest.approx(1.2, abs=0.03)


class OffsetOracle(torch.nn.Module):
    """The network's exact effective target (y − c_skip x) / c_out plus ``offset`` everywhere."""

    def __init__(self, x0: torch.Tensor, offset: float, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.x0, self.offset, self.sigma_data = x0.double(), offset, sigma_data

    def forward(self, x_in, c_noise):
        sigma = torch.exp(4 * c_noise.double()).view(-1, 1, 1, 1)
        total = sigma**2 + self.sigma_data**2
        x = x_in.double() * total.sqrt()
        c_skip, c_out = self.sigma_data**2 / total, sigma * self.sigma_data / total.sqrt()
        return ((self.x0 - c_skip * x) / c_out + self.offset).float()


def test_loss_weight_makes_every_noise_level_count_the_same():
    """λ(σ) ‖D − y‖² = ‖F − F_target‖²: an output off by 1 everywhere costs exactly 1 at every σ,
    and the exact target costs nothing."""
    strategy = EDMStrategy()
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(256, 1, 4, 4, generator=g) * 2 - 1
    loss = strategy.training_loss(
        OffsetOracle(x0, 1.0), x0, generator=torch.Generator().manual_seed(6)
    )
    assert loss.item() == pytest.approx(1.0, rel=1e-3)
    exact = strategy.training_loss(
        OffsetOracle(x0, 0.0), x0, generator=torch.Generator().manual_seed(6)
    )
    assert exact.item() < 1e-6

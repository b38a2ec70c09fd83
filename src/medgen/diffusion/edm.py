"""EDM: σ-parameterised diffusion with preconditioning and a deterministic Heun sampler.

Karras, Aittala, Aila & Laine 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models" (https://arxiv.org/abs/2206.00364), Table 1 ("Ours") and Algorithm 1, as in NVlabs/edm
(``EDMPrecond``, ``EDMLoss``, ``edm_sampler`` with ``S_churn = 0``).

Time is the noise level σ itself: ``x = y + σ n`` for data ``y`` and ``n ~ N(0, I)``, so the
"timesteps" this strategy hands around are σ values (float). The network ``F`` is wrapped by the
preconditioner into the denoiser ``D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))``,
which estimates ``y``; a spatial condition is concatenated to ``c_in x`` unscaled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medgen.diffusion.base import STRATEGIES, Denoiser, DiffusionStrategy
from medgen.diffusion.enums import PredictionType
from medgen.diffusion.guidance import model_forward
from medgen.diffusion.rng import randn


class EDMPreconditioner:
    """The preconditioning of Karras et al. 2022, Table 1 / Eq. 7, for data of std ``sigma_data``.

    Chosen so that the network's input and its training target both have unit variance at every
    σ and the network's errors are amplified as little as possible.
    """

    def __init__(self, sigma_data: float) -> None:
        self.sigma_data = float(sigma_data)

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        """σ_data² / (σ² + σ_data²)."""
        return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        """σ σ_data / √(σ² + σ_data²)."""
        return sigma * self.sigma_data / (sigma**2 + self.sigma_data**2).sqrt()

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        """1 / √(σ² + σ_data²)."""
        return 1.0 / (sigma**2 + self.sigma_data**2).sqrt()

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        """¼ ln σ, the "timestep" the network sees."""
        return sigma.log() / 4

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """λ(σ) = (σ² + σ_data²) / (σ σ_data)² = 1 / c_out², on the denoiser's squared error."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """The ρ-schedule of Karras et al. 2022, Eq. 5: ``num_steps`` noise levels from
    ``sigma_max`` down to ``sigma_min``, evenly spaced in σ^(1/ρ), then a final 0.

    One step is the single level ``sigma_max`` (the paper's formula divides by ``N − 1``).
    """
    if num_steps < 1:
        raise ValueError(f"edm: num_steps must be >= 1, got {num_steps}")
    if num_steps == 1:
        return [float(sigma_max), 0.0]
    high, low = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    levels = [(high + i / (num_steps - 1) * (low - high)) ** rho for i in range(num_steps)]
    return [*levels, 0.0]


@STRATEGIES.register("edm")
class EDMStrategy(DiffusionStrategy):
    """Karras et al. 2022 ("EDM"): preconditioned denoiser, log-normal σ, Heun sampling.

    Training draws ``ln σ ~ N(p_mean, p_std²)`` and minimises ``λ(σ) ‖D(y + σ n; σ) − y‖²`` with
    ``λ(σ) = (σ² + σ_data²) / (σ σ_data)²``: the weight is applied to the denoiser error (as in
    NVlabs' ``EDMLoss``), which equals the unweighted error of ``F`` against its effective target
    ``(y − c_skip x) / c_out``. Sampling is Algorithm 1 with ``S_churn = 0``: deterministic Heun
    (2nd order) steps over the ρ-schedule of :func:`karras_sigmas`, the last one an Euler step to
    σ = 0, from ``x ~ N(0, sigma_max² I)``.

    Args:
        sigma_data: standard deviation of the data (default 0.5, the paper's value for images in
            [-1, 1]; for latents scaled to unit variance 1.0 is the matching value).
        sigma_min: smallest sampling noise level (default 0.002).
        sigma_max: largest sampling noise level, the initial noise's std (default 80.0).
        rho: ρ of the sampling schedule (default 7.0).
        p_mean: mean of ln σ at training (default -1.2).
        p_std: standard deviation of ln σ at training (default 1.2).
        num_inference_steps: Heun steps N (default 18, the paper's CIFAR-10 setting), i.e.
            ``2 N − 1`` network evaluations per sample (35).
        min_snr_gamma: must stay None (default): EDM's λ(σ) is already the loss weighting.
        cond_drop_prob: classifier-free-guidance condition dropout probability (default 0.0).

    Guidance combines the conditional and null-conditional denoiser outputs ``D``; since the
    ``c_skip x`` part is the same for both, that equals combining the raw network outputs.
    """

    name = "edm"
    sampler = "heun"
    order = 2
    prediction_type = PredictionType.SAMPLE  # D(x; σ) estimates the clean data

    def __init__(
        self,
        sigma_data: float = 0.5,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        num_inference_steps: int = 18,
        min_snr_gamma: float | None = None,
        cond_drop_prob: float = 0.0,
    ) -> None:
        if min_snr_gamma is not None:
            raise ValueError(
                "edm: min_snr_gamma does not apply: EDM weights the loss by "
                "λ(σ) = (σ² + σ_data²) / (σ σ_data)² (Karras et al. 2022); leave it null"
            )
        super().__init__(min_snr_gamma=None, cond_drop_prob=cond_drop_prob)
        if sigma_data <= 0 or p_std <= 0 or rho <= 0:
            raise ValueError(
                f"edm: sigma_data, p_std and rho must be > 0, got {sigma_data}, {p_std}, {rho}"
            )
        if not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"edm: need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, "
                f"sigma_max={sigma_max}"
            )
        if num_inference_steps < 1:
            raise ValueError(f"edm: num_inference_steps must be >= 1, got {num_inference_steps}")
        self.sigma_data = float(sigma_data)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.rho = float(rho)
        self.p_mean = float(p_mean)
        self.p_std = float(p_std)
        self.num_inference_steps = int(num_inference_steps)
        self.preconditioner = EDMPreconditioner(self.sigma_data)

    @property
    def init_noise_sigma(self) -> float:
        return self.sigma_max

    # --------------------------------------------------------------- training
    def sample_timesteps(
        self, x0: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training noise levels ``σ = exp(p_mean + p_std · N(0, 1))``, shape ``[B]``."""
        normal = randn((x0.shape[0],), generator, x0.device)
        return (self.p_mean + self.p_std * normal).exp()

    def add_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """``x = x0 + σ n``."""
        return x0 + _per_sample(timesteps, x0) * noise

    def training_target(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The clean data: :meth:`predict` is the denoiser ``D``."""
        return x0

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        """1 / σ² (signal coefficient 1, noise coefficient σ)."""
        return timesteps.float().pow(-2)

    def loss_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """λ(σ) on the denoiser's squared error."""
        return self.preconditioner.loss_weight(timesteps.float())

    def predict(
        self,
        model: nn.Module,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        cond: torch.Tensor | None,
    ) -> torch.Tensor:
        """The denoiser ``D(x; σ) = c_skip x + c_out F(c_in x; c_noise)`` (``timesteps`` = σ)."""
        sigma = timesteps.float()
        scale = self.preconditioner
        x_in = _per_sample(scale.c_in(sigma), x_t) * x_t
        out = model_forward(model, x_in, scale.c_noise(sigma), cond)
        return _per_sample(scale.c_skip(sigma), x_t) * x_t + _per_sample(
            scale.c_out(sigma), x_t
        ) * out.to(x_t.dtype)

    def marginal(self, t: float) -> tuple[float, float]:
        """``x_σ = x0 + σ·ε``: ``(1, σ)``."""
        return 1.0, float(t)

    # --------------------------------------------------------------- sampling
    def num_solver_steps(self, num_steps: int | None = None) -> int:
        """``num_steps``, else ``num_inference_steps`` (default 18) Heun steps."""
        steps = self.num_inference_steps if num_steps is None else int(num_steps)
        if steps < 1:
            raise ValueError(f"edm: num_steps must be >= 1, got {steps}")
        return steps

    def network_evaluations(self, solver_steps: int) -> int:
        """``2 N − 1``: two per Heun step, one for the final Euler step to σ = 0."""
        return 2 * solver_steps - 1

    def sampling_sigmas(self, num_steps: int) -> list[float]:
        """The ``num_steps + 1`` noise levels of sampling, ``sigma_max`` … ``sigma_min``, 0."""
        return karras_sigmas(num_steps, self.sigma_min, self.sigma_max, self.rho)

    def _reverse_process(
        self,
        shape: Sequence[int],
        num_steps: int,
        device: torch.device,
        generator: torch.Generator | None,
    ):
        sigmas = self.sampling_sigmas(num_steps)

        def step(denoise: Denoiser, i: int, x: torch.Tensor) -> torch.Tensor:
            # Algorithm 1: an Euler step along dx/dσ = (x − D(x; σ)) / σ, then Heun's correction
            # with the slope at the end point, except on the last step, where σ_next = 0.
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            slope = (x - denoise(x, sigma)) / sigma
            x_next = x + (sigma_next - sigma) * slope
            if sigma_next == 0.0:
                return x_next
            slope_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
            return x + (sigma_next - sigma) * (slope + slope_next) / 2

        return sigmas[:-1], step


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[B]`` values shaped ``[B, 1, ...]`` to broadcast over ``like``'s other dimensions."""
    return values.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

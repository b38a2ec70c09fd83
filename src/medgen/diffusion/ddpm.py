"""Denoising diffusion (DDPM training, DDPM or DDIM sampling) over MONAI's schedulers.

Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (https://arxiv.org/abs/2006.11239);
Song et al. 2021, "Denoising Diffusion Implicit Models" (https://arxiv.org/abs/2010.02502).
Noise schedules, ``add_noise`` and the reverse ``step`` are MONAI's ``DDPMScheduler`` and
``DDIMScheduler``; this class adds the training loss (with Min-SNR-γ and condition dropout), a
sampling loop that threads a ``torch.Generator`` through every random draw (MONAI's
``DiffusionInferer.sample`` does not pass one to ``step``), and null-condition guidance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from medgen.diffusion.base import STRATEGIES, Denoiser, DiffusionStrategy
from medgen.diffusion.enums import DDPMSampler, PredictionType
from medgen.diffusion.loss_weighting import snr_from_alphas_cumprod
from medgen.diffusion.rng import randint

#: Default number of DDIM steps when ``num_inference_steps`` is null.
DEFAULT_DDIM_STEPS = 50


@STRATEGIES.register("ddpm")
class DDPMStrategy(DiffusionStrategy):
    """Variance-preserving diffusion with ε- (default) or v-prediction.

    Forward process: ``x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε`` with integer ``t`` uniform in ``[0, T)``;
    the loss is the (optionally Min-SNR-γ weighted) MSE to the prediction target.

    Args:
        num_train_timesteps: T, number of diffusion steps (default 1000).
        schedule: MONAI ``NoiseSchedules`` name: ``linear_beta`` (default), ``scaled_linear_beta``,
            ``sigmoid_beta`` or ``cosine``.
        schedule_args: keyword arguments of the schedule, e.g. ``{"beta_start": 1e-4,
            "beta_end": 2e-2}`` (default: MONAI's defaults, which are those values).
        prediction_type: ``epsilon`` (default) or ``v_prediction``.
        sampler: ``ddim`` (default, deterministic strided sampling) or ``ddpm`` (ancestral, all
            T steps: MONAI's DDPM step uses ``t−1`` as the previous step, so it cannot stride).
        num_inference_steps: sampling steps; null (default) means 50 for DDIM and T for DDPM.
        eta: DDIM stochasticity η (default 0.0, deterministic).
        clip_sample: clip the predicted x0 to [-1, 1] at each sampling step (default True, right
            for pixel data in [-1, 1]; must be False in latent space).
        min_snr_gamma: Min-SNR-γ (default None = unweighted; 5.0 in the paper).
        cond_drop_prob: classifier-free-guidance condition dropout probability (default 0.0).

    Sampling makes one network call per step. With ``eta > 0`` or the DDPM sampler, MONAI draws
    the step noise with the sampling ``generator`` on the model's device, so the generator must
    live there.
    """

    name = "ddpm"

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        schedule_args: dict[str, Any] | None = None,
        prediction_type: str = PredictionType.EPSILON,
        sampler: str = DDPMSampler.DDIM,
        num_inference_steps: int | None = None,
        eta: float = 0.0,
        clip_sample: bool = True,
        min_snr_gamma: float | None = None,
        cond_drop_prob: float = 0.0,
    ) -> None:
        super().__init__(min_snr_gamma=min_snr_gamma, cond_drop_prob=cond_drop_prob)
        prediction_type = PredictionType(prediction_type)
        if prediction_type not in (PredictionType.EPSILON, PredictionType.V_PREDICTION):
            raise ValueError(
                f"ddpm: prediction_type must be epsilon or v_prediction, got {prediction_type!r}"
            )
        self.prediction_type = prediction_type
        self.sampler = DDPMSampler(sampler)
        self.num_train_timesteps = int(num_train_timesteps)
        self.schedule = schedule
        self.schedule_args = dict(schedule_args or {})
        self.eta = float(eta)
        self.clip_sample = bool(clip_sample)
        self.scheduler = DDPMScheduler(**self._scheduler_options())
        self.num_inference_steps = num_inference_steps
        self.num_solver_steps()  # validate early

    def _scheduler_options(self) -> dict[str, Any]:
        return dict(
            num_train_timesteps=self.num_train_timesteps,
            schedule=self.schedule,
            clip_sample=self.clip_sample,
            prediction_type=str(self.prediction_type),
            **self.schedule_args,
        )

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t for t = 0 … T−1."""
        return self.scheduler.alphas_cumprod

    def num_solver_steps(self, num_steps: int | None = None) -> int:
        """``num_steps``, else ``num_inference_steps``, else all T steps (DDPM) or 50 (DDIM); one
        network evaluation each."""
        if num_steps is None:
            num_steps = self.num_inference_steps
        if self.sampler == DDPMSampler.DDPM:
            steps = self.num_train_timesteps if num_steps is None else int(num_steps)
            if steps != self.num_train_timesteps:
                raise ValueError(
                    f"ddpm sampler runs all {self.num_train_timesteps} training steps; got "
                    f"num_steps={steps}. Use sampler: ddim for fewer steps."
                )
            return steps
        steps = (
            min(DEFAULT_DDIM_STEPS, self.num_train_timesteps)
            if num_steps is None
            else int(num_steps)
        )
        if not 1 <= steps <= self.num_train_timesteps:
            raise ValueError(
                f"ddim num_steps must be in [1, {self.num_train_timesteps}], got {steps}"
            )
        return steps

    def sample_timesteps(
        self, x0: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Integer ``t`` uniform in ``[0, T)``."""
        return randint(self.num_train_timesteps, (x0.shape[0],), generator, x0.device)

    def add_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """Forward process q(x_t | x0) = √ᾱ_t x0 + √(1−ᾱ_t) ε."""
        return self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=timesteps)

    def training_target(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        if self.prediction_type == PredictionType.EPSILON:
            return noise
        return self.scheduler.get_velocity(x0, noise, timesteps)

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        return snr_from_alphas_cumprod(self.alphas_cumprod, timesteps)

    def marginal(self, t: float) -> tuple[float, float]:
        """``x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε``."""
        alpha_bar = float(self.alphas_cumprod[int(t)])
        return alpha_bar**0.5, (1.0 - alpha_bar) ** 0.5

    def policy_times(self, shape: Sequence[int], num_steps: int) -> list[float]:
        """DDIM's integer timesteps for ``num_steps`` steps (MONAI's grid, T−1 down to 0)."""
        if not 1 <= int(num_steps) <= self.num_train_timesteps:
            raise ValueError(
                f"ddpm: policy num_steps must be in [1, {self.num_train_timesteps}], got {num_steps}"
            )
        scheduler = DDIMScheduler(**self._scheduler_options())
        scheduler.set_timesteps(int(num_steps))
        return scheduler.timesteps.tolist()

    def transition(
        self,
        prediction: torch.Tensor,
        x: torch.Tensor,
        step: int,
        times: Sequence[float],
        noise_level: float,
    ) -> tuple[torch.Tensor, float]:
        """DDIM's step with ``η = noise_level`` (Song et al. 2021, eq. 12 and 16) as a Gaussian:
        ``mean = √ᾱ_prev·x̂0 + √(1 − ᾱ_prev − σ²)·ε̂``, ``σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev)``.

        ``η = 1`` is DDPM's posterior variance on DDIM's strided grid: the stochastic policy of
        DDPO (Black et al. 2023). It is MONAI's ``DDIMScheduler.step`` (same previous timestep
        ``t − T // n``, ᾱ = 1 after the last step, x̂0 clipped when ``clip_sample``) with the
        noise left out, so ``η = 0`` gives the deterministic sampler's step exactly. The last step
        has σ = 0 (ᾱ_prev = 1): it is deterministic."""
        t = int(times[step])
        prev = t - self.num_train_timesteps // len(times)
        alphas = self.alphas_cumprod.to(x.device)
        alpha_t = float(alphas[t])
        alpha_prev = float(alphas[prev]) if prev >= 0 else 1.0
        if self.prediction_type == PredictionType.EPSILON:
            x0 = (x - (1 - alpha_t) ** 0.5 * prediction) / alpha_t**0.5
            eps = prediction
        else:  # v = √ᾱ ε − √(1−ᾱ) x0
            x0 = alpha_t**0.5 * x - (1 - alpha_t) ** 0.5 * prediction
            eps = alpha_t**0.5 * prediction + (1 - alpha_t) ** 0.5 * x
        if self.clip_sample:
            x0 = x0.clamp(-1.0, 1.0)
        variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
        std = float(noise_level) * max(variance, 0.0) ** 0.5
        mean = alpha_prev**0.5 * x0 + max(1 - alpha_prev - std**2, 0.0) ** 0.5 * eps
        return mean, std

    def _reverse_process(
        self,
        shape: Sequence[int],
        num_steps: int,
        device: torch.device,
        generator: torch.Generator | None,
    ):
        stochastic = self.sampler == DDPMSampler.DDPM or self.eta > 0
        if stochastic and generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"{self.sampler} sampling with a generator: MONAI draws the step noise on the "
                f"model's device ({device}), so the generator must live there, not on {generator.device}"
            )
        # A fresh scheduler per call: set_timesteps mutates it, and strategies may be shared.
        if self.sampler == DDPMSampler.DDPM:
            scheduler, step_options = DDPMScheduler(**self._scheduler_options()), {}
        else:
            scheduler, step_options = DDIMScheduler(**self._scheduler_options()), {"eta": self.eta}
        scheduler.set_timesteps(num_steps)
        timesteps = scheduler.timesteps.tolist()

        def step(denoise: Denoiser, i: int, x: torch.Tensor) -> torch.Tensor:
            out = denoise(x, timesteps[i])
            return scheduler.step(out, timesteps[i], x, generator=generator, **step_options)[0]

        return timesteps, step

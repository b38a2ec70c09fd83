"""Rectified flow (flow matching with straight paths) over MONAI's ``RFlowScheduler``.

Liu et al. 2023, "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified
Flow" (https://arxiv.org/abs/2209.03003); logit-normal timesteps and resolution-dependent shift
from Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"
(https://arxiv.org/abs/2403.03206), as implemented in MONAI (MAISI).

MONAI's convention, followed exactly: with ``σ = t / T`` (``T = num_train_timesteps``),
``x_t = (1 − σ) x0 + σ ε`` so ``t = 0`` is data and ``t = T`` is noise; the network predicts the
velocity ``v = x0 − ε`` and sampling integrates from ``t = T`` to ``0`` with Euler steps
``x ← x + v · (t − t_next) / T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.schedulers import RFlowScheduler
from monai.networks.schedulers.rectified_flow import timestep_transform

from medgen.diffusion.base import STRATEGIES, Denoiser, DiffusionStrategy
from medgen.diffusion.enums import PredictionType, TimestepSampling
from medgen.diffusion.loss_weighting import snr_from_flow_sigma
from medgen.diffusion.rng import rand, randn


@STRATEGIES.register("rflow")
class RectifiedFlowStrategy(DiffusionStrategy):
    """Velocity-predicting rectified flow with Euler sampling.

    Args:
        num_train_timesteps: T, the time scale fed to the network (default 1000).
        use_discrete_timesteps: floor training timesteps to integers and round sampling ones
            (default True, MONAI's default).
        timestep_sampling: ``uniform`` (default) or ``logit-normal`` (σ = sigmoid(N(loc, scale))).
        logit_normal_loc: mean of the logit-normal's normal (default 0.0).
        logit_normal_scale: standard deviation of the logit-normal's normal (default 1.0).
        use_timestep_transform: shift timesteps by resolution (default False), MONAI's
            ``timestep_transform``: with ``r = (numel / base_img_size_numel) ** (1 / spatial_dims)``,
            ``σ' = r σ / (1 + (r − 1) σ)``, i.e. more time near noise for larger images. Applied to
            training draws and to the sampling grid alike.
        base_img_size_numel: reference voxel count of the shift (default null = ``32 ** spatial_dims``
            of the data, i.e. 1024 in 2D and 32768 in 3D, MONAI's default).
        num_inference_steps: Euler steps at sampling (default 30).
        min_snr_gamma: Min-SNR-γ (default None); weight ``min(SNR, γ) / (1 + √SNR)²`` on the velocity
            error, see :mod:`medgen.diffusion.loss_weighting`.
        cond_drop_prob: classifier-free-guidance condition dropout probability (default 0.0).

    MONAI's ``RFlowScheduler`` is used for ``add_noise`` and the sampling timesteps. Training
    timesteps are drawn here (same distribution as ``RFlowScheduler.sample_timesteps``) because
    MONAI draws them from the global RNG, which a ``generator`` could not seed. The Euler update is
    written out because ``RFlowScheduler.step`` truncates ``next_timestep`` to an int, which is
    wrong for continuous timesteps (it equals MONAI's step for discrete ones).
    """

    name = "rflow"
    sampler = "euler"
    prediction_type = PredictionType.FLOW_VELOCITY

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        use_discrete_timesteps: bool = True,
        timestep_sampling: str = TimestepSampling.UNIFORM,
        logit_normal_loc: float = 0.0,
        logit_normal_scale: float = 1.0,
        use_timestep_transform: bool = False,
        base_img_size_numel: int | None = None,
        num_inference_steps: int = 30,
        min_snr_gamma: float | None = None,
        cond_drop_prob: float = 0.0,
    ) -> None:
        super().__init__(min_snr_gamma=min_snr_gamma, cond_drop_prob=cond_drop_prob)
        self.num_train_timesteps = int(num_train_timesteps)
        self.use_discrete_timesteps = bool(use_discrete_timesteps)
        self.timestep_sampling = TimestepSampling(timestep_sampling)
        if logit_normal_scale <= 0:
            raise ValueError(f"rflow: logit_normal_scale must be > 0, got {logit_normal_scale}")
        self.logit_normal_loc = float(logit_normal_loc)
        self.logit_normal_scale = float(logit_normal_scale)
        self.use_timestep_transform = bool(use_timestep_transform)
        if base_img_size_numel is not None and base_img_size_numel < 1:
            raise ValueError(
                f"rflow: base_img_size_numel must be positive, got {base_img_size_numel}"
            )
        self.base_img_size_numel = base_img_size_numel
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"rflow: num_inference_steps must be in [1, {self.num_train_timesteps}], got {num_inference_steps}"
            )
        self.num_inference_steps = int(num_inference_steps)
        self.scheduler = self._scheduler(spatial_dims=2)

    def _base_numel(self, spatial_dims: int) -> int:
        return (
            self.base_img_size_numel if self.base_img_size_numel is not None else 32**spatial_dims
        )

    def _scheduler(self, spatial_dims: int) -> RFlowScheduler:
        return RFlowScheduler(
            num_train_timesteps=self.num_train_timesteps,
            use_discrete_timesteps=self.use_discrete_timesteps,
            sample_method=str(self.timestep_sampling),
            loc=self.logit_normal_loc,
            scale=self.logit_normal_scale,
            use_timestep_transform=self.use_timestep_transform,
            base_img_size_numel=self._base_numel(spatial_dims),
            spatial_dim=spatial_dims,
        )

    def add_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """``x_t = (1 − t/T) x0 + (t/T) ε`` (MONAI ``RFlowScheduler.add_noise``)."""
        return self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=timesteps)

    def sample_timesteps(
        self, x0: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training timesteps in ``[0, T)`` with the configured distribution and shift."""
        batch, device = x0.shape[0], x0.device
        if self.timestep_sampling == TimestepSampling.UNIFORM:
            sigma = rand((batch,), generator, device)
        else:
            normal = randn((batch,), generator, device)
            sigma = torch.sigmoid(self.logit_normal_loc + self.logit_normal_scale * normal)
        t = sigma * self.num_train_timesteps
        if self.use_discrete_timesteps:
            t = t.long()
        if self.use_timestep_transform:
            spatial_dims = x0.ndim - 2
            t = timestep_transform(
                t,
                input_img_size_numel=math.prod(x0.shape[2:]),
                base_img_size_numel=self._base_numel(spatial_dims),
                num_train_timesteps=self.num_train_timesteps,
                spatial_dim=spatial_dims,
            )
        return t

    def training_target(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The velocity ``x0 − ε``."""
        return x0 - noise

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        return snr_from_flow_sigma(timesteps.float() / self.num_train_timesteps)

    def marginal(self, t: float) -> tuple[float, float]:
        """``x_t = (1 − t/T)·x0 + (t/T)·ε``."""
        sigma = float(t) / self.num_train_timesteps
        return 1.0 - sigma, sigma

    def sampling_timesteps(self, shape: Sequence[int], num_steps: int) -> list[float]:
        """MONAI's sampling grid from ``t = T`` down (``num_steps`` values, 0 excluded)."""
        spatial_dims = len(shape) - 2
        scheduler = self._scheduler(spatial_dims)
        scheduler.set_timesteps(num_steps, input_img_size_numel=math.prod(shape[2:]))
        return [float(t) for t in scheduler.timesteps.tolist()]

    def num_solver_steps(self, num_steps: int | None = None) -> int:
        """``num_steps``, else ``num_inference_steps`` (default 30) Euler steps."""
        return self.num_inference_steps if num_steps is None else int(num_steps)

    def policy_times(self, shape: Sequence[int], num_steps: int) -> list[float]:
        """The Euler sampler's grid (:meth:`sampling_timesteps`): ``num_steps`` times from T."""
        return self.sampling_timesteps(shape, self.num_solver_steps(num_steps))

    def transition(
        self,
        prediction: torch.Tensor,
        x: torch.Tensor,
        step: int,
        times: Sequence[float],
        noise_level: float,
    ) -> tuple[torch.Tensor, float]:
        """One Euler–Maruyama step of the reverse SDE with the flow's marginals (Flow-GRPO, Liu et
        al. 2025, https://arxiv.org/abs/2505.05470), in this strategy's convention
        ``x_s = (1−s)·x0 + s·ε`` (``s = t/T``) and velocity ``v = x0 − ε``.

        For any noise ``g(s)`` the SDE ``dx = [u − ½g²∇log p_s] ds + g dw̄`` run backwards in ``s``
        has the same marginals as the probability-flow ODE ``dx/ds = u = −v``. With
        ``x̂0 = x + s·v``, ``ε̂ = x + (s−1)·v`` and ``∇log p_s = −ε̂/s``, a step of size
        ``Δ = s − s_next`` is Gaussian with
        ``mean = x + Δ·v − (g²Δ / 2s)·ε̂`` and ``std = g·√Δ``, where
        ``g = noise_level·√(s̃/(1−s̃))`` and ``s̃ = min(s, s_1)``: at the first time (s = 1) the
        ratio would be infinite, so it is capped at the grid's second time ``s_1``, as Flow-GRPO
        does. ``noise_level = 0`` is the Euler step of :meth:`sample` exactly."""
        T = self.num_train_timesteps
        s = float(times[step]) / T
        s_next = float(times[step + 1]) / T if step + 1 < len(times) else 0.0
        delta = s - s_next
        cap = float(times[1]) / T if len(times) > 1 else 0.5
        s_tilde = min(s, cap)
        g = float(noise_level) * (s_tilde / (1.0 - s_tilde)) ** 0.5
        mean = x + delta * prediction
        if g > 0:
            eps = x + (s - 1.0) * prediction
            mean = mean - (g**2 * delta / (2.0 * s)) * eps
        return mean, g * delta**0.5

    def _reverse_process(
        self,
        shape: Sequence[int],
        num_steps: int,
        device: torch.device,
        generator: torch.Generator | None,
    ):
        # Euler integration from noise; deterministic given the initial noise.
        timesteps = self.sampling_timesteps(shape, num_steps)
        next_timesteps = [*timesteps[1:], 0.0]

        def step(denoise: Denoiser, i: int, x: torch.Tensor) -> torch.Tensor:
            velocity = denoise(x, timesteps[i])
            return x + velocity * ((timesteps[i] - next_timesteps[i]) / self.num_train_timesteps)

        return timesteps, step

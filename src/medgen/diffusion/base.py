"""The strategy interface: HOW a network is trained and sampled (DDPM, rectified flow, ...).

A strategy works on tensors in the coordinates of a space (pixels or latents) and knows nothing
about modalities; a condition, when given, is either spatial (concatenated to the noisy input
along channels) or class labels ``[B]`` (passed as ``class_labels=``), see
:mod:`medgen.diffusion.guidance`.
Every strategy's options are JSON values so ``from_config(json.loads(json.dumps(s.to_config())))``
rebuilds an equivalent strategy (the diffusers ``ConfigMixin`` idea, without the machinery).

Two hooks let a strategy grow beyond "one plain network call per step" (EDM uses both):

* :meth:`DiffusionStrategy.predict` wraps the raw network call, in training and sampling alike,
  so a strategy can precondition the network (scale its input, timestep and output);
* :attr:`DiffusionStrategy.order` is the number of network evaluations per solver step (the
  diffusers scheduler ``order``): a step receives the guided denoiser and may call it more than
  once, so a second-order solver (Heun) runs in the same sampling loop.

Inpainting (:class:`~medgen.diffusion.known_region.KnownRegion`): training and sampling take an
optional known region; the tensor is noisy inside it and holds the clean known values outside at
every step, and the loss counts region voxels only. RePaint resampling
(:class:`~medgen.diffusion.known_region.Resampling`) pushes the sample back along the forward
process with :meth:`DiffusionStrategy.marginal`.

Steps vs network evaluations: ``num_steps`` (and ``num_inference_steps``) count *solver steps*;
:meth:`DiffusionStrategy.num_sampling_steps` reports *network evaluations per sample* (NFE), the
cost a report should quote. They are equal for first-order samplers (DDPM, DDIM, Euler).

Size: the one contract every strategy implements; its training and sampling halves share the
hooks (``predict``, ``order``, ``marginal``) and are read together.
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from medgen.diffusion.enums import PredictionType
from medgen.diffusion.guidance import (
    drop_condition,
    guided_model,
    is_class_labels,
    is_token_ids,
    model_forward,
)
from medgen.diffusion.known_region import KnownRegion, Resampling
from medgen.diffusion.loss_details import TrainingTerms
from medgen.diffusion.loss_weighting import min_snr_weight
from medgen.diffusion.rng import randn
from medgen.models.registry import Registry

STRATEGIES: Registry = Registry("diffusion strategy")

#: ``denoise(x, t)``: the guided network prediction at one sampling time ``t`` (a scalar).
Denoiser = Callable[[torch.Tensor, float], torch.Tensor]
#: ``step(denoise, i, x)``: ``x`` after solver step ``i``, calling ``denoise`` ``order`` times
#: at most.
SolverStep = Callable[[Denoiser, int, torch.Tensor], torch.Tensor]
#: ``trace(x, t, prediction)``: told of every network evaluation of sampling (diagnostics).
Tracer = Callable[[torch.Tensor, float, torch.Tensor], None]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameter-free callable)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all non-batch dimensions, shape ``[B]``."""
    return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)


class DiffusionStrategy(ABC):
    """Base class of diffusion training/sampling algorithms.

    Subclasses set ``name``, ``prediction_type`` and ``sampler`` (the reverse process, for
    reports), register with ``@STRATEGIES.register(name)``, keep every constructor argument as an
    attribute of the same name (a JSON value or a string enum: :meth:`to_config` reads them back),
    and implement the equations: :meth:`sample_timesteps`, :meth:`add_noise`,
    :meth:`training_target` and :meth:`snr` for training; :meth:`num_solver_steps` and
    :meth:`_reverse_process` for sampling. Optional hooks, whose defaults are a plain network
    call and a first-order solver: :meth:`predict` (preconditioning), :attr:`order` with
    :meth:`network_evaluations` (multi-evaluation steps) and :attr:`init_noise_sigma`.

    Args (common to all strategies):
        min_snr_gamma: γ of Min-SNR-γ weighting (Hang et al. 2023); ``None`` (default) = unweighted.
        cond_drop_prob: probability (default 0.0) of replacing a sample's condition by the null
            condition during training, for classifier-free guidance.
    """

    name: ClassVar[str]
    prediction_type: PredictionType
    sampler: str
    #: Network evaluations per solver step (diffusers' scheduler ``order``): 1 for DDPM, DDIM
    #: and Euler, 2 for Heun.
    order: ClassVar[int] = 1
    #: Standard deviation of the initial noise of sampling (diffusers' ``init_noise_sigma``).
    init_noise_sigma: float = 1.0

    def __init__(self, *, min_snr_gamma: float | None = None, cond_drop_prob: float = 0.0) -> None:
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0 or null, got {min_snr_gamma}")
        if not 0.0 <= cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1], got {cond_drop_prob}")
        self.min_snr_gamma = None if min_snr_gamma is None else float(min_snr_gamma)
        self.cond_drop_prob = float(cond_drop_prob)

    # ------------------------------------------------------------------ config
    @classmethod
    def _option_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def _options(self) -> dict[str, Any]:
        # Read back from the attributes, so a new constructor argument cannot be left out.
        values = {k: getattr(self, k) for k in self._option_names()}
        return {k: str(v) if isinstance(v, Enum) else copy.deepcopy(v) for k, v in values.items()}

    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable options, including ``name``, from which :meth:`from_config` rebuilds."""
        return {"name": self.name, **self._options()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DiffusionStrategy:
        """Build a strategy from :meth:`to_config` output (``name`` selects the class on the base)."""
        options = dict(config)
        name = options.pop("name", getattr(cls, "name", None))
        if name is None:
            raise ValueError("strategy config needs a 'name'")
        target = STRATEGIES.get(name) if cls is DiffusionStrategy else cls
        if getattr(target, "name", None) != str(name).lower():
            raise ValueError(f"config names strategy {name!r} but {target.__name__} was asked for")
        allowed = set(target._option_names())
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(
                f"{target.name}: unknown option(s) {unknown}; allowed: {sorted(allowed)}"
            )
        return target(**options)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}({args})"

    # --------------------------------------------------------------- training
    @abstractmethod
    def sample_timesteps(
        self, x0: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training timesteps ``[B]`` for the batch ``x0``."""

    @abstractmethod
    def add_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The forward process: ``x_t`` from clean ``x0`` and Gaussian ``noise``."""

    @abstractmethod
    def training_target(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """What the network is trained to predict (of kind ``prediction_type``)."""

    @abstractmethod
    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio of ``x_t`` per sample, for Min-SNR-γ."""

    def marginal(self, t: float) -> tuple[float, float]:
        """``(a, s)`` of the forward marginal ``x_t = a·x0 + s·ε`` at sampling time ``t``; used to
        re-noise a sample (RePaint resampling). Strategies without it cannot resample."""
        raise NotImplementedError(f"{self.name} does not define marginal(): no resampling")

    def renoise(
        self,
        x: torch.Tensor,
        t_from: float,
        t_to: float,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``x_{t_to}`` from ``x_{t_from}`` (``t_to`` noisier) with the forward process:
        ``x_to = (a_to/a_from)·x_from + sqrt(s_to² − (a_to/a_from)²·s_from²)·ε``, exact for any
        Gaussian marginal ``x_t = a_t·x0 + s_t·ε``."""
        a_from, s_from = self.marginal(t_from)
        a_to, s_to = self.marginal(t_to)
        ratio = a_to / a_from
        variance = s_to**2 - (ratio * s_from) ** 2
        if variance < -1e-6:
            raise ValueError(
                f"{self.name}: cannot re-noise from t={t_from} to the less noisy t={t_to}"
            )
        noise = randn(x.shape, generator, x.device, x.dtype)
        return ratio * x + max(variance, 0.0) ** 0.5 * noise

    # ------------------------------------------------- sampling as a Markov decision process
    def policy_times(self, shape: Sequence[int], num_steps: int) -> list[float]:
        """The times of a stochastic sampler's steps, first (noise) to last: the states of the
        denoising MDP (:mod:`medgen.diffusion.policy_gradient`). Strategies without
        :meth:`transition` cannot be fine-tuned by policy gradients."""
        raise NotImplementedError(f"{self.name} has no stochastic sampler for policy gradients")

    def transition(
        self,
        prediction: torch.Tensor,
        x: torch.Tensor,
        step: int,
        times: Sequence[float],
        noise_level: float,
    ) -> tuple[torch.Tensor, float]:
        """``(mean, std)`` of the Gaussian step ``x_{step+1} ~ N(mean, std²)`` of a stochastic
        sampler from ``x`` at ``times[step]`` given the network's ``prediction`` there;
        ``noise_level`` sets how stochastic it is (0: the deterministic sampler's step)."""
        raise NotImplementedError(f"{self.name} has no stochastic sampler for policy gradients")

    def predict(
        self,
        model: nn.Module,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        cond: torch.Tensor | None,
    ) -> torch.Tensor:
        """The preconditioning hook: the prediction (of kind ``prediction_type``) at ``x_t``.

        Every network call of training and sampling goes through here, so a strategy can scale
        the network's input, timestep and output (EDM). The default is the plain call
        :func:`~medgen.diffusion.guidance.model_forward`. Under classifier-free guidance it is
        called once on the stacked ``2B`` batch, and guidance combines its outputs.
        """
        return model_forward(model, x_t, timesteps, cond)

    def loss_weights(self, timesteps: torch.Tensor) -> torch.Tensor | None:
        """Per-sample Min-SNR-γ weights on the target's squared error, or None when unweighted."""
        if self.min_snr_gamma is None:
            return None
        return min_snr_weight(self.snr(timesteps), self.min_snr_gamma, self.prediction_type)

    def training_loss(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        known: KnownRegion | None = None,
    ) -> torch.Tensor:
        """Scalar training loss for clean samples ``x0`` ``[B, C, *spatial]``: the MSE between
        :meth:`predict` and :meth:`training_target`, weighted per sample by :meth:`loss_weights`.

        ``cond`` is a spatial condition ``[B, Cc, *spatial]`` (concatenated to the noisy input),
        integer class labels ``[B]`` or token ids ``[B, L]``, replaced by the null condition with
        probability ``cond_drop_prob`` per sample; ``generator`` seeds the noise, timesteps and
        dropout, drawn in that order. ``known`` (inpainting): the noisy input holds the known
        values outside the region and the MSE counts region voxels only.
        """
        return self.training_terms(model, x0, cond, generator, known).per_sample.mean()

    def training_terms(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        known: KnownRegion | None = None,
    ) -> TrainingTerms:
        """What :meth:`training_loss` computes, per sample (same arguments and random draws): its
        scalar is ``per_sample.mean()``; the loss diagnostics and the perceptual term read the
        rest (:class:`~medgen.diffusion.loss_details.TrainingTerms`)."""
        self._check_inputs(x0.shape, cond)
        noise = randn(x0.shape, generator, x0.device, x0.dtype)
        timesteps = self.sample_timesteps(x0, generator)
        if cond is not None:
            cond = drop_condition(cond, self.cond_drop_prob, generator)
        x_t = self.add_noise(x0, noise, timesteps)
        if known is not None:
            known = known.to(x0.device, x0.dtype)
            x_t = known.apply(x_t)
        pred = self.predict(model, x_t, timesteps, cond)
        target = self.training_target(x0, noise, timesteps)
        loss = per_sample_mse(pred, target) if known is None else known.per_sample_mse(pred, target)
        weights = self.loss_weights(timesteps)
        if weights is not None:
            loss = loss * weights
        return TrainingTerms(loss, x0, x_t, timesteps, pred, target, weights, known)

    # --------------------------------------------------------------- sampling
    @abstractmethod
    def num_solver_steps(self, num_steps: int | None = None) -> int:
        """Solver steps :meth:`sample` takes for ``num_steps`` (None: the configured
        ``num_inference_steps``); raises ``ValueError`` for a count the sampler cannot run."""

    def network_evaluations(self, solver_steps: int) -> int:
        """Network evaluations per sample (NFE) of ``solver_steps`` steps: :attr:`order` per step.
        A solver whose last step is cheaper (EDM's final Euler step) overrides this."""
        return self.order * solver_steps

    def num_sampling_steps(self, num_steps: int | None = None) -> int:
        """Network evaluations per sample (NFE) that :meth:`sample` makes for ``num_steps`` solver
        steps (None: the configured number): the sampling cost to report. It equals the step count
        for first-order samplers. Classifier-free guidance does not change it: the conditional and
        null-conditional inputs share one call on a ``2B`` batch."""
        return self.network_evaluations(self.num_solver_steps(num_steps))

    @abstractmethod
    def _reverse_process(
        self,
        shape: Sequence[int],
        num_steps: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> tuple[list[int] | list[float], SolverStep]:
        """The times at which the solver steps start, first (noise) to last, and the solver
        ``step(denoise, i, x)`` giving ``x`` after step ``i``; ``denoise(x, t)`` is the guided
        :meth:`predict` at time ``t`` and a step calls it at most :attr:`order` times."""

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        shape: Sequence[int],
        cond: torch.Tensor | None = None,
        *,
        num_steps: int | None = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
        known: KnownRegion | None = None,
        resampling: Resampling | None = None,
        noise: torch.Tensor | None = None,
        trace: Tracer | None = None,
    ) -> torch.Tensor:
        """Generate samples of ``shape`` ``[B, C, *spatial]`` from noise.

        ``num_steps`` overrides the configured number of solver steps; a step makes :attr:`order`
        network calls or fewer (see :meth:`num_sampling_steps` for the total), each on a ``2B``
        batch under classifier-free guidance (``guidance_scale != 1``; 1.0 = no guidance).
        ``cond`` is a spatial condition or class labels ``[B]`` (-1: unconditional). The initial
        noise, of standard deviation :attr:`init_noise_sigma`, is drawn with ``generator``.
        ``known`` (inpainting) holds the known values outside its region after every step;
        ``resampling`` adds RePaint's resampling passes (more network evaluations). ``noise``:
        the unit-variance initial noise to start from instead of a draw (e.g. the same noise for
        every prompt of a comparison). ``trace(x, t, prediction)`` is called after every network
        evaluation (the training diagnostics' denoising trajectory).
        """
        self._check_inputs(shape, cond)
        steps = self.num_solver_steps(num_steps)
        device = model_device(model)
        timesteps, step = self._reverse_process(shape, steps, device, generator)
        if noise is not None:
            if tuple(noise.shape) != tuple(shape):
                raise ValueError(
                    f"{self.name}: noise {tuple(noise.shape)} must have shape {tuple(shape)}"
                )
            x = noise.to(device=device, dtype=torch.float32)
        else:
            x = randn(shape, generator, device)
        if self.init_noise_sigma != 1.0:
            x = x * self.init_noise_sigma
        if known is not None:
            known = known.to(device)
            if tuple(known.known.shape) != tuple(shape):
                raise ValueError(
                    f"{self.name}: known values {tuple(known.known.shape)} must have the sample "
                    f"shape {tuple(shape)}"
                )
            x = known.apply(x)
        guided = guided_model(
            model, None if cond is None else cond.to(device), guidance_scale, forward=self.predict
        )

        def denoise(x: torch.Tensor, t: float) -> torch.Tensor:
            # Integer timesteps (DDPM) stay int64, continuous ones (flow, σ) become float32.
            out = guided(x, torch.full((shape[0],), t, device=device))
            if trace is not None:
                trace(x, t, out)
            return out

        schedule = list((resampling or Resampling()).schedule(len(timesteps)))
        for kind, i, j in tqdm(schedule, disable=not progress, desc=f"{self.sampler} sampling"):
            if kind == "step":
                x = step(denoise, i, x)
            else:
                x = self.renoise(x, timesteps[i], timesteps[j], generator)
            if known is not None:
                x = known.apply(x)
        return x

    def _check_inputs(self, shape: Sequence[int], cond: torch.Tensor | None) -> None:
        shape = tuple(shape)
        if len(shape) not in (4, 5):
            raise ValueError(f"{self.name}: expected [B, C, H, W] or [B, C, D, H, W], got {shape}")
        if cond is None:
            return
        if is_class_labels(cond) or is_token_ids(cond):
            if cond.shape[0] != shape[0]:
                what = "class labels" if cond.ndim == 1 else "token id rows"
                raise ValueError(f"{self.name}: {cond.shape[0]} {what} for a batch of {shape[0]}")
            return
        if cond.ndim != len(shape) or cond.shape[0] != shape[0] or cond.shape[2:] != shape[2:]:
            raise ValueError(
                f"{self.name}: condition {tuple(cond.shape)} {cond.dtype} must be integer class "
                f"labels [{shape[0]}], token ids [{shape[0]}, L] or a spatial condition matching {shape} in batch and "
                "spatial size"
            )


def build_strategy(name: str, config: Mapping[str, Any] | None = None) -> DiffusionStrategy:
    """Build the strategy registered as ``name`` with options ``config`` (a ``name`` key must agree)."""
    options = dict(config or {})
    if "name" in options and str(options["name"]).lower() != str(name).lower():
        raise ValueError(f"build_strategy({name!r}) got a config for {options['name']!r}")
    options["name"] = name
    return DiffusionStrategy.from_config(options)

"""The ``training.logging`` block: which training diagnostics run, and how often.

Every diagnostic has its own switch (``enabled``) and interval (``every``, in optimizer steps
or in epochs, as each says). The diagnostics are callbacks of the one engine
(`medgen.training.diagnostics`), run on rank 0 only; this block changes nothing that is
learned, so it is bookkeeping for the job identity (`medgen.training.job.BOOKKEEPING_KEYS`).
Defaults are the CPU demo's (conf/base writes them out per job), chosen so the whole set adds
at most 10 % to a training node's wall time (docs/benchmarks.md, "Training diagnostics").

    logging:
      grad_norm: {enabled: true, every: 10}        # steps: gradient norm before clipping
      throughput: {enabled: true, every: 10}       # steps: samples per second
      flops: {enabled: true}                       # once: parameter count, FLOPs per sample
      timestep_losses: {enabled: true, every: 1, bins: 10}   # epochs
      regional_losses: {enabled: true, every: 1}   # epochs: inside vs outside the mask
      validation: {enabled: true, every: 200, samples: 4, num_steps: null, seed: 0,
                   ssim: true, psnr: true, lpips: true, lesion_contrast: true,
                   boundary_sharpness: true}      # steps (and the last step)
      intermediate_steps: {enabled: true, every: 400, frames: 5}   # steps (and the last)
      worst_batch: {enabled: true, every: 1, images: 8}            # epochs
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from medgen.config import config_to_dict, config_tree_from_params
from medgen.training.errors import ConfigError

SECTION = "training.logging"


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check(block: Any, name: str) -> None:
    """ConfigError naming ``training.logging.<name>.<key>`` for a wrong switch or count."""
    for f in fields(block):
        value = getattr(block, f.name)
        where = f"{SECTION}.{name}.{f.name}={value!r}"
        if f.type in ("bool",) and not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false")
        if f.type == "int" and not _is_int(value, 0 if f.name == "seed" else 1):
            raise ConfigError(f"{where}: must be an integer >= {0 if f.name == 'seed' else 1}")
        if f.type == "int | None" and value is not None and not _is_int(value, 1):
            raise ConfigError(f"{where}: must be null or an integer >= 1")


@dataclass(frozen=True)
class StepInterval:
    """A per-step scalar: logged every ``every`` optimizer steps (default 10)."""

    enabled: bool = True
    every: int = 10


@dataclass(frozen=True)
class ModelCost:
    """The model's parameter count and forward FLOPs per sample, logged once at the start."""

    enabled: bool = True


@dataclass(frozen=True)
class TimestepLosses:
    """The training loss by diffusion time, in ``bins`` equal bins of t / T (σ quantiles for
    EDM), logged every ``every`` epochs (covering the epochs since the last log) and drawn as a
    bins × epochs heatmap at the end."""

    enabled: bool = True
    every: int = 1
    bins: int = 10


@dataclass(frozen=True)
class RegionalLosses:
    """The loss inside the conditioning mask (lesion, inpainting region) vs outside it, every
    ``every`` epochs; modes without a spatial mask log nothing."""

    enabled: bool = True
    every: int = 1


@dataclass(frozen=True)
class ValidationSamples:
    """Sampling a fixed batch of ``samples`` items with fixed noise (``seed``) every ``every``
    steps and at the last step, with ``num_steps`` solver steps (null: the strategy's
    ``num_inference_steps``); the grid is saved each time and the switched-on metrics logged
    (SSIM, PSNR and LPIPS where real pairs exist; lesion contrast and boundary sharpness where
    there is a mask)."""

    enabled: bool = True
    every: int = 200
    samples: int = 4
    num_steps: int | None = None
    seed: int = 0
    ssim: bool = True
    psnr: bool = True
    lpips: bool = True
    lesion_contrast: bool = True
    boundary_sharpness: bool = True


@dataclass(frozen=True)
class IntermediateSteps:
    """The denoising trajectory of one sample (x_t and the predicted x̂0 at ``frames`` evenly
    spaced network evaluations) as an image strip, every ``every`` steps and at the last."""

    enabled: bool = True
    every: int = 400
    frames: int = 5


@dataclass(frozen=True)
class WorstBatch:
    """The highest-loss training batch of the epoch (up to ``images`` of its samples, with
    their timesteps and losses) saved as an image every ``every`` epochs."""

    enabled: bool = True
    every: int = 1
    images: int = 8


@dataclass(frozen=True)
class LoggingConfig:
    """The ``training.logging`` block (module docstring); every sub-block is optional."""

    grad_norm: StepInterval = field(default_factory=StepInterval)
    throughput: StepInterval = field(default_factory=StepInterval)
    flops: ModelCost = field(default_factory=ModelCost)
    timestep_losses: TimestepLosses = field(default_factory=TimestepLosses)
    regional_losses: RegionalLosses = field(default_factory=RegionalLosses)
    validation: ValidationSamples = field(default_factory=ValidationSamples)
    intermediate_steps: IntermediateSteps = field(default_factory=IntermediateSteps)
    worst_batch: WorstBatch = field(default_factory=WorstBatch)

    def __post_init__(self) -> None:
        for f in fields(self):
            block = getattr(self, f.name)
            if not isinstance(block, f.default_factory):
                raise ConfigError(f"{SECTION}.{f.name} must be a mapping, got {block!r}")
            _check(block, f.name)

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> LoggingConfig:
        """Build from the ``training.logging`` dict; unknown keys fail with the closest one."""
        try:
            return config_tree_from_params(cls, params or {}, SECTION)
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

"""The strategy interface: HOW a network is trained and sampled (DDPM, rectified flow, ...).

A strategy works on tensors in the coordinates of a space (pixels or latents) and knows nothing
about modalities; a condition, when given, is concatenated to the noisy input along channels.
Every strategy's options are JSON values so ``from_config(json.loads(json.dumps(s.to_config())))``
rebuilds an equivalent strategy (the diffusers ``ConfigMixin`` idea, without the machinery).
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from medgen.models.registry import Registry

STRATEGIES: Registry = Registry("diffusion strategy")


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

    Subclasses set ``name``, register with ``@STRATEGIES.register(name)``, pass every constructor
    argument to :meth:`_register_config`, and implement :meth:`training_loss` and :meth:`sample`.

    Args (common to all strategies):
        min_snr_gamma: γ of Min-SNR-γ weighting (Hang et al. 2023); ``None`` (default) = unweighted.
        cond_drop_prob: probability (default 0.0) of replacing a sample's condition by the null
            condition during training, for classifier-free guidance.
    """

    name: ClassVar[str]

    def __init__(self, *, min_snr_gamma: float | None = None, cond_drop_prob: float = 0.0) -> None:
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be > 0 or null, got {min_snr_gamma}")
        if not 0.0 <= cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1], got {cond_drop_prob}")
        self.min_snr_gamma = None if min_snr_gamma is None else float(min_snr_gamma)
        self.cond_drop_prob = float(cond_drop_prob)
        self._config: dict[str, Any] = {}

    # ------------------------------------------------------------------ config
    def _register_config(self, **options: Any) -> None:
        self._config.update(copy.deepcopy(options))

    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable options, including ``name``, from which :meth:`from_config` rebuilds."""
        return {"name": self.name, **copy.deepcopy(self._config)}

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
        allowed = set(inspect.signature(target.__init__).parameters) - {"self"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(
                f"{target.name}: unknown option(s) {unknown}; allowed: {sorted(allowed)}"
            )
        return target(**options)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{type(self).__name__}({args})"

    # --------------------------------------------------------------- algorithm
    @abstractmethod
    def training_loss(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Scalar training loss for clean samples ``x0`` ``[B, C, *spatial]``.

        ``cond`` ``[B, Cc, *spatial]`` is concatenated to the noisy input (after condition dropout);
        ``generator`` seeds the noise, timesteps and dropout.
        """

    @abstractmethod
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
    ) -> torch.Tensor:
        """Generate samples of ``shape`` ``[B, C, *spatial]`` from noise.

        ``num_steps`` overrides the configured number of sampling steps; ``guidance_scale`` is the
        classifier-free guidance scale (1.0 = no guidance, one network call per step).
        """

    @staticmethod
    def _check_inputs(x0: torch.Tensor, cond: torch.Tensor | None) -> None:
        if x0.ndim not in (4, 5):
            raise ValueError(
                f"expected x0 of shape [B, C, H, W] or [B, C, D, H, W], got {tuple(x0.shape)}"
            )
        if cond is not None and (cond.shape[0] != x0.shape[0] or cond.shape[2:] != x0.shape[2:]):
            raise ValueError(
                f"condition {tuple(cond.shape)} must match x0 {tuple(x0.shape)} in batch and spatial size"
            )


def build_strategy(name: str, config: Mapping[str, Any] | None = None) -> DiffusionStrategy:
    """Build the strategy registered as ``name`` with options ``config`` (a ``name`` key must agree)."""
    options = dict(config or {})
    if "name" in options and str(options["name"]).lower() != str(name).lower():
        raise ValueError(f"build_strategy({name!r}) got a config for {options['name']!r}")
    options["name"] = name
    return DiffusionStrategy.from_config(options)

"""Device, precision and optimizer set-up shared by the engine and the LR range test."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medgen.training.config import TrainingConfig
from medgen.training.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU if CUDA is available, else CPU; ``cuda``: this rank's GPU."""
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"training parameter device={name!r}, but CUDA is not available")
    if name in ("auto", "cuda"):
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def autocast_dtype(config: TrainingConfig, device: torch.device) -> torch.dtype | None:
    """The dtype ``config.precision`` autocasts to on ``device``; None: autocast stays off.

    CPU autocast is opt-in (``allow_cpu_autocast``): bf16 matmuls are slow on most CPUs.
    """
    if config.precision == "fp32" or (device.type != "cuda" and not config.allow_cpu_autocast):
        return None
    return torch.float16 if config.precision == "fp16" else torch.bfloat16


def build_optimizer(model: nn.Module, config: TrainingConfig, lr: float) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters with ``config``'s betas, decay and eps.

    A module that defines ``optimizer_param_groups(lr) -> list[dict]`` (torch param-group
    dicts: ``"params"`` plus options such as its own ``"lr"``) gets those groups, e.g. a
    discriminator at a multiple of the autoencoder's lr; the warmup+cosine schedule scales
    each group's own lr. Every trainable parameter must be in exactly one group.
    """
    groups_fn = getattr(model, "optimizer_param_groups", None)
    if callable(groups_fn):
        params: list[Any] = [
            {**group, "params": [p for p in group["params"] if p.requires_grad]}
            for group in groups_fn(lr)
        ]
        _check_param_groups(model, params)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params,
        lr=lr,
        betas=config.betas,
        weight_decay=config.weight_decay,
        eps=config.eps,
    )


def _check_param_groups(model: nn.Module, groups: list[dict[str, Any]]) -> None:
    """ConfigError unless the groups hold each trainable parameter of ``model`` once."""
    grouped = [id(p) for group in groups for p in group["params"]]
    unique = set(grouped)
    names = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
    missing = [name for key, name in names.items() if key not in unique]
    twice = len(grouped) != len(unique)
    foreign = not unique <= set(names)
    if missing or twice or foreign:
        raise ConfigError(
            f"{type(model).__name__}.optimizer_param_groups must hold every trainable parameter "
            f"exactly once: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"duplicates: {twice}, parameters of another module: {foreign}"
        )

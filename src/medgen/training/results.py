"""What a training job's factory hands the engine (`TrainingTask`) and what the engine hands
back (`TrainingResult`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from medgen.training.callbacks import Callback
from medgen.training.checkpoint import BEST, load_checkpoint

LossFn = Callable[[nn.Module, Any], torch.Tensor]
ValFn = Callable[[nn.Module], dict[str, float]]


@dataclass
class TrainingTask:
    """What a `JobSpec` factory returns: the pieces `train` needs, built in the worker."""

    model: nn.Module
    loss_fn: LossFn
    train_data: Dataset
    val_fn: ValFn | None = None
    callbacks: Sequence[Callback] = ()


@dataclass
class TrainingResult:
    """Outcome of `train` (state dicts on CPU, ready for a Kedro dataset)."""

    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None
    history: list[dict[str, Any]]
    best_metric: float | None
    steps: int
    epochs: float
    stopped_early: bool = False
    latest_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, state: dict[str, Any] | None = None
    ) -> TrainingResult:
        """The result `train` returned for the run whose final checkpoint is ``path``.

        The final ``latest.pt`` holds everything the result does, so any process that sees
        the checkpoint folder can rebuild rank 0's result (docs/cluster.md). ``state``: the
        checkpoint already read from ``path`` (it is not read again)."""
        path = Path(path)
        if state is None:
            state = load_checkpoint(path, map_location="cpu")
        best = path.parent / BEST
        return cls(
            model_state=state["model"],
            ema_state=ema_module_state(state["ema"]),
            history=list(state["history"]),
            best_metric=state["best_metric"],
            steps=state["step"],
            epochs=state["epoch"],
            stopped_early=state["stopped_early"],
            latest_checkpoint=path,
            best_checkpoint=best if best.is_file() else None,
            config=state["config"],
        )


def ema_module_state(
    averaged_state: dict[str, torch.Tensor] | None,
) -> dict[str, torch.Tensor] | None:
    """The averaged network's own state dict from an `AveragedModel` state (which prefixes the
    network's keys with ``module.`` and adds its ``n_averaged`` counter)."""
    if averaged_state is None:
        return None
    return sub_state_dict(averaged_state, "module.")


def sub_state_dict(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix`` (a submodule's state dict), without it."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

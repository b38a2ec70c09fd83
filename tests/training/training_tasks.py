"""Tiny models, datasets and job factories shared by the training tests.

A plain module (not a conftest) because spawned DDP workers and the resume
subprocess import it by name.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from medgen.training import Callback, TrainingTask
from medgen.training.distributed import get_rank, run_training_job


def regression_data(n: int = 32, dim: int = 6, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, 1, generator=g)
    return TensorDataset(x, x @ w + 0.1 * torch.randn(n, 1, generator=g))


def mlp(dim: int = 6, hidden: int = 16, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, 1))
    return nn.Sequential(*layers)


def mse_loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


class NoisyDictDataset(Dataset):
    """Dict samples with augmentation noise from the *global* torch RNG, so that an
    inexact RNG restore on resume changes the trajectory."""

    def __init__(self, base: TensorDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return {"x": x + 0.01 * torch.randn_like(x), "y": y}


def dict_mse_loss(model: nn.Module, batch) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch["x"]), batch["y"])


class KillAtStep(Callback):
    """SIGKILL this process right after optimizer step ``step`` (no cleanup at all)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------- DDP job pieces


def ddp_task(n: int = 32, out_dir: str | None = None) -> TrainingTask:
    """Factory named in the DDP test's JobSpec (``training_tasks:ddp_task``)."""
    torch.set_num_threads(1)  # two workers share two cores
    return TrainingTask(model=mlp(), loss_fn=mse_loss, train_data=regression_data(n))


def ddp_worker(spec):
    """Train like `run_training_job`, then each rank writes its final weights."""
    result = run_training_job(spec)
    out = Path(spec.factory_kwargs["out_dir"]) / f"rank{get_rank()}.pt"
    torch.save(result.model_state, out)
    return result

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

from medgen.training import Callback, TrainingTask, train_worker
from medgen.training.ranks import get_rank


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


def ddp_task(data, n: int = 32, out_dir: str | None = None) -> TrainingTask:
    """Factory named in the DDP test's JobSpec (``training_tasks:ddp_task``)."""
    torch.set_num_threads(1)  # two workers share two cores
    return TrainingTask(model=mlp(), loss_fn=mse_loss, train_data=regression_data(n))


def ddp_worker(spec):
    """Train like `train_worker`, then each rank writes its final weights."""
    result = train_worker(spec)
    out = Path(spec.factory_kwargs["out_dir"]) / f"rank{get_rank()}.pt"
    torch.save(result.model_state, out)
    return result


# ---------------------------------------------------------------- TrainingJob pieces


def regression_bundle(n: int = 32):
    """`regression_data` as the TensorBundle a job stages for its workers."""
    from medgen.datasets import TensorBundle

    x, y = regression_data(n).tensors
    return TensorBundle({"x": x, "y": y})


def regression_task(data, hidden: int = 16, nan_at_call: int | None = None) -> TrainingTask:
    """Job factory: the MLP on ``data["regression"]``; the loss turns NaN at call ``nan_at_call``."""
    torch.set_num_threads(1)
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss = mse_loss(model, batch)
        return loss * float("nan") if calls["n"] == nan_at_call else loss

    xy = data["regression"]
    return TrainingTask(
        model=mlp(hidden=hidden), loss_fn=loss_fn, train_data=TensorDataset(xy["x"], xy["y"])
    )


def run_regression_job_as_node(checkpoint_dir: str, resources: dict, out: str) -> None:
    """One node of a multi-node job (a process of its own): run the job, save its outcome."""
    from medgen.training import TrainingConfig, TrainingJob, run_job

    torch.set_num_threads(1)
    config = TrainingConfig(
        max_steps=6,
        batch_size=4,
        lr=0.05,
        ema_decay=0.8,
        log_every=1,
        seed=5,
        progress=False,
        device="cpu",
    )
    job = TrainingJob(
        name="regression",
        factory=regression_task,
        config=config,
        checkpoint_dir=checkpoint_dir,
        data={"regression": regression_bundle()},
        resources=resources,
    )
    outcome = run_job(job)
    result = outcome.result
    torch.save(
        {
            "model": result.model_state,
            "ema": result.ema_state,
            "history": result.history,
            "steps": result.steps,
            "skipped": outcome.skipped,
        },
        out,
    )

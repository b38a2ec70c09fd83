"""Learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural
Networks", WACV 2017; the smoothed-loss variant popularised by fastai).

The lr grows exponentially from ``min_lr`` to ``max_lr`` over ``num_steps`` AdamW
steps (one micro-batch each, no warmup/cosine, no accumulation). The recorded loss
is an exponential moving average with bias correction::

    avg_i = (1 - smooth) * avg_{i-1} + smooth * loss_i,    smoothed_i = avg_i / (1 - (1 - smooth)^(i+1))

The test stops early ("divergence") at the first step whose smoothed loss exceeds
``diverge_factor`` times the lowest smoothed loss so far, or whose loss is NaN/Inf.
That step is not recorded; ``diverged_lr`` keeps its lr.

Suggested lr ("10x before divergence" rule): the lr at which the smoothed loss was
lowest, divided by 10. The first ``skip_start`` recorded steps (default 10) are not
candidates for the minimum: there the average rests on a handful of batches and a
lucky first batch would otherwise win. At the minimum the loss is about to stop improving and the
lr is already too large to train stably; one decade lower is still in the steep,
stable part of the curve.

The model passed in is never touched: the test trains a deep copy, and the
global RNG state is restored afterwards.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medgen.training.config import TrainingConfig
from medgen.training.errors import ConfigError
from medgen.training.results import LossFn
from medgen.training.sampling import move_to_device
from medgen.training.setup import autocast_dtype, build_optimizer, resolve_device


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggested_lr: float
    raw_losses: list[float]
    diverged_lr: float | None  # lr of the step that triggered the stop, None if none did


def lr_range_test(
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Dataset,
    config: TrainingConfig,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    num_steps: int = 100,
    smooth: float = 0.05,
    diverge_factor: float = 4.0,
    skip_start: int = 10,
) -> LRFinderResult:
    """Exponential lr sweep on a copy of ``model``; see the module docstring.

    Uses ``config``'s batch_size, betas, weight_decay, eps, max_grad_norm, precision,
    seed and device. Defaults: min_lr 1e-7, max_lr 1, num_steps 100, smooth 0.05,
    diverge_factor 4, skip_start 10. If the minimum lies in the first decade of the
    sweep the suggestion falls below ``min_lr``: extend the range downwards.
    """
    if not 0 < min_lr < max_lr:
        raise ConfigError(f"lr range test needs 0 < min_lr < max_lr, got {min_lr}, {max_lr}")
    if num_steps < 2:
        raise ConfigError(f"lr range test needs num_steps >= 2, got {num_steps}")
    if not 0 < smooth <= 1 or diverge_factor <= 1:
        raise ConfigError("lr range test needs 0 < smooth <= 1 and diverge_factor > 1")

    device = resolve_device(config.device)
    work = copy.deepcopy(model).to(device).train()
    optimizer = build_optimizer(work, config, min_lr)
    dtype = autocast_dtype(config, device)
    ratio = (max_lr / min_lr) ** (1.0 / (num_steps - 1))

    lrs, smoothed, raw = [], [], []
    diverged_lr = None
    avg, best = 0.0, math.inf
    with torch.random.fork_rng(devices=[]):
        generator = torch.Generator().manual_seed(config.seed)
        loader = DataLoader(
            train_data,
            batch_size=config.batch_size,
            shuffle=config.shuffle,
            drop_last=config.drop_last,
            generator=generator,
        )
        batches = iter(loader)
        for i in range(num_steps):
            lr = min_lr * ratio**i
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            batch = move_to_device(batch, device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(work, batch)
            value = float(loss.detach())
            avg = (1 - smooth) * avg + smooth * value
            smooth_value = avg / (1 - (1 - smooth) ** (i + 1))
            if not math.isfinite(value) or (lrs and smooth_value > diverge_factor * best):
                diverged_lr = lr
                break
            lrs.append(lr)
            raw.append(value)
            smoothed.append(smooth_value)
            best = min(best, smooth_value)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(work.parameters(), config.max_grad_norm)
            optimizer.step()
    if not lrs:
        raise ConfigError(f"lr range test: the loss was not finite even at min_lr={min_lr}")
    first = min(skip_start, len(smoothed) - 1)
    best_index = min(range(first, len(smoothed)), key=smoothed.__getitem__)
    return LRFinderResult(
        lrs=lrs,
        losses=smoothed,
        suggested_lr=lrs[best_index] / 10,
        raw_losses=raw,
        diverged_lr=diverged_lr,
    )


def plot_lr_range_test(result: LRFinderResult, path: str | Path) -> Path:
    """Smoothed loss vs lr (log x axis) with the suggestion marked, as a PNG."""
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, label="smoothed loss")
    ax.axvline(
        result.suggested_lr,
        color="tab:red",
        ls="--",
        label=f"suggested lr {result.suggested_lr:.2e}",
    )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path

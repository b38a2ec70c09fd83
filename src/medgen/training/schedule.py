"""Linear warmup followed by cosine decay, as a step-based `LambdaLR`.

The multiplier for optimizer step ``s`` (0-based: the lr used by the (s+1)-th
update) with ``W = warmup_steps``, ``T = total_steps`` and ``r = min_lr_ratio``::

    s <  W:  (s + 1) / W                                  linear ramp, never 0
    s >= W:  r + (1 - r) * 0.5 * (1 + cos(pi * p)),   p = (s - W) / max(1, T - W - 1)

so the first post-warmup step uses the peak lr and the last step (s = T - 1)
uses exactly ``lr * r`` (cosine schedule: Loshchilov & Hutter, SGDR, 2017).
Steps past T keep ``lr * r``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_multiplier(
    warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> Callable[[int], float]:
    """Return ``s -> lr multiplier`` (see the module docstring for the formula)."""
    decay_span = max(1, total_steps - warmup_steps - 1)

    # A closure, not a callable object: LambdaLR pickles a callable object's
    # __dict__ into its state_dict and restores it on load, which would silently
    # bring back an old max_steps when a run is resumed with a longer schedule.
    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / decay_span)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def build_warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """`LambdaLR` over `warmup_cosine_multiplier`; call ``.step()`` once per optimizer step."""
    return LambdaLR(optimizer, warmup_cosine_multiplier(warmup_steps, total_steps, min_lr_ratio))

"""Exponential moving average of the weights, on top of `torch.optim.swa_utils`.

`AveragedModel` with `get_ema_multi_avg_fn(decay)` keeps a deep copy of the model
and, per optimizer step ``t``, does ``ema = decay * ema + (1 - decay) * theta_t``;
on the very first update it copies ``theta_1`` (so the average starts from the
first trained weights, not the untrained initialisation). Buffers (e.g. norm
statistics) are averaged the same way (``use_buffers=True``), so the EMA model is
usable for evaluation without re-estimating them.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def create_ema(model: nn.Module, decay: float) -> AveragedModel:
    """EMA copy of ``model`` (pass the unwrapped module, not DDP / compiled wrappers)."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.requires_grad_(False)
    return ema

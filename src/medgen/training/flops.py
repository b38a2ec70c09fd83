"""The model's cost: parameter count and forward FLOPs per sample.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` around the model's own forward
in the first training step (`FirstForwardFlops`), divided by that micro-batch's size: no extra
forward is run, so a loss with state or random draws is not disturbed, and a loss network (such
as LPIPS in a perceptual term) is not counted as the model. A matrix multiply of
``[1, n] x [n, m]`` counts ``2 n m`` (a multiply and an add per term), the counter's convention
and most papers'. Operations the counter does not know (elementwise ones, norms) count zero, so
the number is a lower bound dominated by convolutions, linear layers and attention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn


def parameter_count(model: nn.Module) -> dict[str, int]:
    """``{"parameters": all, "trainable_parameters": those with requires_grad}``."""
    params = list(model.parameters())
    return {
        "parameters": sum(p.numel() for p in params),
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
    }


def batch_size_of(*values: Any) -> int | None:
    """The leading size of the first tensor found in ``values`` (nested sequences, mappings)."""
    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim:
            return int(value.shape[0])
        if isinstance(value, Mapping):
            found = batch_size_of(*value.values())
        elif isinstance(value, Sequence) and not isinstance(value, str):
            found = batch_size_of(*value)
        else:
            continue
        if found is not None:
            return found
    return None


def forward_flops(run: Callable[[], Any]) -> int:
    """FLOPs of the operations ``run()`` executes."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return int(counter.get_total_flops())


class FirstForwardFlops:
    """Counts the FLOPs of ``model``'s next forward call, then steps aside.

    ``install()`` wraps the module's ``forward`` (the instance attribute shadows the class's,
    so DDP and direct calls both go through it); the first call runs under the counter and
    removes the wrapper. ``per_sample`` is then the count over that call's batch size.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.per_sample: float | None = None
        self.done = False

    def install(self) -> None:
        original = self.model.forward

        def counted(*args: Any, **kwargs: Any) -> Any:
            del self.model.forward  # the next call is an ordinary one
            result: list[Any] = []
            flops = forward_flops(lambda: result.append(original(*args, **kwargs)))
            size = batch_size_of(args, kwargs) or 1
            self.per_sample, self.done = flops / size, True
            return result[0]

        self.model.forward = counted

    def remove(self) -> None:
        """Take the wrapper off if the model was never called."""
        if "forward" in vars(self.model):
            del self.model.forward

"""What the config check builds: one `JobProbe` per training job of a pipeline.

A probe holds the job's factory (the module-level function every training worker calls,
`medgen.training.TrainingJob.factory`), the factory's options as the pipeline's library code
derives them from the parameters, and placeholder data of the shapes the pipeline would stage:
broadcast zeros (``torch.zeros(()).expand(shape)``: any size, no memory) for data the factory
reads, and meta tensors for weights it loads. The check calls the factory on the meta device,
so the model is built by the pipelines' own code at its configured size without memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medgen.datasets import TensorBundle
from medgen.training import TrainingConfig, TrainingTask
from medgen.training.distributed import Resources


@dataclass(frozen=True)
class JobProbe:
    """One training job as the check builds it.

    pipeline / model: the row's names. factory, options: called as
    ``factory(data(), **options)`` under ``torch.device("meta")``. data: builds the
    placeholder bundles (called once, lazily). training: the job's engine config (per-GPU
    batch, precision, EMA). resources: its processes and nodes (None: one process). note:
    what the row's reader should know (e.g. a substitution the check made).
    """

    pipeline: str
    model: str
    factory: Callable[..., TrainingTask]
    data: Callable[[], dict[str, TensorBundle]]
    options: Mapping[str, Any]
    training: TrainingConfig
    resources: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def world_size(self) -> int:
        return Resources.from_dict(self.resources).world_size


def zeros(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A real tensor of zeros of any ``shape`` that occupies one element (a broadcast view):
    value checks (finite, label ranges) pass and indexing gives views of the right shape."""
    return torch.zeros((), dtype=dtype).expand(*[int(s) for s in shape])


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every `nn.Parameter` registered inside the block moves to the meta device as it is
    registered (before a layer initialises it), the idea of accelerate's ``init_empty_weights``.
    Unlike ``torch.device("meta")`` nothing else moves: a scheduler's tables, buffers and
    step counters stay real, so code that reads their values (``.item()``) runs as in training.
    A layer's parameter is allocated for a moment, one layer at a time, never initialised."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def modalities_of(params: Mapping[str, Any], block: str) -> list[str]:
    """The channels data_processing writes into ``slices`` or ``volumes`` model inputs."""
    return [str(m) for m in params[block]["modalities"]]


def adversarial_from_step_0(options: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``options`` of a GAN job with the adversarial term on from the first step, so the
    measured step includes the discriminator (the job's steps from ``adversarial_start_step``
    on, its largest), and the note that says so."""
    discriminator = options.get("discriminator") or {}
    if not discriminator.get("enabled", True):
        return dict(options), ()
    loss = dict(options.get("loss") or {})
    start = loss.get("adversarial_start_step", 0)
    loss["adversarial_start_step"] = 0
    note = f"measured with the adversarial term on (the steps from {start} on)" if start else ""
    return {**options, "loss": loss}, ((note,) if note else ())

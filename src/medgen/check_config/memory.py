"""The memory of one training step per GPU, measured without a GPU and without memory.

Method (docs/cluster.md repeats it next to the table):

* **Activations**: the task's own ``loss_fn(model, batch)`` runs once on fake tensors
  (``torch._subclasses.FakeTensorMode``: shapes and dtypes, storage on the ``meta`` device, no
  data, no arithmetic) at the configured per-GPU batch, under ``torch.autocast`` with the
  configured precision. Every tensor autograd saves for the backward pass is caught with
  ``torch.autograd.graph.saved_tensors_hooks``; the activation memory is the sum of the distinct
  storages among them (views share one), without the model's own parameters and buffers. This
  is what stays alive between forward and backward, the bulk of a step's peak; the transient
  buffers of single kernels and the backward's own temporaries are not in it.
* **Precision**: the fake tensors live on the CPU device, so autocast applies CPU autocast's op
  lists. They match CUDA's for convolutions, linear layers and matmuls (16 bit); CUDA also
  keeps group/layer norms and softmax in fp32, so on a GPU the saved activations can be up to
  ~1.5x larger at those layers. ``activations_fp32`` (the same pass without autocast) is the
  upper bound.
* **Weights and optimizer**: fp32 weights and buffers (4 bytes per value, frozen ones too),
  fp32 gradients of the trainable parameters (4), AdamW's two moments (8), the EMA copy (4 per
  value) when ``ema_decay`` is set, and DDP's gradient buckets (4 per trainable parameter) when
  the job runs on more than one GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.utils._pytree import tree_leaves, tree_map

GIB = 2**30
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class StepMemory:
    """Bytes of one training step on one GPU (see the module docstring)."""

    parameters: int
    trainable: int
    states: int  # weights + gradients + AdamW + EMA (+ DDP buckets)
    activations: int  # at the configured precision (CPU autocast's op lists)
    activations_fp32: int

    @property
    def total(self) -> int:
        return self.states + self.activations


#: Real-only ops on more elements than this go fake: two masks of 256 x 256 x 160 (21 M voxels)
#: are still checked for real (the inpainting mode checks that its masks are binary), a
#: batch of volumes is not allocated.
REAL_OP_LIMIT = 1 << 25
#: Factory ops (``torch.rand(size)``) asking for more elements than this go fake.
REAL_DRAW_LIMIT = 1 << 20


#: Factory ops a training step uses for its per-sample draws and label tensors.
DRAWS = {
    torch.ops.aten.rand.default,
    torch.ops.aten.rand.generator,
    torch.ops.aten.randn.default,
    torch.ops.aten.randn.generator,
    torch.ops.aten.randint.low,
    torch.ops.aten.randint.low_generator,
    torch.ops.aten.randint.default,
    torch.ops.aten.randint.generator,
    torch.ops.aten.randperm.default,
    torch.ops.aten.randperm.generator,
    torch.ops.aten.full.default,
    torch.ops.aten.arange.default,
    torch.ops.aten.arange.start,
    torch.ops.aten.arange.start_step,
    torch.ops.aten.scalar_tensor.default,
}


def _is_small_draw(func: Any, args: tuple, kwargs: dict | None) -> bool:
    """``func`` is one of `DRAWS` on the CPU asking for at most `REAL_DRAW_LIMIT` elements
    (its first integer-list argument: the size; none for ``arange``/``scalar_tensor``)."""
    if func not in DRAWS or str((kwargs or {}).get("device", "cpu")) != "cpu":
        return False
    for arg in args:
        if isinstance(arg, list | tuple) and all(isinstance(s, int) for s in arg):
            return math.prod(arg) <= REAL_DRAW_LIMIT
    return True


class FakeModelMode(FakeTensorMode):
    """A fake mode in which tensors that never met the model stay real.

    An op whose tensor arguments are all real CPU tensors (the broadcast batch of `batch_like`,
    a scheduler's tables, labels) runs for real, up to `REAL_OP_LIMIT` elements, and so does
    one of the factory ops in `DRAWS` asking for at most `REAL_DRAW_LIMIT` elements (the
    per-sample timesteps and condition dropout of a training step). So a loss's checks of
    their values (``if (labels < 0).any(): raise``) run as in training, while everything that
    touches the model's fake parameters stays fake (no memory, no arithmetic). Reading a fake
    floating-point scalar (a loss logged with ``float(loss)``) gives 0.0; reading a fake
    integer or boolean (a decision) still fails, naming the op.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        if (
            func is torch.ops.aten._local_scalar_dense.default
            and isinstance(args[0], FakeTensor)
            and args[0].is_floating_point()
        ):
            return 0.0  # a loss read for logging (``float(loss)``); it has no value here
        if tensors:
            # meta tensors are the fake machinery's own: they go its way
            real = all(
                not isinstance(a, FakeTensor)
                and a.device.type == "cpu"
                and a.numel() <= REAL_OP_LIMIT
                for a in tensors
            )
        else:
            real = _is_small_draw(func, args, kwargs)
        if real:
            with unset_fake_temporarily():
                return func(*args, **(kwargs or {}))
        return super().__torch_dispatch__(func, types, args, kwargs)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters) of ``model``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def state_bytes(model: nn.Module, *, ema: bool, world_size: int) -> int:
    """fp32 weights and buffers, gradients, AdamW moments, the EMA copy and DDP buckets."""
    values = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    _, trainable = count_parameters(model)
    per_trainable = 4 + 8 + (4 if world_size > 1 else 0)  # gradient, AdamW, DDP bucket
    return 4 * values + per_trainable * trainable + (4 * values if ema else 0)


@contextmanager
def saved_tensor_bytes(exclude: set[int]) -> Iterator[dict[int, int]]:
    """Collect ``{storage id: bytes}`` of every tensor autograd saves inside the block,
    leaving out the storages in ``exclude`` (the model's parameters and buffers)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in exclude:
            # a broadcast batch (see `batch_like`) stores one element but stands for a batch
            # that training holds in full
            full = tensor.numel() * tensor.element_size()
            storages[key] = max(storages.get(key, 0), storage.nbytes(), full)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield storages


def fake_parameters(model: nn.Module) -> None:
    """Replace every meta parameter and buffer of ``model`` by an empty CPU tensor of its shape
    and dtype, in place (inside a fake mode: no memory; integer scalars become real zeros).
    Real buffers stay as they are. A tensor shared by several modules stays shared;
    ``Module.to_empty`` would convert a module registered twice twice, which fails."""
    done: dict[int, torch.Tensor] = {}

    def empty(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in done:
            new = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")
            if tensor.numel() <= 1 and not tensor.is_floating_point():
                # a step counter the forward reads (e.g. when an adversarial term starts):
                # a real zero, since a fake one has no value to read
                with unset_fake_temporarily():
                    new = torch.zeros(tensor.shape, dtype=tensor.dtype)
            if isinstance(tensor, nn.Parameter):
                new = nn.Parameter(new, requires_grad=tensor.requires_grad)
            done[id(tensor)] = new
        return done[id(tensor)]

    for module in model.modules():
        for registry in (module._parameters, module._buffers):
            for name, tensor in registry.items():
                # a fake tensor too: one of an earlier measurement's mode is foreign to this one
                if tensor is not None and (tensor.is_meta or isinstance(tensor, FakeTensor)):
                    registry[name] = empty(tensor)


def _storage_ids(model: nn.Module) -> set[int]:
    tensors = [*model.parameters(), *model.buffers()]
    return {t.untyped_storage()._cdata for t in tensors}


def batch_like(item: Any, batch_size: int) -> Any:
    """The collated batch of ``batch_size`` copies of a dataset item: every tensor gets a batch
    axis, everything else is left as it is. Tensors are real zeros broadcast to the batch's
    shape (one stored element): a loss may check their values (labels in range, a mask in
    {0, 1}) as in training, and nothing of the batch's size is allocated until an op
    materialises it."""

    def batched(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        with unset_fake_temporarily():
            return torch.zeros((), dtype=value.dtype).expand(batch_size, *value.shape)

    return tree_map(batched, item)


def activation_bytes(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    batch: Any,
    precision: str,
) -> int:
    """Saved-tensor bytes of ``loss_fn(model, batch)`` (model and batch already fake or real)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext()
    model.train()
    with saved_tensor_bytes(_storage_ids(model)) as storages, autocast:
        loss = loss_fn(model, batch)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ValueError(f"loss_fn returned {type(loss).__name__}, not a scalar tensor")
    return sum(storages.values())


def measure_step(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    item: Any,
    *,
    batch_size: int,
    precision: str,
    ema: bool,
    world_size: int,
) -> StepMemory:
    """`StepMemory` of ``model`` (parameters on the meta device) training on batches of
    ``item``.

    The model's parameters are replaced by fake CPU tensors (`fake_parameters`); nothing of
    the model's size is allocated and nothing is computed. The saved tensors are measured at
    batches of 2 and 3 and extrapolated to ``batch_size`` (at most 3: measured as it is): every
    activation of a batched network grows linearly with the batch from 2 on, and the part that
    does not (autocast's 16-bit weight copies) is the intercept, so the real ops on
    value-checked inputs (masks, labels) stay small. Not from 1: a reshape of a batch of one
    is often a view where a larger batch needs a copy.
    """
    total, trainable = count_parameters(model)
    states = state_bytes(model, ema=ema, world_size=world_size)
    with FakeModelMode(allow_non_fake_inputs=True):
        fake_parameters(model)

        def at(batch: int, precision: str) -> int:
            return activation_bytes(model, loss_fn, batch_like(item, batch), precision)

        def extrapolated(precision: str) -> int:
            if batch_size <= 3:
                return at(batch_size, precision)
            two = at(2, precision)
            return two + (batch_size - 2) * (at(3, precision) - two)

        low = extrapolated(precision)
        full = low if precision == "fp32" else extrapolated("fp32")
    return StepMemory(
        parameters=total,
        trainable=trainable,
        states=states,
        activations=low,
        activations_fp32=full,
    )

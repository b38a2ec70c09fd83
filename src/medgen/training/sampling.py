"""Data order that can be resumed exactly, and moving batches to a device.

The order of epoch ``e`` is a permutation drawn from ``seed + e`` (what
`DistributedSampler` already does), so the position in the data stream is fully
described by the number of micro-batches consumed. Resuming therefore needs no
sampler or generator state: `ResumableSampler.set_position` skips the indices of
the batches already seen in the current epoch without loading them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` (seeded, per-epoch shuffle, rank shard) that can start mid-epoch.

    Works without a process group: pass ``num_replicas=1, rank=0`` for one process.
    """

    def __init__(
        self, dataset, *, num_replicas: int, rank: int, shuffle: bool, seed: int, drop_last: bool
    ):
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.start_index = 0

    def set_position(self, epoch: int, start_index: int) -> None:
        """Next iteration yields epoch ``epoch``'s indices from ``start_index`` on."""
        self.set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start_index :])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move tensors inside (nested) dicts, lists and tuples to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to_device(v, device, non_blocking) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    return batch

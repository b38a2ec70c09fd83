"""Who am I in a distributed run: the rank helpers the engine and the launcher share.

Outside a process group (one process, or before ``init_process_group``) every helper answers
as the only rank: rank 0 of a world of 1.
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist


def is_distributed() -> bool:
    """True inside a worker whose process group is initialised with world size > 1."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main_process() -> bool:
    """Rank 0 alone saves checkpoints, prints and logs (EDM-style rank-0 discipline)."""
    return get_rank() == 0


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a small picklable object from ``src`` to every rank (identity when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out

"""The worker of the 3D two-process tests: `train_worker`, then every rank saves its weights.

A plain module (not a conftest): the forkserver's workers import it by name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medgen.training import train_worker
from medgen.training.ranks import get_rank


def rank_weights_worker(spec):
    """Train like every job's worker; each rank writes ``rank<r>.pt`` next to the checkpoints."""
    torch.set_num_threads(1)  # two workers share the cores
    result = train_worker(spec)
    torch.save(result.model_state, Path(spec.checkpoint_dir).parent / f"rank{get_rank()}.pt")
    return result

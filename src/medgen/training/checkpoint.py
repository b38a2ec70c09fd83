"""Atomic checkpoint files and the RNG state they carry.

A checkpoint is written to a temporary file in the target directory, flushed and
fsynced, renamed over the target with `os.replace` (atomic on POSIX), and the
directory is fsynced so the rename itself survives a power cut. A crash at any
moment therefore leaves either the previous checkpoint or the new one, never a
truncated file. Files are read with ``torch.load(weights_only=True)``: everything
stored is tensors and plain Python values, never pickled objects.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgen.atomic_io import atomic_write_local
from medgen.training.errors import CheckpointError

LATEST = "latest.pt"
BEST = "best.pt"
JOB_FILE = "job.json"

log = logging.getLogger(__name__)


def kept_name(step: int) -> str:
    """File name of the every-N copy for ``step``."""
    return f"step_{step:08d}.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    # On failure the previous checkpoint at `path` is untouched; only the partial temp file goes.
    atomic_write_local(path, lambda handle: torch.save(state, handle))
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated or foreign file: say which one
        raise CheckpointError(f"checkpoint {path} could not be read: {exc}") from exc


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states as weights_only-safe values."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np_keys.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(
        (np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def prepare_checkpoint_dir(checkpoint_dir: str | Path, job: Mapping[str, Any]) -> bool:
    """Create ``checkpoint_dir`` for ``job`` (a JSON-able description of what is trained on
    what); return whether the checkpoints already there belong to it.

    Resuming ``latest.pt`` is only right for the same network, configuration and data, so a
    ``job.json`` records them; when it differs the old folder is moved to
    ``<name>.stale`` (replacing an older one) and training starts afresh.
    """
    checkpoint_dir = Path(checkpoint_dir)
    job_file = checkpoint_dir / JOB_FILE
    normalised = json.loads(json.dumps(job))  # tuples -> lists, as read back from the file
    if checkpoint_dir.is_dir() and job_file.is_file():
        if json.loads(job_file.read_text()) == normalised:
            return True
        stale = checkpoint_dir.with_name(checkpoint_dir.name + ".stale")
        log.warning(
            "%s was trained with another configuration or data: moved to %s, training afresh",
            checkpoint_dir,
            stale,
        )
        shutil.rmtree(stale, ignore_errors=True)
        checkpoint_dir.rename(stale)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_local(job_file, json.dumps(normalised, indent=2, sort_keys=True).encode())
    return False


def latest_step(checkpoint_dir: str | Path) -> int:
    """Optimizer step of ``checkpoint_dir/latest.pt`` (0 when there is none)."""
    path = Path(checkpoint_dir) / LATEST
    if not path.is_file():
        return 0
    return int(load_checkpoint(path, map_location="cpu")["step"])

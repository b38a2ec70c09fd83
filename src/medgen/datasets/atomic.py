"""Atomic file writes: a failure never leaves a half-written file behind.

Local files are written to a temporary sibling, flushed, fsynced and renamed over the
target (``os.replace`` is atomic on POSIX), then the directory entry is fsynced. Object
stores (s3, gcs, ...) already publish an object only once the upload completes, so for
them the bytes are written with one ``pipe`` call.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import fsspec


def fsync_directory(directory: str | os.PathLike) -> None:
    """Persist a rename: on POSIX the directory entry itself must be flushed."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_local(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def atomic_write_bytes(fs: fsspec.AbstractFileSystem, protocol: str, path: str, data: bytes) -> None:
    """Atomically write ``data`` to ``path`` on ``fs`` (local or object store)."""
    if protocol == "file":
        atomic_write_local(path, data)
    else:
        fs.pipe(path, data)

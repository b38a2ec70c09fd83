"""Atomic file writes, shared by the datasets and the training checkpoints: a failure never
leaves a half-written file behind.

Local files are written to a temporary sibling, flushed, fsynced and renamed over the
target (``os.replace`` is atomic on POSIX), then the directory entry is fsynced. Object
stores (s3, gcs, ...) already publish an object only once the upload completes, so for
them the bytes are written with one ``pipe`` call.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import fsspec

# mkstemp creates files readable by the owner only; published outputs should get the same
# permissions as any file the user creates. The umask can only be read by setting it, so
# do that once, at import, before any threads exist.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def fsync_directory(directory: str | os.PathLike) -> None:
    """Persist a rename: on POSIX the directory entry itself must be flushed."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms that cannot open a directory (Windows) skip this step
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself is done
    finally:
        os.close(fd)


def atomic_write_local(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write to ``path`` so that readers see either the old or the new file, never a part.

    ``data`` is the bytes, or a function that writes into the open binary handle (e.g.
    ``lambda f: torch.save(state, f)``, which streams without a copy in memory).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            if callable(data):
                data(handle)
            else:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def atomic_write_bytes(
    fs: fsspec.AbstractFileSystem, protocol: str, path: str, data: bytes
) -> None:
    """Atomically write ``data`` to ``path`` on ``fs`` (local or object store)."""
    if protocol == "file":
        atomic_write_local(path, data)
    else:
        fs.pipe(path, data)

"""``VersionedFileDataset``: the fsspec, versioning and atomic-write plumbing shared by
medgen's single-file datasets; subclasses only turn bytes into objects and back."""

from __future__ import annotations

import os
from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any, Generic, TypeVar

import fsspec
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)

from medgen.atomic_io import atomic_write_bytes

T = TypeVar("T")


def open_filesystem(
    path: str | os.PathLike,
    credentials: dict[str, Any] | None = None,
    fs_args: dict[str, Any] | None = None,
    version: Version | None = None,
) -> tuple[str, str, fsspec.AbstractFileSystem]:
    """``(protocol, path without protocol, filesystem)`` for a catalog path; local
    filesystems create missing parent folders on write."""
    protocol, bare_path = get_protocol_and_path(str(path), version)
    fs_args = deepcopy(fs_args) or {}
    if protocol == "file":
        fs_args.setdefault("auto_mkdir", True)
    return (
        protocol,
        bare_path,
        fsspec.filesystem(protocol, **(deepcopy(credentials) or {}), **fs_args),
    )


class VersionedFileDataset(AbstractVersionedDataset[T, T], Generic[T]):
    """One file on any fsspec filesystem, optionally versioned, written atomically."""

    def __init__(
        self,
        *,
        filepath: str | os.PathLike,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._protocol, path, self._fs = open_filesystem(filepath, credentials, fs_args, version)
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def _load_path(self) -> str:
        return get_filepath_str(self._get_load_path(), self._protocol)

    def _read_bytes(self) -> tuple[str, bytes]:
        """The load path and the file's bytes."""
        path = self._load_path()
        with self._fs.open(path, "rb") as handle:
            return path, handle.read()

    def _write_bytes(self, data: bytes) -> None:
        path = get_filepath_str(self._get_save_path(), self._protocol)
        atomic_write_bytes(self._fs, self._protocol, path, data)
        self._invalidate_cache()

    def _exists(self) -> bool:
        try:
            return self._fs.exists(self._load_path())
        except DatasetError:
            return False

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))

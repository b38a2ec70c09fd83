"""``SubjectFolderDataset``: a cohort stored one folder per subject, BraTS style.

Layout::

    <path>/<subject>/<subject>-<suffix>.nii.gz        e.g. BraTS-SYN-00003-000/BraTS-SYN-00003-000-t1_gd.nii.gz
    <path>/<subject>/.medgen-subject.json             written by this dataset: fingerprint + metadata

Loading is lazy: it lists the folders and returns one ``SubjectRecord`` per subject; voxels
are read only when a node asks for a suffix. Saving accepts ready images or a
``LazySubject`` (a fingerprint plus a function that builds the images). A lazy subject whose
fingerprint equals the one already on disk is not rebuilt, which is what makes a re-run
with unchanged inputs and parameters fast. Every file is written atomically and the
manifest last, so a subject interrupted half-way has no manifest and is rebuilt next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import fsspec
import nibabel as nib
from kedro.io.core import AbstractDataset, DatasetError
from tqdm.auto import tqdm

from medgen.atomic_io import atomic_write_bytes
from medgen.datasets.file_dataset import open_filesystem
from medgen.datasets.nifti_dataset import NiftiReadError, as_nifti1, encode_nifti, read_nifti

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".medgen-subject.json"
_NIFTI_FILE = re.compile(r"^(?P<stem>.+?)\.nii(?:\.gz)?$")


@dataclass
class SubjectPayload:
    """What a node hands over to be written: images by suffix, plus JSON-able metadata."""

    images: dict[str, nib.Nifti1Image]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class LazySubject:
    """A subject that is only built if ``fingerprint`` differs from the one on disk."""

    fingerprint: str
    build: Callable[[], SubjectPayload]


@dataclass
class SubjectRecord:
    """One subject on disk. ``load(suffix)`` reads a volume; nothing is read before."""

    subject_id: str
    files: dict[str, str]
    metadata: dict[str, Any]
    fingerprint: str
    fs: fsspec.AbstractFileSystem = field(repr=False)

    def load(self, suffix: str) -> nib.Nifti1Image:
        if suffix not in self.files:
            raise NiftiReadError(
                f"{self.subject_id}-{suffix}",
                f"missing: subject {self.subject_id} has no '{suffix}' file (has {sorted(self.files)})",
            )
        return read_nifti(self.fs, self.files[suffix])


def fingerprint_of(*parts: Any) -> str:
    """A stable short hash of JSON-able parts (parameters, upstream fingerprints, versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class SubjectFolderDataset(AbstractDataset[dict[str, SubjectRecord], Mapping[str, Any]]):
    """A folder of subject folders of NIfTI files (see module docstring).

    Args:
        path: root folder, local or any fsspec URL.
        suffix_aliases: file suffix -> canonical name used by the code, e.g.
            ``{t1c: t1_gd, t2f: flair}`` to read a BraTS folder with medgen's names.
        remove_stale: after a save, delete subject folders that this dataset wrote earlier
            (they carry a manifest) but that are not part of the new data. Folders without
            a manifest are never touched.
        progress: show a progress bar while saving.
        workers: processes that build and write subjects in parallel (1: in this process).
        compression_level: gzip level of the written files (1 is fast and nearly as small).
        read_only: refuse to write any subject (for real data folders); saving an empty
            mapping is allowed, so a disabled generator node can still run.
    """

    def __init__(
        self,
        *,
        path: str,
        suffix_aliases: dict[str, str] | None = None,
        remove_stale: bool = True,
        progress: bool = True,
        read_only: bool = False,
        workers: int = 1,
        compression_level: int = 1,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._protocol, root, self._fs = open_filesystem(path, credentials, fs_args)
        self._root = PurePosixPath(root)
        self._aliases = dict(suffix_aliases or {})
        self._remove_stale = remove_stale
        self._progress = progress
        self._read_only = read_only
        self._workers = max(1, int(workers))
        self._compression_level = compression_level
        self.metadata = metadata

    # -- reading -----------------------------------------------------------------------
    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._root),
            "protocol": self._protocol,
            "suffix_aliases": self._aliases,
        }

    def _exists(self) -> bool:
        return self._fs.isdir(str(self._root)) and bool(self._subject_dirs())

    def _subject_dirs(self) -> list[str]:
        if not self._fs.isdir(str(self._root)):
            return []
        entries = self._fs.ls(str(self._root), detail=True)
        return sorted(e["name"] for e in entries if e["type"] == "directory")

    def _read_manifest(self, subject_dir: str) -> dict[str, Any] | None:
        path = f"{subject_dir}/{MANIFEST_NAME}"
        if not self._fs.exists(path):
            return None
        with self._fs.open(path, "r") as handle:
            return json.load(handle)

    def _scan_subject(self, subject_dir: str) -> SubjectRecord:
        subject_id = PurePosixPath(subject_dir).name
        files: dict[str, str] = {}
        stats = []
        for entry in sorted(self._fs.ls(subject_dir, detail=True), key=lambda e: e["name"]):
            name = PurePosixPath(entry["name"]).name
            match = _NIFTI_FILE.match(name)
            if entry["type"] != "file" or not match:
                continue
            stem = match["stem"]
            if not stem.startswith(f"{subject_id}-"):
                logger.warning("Ignoring %s: not named <subject>-<suffix>.nii[.gz]", entry["name"])
                continue
            suffix = stem[len(subject_id) + 1 :]
            suffix = self._aliases.get(suffix, suffix)
            files[suffix] = entry["name"]
            stats.append((suffix, entry.get("size"), entry.get("mtime", entry.get("LastModified"))))
        manifest = self._read_manifest(subject_dir) or {}
        # Data not written by medgen has no manifest: fingerprint it by name, size and
        # modification time, the same evidence make and rsync use to see a change.
        fingerprint = manifest.get("fingerprint") or fingerprint_of(stats)
        return SubjectRecord(
            subject_id=subject_id,
            files=files,
            metadata=manifest.get("metadata", {}),
            fingerprint=fingerprint,
            fs=self._fs,
        )

    def load(self) -> dict[str, SubjectRecord]:
        records = {}
        for subject_dir in self._subject_dirs():
            record = self._scan_subject(subject_dir)
            if record.files:
                records[record.subject_id] = record
        if not records:
            raise DatasetError(f"No subject folders with NIfTI files under {self._root}")
        return records

    # -- writing -----------------------------------------------------------------------
    def _is_current(self, subject_id: str, fingerprint: str) -> bool:
        subject_dir = f"{self._root}/{subject_id}"
        manifest = self._read_manifest(subject_dir)
        if not manifest or manifest.get("fingerprint") != fingerprint:
            return False
        return all(
            self._fs.exists(f"{subject_dir}/{subject_id}-{suffix}.nii.gz")
            for suffix in manifest.get("suffixes", [])
        )

    def _write_subject(self, subject_id: str, payload: SubjectPayload, fingerprint: str) -> None:
        if not isinstance(payload, SubjectPayload):
            raise DatasetError(
                f"Subject {subject_id}: expected SubjectPayload, got {type(payload).__name__}"
            )
        subject_dir = f"{self._root}/{subject_id}"
        # Drop the manifest first: until the new one is written the subject counts as
        # incomplete, so an interruption half-way forces a rebuild instead of a mix.
        manifest_path = f"{subject_dir}/{MANIFEST_NAME}"
        if self._fs.exists(manifest_path):
            self._fs.rm(manifest_path)
        for suffix, image in payload.images.items():
            path = f"{subject_dir}/{subject_id}-{suffix}.nii.gz"
            atomic_write_bytes(
                self._fs,
                self._protocol,
                path,
                encode_nifti(as_nifti1(image), True, self._compression_level),
            )
        manifest = {
            "fingerprint": fingerprint,
            "suffixes": sorted(payload.images),
            "metadata": payload.metadata,
        }
        atomic_write_bytes(
            self._fs,
            self._protocol,
            manifest_path,
            json.dumps(manifest, indent=2, default=str).encode(),
        )

    def save(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise DatasetError(
                f"SubjectFolderDataset saves a mapping subject -> payload, got {type(data)}"
            )
        if not data:
            return  # nothing planned (e.g. generation disabled): never treat all as stale
        if self._read_only:
            if data:
                raise DatasetError(
                    f"{self._root} is read-only (real data); refusing to write {len(data)} subjects"
                )
            return
        todo = []
        reused = 0
        for subject_id, item in data.items():
            if isinstance(item, LazySubject) and self._is_current(subject_id, item.fingerprint):
                reused += 1
            else:
                todo.append((subject_id, item))
        bar = tqdm(total=len(todo), desc=f"writing {self._root.name}", disable=not self._progress)
        if self._workers > 1 and len(todo) > 1:
            # spawn, not fork: a forked child of a process that already ran OpenMP/torch
            # threads can deadlock
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                self._workers, mp_context=context, initializer=_single_threaded
            ) as pool:
                futures = [pool.submit(self._build_and_write, sid, item) for sid, item in todo]
                for future in as_completed(futures):
                    future.result()
                    bar.update()
        else:
            for subject_id, item in todo:
                self._build_and_write(subject_id, item)
                bar.update()
        bar.close()
        if self._remove_stale:
            self._delete_stale(set(data))
        logger.info("%s: %d subjects written, %d reused unchanged", self._root, len(todo), reused)

    def _build_and_write(self, subject_id: str, item: Any) -> None:
        if isinstance(item, LazySubject):
            self._write_subject(subject_id, item.build(), item.fingerprint)
        else:
            payload = item() if callable(item) else item
            self._write_subject(
                subject_id, payload, fingerprint_of(subject_id, sorted(payload.images))
            )

    def _delete_stale(self, keep: set[str]) -> None:
        for subject_dir in self._subject_dirs():
            subject_id = PurePosixPath(subject_dir).name
            if subject_id not in keep and self._fs.exists(f"{subject_dir}/{MANIFEST_NAME}"):
                logger.info("Removing stale subject %s written by an earlier run", subject_id)
                self._fs.rm(subject_dir, recursive=True)


def _single_threaded() -> None:
    """Worker initialiser: one thread per process, so N workers use N cores, not N^2."""
    import torch

    torch.set_num_threads(1)

"""``TensorDataset``: named tensors plus JSON metadata, as safetensors or a torch file.

safetensors is the default: it stores raw arrays and a string header, so loading runs no
code. The ``.pt`` form is read with ``torch.load(weights_only=True)``, which refuses
pickled objects, and exists for consumers that expect torch files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from kedro.io.core import DatasetError, Version
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from medgen.datasets.file_dataset import VersionedFileDataset

_METADATA_KEY = "medgen_metadata"


@dataclass
class TensorBundle:
    """Named tensors that belong together (e.g. slices, labels, indices) and their metadata."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def __len__(self) -> int:
        """Number of items along the first axis (all tensors share it)."""
        lengths = {t.shape[0] for t in self.tensors.values() if t.ndim}
        if len(lengths) > 1:
            raise ValueError(f"Tensors disagree on their first dimension: {lengths}")
        return lengths.pop() if lengths else 0

    def fingerprint(self, keys: Sequence[str] | None = None, with_metadata: bool = False) -> str:
        """Short SHA-1 of the tensors ``keys`` (default all, sorted): name, shape, dtype and
        bytes, plus the metadata when ``with_metadata``. Tells whether checkpoints or derived
        data still belong to this bundle."""
        digest = hashlib.sha1()
        if with_metadata:
            digest.update(json.dumps(self.metadata, sort_keys=True, default=str).encode())
        for key in sorted(self.tensors) if keys is None else keys:
            tensor = self.tensors[key].detach().cpu().contiguous()
            digest.update(f"{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]


class TensorDataset(VersionedFileDataset[TensorBundle]):
    """Loads and saves a ``TensorBundle``.

    Args:
        filepath: ``.safetensors`` (default format) or ``.pt``.
        format: ``safetensors`` or ``torch``; inferred from the file ending when omitted.
    """

    def __init__(
        self,
        *,
        filepath: str | os.PathLike,
        format: str | None = None,  # noqa: A002 - the catalog key people expect
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        filepath = str(filepath)
        self._format = format or ("torch" if filepath.endswith((".pt", ".pth")) else "safetensors")
        if self._format not in {"safetensors", "torch"}:
            raise DatasetError(
                f"TensorDataset format must be 'safetensors' or 'torch', got {self._format!r}"
            )
        super().__init__(
            filepath=filepath,
            version=version,
            credentials=credentials,
            fs_args=fs_args,
            metadata=metadata,
        )

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "format": self._format, "version": self._version}

    def load(self) -> TensorBundle:
        load_path, raw = self._read_bytes()
        try:
            if self._format == "safetensors":
                return _from_safetensors(raw)
            payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            return TensorBundle(dict(payload["tensors"]), json.loads(payload["metadata"]))
        except Exception as exc:
            raise DatasetError(f"{load_path}: unreadable {self._format} file ({exc})") from exc

    def save(self, data: TensorBundle) -> None:
        if not isinstance(data, TensorBundle):
            raise DatasetError(f"TensorDataset saves a TensorBundle, got {type(data).__name__}")
        bad = [k for k, v in data.tensors.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise DatasetError(f"TensorBundle entries are not tensors: {bad}")
        metadata_json = json.dumps(data.metadata, sort_keys=True)
        # safetensors refuses non-contiguous tensors and views sharing storage.
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in data.tensors.items()}
        if self._format == "safetensors":
            raw = safetensors_save(tensors, metadata={_METADATA_KEY: metadata_json})
        else:
            buffer = io.BytesIO()
            torch.save({"tensors": tensors, "metadata": metadata_json}, buffer)
            raw = buffer.getvalue()
        self._write_bytes(raw)


def _from_safetensors(raw: bytes) -> TensorBundle:
    # The header is 8 bytes of little-endian length followed by JSON (safetensors spec);
    # safetensors.torch.load returns the tensors but not the metadata.
    tensors = safetensors_load(raw)
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    metadata = json.loads(header.get("__metadata__", {}).get(_METADATA_KEY, "{}"))
    return TensorBundle(tensors, metadata)

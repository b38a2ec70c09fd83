"""``CSVImageDataset``: images of any common medical format, listed with captions in a CSV.

The CSV has one image per row and the columns ``path,text,modality`` (matched
case-insensitively, so the seed project's ``Text`` header works); any other column is
kept as metadata (``split``, ``subject``, ``label_path``, ...). Loading reads every row
into one ``TensorBundle`` of square float32 images in [-1, 1]:

* PNG / JPEG with Pillow (8- and 16-bit grey, RGB; 16-bit grey stays in float, 16-bit
  colour is decoded by Pillow to 8 bits per channel);
* DICOM with pydicom: modality LUT (rescale slope/intercept), then the file's VOI LUT or
  window, or the configured ``dicom_window``, all in float64; MONOCHROME1 is inverted so
  that bright always means high signal;
* NIfTI with nibabel: the volume is reoriented to RAS and one axial slice is taken (the
  middle one, a fixed index, or the one with most label voxels), shown like medgen's own
  slices (``medgen.data.slicing.axial_plane``: anterior at the top, left on the left).

Each image is then scaled to [-1, 1] by its own ``percentiles`` (default (0, 100), i.e.
min/max, computed after windowing), padded to a square with -1 (the background), centred,
and resized to ``size`` x ``size`` with antialiased bilinear filtering.

Rows are numbered from 1, counting data records after the header (empty lines are not
counted, as in ``pandas.read_csv``): ``row_index - 1`` is the row's index in
``pandas.read_csv(filepath)``. Messages also give the file's physical line number.

Size: one Kedro dataset whose row loop, path resolution, NIfTI slice rules, rejected-row report
and option checks share its options; the format readers are in `medgen.datasets.image_readers`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import nibabel as nib
import numpy as np
import pandas as pd
import torch
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from tqdm.auto import tqdm

from medgen.atomic_io import atomic_write_bytes
from medgen.datasets.file_dataset import open_filesystem
from medgen.datasets.image_readers import (
    BadImage,
    canonical_volume,
    match_channels,
    read_dicom,
    read_raster,
    scale_to_unit_range,
    square_resize,
)
from medgen.datasets.tensor_dataset import TensorBundle

logger = logging.getLogger(__name__)

COLORS = ("grayscale", "rgb")
BAD_ROW_POLICIES = ("skip", "fail")
NIFTI_SLICE_RULES = ("middle", "most_label")
REQUIRED_COLUMNS = ("path", "text", "modality")
REJECTED_COLUMNS = ("row", "path", "reason")
_RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
_DICOM_SUFFIXES = (".dcm", ".dicom")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_SUPPORTED = ", ".join(_RASTER_SUFFIXES + _DICOM_SUFFIXES + _NIFTI_SUFFIXES)


class CSVRowError(DatasetError):
    """A CSV row that cannot become an image; the message names the row, path and reason."""

    def __init__(self, source: str, row: int, line: int, path: str, reason: str) -> None:
        super().__init__(f"{source}: row {row} (line {line}), path {path!r}: {reason}")
        self.source, self.row, self.line, self.path, self.reason = source, row, line, path, reason


@dataclass(frozen=True)
class _Row:
    number: int
    line: int
    path: str
    text: str
    modality: str
    extras: dict[str, str]


class CSVImageDataset(AbstractDataset[None, TensorBundle]):
    """Reads the images and captions listed in a ``path,text,modality`` CSV (read-only).

    Args:
        filepath: the CSV, local or any fsspec URL. Image paths in it are relative to the
            CSV's folder, absolute, or URLs with their own protocol; paths without a
            protocol live on the CSV's filesystem.
        size: output side in pixels (default 64).
        color: ``grayscale`` (default; colour inputs become BT.601 luma) or ``rgb``
            (grey inputs are repeated on three channels).
        on_bad_row: ``skip`` (default) records a bad row and goes on; ``fail`` raises a
            ``CSVRowError`` at the first one.
        modalities: the allowed modality names (exact match); None (default) allows any
            non-empty modality.
        dicom_window: ``[center, width]`` in modality-LUT units (e.g. HU) applied as a
            LINEAR window instead of the file's VOI LUT / window; None (default) uses the
            file's, or none when the file has none.
        nifti_slice: ``middle`` (default), an axial index into the RAS-reoriented volume
            (0 = most inferior; negative counts from the top), or ``most_label``: the slice
            with most voxels > 0 in the label NIfTI named by ``label_column`` (first such
            slice on ties).
        label_column: the column holding a label NIfTI path per row (needed by
            ``most_label``).
        percentiles: (low, high) intensity percentiles of each image mapped to -1 and 1,
            computed after windowing; values outside are clipped. Default (0, 100):
            per-image min/max.
        path_column, text_column, modality_column: the header names of the three required
            columns (defaults ``path``, ``text``, ``modality``), e.g. ``path_column:
            image_path`` and ``text_column: prompt`` for a ratings CSV. (Separate arguments:
            Kedro rewrites catalog keys named ``path`` into absolute paths.)
        rejected_filepath: where to also write the rejected rows as CSV (``row,path,
            reason``; written on every load, header only when nothing was rejected).
        credentials, fs_args: for the CSV's filesystem, as in the other medgen datasets.
        metadata: free-form metadata (kedro-viz), not used by the dataset.

    Example catalog entry::

        captioned_images:
          type: medgen.datasets.CSVImageDataset
          filepath: data/01_raw/captions.csv
          size: 128
          modalities: [t1_pre, t1_gd, flair, ct]
          dicom_window: [40, 400]
          rejected_filepath: data/08_reporting/rejected_images.csv
    """

    def __init__(
        self,
        *,
        filepath: str | os.PathLike,
        size: int = 64,
        color: str = "grayscale",
        on_bad_row: str = "skip",
        modalities: Sequence[str] | None = None,
        dicom_window: Sequence[float] | None = None,
        nifti_slice: str | int = "middle",
        label_column: str | None = None,
        percentiles: Sequence[float] = (0.0, 100.0),
        path_column: str = "path",
        text_column: str = "text",
        modality_column: str = "modality",
        rejected_filepath: str | os.PathLike | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        _check_options(
            size,
            color,
            on_bad_row,
            modalities,
            dicom_window,
            nifti_slice,
            label_column,
            percentiles,
        )
        self._filepath = str(filepath)
        self._size, self._color, self._on_bad_row = int(size), color, on_bad_row
        self._modalities = None if modalities is None else tuple(str(m) for m in modalities)
        self._window = None if dicom_window is None else tuple(float(v) for v in dicom_window)
        self._nifti_slice, self._label_column = nifti_slice, label_column
        self._percentiles = (float(percentiles[0]), float(percentiles[1]))
        names = (path_column, text_column, modality_column)
        if len({str(n).strip().lower() for n in names}) != 3:
            raise DatasetError(f"{filepath}: path, text and modality columns must differ: {names}")
        self._columns = dict(
            zip(REQUIRED_COLUMNS, (str(n).strip().lower() for n in names), strict=True)
        )
        self._rejected_filepath = None if rejected_filepath is None else str(rejected_filepath)
        self._credentials, self._fs_args = credentials, fs_args
        self._protocol, self._csv_path, self._fs = open_filesystem(filepath, credentials, fs_args)
        self._filesystems: dict[str, fsspec.AbstractFileSystem] = {self._protocol: self._fs}
        self.metadata = metadata

    @staticmethod
    def rejected_frame(bundle: TensorBundle | list[dict[str, Any]]) -> pd.DataFrame:
        """The rejected rows (``row, path, reason``) of a loaded bundle, or of its
        ``metadata["rejected"]`` list, as a DataFrame (the metadata itself stays JSON, so
        the bundle can be saved with ``TensorDataset``)."""
        rejected = bundle.metadata["rejected"] if isinstance(bundle, TensorBundle) else bundle
        return pd.DataFrame(list(rejected), columns=list(REJECTED_COLUMNS))

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "size": self._size,
            "color": self._color,
            "on_bad_row": self._on_bad_row,
            "modalities": self._modalities,
            "dicom_window": self._window,
            "nifti_slice": self._nifti_slice,
            "label_column": self._label_column,
            "percentiles": self._percentiles,
            "columns": self._columns,
            "rejected_filepath": self._rejected_filepath,
        }

    def _exists(self) -> bool:
        return self._fs.exists(self._csv_path)

    def save(self, data: Any) -> None:
        raise DatasetError(
            f"CSVImageDataset is read-only ({self._filepath}): write the CSV and images "
            "yourself, or save the loaded bundle with medgen.datasets.TensorDataset"
        )

    def load(self) -> TensorBundle:
        extra_names, rows = self._read_rows()
        images, accepted, rejected = [], [], []
        for row, parse_error in tqdm(
            rows, desc=f"reading {posixpath.basename(self._csv_path)}", leave=False
        ):
            try:
                if parse_error:
                    raise BadImage(parse_error)
                self._check_row(row)
                images.append(self._read_image(row))
                accepted.append(row)
            except BadImage as bad:
                if self._on_bad_row == "fail":
                    raise CSVRowError(
                        self._filepath, row.number, row.line, row.path, str(bad)
                    ) from None
                rejected.append({"row": row.number, "path": row.path, "reason": str(bad)})
        if rejected:
            logger.warning(
                "%s: skipped %d of %d rows; the first: %s",
                self._filepath,
                len(rejected),
                len(rows),
                rejected[0],
            )
        if self._rejected_filepath is not None:
            self._write_rejected(rejected)
        channels = 3 if self._color == "rgb" else 1
        return TensorBundle(
            tensors={
                "images": torch.stack(images)
                if images
                else torch.empty((0, channels, self._size, self._size)),
                "row_index": torch.tensor([r.number for r in accepted], dtype=torch.int64),
            },
            metadata={
                "texts": [r.text for r in accepted],
                "modalities": [r.modality for r in accepted],
                "paths": [r.path for r in accepted],
                "extra_columns": {k: [r.extras[k] for r in accepted] for k in extra_names},
                "rejected": rejected,
                "size": self._size,
                "color": self._color,
                "source": self._filepath,
            },
        )

    # -- the CSV ---------------------------------------------------------------------

    def _read_rows(self) -> tuple[list[str], list[tuple[_Row, str | None]]]:
        """The extra column names, and each row with the reason it cannot be parsed (a
        record with the wrong number of fields) or None."""
        try:
            with self._fs.open(self._csv_path, "rb") as handle:
                text = handle.read().decode("utf-8-sig")
        except FileNotFoundError as exc:
            raise DatasetError(f"{self._filepath}: CSV file not found") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{self._filepath}: unreadable CSV ({exc})") from exc
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise DatasetError(f"{self._filepath}: empty CSV, expected a header") from None
        except csv.Error as exc:
            raise DatasetError(f"{self._filepath}: malformed CSV header ({exc})") from exc
        index = self._column_index(header)
        extras = {i: name for i, name in enumerate(header) if i not in index.values()}
        rows: list[tuple[_Row, str | None]] = []
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise DatasetError(
                    f"{self._filepath}: malformed CSV near line {reader.line_num} ({exc})"
                ) from exc
            if not fields:  # an empty line: skipped and not counted, as pandas does
                continue
            padded = fields + [""] * (len(header) - len(fields))
            row = _Row(
                number=len(rows) + 1,
                line=reader.line_num,
                path=padded[index["path"]].strip(),
                text=padded[index["text"]].strip(),
                modality=padded[index["modality"]].strip(),
                extras={name: padded[i] for i, name in extras.items()},
            )
            wrong = len(fields) != len(header)
            rows.append(
                (row, f"{len(fields)} fields, the header has {len(header)}" if wrong else None)
            )
        return list(extras.values()), rows

    def _column_index(self, header: list[str]) -> dict[str, int]:
        """Positions of ``path``, ``text`` and ``modality`` (their ``columns`` names,
        case-insensitive)."""
        lowered = [name.strip().lower() for name in header]
        index = {}
        for column in REQUIRED_COLUMNS:
            name = self._columns[column]
            found = [i for i, header_name in enumerate(lowered) if header_name == name]
            if len(found) > 1:
                raise DatasetError(
                    f"{self._filepath}: column {name!r} appears {len(found)} times in the "
                    f"header {header}"
                )
            if found:
                index[column] = found[0]
        missing = [self._columns[c] for c in REQUIRED_COLUMNS if c not in index]
        if missing:
            raise DatasetError(
                f"{self._filepath}: missing column(s) {missing}; the header is {header}, "
                f"expected {[self._columns[c] for c in REQUIRED_COLUMNS]} (case-insensitive) "
                "plus any others"
            )
        if self._label_column is not None and self._label_column not in header:
            raise DatasetError(
                f"{self._filepath}: label_column {self._label_column!r} is not in the "
                f"header {header}"
            )
        return index

    def _check_row(self, row: _Row) -> None:
        if not row.path:
            raise BadImage("empty path")
        if not row.text:
            raise BadImage("empty text")
        if not row.modality:
            raise BadImage("empty modality")
        if self._modalities is not None and row.modality not in self._modalities:
            raise BadImage(f"unknown modality {row.modality!r}; allowed: {list(self._modalities)}")

    def _write_rejected(self, rejected: list[dict[str, Any]]) -> None:
        protocol, path, fs = open_filesystem(
            self._rejected_filepath, self._credentials, self._fs_args
        )
        data = self.rejected_frame(rejected).to_csv(index=False).encode()
        atomic_write_bytes(fs, protocol, path, data)

    # -- the images ------------------------------------------------------------------

    def _read_image(self, row: _Row) -> torch.Tensor:
        """The row's image as float32 [C, size, size] in [-1, 1]."""
        name = row.path.lower()
        if name.endswith(_RASTER_SUFFIXES):
            planes = read_raster(self._read_bytes(row.path))
        elif name.endswith(_NIFTI_SUFFIXES):
            planes = self._read_nifti(row)
        else:
            raw = self._read_bytes(row.path)
            if not name.endswith(_DICOM_SUFFIXES) and raw[128:132] != b"DICM":
                suffix = posixpath.splitext(name)[1] or "none"
                raise BadImage(
                    f"unsupported extension {suffix!r} (supported: {_SUPPORTED}, or a DICOM "
                    "file with any extension)"
                )
            planes = read_dicom(raw, self._window)
        if not np.isfinite(planes).all():
            raise BadImage("image contains NaN or Inf")
        planes = match_channels(planes, self._color)
        scaled = scale_to_unit_range(planes, self._percentiles)
        return square_resize(torch.from_numpy(scaled), self._size)

    def _resolve(self, value: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """The filesystem and path of a CSV entry (relative to the CSV's folder)."""
        if "://" in value:
            protocol, path = get_protocol_and_path(value)
            if protocol not in self._filesystems:
                same = protocol == self._protocol
                self._filesystems[protocol] = open_filesystem(
                    value, self._credentials if same else None, self._fs_args if same else None
                )[2]
            return self._filesystems[protocol], path
        if posixpath.isabs(value):
            return self._fs, value
        folder = posixpath.dirname(self._csv_path)
        return self._fs, posixpath.normpath(posixpath.join(folder, value))

    def _read_bytes(self, value: str) -> bytes:
        fs, path = self._resolve(value)
        try:
            with fs.open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise BadImage(f"file not found ({path})") from None
        except IsADirectoryError:
            raise BadImage(f"is a directory ({path})") from None
        except OSError as exc:
            raise BadImage(f"unreadable ({exc})") from None

    def _read_nifti(self, row: _Row) -> np.ndarray:
        volume = canonical_volume(self._read_bytes(row.path), row.path, "image")
        depth = volume.shape[2]
        if self._nifti_slice == "middle":
            z = depth // 2
        elif self._nifti_slice == "most_label":
            z = self._most_label_slice(row, volume)
        else:
            z = int(self._nifti_slice)
            if not -depth <= z < depth:
                raise BadImage(f"nifti_slice {z} is out of range for {depth} axial slices")
        data = np.asarray(volume.dataobj[:, :, z], dtype=np.float64)
        # medgen.data.slicing.axial_plane: rows anterior -> posterior, columns left -> right
        return np.ascontiguousarray(np.flip(data.T, axis=0))[None]

    def _most_label_slice(self, row: _Row, volume: nib.Nifti1Image) -> int:
        label_path = row.extras.get(self._label_column, "").strip()
        if not label_path:
            raise BadImage(f"empty label path in column {self._label_column!r}")
        label = canonical_volume(self._read_bytes(label_path), label_path, "label")
        if label.shape != volume.shape:
            raise BadImage(
                f"label {label_path!r} has shape {label.shape}, the image {volume.shape}"
            )
        if not np.allclose(label.affine, volume.affine, atol=1e-3):
            raise BadImage(f"label {label_path!r} has a different affine from the image")
        counts = (np.asarray(label.dataobj) > 0).sum(axis=(0, 1))
        if counts.max() == 0:
            raise BadImage(f"label {label_path!r} has no voxel > 0 to choose a slice")
        return int(np.argmax(counts))


def _check_options(
    size, color, on_bad_row, modalities, dicom_window, nifti_slice, label_column, percentiles
) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DatasetError(f"size must be a positive integer, got {size!r}")
    if color not in COLORS:
        raise DatasetError(f"color must be one of {COLORS}, got {color!r}")
    if on_bad_row not in BAD_ROW_POLICIES:
        raise DatasetError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")
    if dicom_window is not None and (len(dicom_window) != 2 or float(dicom_window[1]) < 1):
        raise DatasetError(
            f"dicom_window must be [center, width] with width >= 1 (DICOM LINEAR), "
            f"got {dicom_window!r}"
        )
    if isinstance(nifti_slice, bool) or not (
        isinstance(nifti_slice, int) or nifti_slice in NIFTI_SLICE_RULES
    ):
        raise DatasetError(
            f"nifti_slice must be an integer or one of {NIFTI_SLICE_RULES}, got {nifti_slice!r}"
        )
    if nifti_slice == "most_label" and not label_column:
        raise DatasetError("nifti_slice 'most_label' needs label_column (the label path column)")
    if modalities is not None and (isinstance(modalities, str) or not modalities):
        raise DatasetError(f"modalities must be a non-empty list or None, got {modalities!r}")
    if len(percentiles) != 2 or not 0 <= float(percentiles[0]) < float(percentiles[1]) <= 100:
        raise DatasetError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")

"""Model inputs: 2D axial slices and downsampled 3D volumes, as tensor bundles.

Slice orientation: preprocessed volumes are RAS, so an axial slice ``vol[:, :, z]`` is
indexed [x (left->right), y (posterior->anterior)]. ``axial_plane`` turns it into an image
with rows anterior (top) to posterior and columns left to right (neurological view).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medgen.config import config_from_params
from medgen.data.labels import LESION_LABELS, TISSUE_LABELS, has_lesion
from medgen.data.resize import resize_images, resize_labels
from medgen.datasets import SubjectRecord, TensorBundle

LABEL_KEYS = ("seg", "tissue")


@dataclass(frozen=True)
class SliceConfig:
    """``params:slices``: which channels, the output size, how much brain a slice needs."""

    modalities: tuple[str, ...] = ("t1_pre", "t1_gd", "flair", "bravo")
    size: int = 64
    min_brain_fraction: float = 0.15

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SliceConfig:
        return config_from_params(cls, params, "slices")


@dataclass(frozen=True)
class VolumeConfig:
    """``params:volumes``: channels and output size of the 3D model inputs."""

    modalities: tuple[str, ...] = ("t1_pre", "t1_gd", "flair", "bravo")
    size: tuple[int, int, int] = (48, 56, 48)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> VolumeConfig:
        return config_from_params(cls, params, "volumes")


def axial_plane(volume: np.ndarray) -> np.ndarray:
    """[x, y, z] -> [z, rows=anterior..posterior, cols=left..right]."""
    return np.ascontiguousarray(np.flip(np.transpose(volume, (2, 1, 0)), axis=1))


def _square_resize(stack: torch.Tensor, size: int, nearest: bool) -> torch.Tensor:
    """Pad [N, C, H, W] to a square (keeping aspect ratio), then resize to size x size."""
    height, width = stack.shape[-2:]
    side = max(height, width)
    pad_h, pad_w = side - height, side - width
    fill = 0.0 if nearest else -1.0  # -1 is background after normalisation
    stack = F.pad(
        stack, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill
    )
    return (resize_labels if nearest else resize_images)(stack, (size, size))


@dataclass(frozen=True)
class SubjectVolumes:
    """The arrays of one preprocessed subject, read once for slices and volumes alike."""

    arrays: dict[str, np.ndarray]
    voxel_mm: tuple[float, ...]


def load_volumes(
    records: Mapping[str, SubjectRecord], subjects: Iterable[str], modalities: Iterable[str]
) -> dict[str, SubjectVolumes]:
    """Read ``modalities`` plus the label and growth maps of ``subjects``, in that order."""
    loaded = {}
    for subject in subjects:
        record = records[subject]
        wanted = dict.fromkeys(
            [*modalities, *(k for k in (*LABEL_KEYS, "growth") if k in record.files)]
        )
        images = {k: record.load(k) for k in wanted}
        zooms = next(iter(images.values())).header.get_zooms()[:3]
        loaded[subject] = SubjectVolumes(
            arrays={
                k: np.asarray(image.get_fdata(dtype=np.float32)) for k, image in images.items()
            },
            voxel_mm=tuple(float(z) for z in zooms),
        )
    return loaded


def brain_mask(volumes: dict[str, np.ndarray], modalities: tuple[str, ...]) -> np.ndarray:
    """Brain voxels: the tissue map where there is one, else the first image above background."""
    if "tissue" in volumes:
        return volumes["tissue"] > 0
    return volumes[modalities[0]] > -0.9


def extract_slices(
    subjects: Mapping[str, SubjectVolumes], config: SliceConfig, split: str
) -> TensorBundle:
    """Axial slices with at least ``min_brain_fraction`` brain, resized to ``size``²."""
    images, labels, subject_index, slice_index = [], {k: [] for k in LABEL_KEYS}, [], []
    pixel_spacing_mm = None
    for position, loaded in enumerate(
        tqdm(subjects.values(), desc=f"slicing {split}", leave=False)
    ):
        volumes = loaded.arrays
        if pixel_spacing_mm is None:
            pixel_spacing_mm = _pixel_spacing(loaded, config.size)
        brain = axial_plane(brain_mask(volumes, config.modalities))
        keep = np.flatnonzero(
            brain.reshape(brain.shape[0], -1).mean(axis=1) >= config.min_brain_fraction
        )
        if keep.size == 0:
            continue
        stack = np.stack([axial_plane(volumes[m])[keep] for m in config.modalities], axis=1)
        images.append(_square_resize(torch.from_numpy(stack), config.size, nearest=False))
        for key in LABEL_KEYS:
            if key in volumes:
                label = torch.from_numpy(axial_plane(volumes[key])[keep][:, None])
                labels[key].append(
                    _square_resize(label, config.size, nearest=True).round().to(torch.uint8)
                )
        subject_index.append(torch.full((keep.size,), position, dtype=torch.int64))
        slice_index.append(torch.from_numpy(keep.astype(np.int64)))
    if not images:
        empty = torch.zeros((0, len(config.modalities), config.size, config.size))
        tensors = {
            "images": empty,
            "subject_index": torch.zeros(0, dtype=torch.int64),
            "slice_index": torch.zeros(0, dtype=torch.int64),
        }
    else:
        tensors = {
            "images": torch.cat(images).clamp(-1, 1).float(),
            "subject_index": torch.cat(subject_index),
            "slice_index": torch.cat(slice_index),
        }
        tensors.update({k: torch.cat(v) for k, v in labels.items() if v})
    metadata = {
        "split": split,
        "subjects": list(subjects),
        "modalities": list(config.modalities),
        "size": config.size,
        "orientation": "axial; rows anterior->posterior, columns left->right",
        "intensity_range": [-1.0, 1.0],
        "seg_labels": {str(k): v for k, v in LESION_LABELS.items()},
        "tissue_labels": {str(k): v for k, v in TISSUE_LABELS.items()},
        "min_brain_fraction": config.min_brain_fraction,
        # in-plane size of one output pixel (square: slices are padded to a square first)
        "pixel_spacing_mm": pixel_spacing_mm,
    }
    return TensorBundle(tensors, metadata)


def _pixel_spacing(loaded: SubjectVolumes, size: int) -> float:
    shape = next(iter(loaded.arrays.values())).shape[:2]
    side_mm = max(n * z for n, z in zip(shape, loaded.voxel_mm[:2], strict=True))
    return round(float(side_mm / size), 4)


def extract_volumes(
    subjects: Mapping[str, SubjectVolumes], config: VolumeConfig, split: str
) -> TensorBundle:
    """Whole volumes resized to ``size`` (trilinear for images, nearest for labels)."""
    images, labels, growth = [], {k: [] for k in LABEL_KEYS}, []
    voxel_spacing_mm = None
    for loaded in tqdm(subjects.values(), desc=f"volumes {split}", leave=False):
        volumes = loaded.arrays
        if voxel_spacing_mm is None:
            voxel_spacing_mm = _voxel_spacing(loaded, config.size)
        stack = torch.from_numpy(np.stack([volumes[m] for m in config.modalities]))[None]
        images.append(resize_images(stack, config.size))
        for key in LABEL_KEYS:
            if key in volumes:
                label = torch.from_numpy(volumes[key])[None, None]
                labels[key].append(resize_labels(label, config.size).to(torch.uint8))
        if "growth" in volumes:
            growth.append(
                resize_images(torch.from_numpy(volumes["growth"])[None, None], config.size)
            )
    n_channels = len(config.modalities)
    tensors = {
        "images": torch.cat(images).clamp(-1, 1)
        if images
        else torch.zeros((0, n_channels, *config.size))
    }
    tensors["subject_index"] = torch.arange(len(images), dtype=torch.int64)
    tensors.update({k: torch.cat(v) for k, v in labels.items() if v})
    if growth:
        tensors["growth"] = torch.cat(growth).clamp(0, 1)
    if "seg" in tensors:
        # class label for class-conditional 3D generation: does the volume hold a lesion?
        tensors["lesion_present"] = has_lesion(tensors["seg"]).to(torch.int64)
    metadata = {
        "split": split,
        "subjects": list(subjects),
        "modalities": list(config.modalities),
        "size": list(config.size),
        "orientation": "RAS voxel order [x, y, z]",
        "intensity_range": [-1.0, 1.0],
        "seg_labels": {str(k): v for k, v in LESION_LABELS.items()},
        "tissue_labels": {str(k): v for k, v in TISSUE_LABELS.items()},
        # size of one output voxel: the preprocessed field of view over ``size``
        "voxel_spacing_mm": voxel_spacing_mm,
    }
    return TensorBundle(tensors, metadata)


def _voxel_spacing(loaded: SubjectVolumes, size: Sequence[int]) -> list[float]:
    shape = next(iter(loaded.arrays.values())).shape[:3]
    return [
        round(float(n * z / s), 4) for n, z, s in zip(shape, loaded.voxel_mm[:3], size, strict=True)
    ]

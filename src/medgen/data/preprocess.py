"""Reorient, resample, crop/pad and normalise one subject (MONAI transforms).

Every volume of a subject goes through the same geometry: RAS orientation, the
configured spacing, a crop around the head's foreground (the same box for all files)
and a centred pad/crop to the configured shape. Intensity images are then mapped to
[-1, 1] by their own percentiles; label maps are resampled with nearest neighbour and
never rescaled; continuous maps (tumour growth) keep their [0, 1] values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation, ResizeWithPadOrCrop, Spacing, SpatialCrop
from monai.transforms.utils import generate_spatial_bounding_box

from medgen.config import config_from_params
from medgen.data.validation import ValidationRules
from medgen.datasets import SubjectPayload, SubjectRecord

# Bump when preprocessing changes, so cached outputs are rebuilt.
PREPROCESS_VERSION = 1
_VOIDED = re.compile(r"^(?P<source>.+)-voided-\d+$")


@dataclass(frozen=True)
class PreprocessConfig:
    """Geometry and intensity settings (``params:preprocessing``)."""

    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    spatial_size: tuple[int, int, int] = (80, 96, 80)
    percentiles: tuple[float, float] = (0.5, 99.5)
    # foreground = reference image above this fraction of its 99th percentile
    foreground_fraction: float = 0.1
    foreground_margin_vox: int = 2

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PreprocessConfig:
        config = config_from_params(cls, params, "preprocessing")
        low, high = config.percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(
                f"preprocessing.percentiles must satisfy 0 <= low < high <= 100, got {config.percentiles}"
            )
        return config


def percentile_bounds(volume: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    low, high = np.percentile(volume, percentiles)
    if high <= low:
        raise ValueError(f"constant image: percentiles {percentiles} both equal {low}")
    return float(low), float(high)


def scale_to_unit_range(volume: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Map [low, high] linearly to [-1, 1] and clip what lies outside."""
    low, high = bounds
    return np.clip(2.0 * (volume - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)


RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def _to_meta(image: nib.Nifti1Image, dtype=np.float32) -> MetaTensor:
    data = np.asarray(image.dataobj, dtype=dtype)
    return MetaTensor(
        torch.from_numpy(data[None]), affine=torch.as_tensor(image.affine, dtype=torch.float64)
    )


def _resample(image: nib.Nifti1Image, config: PreprocessConfig, nearest: bool) -> MetaTensor:
    mode = "nearest" if nearest else "bilinear"
    # labels as MONAI's old default: nibabel affines are in RAS world coordinates (naming them
    # keeps MONAI from warning that its default changed)
    tensor = Orientation(axcodes="RAS", labels=RAS_LABELS)(_to_meta(image))
    return Spacing(pixdim=config.spacing_mm, mode=mode, padding_mode="zeros")(tensor)


def _to_nifti(tensor: MetaTensor, dtype) -> nib.Nifti1Image:
    data = np.asarray(tensor.array[0], dtype=np.float32)
    if np.issubdtype(dtype, np.integer) and dtype != np.int16:
        data = np.rint(data).astype(dtype)
    image = nib.Nifti1Image(data, np.asarray(tensor.affine, dtype=np.float64))
    if dtype == np.int16:
        # scanner-style storage: int16 with a scale factor, a quarter the size of float32
        image.set_data_dtype(np.int16)
    return image


def preprocess_subject(
    record: SubjectRecord, rules: ValidationRules, config: PreprocessConfig
) -> SubjectPayload:
    """Return the subject's volumes on the common grid, intensities in [-1, 1]."""
    resampled = {
        suffix: _resample(
            record.load(suffix), config, nearest=rules.allowed_labels(suffix) is not None
        )
        for suffix in sorted(record.files)
    }
    reference = resampled[rules.required_images[0]]
    threshold = config.foreground_fraction * float(np.percentile(reference.array, 99))
    start, end = generate_spatial_bounding_box(
        reference, select_fn=lambda x: x > threshold, margin=config.foreground_margin_vox
    )
    crop = SpatialCrop(roi_start=start, roi_end=end)
    pad_or_crop = ResizeWithPadOrCrop(spatial_size=config.spatial_size, mode="constant")
    geometry = {suffix: pad_or_crop(crop(tensor)) for suffix, tensor in resampled.items()}

    bounds = {}
    images: dict[str, nib.Nifti1Image] = {}
    for suffix, tensor in geometry.items():
        if rules.allowed_labels(suffix) is not None:
            images[suffix] = _to_nifti(tensor, np.uint8)
        elif suffix in rules.continuous_maps:
            images[suffix] = _to_nifti(tensor.clamp(0, 1), np.float32)
        else:
            # a voided image is scaled like its source, so the unmasked voxels match exactly
            match = _VOIDED.match(suffix)
            source = match["source"] if match and match["source"] in geometry else suffix
            if source not in bounds:
                bounds[source] = percentile_bounds(geometry[source].array, config.percentiles)
            scaled = MetaTensor(
                torch.from_numpy(scale_to_unit_range(tensor.array, bounds[source])),
                affine=tensor.affine,
            )
            images[suffix] = _to_nifti(scaled, np.int16)
    metadata = {
        "subject_id": record.subject_id,
        "crop_start": [int(v) for v in start],
        "crop_end": [int(v) for v in end],
        "intensity_bounds": {k: [round(v, 4) for v in b] for k, b in bounds.items()},
        "source": record.metadata,
    }
    return SubjectPayload(images=images, metadata=metadata)

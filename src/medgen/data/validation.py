"""Checks that every file of a subject is usable before anything is computed from it.

One subject fails on its first problem; the error names the subject, the file and the
reason, e.g. ``BraTS-SYN-00003-000: .../BraTS-SYN-00003-000-flair.nii.gz: 12 NaN/Inf voxels``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import nibabel as nib
import numpy as np

from medgen.config import config_from_params
from medgen.datasets import NiftiReadError, SubjectRecord


class SubjectValidationError(ValueError):
    """A subject that cannot be used, with the offending file and the reason."""

    def __init__(self, subject: str, file: str, reason: str) -> None:
        super().__init__(f"{subject}: {file}: {reason}")
        self.subject = subject
        self.file = file
        self.reason = reason


@dataclass(frozen=True)
class ValidationRules:
    """What a usable subject looks like (``params:validation``)."""

    required_images: tuple[str, ...] = ("t1_pre", "t1_gd", "flair", "bravo")
    required_labels: tuple[str, ...] = ("seg",)
    # label files and the values they may hold; a pattern covers families (mask-0000, ...)
    label_values: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {"seg": (0, 1, 2, 3), "tissue": (0, 1, 2, 3), r"mask-\d+": (0, 1)}
    )
    continuous_maps: tuple[str, ...] = ("growth",)
    affine_tolerance_mm: float = 1e-3

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ValidationRules:
        rules = config_from_params(cls, params, "validation")
        if "label_values" in params:
            rules = replace(
                rules, label_values={k: tuple(v) for k, v in params["label_values"].items()}
            )
        return rules

    def allowed_labels(self, suffix: str) -> tuple[int, ...] | None:
        for pattern, values in self.label_values.items():
            if re.fullmatch(pattern, suffix):
                return values
        return None


def _check_volume(subject: str, path: str, image: nib.Nifti1Image) -> np.ndarray:
    if image.ndim != 3:
        raise SubjectValidationError(
            subject, path, f"expected a 3D volume, got {image.ndim}D with shape {image.shape}"
        )
    data = np.asarray(image.dataobj)
    if np.issubdtype(data.dtype, np.floating):
        bad = int((~np.isfinite(data)).sum())
        if bad:
            raise SubjectValidationError(subject, path, f"{bad} NaN/Inf voxels")
    return data


def _check_labels(subject: str, path: str, data: np.ndarray, allowed: tuple[int, ...]) -> None:
    values = np.unique(data)
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise SubjectValidationError(subject, path, "label map holds non-integer values")
    unexpected = sorted(set(values.astype(int).tolist()) - set(allowed))
    if unexpected:
        kind = (
            "binary mask" if tuple(allowed) == (0, 1) else f"label map with values {list(allowed)}"
        )
        raise SubjectValidationError(
            subject, path, f"expected a {kind}, found values {unexpected[:10]}"
        )


def validate_subject(record: SubjectRecord, rules: ValidationRules) -> dict[str, Any]:
    """Raise ``SubjectValidationError`` on the first problem; otherwise describe the subject."""
    subject = record.subject_id
    for suffix in (*rules.required_images, *rules.required_labels):
        if suffix not in record.files:
            raise SubjectValidationError(
                subject, f"{subject}-{suffix}.nii.gz", f"missing required file '{suffix}'"
            )

    reference: tuple[str, nib.Nifti1Image] | None = None
    for suffix, path in sorted(record.files.items()):
        try:
            image = record.load(suffix)
        except NiftiReadError as exc:
            raise SubjectValidationError(subject, path, exc.reason) from exc
        data = _check_volume(subject, path, image)
        allowed = rules.allowed_labels(suffix)
        if allowed is not None:
            _check_labels(subject, path, data, allowed)
        if reference is None:
            reference = (path, image)
            continue
        ref_path, ref_image = reference
        if image.shape != ref_image.shape:
            raise SubjectValidationError(
                subject, path, f"shape {image.shape} differs from {ref_image.shape} of {ref_path}"
            )
        deviation = float(np.abs(image.affine - ref_image.affine).max())
        if deviation > rules.affine_tolerance_mm:
            raise SubjectValidationError(
                subject,
                path,
                f"affine differs from {ref_path} by {deviation:.4g} mm (tolerance {rules.affine_tolerance_mm})",
            )
    assert reference is not None
    return {
        "shape": list(reference[1].shape),
        "voxel_mm": [round(float(v), 4) for v in reference[1].header.get_zooms()[:3]],
    }

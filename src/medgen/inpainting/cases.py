"""Inputs of the inpainting pipeline: one case per (subject, mask), as a tensor bundle per split.

BraTS 2023/2024 "Local Synthesis of Healthy Brain Tissue via Inpainting" (Kofler et al.,
arXiv:2305.08992): a model sees a T1 image with a region voided and fills in healthy
tissue; only the healthy part of the region (``mask-healthy``) has a ground truth and is
scored. Here a case is ``(subject, mask k)`` of the preprocessed cohort; every array is on
the configured ``size`` grid. The voided image is rebuilt after resizing as
``where(mask, -1, t1n)``: resizing the voided file itself would blur the void into the
voxels around it, so the known voxels would no longer equal ``t1n`` exactly, and the
known-region constraint of the sampler could not hold. See docs/inpainting.md.

Size: over 400 lines because the case builder, its bad-input checks (one contract: each
names subject, case, file and reason) and the conditioning maps that read its bundle are
one unit; split them only together with their tests.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import torch

from medgen.config import config_from_params
from medgen.data.labels import TISSUE_LABELS
from medgen.data.resize import resize_images, resize_labels
from medgen.datasets import NiftiReadError, SubjectRecord, TensorBundle

logger = logging.getLogger(__name__)

BAD_CASE_POLICIES = ("skip", "fail")
CONDITIONING_VARIANTS = ("none", "honest", "oracle")
REJECTED_CASE_COLUMNS = ("subject", "case", "file", "reason")
TISSUE_CLASSES = (1, 2, 3)  # CSF, GM, WM: the one-hot channels of the conditioning maps
AFFINE_TOLERANCE_MM = 1e-3  # as validation.affine_tolerance_mm
# A case whose mask lies more than this fraction outside the brain (tissue == 0) is bad:
# a few boundary voxels where a user's tissue map and the BraTS mask disagree are normal;
# more means a misregistered mask or one from another subject.
MAX_MASK_OUTSIDE_BRAIN = 0.05
RANGE_TOLERANCE = 1e-3  # slack on [-1, 1] and [0, 1] for values stored as scaled int16


@dataclass(frozen=True)
class CaseConfig:
    """``params`` of the case builder; file suffixes are format strings of the mask index k."""

    size: tuple[int, int, int] = (48, 56, 48)
    image: str = "t1n"
    voided_pattern: str = "t1n-voided-{k:04d}"
    mask_pattern: str = "mask-{k:04d}"
    score_mask_pattern: str = "mask-healthy-{k:04d}"  # optional file; absent: the whole mask
    tissue: str = "tissue"
    growth: str = "growth"
    masks_per_subject: int | None = None  # None: every index found; n: the n lowest found
    growth_threshold: float = 0.2
    on_bad_case: str = "skip"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(self.size))
        for key in ("voided_pattern", "mask_pattern", "score_mask_pattern"):
            _index_regex(getattr(self, key), f"inpainting.cases.{key}")
        n = self.masks_per_subject
        checks = (
            ("size", len(self.size) == 3 and all(map(_positive_int, self.size)), "3 ints >= 1"),
            ("masks_per_subject", n is None or _positive_int(n), "null or an integer >= 1"),
            ("growth_threshold", 0.0 <= self.growth_threshold <= 1.0, "a number in [0, 1]"),
            ("on_bad_case", self.on_bad_case in BAD_CASE_POLICIES, f"one of {BAD_CASE_POLICIES}"),
        )
        for key, ok, expected in checks:
            if not ok:
                raise ValueError(
                    f"inpainting.cases.{key} must be {expected}, got {getattr(self, key)!r}"
                )

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, section: str = "inpainting.cases"
    ) -> CaseConfig:
        return config_from_params(cls, params, section)


class InpaintingCaseError(ValueError):
    """A case (or a whole subject) that cannot be used: subject, case, file and reason."""

    def __init__(self, subject: str, case: str, file: str, reason: str) -> None:
        where = f"{subject} (case {case})" if case else subject
        super().__init__(f"{where}: {file}: {reason}")
        self.subject, self.case, self.file, self.reason = subject, case, file, reason

    def row(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "case": self.case,
            "file": self.file,
            "reason": self.reason,
        }


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _index_regex(pattern: str, key: str) -> re.Pattern:
    """``"mask-{k:04d}"`` -> ``mask\\-(?P<k>\\d+)``; the pattern must use the field k once."""
    parts, fields = [], []
    for literal, field, _, _ in string.Formatter().parse(pattern):
        parts.append(re.escape(literal))
        if field is not None:
            fields.append(field)
            parts.append(r"(?P<k>\d+)")
    if fields != ["k"]:
        raise ValueError(f"{key} must contain the mask index field {{k}} once, got {pattern!r}")
    return re.compile("".join(parts))


def mask_indices(record: SubjectRecord, config: CaseConfig) -> list[int]:
    """The mask indices k of a subject (files named ``mask_pattern``), lowest first."""
    regex = _index_regex(config.mask_pattern, "inpainting.cases.mask_pattern")
    found = sorted(
        int(match["k"])
        for suffix in record.files
        if (match := regex.fullmatch(suffix))
        and config.mask_pattern.format(k=int(match["k"])) == suffix
    )
    return found if config.masks_per_subject is None else found[: config.masks_per_subject]


@dataclass
class _Subject:
    """A subject's shared arrays: on the original grid (for checks) and resized."""

    t1n_image: nib.Nifti1Image
    t1n: np.ndarray
    brain: np.ndarray
    resized: dict[str, torch.Tensor]
    files: dict[str, str]


class _Reader:
    """Reads one subject's files; every problem becomes an ``InpaintingCaseError``."""

    def __init__(self, record: SubjectRecord) -> None:
        self.record = record
        self.sid = record.subject_id
        self.case = ""

    def fail(self, file: str, reason: str) -> InpaintingCaseError:
        return InpaintingCaseError(self.sid, self.case, file, reason)

    def path(self, suffix: str) -> str:
        return self.record.files.get(suffix, f"{self.sid}-{suffix}.nii.gz")

    def read(self, suffix: str, what: str, reference: nib.Nifti1Image | None = None):
        if suffix not in self.record.files:
            raise self.fail(self.path(suffix), f"missing {what} '{suffix}'")
        try:
            image = self.record.load(suffix)
        except NiftiReadError as exc:
            raise self.fail(self.path(suffix), exc.reason) from exc
        if image.ndim != 3:
            raise self.fail(self.path(suffix), f"expected a 3D volume, got shape {image.shape}")
        if reference is not None:
            if image.shape != reference.shape:
                raise self.fail(
                    self.path(suffix), f"shape {image.shape} differs from {reference.shape} of t1n"
                )
            deviation = float(np.abs(image.affine - reference.affine).max())
            if deviation > AFFINE_TOLERANCE_MM:
                raise self.fail(self.path(suffix), f"affine differs from t1n by {deviation:.4g} mm")
        return image

    def mask(self, suffix: str, reference: nib.Nifti1Image) -> np.ndarray:
        """A binary mask file as bool, refusing any value other than 0 and 1."""
        data = np.asarray(self.read(suffix, "mask", reference).dataobj)
        values = np.unique(data)
        bad = values[(values != 0) & (values != 1)][:10]
        if bad.size:  # 10 digits: a scaled-int16 "1" shows as 0.9999999998, not as 1.0
            shown = bad.tolist() if bad.dtype.kind in "iu" else [float(f"{v:.10g}") for v in bad]
            raise self.fail(self.path(suffix), f"expected a binary mask, found values {shown}")
        return data == 1


def _quantisation_step(image: nib.Nifti1Image) -> float:
    """One storage step of an integer-stored image (its scale factor), 0 for float files."""
    if not np.issubdtype(image.get_data_dtype(), np.integer):
        return 0.0
    slope = getattr(image.dataobj, "slope", 1.0)
    return abs(float(slope)) if np.isfinite(slope) else 1.0


def _resized_grid(image: nib.Nifti1Image, size: tuple[int, ...]) -> tuple[list, list[float]]:
    """Affine and voxel spacing of the ``size`` grid covering the same field of view.

    ``align_corners=False`` resizing puts output voxel j at input coordinate
    ``(j + 0.5) * zoom - 0.5``: the columns scale by ``zoom``, the origin moves half a voxel.
    """
    zoom = np.array(image.shape[:3], dtype=np.float64) / np.array(size, dtype=np.float64)
    scale = np.diag([*zoom, 1.0])
    scale[:3, 3] = (zoom - 1.0) / 2.0
    affine = np.asarray(image.affine, dtype=np.float64) @ scale
    spacing = np.asarray(image.header.get_zooms()[:3], dtype=np.float64) * zoom
    return np.round(affine, 6).tolist(), [round(float(s), 4) for s in spacing]


def _load_subject(reader: _Reader, config: CaseConfig) -> _Subject:
    t1n_image = reader.read(config.image, "image")
    t1n = np.asarray(t1n_image.get_fdata(dtype=np.float32))
    low, high = float(t1n.min()), float(t1n.max())
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise reader.fail(
            reader.path(config.image),
            f"intensities [{low:.4g}, {high:.4g}] are not in [-1, 1]: not a preprocessed image "
            "(inpainting reads preprocessed_cohort, see docs/inpainting.md)",
        )
    what = "conditioning map (user-provided for real data)"
    tissue = np.asarray(reader.read(config.tissue, what, t1n_image).dataobj)
    unknown = sorted(set(np.unique(tissue).tolist()) - set(TISSUE_LABELS))
    if unknown:
        raise reader.fail(
            reader.path(config.tissue),
            f"expected tissue labels {sorted(TISSUE_LABELS)}, found values {unknown[:10]}",
        )
    growth = reader.read(config.growth, what, t1n_image).get_fdata(dtype=np.float32)
    if growth.min() < -RANGE_TOLERANCE or growth.max() > 1 + RANGE_TOLERANCE:
        raise reader.fail(
            reader.path(config.growth),
            f"growth probabilities [{growth.min():.4g}, {growth.max():.4g}] are not in [0, 1]",
        )

    def grid(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array))[None, None]

    tissue_small = resize_labels(grid(tissue.astype(np.uint8)), config.size)
    resized = {
        "t1n": resize_images(grid(t1n), config.size).clamp(-1, 1),
        "tissue": tissue_small,
        "brain": (tissue_small > 0).to(torch.uint8),
        "growth": resize_images(grid(growth), config.size).clamp(0, 1),
    }
    files = {"t1n": reader.path(config.image)}
    files.update({key: reader.path(getattr(config, key)) for key in ("tissue", "growth")})
    return _Subject(t1n_image, t1n, tissue > 0, resized, files)


def _resized_mask(reader: _Reader, suffix: str, mask: np.ndarray, size) -> torch.Tensor:
    small = resize_labels(torch.from_numpy(mask.astype(np.uint8))[None, None], size)
    if not small.any():
        raise reader.fail(reader.path(suffix), f"mask empty at size {list(size)}")
    return small


def _build_case(reader: _Reader, subject: _Subject, k: int, config: CaseConfig) -> dict:
    """Check one mask and its voided image on the original grid, then resize the mask."""
    reference = subject.t1n_image
    mask_suffix, score_suffix, voided_suffix = (
        pattern.format(k=k)
        for pattern in (config.mask_pattern, config.score_mask_pattern, config.voided_pattern)
    )
    mask = reader.mask(mask_suffix, reference)
    if not mask.any():
        raise reader.fail(reader.path(mask_suffix), "mask is empty")
    has_score = score_suffix in reader.record.files
    score = reader.mask(score_suffix, reference) if has_score else mask
    if (score & ~mask).any():
        raise reader.fail(
            reader.path(score_suffix),
            f"{int((score & ~mask).sum())} score-mask voxels lie outside {mask_suffix}",
        )
    if not score.any():
        raise reader.fail(reader.path(score_suffix), "mask is empty")
    outside_brain = float((mask & ~subject.brain).sum()) / float(mask.sum())
    if outside_brain > MAX_MASK_OUTSIDE_BRAIN:
        raise reader.fail(
            reader.path(mask_suffix),
            f"{outside_brain:.1%} of the mask lies outside the brain (tissue == 0; "
            f"at most {MAX_MASK_OUTSIDE_BRAIN:.0%} allowed)",
        )
    voided_image = reader.read(voided_suffix, "voided image", reference)
    # Both files are int16 with their own scale factor: a value may round differently in
    # each, by up to half a step per file, so one step (the larger) is the honest slack.
    tolerance = max(_quantisation_step(reference), _quantisation_step(voided_image)) + 1e-6
    difference = np.abs(voided_image.get_fdata(dtype=np.float32) - subject.t1n)[~mask]
    if difference.size and float(difference.max()) > tolerance:
        raise reader.fail(
            reader.path(voided_suffix),
            f"differs from {config.image} outside the mask at {int((difference > tolerance).sum())}"
            f" voxels (max {float(difference.max()):.4g}, tolerance {tolerance:.3g})",
        )
    small_mask = _resized_mask(reader, mask_suffix, mask, config.size)
    small_score = small_mask
    if has_score:  # nearest picks the same voxels for both: the subset relation holds
        small_score = _resized_mask(reader, score_suffix, score, config.size) & small_mask
    affine, spacing = _resized_grid(reference, config.size)
    return {
        **subject.resized,
        "mask": small_mask,
        "score_mask": small_score,
        "voided": torch.where(small_mask.bool(), torch.tensor(-1.0), subject.resized["t1n"]),
        "case_id": reader.case,
        "mask_index": k,
        "mask_name": mask_suffix,
        "affine": affine,
        "spacing": spacing,
        "files": {
            **subject.files,
            "voided": reader.path(voided_suffix),
            "mask": reader.path(mask_suffix),
            "score_mask": reader.path(score_suffix) if has_score else None,
        },
    }


_TENSOR_DTYPES = {
    "t1n": torch.float32,
    "mask": torch.uint8,
    "score_mask": torch.uint8,
    "voided": torch.float32,
    "brain": torch.uint8,
    "tissue": torch.uint8,
    "growth": torch.float32,
}


def _subject_cases(
    records: Mapping[str, SubjectRecord], sid: str, config: CaseConfig, split: str
) -> tuple[list[dict], list[InpaintingCaseError]]:
    """The good cases of one subject and the errors of the bad ones (all, if the subject is)."""
    if sid not in records:
        return [], [InpaintingCaseError(sid, "", "", f"in split '{split}' but not in the cohort")]
    reader = _Reader(records[sid])
    case_ids = {
        k: f"{sid}_{config.mask_pattern.format(k=k)}" for k in mask_indices(records[sid], config)
    }
    if not case_ids:
        return [], [reader.fail(reader.path(config.mask_pattern.format(k=0)), "no inpainting mask")]
    try:
        subject = _load_subject(reader, config)
    except InpaintingCaseError as error:  # every case is lost: report each by its id
        return [], [
            InpaintingCaseError(sid, c, error.file, error.reason) for c in case_ids.values()
        ]
    cases, errors = [], []
    for k, case_id in case_ids.items():
        reader.case = case_id
        try:
            cases.append(_build_case(reader, subject, k, config))
        except InpaintingCaseError as error:
            errors.append(error)
    return cases, errors


def build_inpainting_cases(
    records: Mapping[str, SubjectRecord], subjects: Sequence[str], config: CaseConfig, split: str
) -> tuple[TensorBundle, list[dict]]:
    """The split's cases (one per subject and mask) as a bundle, and the rejected cases.

    ``on_bad_case: fail`` raises the first bad case's ``InpaintingCaseError`` (a ValueError
    naming subject, case, file and reason); ``skip`` returns it as a row and goes on.
    """
    cases, rejected, kept = [], [], []
    for sid in subjects:
        good, errors = _subject_cases(records, sid, config, split)
        for error in errors:
            if config.on_bad_case == "fail":
                raise error
            logger.warning("Rejected inpainting case %s", error)
            rejected.append(error.row())
        if good:
            kept.append(sid)
            cases.extend({**case, "subject_index": len(kept) - 1} for case in good)
    tensors = {
        key: torch.cat([c[key] for c in cases]).to(dtype)
        if cases
        else torch.zeros((0, 1, *config.size), dtype=dtype)
        for key, dtype in _TENSOR_DTYPES.items()
    }
    for key in ("subject_index", "mask_index"):
        tensors[key] = torch.tensor([c[key] for c in cases], dtype=torch.int64)
    metadata = {
        "split": split,
        "case_ids": [c["case_id"] for c in cases],
        "subjects": kept,
        "mask_names": [c["mask_name"] for c in cases],
        "size": list(config.size),
        "orientation": "RAS voxel order [x, y, z]",
        # one output voxel: the preprocessed field of view over ``size`` (first case; the
        # preprocessed cohort shares one grid)
        "voxel_spacing_mm": cases[0]["spacing"] if cases else None,
        "affine": [c["affine"] for c in cases],
        "intensity_range": [-1.0, 1.0],
        "tissue_labels": {str(k): v for k, v in TISSUE_LABELS.items()},
        "growth_threshold": config.growth_threshold,
        "source_files": [c["files"] for c in cases],
    }
    logger.info("%s: %d inpainting cases, %d rejected", split, len(cases), len(rejected))
    return TensorBundle(tensors, metadata), rejected


def _tissue_one_hot(tissue: torch.Tensor) -> torch.Tensor:
    """[N, 1, *spatial] labels -> [N, 3, *spatial] float one-hot of CSF, GM, WM."""
    classes = torch.tensor(TISSUE_CLASSES, dtype=tissue.dtype).view(
        1, -1, *([1] * (tissue.ndim - 2))
    )
    return (tissue == classes).float()


def population_tissue_prior(bundle: TensorBundle) -> torch.Tensor:
    """Mean CSF/GM/WM one-hot ``[3, D, H, W]`` over the bundle's subjects (each counted once)."""
    subject_index = bundle["subject_index"]
    if subject_index.numel() == 0:
        raise ValueError(
            f"no cases in split '{bundle.metadata.get('split')}' to build a prior from"
        )
    first = [int(torch.nonzero(subject_index == s)[0, 0]) for s in torch.unique(subject_index)]
    return _tissue_one_hot(bundle["tissue"][first]).mean(dim=0)


def conditioning_maps(
    bundle: TensorBundle, variant: str, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """``[N, 4, D, H, W]``: growth > threshold, then CSF/GM/WM (see docs/inpainting.md).

    ``oracle`` uses the subject's own tissue everywhere (it leaks the answer inside the
    mask: an upper bound); ``honest`` replaces it inside the mask by ``prior``
    (`population_tissue_prior` of the train split); ``none`` is all zeros.
    """
    if variant not in CONDITIONING_VARIANTS:
        raise ValueError(
            f"conditioning variant must be one of {CONDITIONING_VARIANTS}, got {variant!r}"
        )
    tissue = bundle["tissue"]
    if variant == "none":
        return torch.zeros((tissue.shape[0], 1 + len(TISSUE_CLASSES), *tissue.shape[2:]))
    growth = (bundle["growth"] > bundle.metadata["growth_threshold"]).float()
    one_hot = _tissue_one_hot(tissue)
    if variant == "honest":
        expected = (len(TISSUE_CLASSES), *tissue.shape[2:])
        if prior is None or tuple(prior.shape) != expected:
            got = None if prior is None else tuple(prior.shape)
            raise ValueError(
                f"honest conditioning needs the train split's population_tissue_prior of shape "
                f"{expected}, got {got}"
            )
        one_hot = torch.where(bundle["mask"].bool(), prior.float()[None], one_hot)
    return torch.cat([growth, one_hot], dim=1)

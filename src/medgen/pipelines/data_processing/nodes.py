"""Nodes of ``data_processing``: thin calls into ``medgen.data``."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from medgen import runtime
from medgen.data.captions import build_captions, simulate_ratings
from medgen.data.cohort import (
    GENERATOR_VERSION,
    IMAGE_MODALITIES,
    CohortConfig,
    subject_id,
    synthesise_subject,
)
from medgen.data.preprocess import PREPROCESS_VERSION, PreprocessConfig, preprocess_subject
from medgen.data.slicing import (
    SliceConfig,
    VolumeConfig,
    extract_slices,
    extract_volumes,
    load_volumes,
)
from medgen.data.splits import SPLIT_NAMES, SplitConfig, split_by_patient
from medgen.data.template import load_brain_template
from medgen.data.validation import SubjectValidationError, ValidationRules, validate_subject
from medgen.datasets import LazySubject, SubjectRecord, TensorBundle, fingerprint_of

logger = logging.getLogger(__name__)
REJECTED_COLUMNS = ["subject", "file", "reason"]
BAD_SUBJECT_POLICIES = ("skip", "fail")


def generate_cohort(cohort: dict[str, Any]) -> dict[str, LazySubject]:
    """Plan the synthetic cohort; subjects already on disk with the same settings are kept."""
    config = CohortConfig.from_params(cohort)
    if not config.enabled:
        logger.info("cohort.enabled is false: using the subjects already in raw_cohort")
        return {}
    template = load_brain_template(config.resolution_mm)
    settings = {k: v for k, v in config.to_dict().items() if k != "n_subjects"}
    return {
        subject_id(config, i): LazySubject(
            fingerprint=fingerprint_of(GENERATOR_VERSION, settings, i),
            build=partial(synthesise_subject, template, config, i),
        )
        for i in range(config.n_subjects)
    }


def write_captions(raw_cohort: dict[str, SubjectRecord]) -> pd.DataFrame:
    """captions.csv: one caption per subject and modality (path, text, modality)."""
    return build_captions(raw_cohort, list(IMAGE_MODALITIES))


def write_expert_ratings(
    raw_cohort: dict[str, SubjectRecord], cohort: dict[str, Any]
) -> pd.DataFrame:
    """ratings.csv: simulated 1-3 quality ratings for later quality-model work."""
    config = CohortConfig.from_params(cohort)
    return simulate_ratings(
        raw_cohort, list(IMAGE_MODALITIES), config.seed, config.noise_std[1], config.bias_coeff[1]
    )


def validate_cohort(
    raw_cohort: dict[str, SubjectRecord], validation: dict[str, Any], on_bad_subject: str
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Check every subject; ``skip`` records bad ones and goes on, ``fail`` stops at the first."""
    if on_bad_subject not in BAD_SUBJECT_POLICIES:
        raise ValueError(
            f"on_bad_subject must be one of {BAD_SUBJECT_POLICIES}, got {on_bad_subject!r}"
        )
    rules = ValidationRules.from_params(validation)
    valid, rejected, described = [], [], {}
    for sid, record in tqdm(sorted(raw_cohort.items()), desc="validating", leave=False):
        try:
            described[sid] = validate_subject(record, rules)
        except SubjectValidationError as error:
            if on_bad_subject == "fail":
                raise
            logger.warning("Rejected subject %s", error)
            rejected.append({"subject": error.subject, "file": error.file, "reason": error.reason})
            continue
        described[sid]["fingerprint"] = record.fingerprint
        valid.append(sid)
    if not valid:
        raise ValueError(
            f"No valid subjects: all {len(rejected)} were rejected ({rejected[:3]} ...)"
        )
    report = {"valid": valid, "rejected": rejected, "subjects": described}
    return report, pd.DataFrame(rejected, columns=REJECTED_COLUMNS)


def preprocess_cohort(
    raw_cohort: dict[str, SubjectRecord],
    validation_report: dict[str, Any],
    validation: dict[str, Any],
    preprocessing: dict[str, Any],
) -> dict[str, LazySubject]:
    """Plan preprocessing of the valid subjects; unchanged ones are reused from disk."""
    rules = ValidationRules.from_params(validation)
    config = PreprocessConfig.from_params(preprocessing)
    return {
        sid: LazySubject(
            fingerprint=fingerprint_of(
                PREPROCESS_VERSION, raw_cohort[sid].fingerprint, preprocessing, validation
            ),
            build=partial(preprocess_subject, raw_cohort[sid], rules, config),
        )
        for sid in validation_report["valid"]
    }


def split_subjects(
    validation_report: dict[str, Any], split: dict[str, Any]
) -> dict[str, list[str]]:
    """Seeded patient-level train/val/test split, checked for overlap."""
    config = SplitConfig.from_params(split)
    return split_by_patient(
        validation_report["valid"], config.fractions, config.seed, config.patient_pattern
    )


def make_model_inputs(
    preprocessed_cohort: dict[str, SubjectRecord],
    subject_splits: dict[str, list[str]],
    slices: dict[str, Any],
    volumes: dict[str, Any],
) -> tuple[TensorBundle, ...]:
    """2D axial slices and downsampled 3D volumes per split, each subject read once."""
    slice_config, volume_config = SliceConfig.from_params(slices), VolumeConfig.from_params(volumes)
    modalities = dict.fromkeys([*slice_config.modalities, *volume_config.modalities])
    per_split = {}
    for split in SPLIT_NAMES:
        loaded = load_volumes(preprocessed_cohort, subject_splits[split], modalities)
        per_split[split] = (
            extract_slices(loaded, slice_config, split),
            extract_volumes(loaded, volume_config, split),
        )
    return tuple(per_split[s][0] for s in SPLIT_NAMES) + tuple(per_split[s][1] for s in SPLIT_NAMES)


def summarise_data(
    validation_report: dict[str, Any],
    subject_splits: dict[str, list[str]],
    slices_train: TensorBundle,
    slices_val: TensorBundle,
    slices_test: TensorBundle,
    volumes_train: TensorBundle,
) -> dict[str, Any]:
    """data_summary.json: counts per split, the split ids, rejections, elapsed seconds."""
    slices = {"train": slices_train, "val": slices_val, "test": slices_test}
    return {
        "subjects_total": len(validation_report["valid"]) + len(validation_report["rejected"]),
        "subjects_valid": len(validation_report["valid"]),
        "subjects_per_split": {name: len(ids) for name, ids in subject_splits.items()},
        "slices_per_split": {name: len(bundle) for name, bundle in slices.items()},
        "slice_shape": list(slices_train["images"].shape[1:]),
        "volume_shape": list(volumes_train["images"].shape[1:]),
        "modalities": slices_train.metadata["modalities"],
        "splits": subject_splits,
        "rejected": validation_report["rejected"],
        "elapsed_seconds": runtime.seconds_since_run_start(),
    }

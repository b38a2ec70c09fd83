"""Patient-level train/val/test splits: no patient ever appears in two splits."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from medgen.config import config_tree_from_params

SPLIT_NAMES = ("train", "val", "test")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitConfig:
    """``params:split``: ``seed`` shuffles the patients, ``fractions`` (train / val / test,
    summing to 1) cut them, ``patient_pattern`` (a regex whose first group is the patient)
    groups subjects (scans) by patient. Values in conf/base/parameters_data_processing.yml."""

    seed: int
    fractions: dict[str, float]
    patient_pattern: str

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SplitConfig:
        return config_tree_from_params(cls, params, "split")


class SplitOverlapError(ValueError):
    """A subject or patient that appears in more than one split."""


def patient_of(subject_id: str, pattern: str) -> str:
    """The patient a subject (scan) belongs to: the regex's first group, else the id itself.

    With the default pattern ``^(.+)-\\d{3}$``, BraTS ids such as BraTS-MET-00012-001
    (patient 00012, time point 001) group by patient.
    """
    match = re.match(pattern, subject_id)
    return match.group(1) if match else subject_id


def split_by_patient(
    subject_ids: list[str], fractions: dict[str, float], seed: int, patient_pattern: str
) -> dict[str, list[str]]:
    """Shuffle patients with ``seed`` and cut them by ``fractions`` (train/val/test).

    Every split with a fraction above 0 gets at least one patient (three patients are enough
    for train/val/test); when that is impossible a ValueError names the counts. A fraction of 0
    is the one way to an empty split, and the log says so.
    """
    if set(fractions) != set(SPLIT_NAMES):
        raise ValueError(f"split fractions need exactly {SPLIT_NAMES}, got {sorted(fractions)}")
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    by_patient: dict[str, list[str]] = defaultdict(list)
    for subject in sorted(subject_ids):
        by_patient[patient_of(subject, patient_pattern)].append(subject)
    patients = sorted(by_patient)
    order = np.random.default_rng(seed).permutation(len(patients))
    patients = [patients[i] for i in order]

    n = len(patients)
    n_val = int(round(fractions["val"] * n))
    n_test = int(round(fractions["test"] * n))
    # a requested split gets at least one patient whenever there are enough to go round
    if fractions["val"] > 0 and n_val == 0 and n >= 3:
        n_val = 1
    if fractions["test"] > 0 and n_test == 0 and n >= 3:
        n_test = 1
    n_train = n - n_val - n_test
    counts = {"train": n_train, "val": n_val, "test": n_test}
    # a split asked for (fraction > 0) but left empty would make a later node fail or, worse,
    # validate or score on nothing
    empty = [
        name
        for name in SPLIT_NAMES
        if counts[name] < 1 and (fractions[name] > 0 or name == "train")
    ]
    if empty:
        raise ValueError(
            f"{n} patients are too few for fractions {fractions}: they split "
            f"train/val/test = {max(n_train, 0)}/{n_val}/{n_test}, leaving {', '.join(empty)} "
            "empty; generate or provide at least 3 patients, or set the fraction of a split "
            "to 0 to run without it"
        )
    for name in SPLIT_NAMES:
        if fractions[name] == 0:
            logger.warning("split.fractions.%s is 0: the %s split is empty by choice", name, name)
    cuts = {
        "train": patients[:n_train],
        "val": patients[n_train : n_train + n_val],
        "test": patients[n_train + n_val :],
    }
    splits = {name: sorted(s for p in cuts[name] for s in by_patient[p]) for name in SPLIT_NAMES}
    assert_disjoint(splits, patient_pattern)
    return splits


def assert_disjoint(splits: dict[str, list[str]], patient_pattern: str) -> None:
    """Raise ``SplitOverlapError`` if a subject or a patient is in two splits."""
    seen: dict[str, str] = {}
    for name, subjects in splits.items():
        for subject in subjects:
            patient = patient_of(subject, patient_pattern)
            if patient in seen and seen[patient] != name:
                raise SplitOverlapError(
                    f"patient {patient} is in both '{seen[patient]}' and '{name}'"
                )
            seen[patient] = name
        if len(set(subjects)) != len(subjects):
            raise SplitOverlapError(f"split '{name}' lists a subject twice")

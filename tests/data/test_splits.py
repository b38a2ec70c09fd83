import pytest

from medgen.data.splits import SplitOverlapError, assert_disjoint, patient_of, split_by_patient

PATTERN = r"^(.+)-\d{3}$"
FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _ids(patients: int, timepoints: int = 1) -> list[str]:
    return [f"BraTS-MET-{p:05d}-{t:03d}" for p in range(patients) for t in range(timepoints)]


def test_every_subject_in_exactly_one_split():
    subjects = _ids(24)
    splits = split_by_patient(subjects, FRACTIONS, seed=1, patient_pattern=PATTERN)
    flat = [s for part in splits.values() for s in part]
    assert sorted(flat) == sorted(subjects)
    assert {k: len(v) for k, v in splits.items()} == {"train": 16, "val": 4, "test": 4}


def test_timepoints_of_a_patient_stay_together():
    splits = split_by_patient(_ids(10, timepoints=3), FRACTIONS, seed=3, patient_pattern=PATTERN)
    for name, subjects in splits.items():
        patients = {patient_of(s, PATTERN) for s in subjects}
        others = {patient_of(s, PATTERN) for n, part in splits.items() if n != name for s in part}
        assert patients.isdisjoint(others)
        assert len(subjects) == 3 * len(patients)


def test_seeded_and_order_independent():
    subjects = _ids(12)
    a = split_by_patient(subjects, FRACTIONS, seed=7, patient_pattern=PATTERN)
    b = split_by_patient(list(reversed(subjects)), FRACTIONS, seed=7, patient_pattern=PATTERN)
    c = split_by_patient(subjects, FRACTIONS, seed=8, patient_pattern=PATTERN)
    assert a == b
    assert a != c


def test_small_cohorts_still_get_val_and_test():
    splits = split_by_patient(_ids(4), FRACTIONS, seed=0, patient_pattern=PATTERN)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [2, 1, 1]


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({"train": 0.8, "val": 0.2}, "exactly"),
        ({"train": 0.8, "val": 0.3, "test": -0.1}, "non-negative"),
        ({"train": 0.5, "val": 0.2, "test": 0.2}, "sum to 1"),
    ],
)
def test_bad_fractions(fractions, message):
    with pytest.raises(ValueError, match=message):
        split_by_patient(_ids(10), fractions, seed=0, patient_pattern=PATTERN)


def test_overlap_is_detected():
    with pytest.raises(SplitOverlapError, match="patient BraTS-MET-00001"):
        assert_disjoint(
            {"train": ["BraTS-MET-00001-000"], "val": [], "test": ["BraTS-MET-00001-001"]}, PATTERN
        )


def test_ids_without_a_timepoint_are_their_own_patient():
    assert patient_of("Mets_012", PATTERN) == "Mets_012"

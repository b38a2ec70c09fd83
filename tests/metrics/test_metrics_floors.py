"""Real-vs-real floors use disjoint (optionally patient-disjoint) seeded halves and matched counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medgen.metrics import floors
from medgen.metrics.errors import MetricNotApplicable, NonFiniteInputError
from medgen.metrics.floors import (
    one_sample_with_floor,
    pairwise_indices,
    split_real_halves,
    two_sample_with_floor,
)


def test_halves_are_disjoint_equal_and_seeded():
    a, b = split_real_halves(11, seed=5)
    assert len(a) == len(b) == 5 and not set(a) & set(b)
    a2, b2 = split_real_halves(11, seed=5)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert not np.array_equal(a, split_real_halves(11, seed=6)[0])
    with pytest.raises(MetricNotApplicable, match="at least 4 real samples"):
        split_real_halves(3)


def _best_imbalance(sizes: list[int]) -> int:
    """Smallest |A| - |B| over every way of putting G // 2 whole groups into B and the rest
    into A (brute force)."""
    total = sum(sizes)
    return min(
        abs(total - 2 * sum(s for s, side in zip(sizes, sides, strict=True) if side))
        for sides in itertools.product((0, 1), repeat=len(sizes))
        if sum(sides) == len(sizes) // 2
    )


@pytest.mark.parametrize(
    "sizes",
    [[6, 6, 4], [3, 3, 2, 2, 2], [1, 1, 2], [10, 1, 1, 1], [5, 9, 2, 7, 7, 3, 1, 4], [2, 2]],
)
def test_grouped_halves_share_no_group_and_are_as_balanced_as_possible(sizes):
    """As many patients on each side as possible (G // 2 and the rest), then the slice counts
    as balanced as those allow; [10, 1, 1, 1] is 2 + 2 patients (11 vs 2 slices), not the
    1 + 3 patients (10 vs 3) that would balance slices better."""
    rng = np.random.default_rng(0)
    groups = rng.permutation(
        np.repeat(np.arange(len(sizes)) * 10 + 7, sizes)
    )  # any labels, any order
    for seed in range(5):
        a, b = split_real_halves(len(groups), seed=seed, groups=groups)
        assert not set(groups[a]) & set(groups[b])
        assert sorted(np.concatenate([a, b]).tolist()) == list(
            range(len(groups))
        )  # nothing dropped
        assert sorted([len(set(groups[a])), len(set(groups[b]))]) == [
            len(sizes) // 2,
            len(sizes) - len(sizes) // 2,
        ]
        assert len(a) - len(b) == _best_imbalance(sizes)  # A is the larger half


def test_many_groups_are_balanced_greedily_with_half_the_patients_on_each_side(monkeypatch):
    monkeypatch.setattr(floors, "_EXACT_BALANCE_BITS", 0)  # force the large-cohort path
    sizes = np.random.default_rng(1).integers(5, 60, size=41)
    groups = np.repeat(np.arange(41), sizes)
    a, b = split_real_halves(len(groups), seed=0, groups=groups)
    assert not set(groups[a]) & set(groups[b]) and len(a) + len(b) == len(groups)
    assert {len(set(groups[a])), len(set(groups[b]))} == {20, 21}
    assert 0 <= len(a) - len(b) <= sizes.max()


def test_grouped_halves_are_seeded_and_accept_tensors():
    groups = torch.arange(40) // 4  # 10 patients x 4 slices, stored patient by patient
    first = split_real_halves(40, seed=3, groups=groups)
    again = split_real_halves(40, seed=3, groups=groups.numpy())
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    splits = {tuple(split_real_halves(40, seed=s, groups=groups)[0]) for s in range(6)}
    assert len(splits) > 1  # the seed matters
    assert len(first[0]) == len(first[1]) == 20


def test_grouped_halves_need_two_groups_and_one_label_per_sample():
    with pytest.raises(MetricNotApplicable, match="at least 2 groups.*got 1"):
        split_real_halves(6, groups=[4] * 6)
    with pytest.raises(ValueError, match="5 labels for 6"):
        split_real_halves(6, groups=[0, 0, 1, 1, 2])


def test_two_sample_floor_with_groups_keeps_patients_apart():
    real = np.arange(100, 124)
    groups = np.arange(24) // 4  # 6 patients
    calls = []

    def metric(sample, reference):
        calls.append((sample.tolist(), reference.tolist()))
        return 0.0

    result = two_sample_with_floor(
        metric, real, np.arange(50), name="m", backbone="b", seed=2, groups=groups
    )
    (_, reference), (real_sample, reference_again) = calls
    patient = dict(zip(real.tolist(), groups.tolist(), strict=True))
    assert reference == reference_again
    assert not {patient[v] for v in real_sample} & {patient[v] for v in reference}
    assert result.n_real == result.n_generated == len(real_sample) == 12
    assert result.details["real_split"] == {
        "by": "group (patient-disjoint halves)",
        "groups_total": 6,
        "groups_a": 3,
        "groups_b": 3,
        "min_groups_per_half": 3,
    }
    ungrouped = two_sample_with_floor(metric, real, np.arange(50), name="m", backbone="b")
    assert ungrouped.details["real_split"]["by"].startswith("sample")


def test_two_sample_floor_compares_disjoint_real_halves_against_the_same_reference():
    real = np.arange(100, 120)  # values identify samples
    generated = np.arange(0, 7)
    calls = []

    def metric(sample, reference):
        calls.append((set(sample.tolist()), set(reference.tolist())))
        return float(np.mean(sample) - np.mean(reference))

    result = two_sample_with_floor(metric, real, generated, name="m", backbone="b", seed=1)
    (gen_sample, ref_1), (real_sample, ref_2) = calls
    assert ref_1 == ref_2 and not real_sample & ref_1
    assert gen_sample <= set(generated.tolist()) and real_sample <= set(real.tolist())
    assert len(gen_sample) == len(real_sample) == len(ref_1) == 7
    assert result.n_real == result.n_generated == 7 and result.details["n_real_total"] == 20
    assert result.value < 0 and result.floor == pytest.approx(
        np.mean(list(real_sample)) - np.mean(list(ref_1))
    )


def test_one_sample_floor_measures_real_data_at_the_same_n():
    real, generated = np.arange(50), np.arange(1000, 1030)
    result = one_sample_with_floor(
        lambda s: (float(len(s)), {"seen": sorted(s.tolist())}),
        real,
        generated,
        name="diversity",
        backbone="b",
        seed=0,
    )
    assert result.value == result.floor == 25.0
    assert set(result.details["floor_details"]["seen"]) <= set(real.tolist())


def test_metric_result_serialises_non_finite_values():
    import json

    from medgen.metrics.results import MetricResult

    result = MetricResult(
        name="psnr",
        value=float("inf"),
        backbone="none",
        n_real=1,
        n_generated=1,
        details={"per": [1.0, float("nan")]},
    )
    assert json.loads(json.dumps(result.to_dict()))["value"] == "inf"
    assert "floor n/a" in str(result)


def test_too_few_patients_per_half_give_no_floor_and_say_why():
    real = np.arange(100, 124)
    groups = np.arange(24) // 4  # 6 patients: halves of 3
    calls = []

    def metric(sample, reference):
        calls.append((sample.tolist(), reference.tolist()))
        return float(len(sample))

    result = two_sample_with_floor(
        metric, real, np.arange(50), name="m", backbone="b", groups=groups, min_groups_per_half=4
    )
    assert result.floor is None and len(calls) == 1  # the floor was never computed
    (sample, reference) = calls[0]
    # the value is measured against a seeded n = min(24, 50) of every real sample
    assert sorted(reference) == real.tolist() and len(sample) == 24
    assert result.value == 24.0 and result.n_real == result.n_generated == 24
    assert result.details["no_floor"] == (
        "the real reference holds 6 patients: its patient-disjoint halves have 3 and 3, "
        "fewer than the 4 per half a floor needs"
    )
    assert result.details["real_split"]["min_groups_per_half"] == 4
    assert "no floor" in result.details["protocol"]
    enough = two_sample_with_floor(
        metric, real, np.arange(50), name="m", backbone="b", groups=groups, min_groups_per_half=3
    )
    assert enough.floor is not None and "no_floor" not in enough.details


@pytest.mark.parametrize(
    "n_real,groups,reason",
    [(3, None, "at least 4 real samples"), (8, [0] * 8, "at least 2 groups")],
)
def test_reference_that_cannot_be_split_gives_the_value_without_a_floor(n_real, groups, reason):
    result = two_sample_with_floor(
        lambda s, r: float(np.mean(s) - np.mean(r)),
        np.zeros(n_real),
        np.ones(5),
        name="m",
        backbone="b",
        groups=groups,
    )
    assert result.floor is None and reason in result.details["no_floor"]
    assert result.value == 1.0 and result.n_generated == min(n_real, 5)


def test_non_finite_samples_are_refused_before_the_metric_runs():
    called = []
    generated = np.ones((6, 2))
    generated[2, 1] = np.nan
    generated[4, 0] = np.inf
    with pytest.raises(NonFiniteInputError, match="generated samples hold 1 NaN and 1 Inf.*2 of 6"):
        two_sample_with_floor(
            lambda s, r: called.append(1) or 0.0,
            np.zeros((8, 2)),
            generated,
            name="m",
            backbone="b",
        )
    with pytest.raises(NonFiniteInputError, match="real samples"):
        one_sample_with_floor(
            lambda s: 0.0,
            torch.full((8, 1), float("nan")),
            torch.zeros(4, 1),
            name="m",
            backbone="b",
        )
    assert not called


def test_a_single_image_has_no_pairs():
    with pytest.raises(MetricNotApplicable, match="at least 2 images, got 1"):
        pairwise_indices(1, None, seed=0)


def test_one_sample_metric_without_a_floor_uses_every_generated_sample():
    result = one_sample_with_floor(
        lambda s: float(len(s)), np.zeros(3), np.arange(10), name="d", backbone="b"
    )
    assert result.floor is None and "at least 4 real samples" in result.details["no_floor"]
    assert result.value == 10.0 and result.n_generated == 10 and result.n_real == 0

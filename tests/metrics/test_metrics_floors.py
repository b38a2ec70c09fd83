"""Real-vs-real floors use disjoint seeded halves and matched counts."""

from __future__ import annotations

import numpy as np
import pytest

from medgen.metrics.floors import one_sample_with_floor, split_real_halves, two_sample_with_floor


def test_halves_are_disjoint_equal_and_seeded():
    a, b = split_real_halves(11, seed=5)
    assert len(a) == len(b) == 5 and not set(a) & set(b)
    a2, b2 = split_real_halves(11, seed=5)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert not np.array_equal(a, split_real_halves(11, seed=6)[0])
    with pytest.raises(ValueError):
        split_real_halves(3)


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

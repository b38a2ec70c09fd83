"""The oracle and the simulated ratings: known truths behave as they claim; bad rows are named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medgen.datasets import TensorBundle
from medgen.text2image.rated_pool import (
    RATING_COLUMNS,
    BadRating,
    RatingsParams,
    check_ratings,
    simulate_rated_pool,
)
from medgen.text2image.true_quality import (
    DEGRADATIONS,
    degrade,
    fit_oracle_reference,
    oracle_quality,
)
from tests.torch_threads import single_torch_thread  # noqa: F401


def phantoms(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Head-like slices: a bright ellipse with darker blobs inside, air around, mild noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        a, b = 0.7 + 0.1 * torch.rand((), generator=g), 0.8 + 0.1 * torch.rand((), generator=g)
        head = (xx / a) ** 2 + (yy / b) ** 2 <= 1
        image = torch.where(head, torch.tensor(0.6), torch.tensor(-1.0))
        for _ in range(3):
            cx, cy = (torch.rand(2, generator=g) - 0.5) * 0.8
            blob = (xx - cx) ** 2 + (yy - cy) ** 2 <= 0.03
            image = torch.where(blob & head, torch.tensor(0.1), image)
        image = image + 0.02 * torch.randn(image.shape, generator=g) * head
        out.append(image.clamp(-1, 1))
    return torch.stack(out)[:, None]


@pytest.fixture(scope="module")
def reference():
    return fit_oracle_reference(phantoms(60), size=32)


def test_real_images_score_high_and_noise_or_blank_images_low(reference):
    assert oracle_quality(phantoms(20, seed=5), reference).mean() > 0.9
    noise = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    assert oracle_quality(noise, reference).max() < 0.1
    assert oracle_quality(torch.zeros(2, 1, 32, 32), reference).max() < 0.1


@pytest.mark.parametrize("kind", sorted(DEGRADATIONS))
def test_quality_falls_with_the_severity_of_every_degradation(reference, kind):
    images = phantoms(12, seed=9)
    means = [
        float(oracle_quality(degrade(images, kind, torch.full((12,), s), seed=3), reference).mean())
        for s in (0.0, 0.5, 1.0)
    ]
    assert means[0] > 0.85
    assert means[0] >= means[1] - 0.02 >= means[2] - 0.04, means
    assert means[2] < means[0] - 0.2, means


def test_degradation_inputs_are_checked():
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(phantoms(1), "rust", torch.zeros(1), 0)
    with pytest.raises(ValueError, match="severity must be in"):
        degrade(phantoms(1), "blur", torch.full((1,), 1.5), 0)


RATINGS = {
    "real_per_split": 4,
    "degraded_per_split": 4,
    "degradations": ["noise", "blur"],
    "raters_per_image": 3,
    "expert_levels": [1, 3],
    "rater_noise": {1: 0.3, 3: 0.0},
    "thresholds": [0.4, 0.75],
    "on_bad_row": "skip",
    "seed": 0,
}


def captioned(n: int = 12) -> TensorBundle:
    splits = ["train"] * (n // 2) + ["test"] * (n - n // 2)
    meta = {
        "texts": [f"Brain MRI, FLAIR: case {i}" for i in range(n)],
        "modalities": ["flair"] * n,
        "paths": [f"{i}.png" for i in range(n)],
        "extra_columns": {"split": splits, "subject": [f"S{i % 4}" for i in range(n)]},
    }
    return TensorBundle({"images": phantoms(n, size=64)}, meta)


def test_simulated_ratings_follow_the_oracle_for_noiseless_seniors(reference):
    bundle = captioned()
    generated = torch.zeros(2, 1, 32, 32)  # a blank 'generator': lowest quality
    files, table = simulate_rated_pool(
        bundle, generated, [0, 7], reference, RatingsParams.from_params(RATINGS)
    )
    assert list(table.columns[:5]) == list(RATING_COLUMNS)
    assert len(files) == table["image_path"].nunique() == 2 * 8 + 2
    seniors = table[table["expert_level"] == 3]
    expected = (
        1
        + (seniors["oracle_quality"] >= 0.4).astype(int)
        + (seniors["oracle_quality"] >= 0.75).astype(int)
    )
    assert (seniors["rating"] == expected).all()  # SD 0: the rating is the quantised oracle
    generated_rows = table[table["source"] == "undertrained_generator"]
    assert (
        set(generated_rows["split"]) == {"train", "test"} and (generated_rows["rating"] <= 2).all()
    )
    assert set(table["degradation"][table["source"] == "degraded"]) == {"noise", "blur"}


def ratings_bundle(ratings, levels, prompts) -> TensorBundle:
    n = len(ratings)
    meta = {
        "texts": prompts,
        "paths": [f"rated/{i}.png" for i in range(n)],
        "extra_columns": {"rating": ratings, "expert_level": levels},
    }
    return TensorBundle({"images": torch.zeros(n, 1, 8, 8)}, meta)


def test_bad_rating_rows_are_named_and_skipped_or_fatal():
    bundle = ratings_bundle(
        ["3", "0", "2.5", "x", "2", "1", "2"],
        ["1", "1", "2", "3", "7", "2", "abc"],
        ["a", "b", "c", "d", "e", "  ", "g"],
    )
    kept, rejected = check_ratings(bundle, [1, 2, 3], "skip")
    assert kept == [0]
    reasons = [r["reason"] for r in rejected]
    assert reasons == [
        "rating '0' is outside 1-3 (integers 1, 2 or 3)",
        "rating '2.5' is outside 1-3 (integers 1, 2 or 3)",
        "rating 'x' is not a number",
        "expert_level '7' is not one of [1, 2, 3]",
        "empty prompt",
        "expert_level 'abc' is not a number",
    ]
    assert rejected[0]["path"] == "rated/1.png" and rejected[0]["row"] == 2
    with pytest.raises(BadRating, match=r"ratings row 2, image 'rated/1.png': rating '0'"):
        check_ratings(bundle, [1, 2, 3], "fail")
    no_levels = TensorBundle(
        {"images": torch.zeros(1, 1, 8, 8)}, {"extra_columns": {"rating": [1]}}
    )
    with pytest.raises(BadRating, match=r"missing column\(s\) \['expert_level'\]"):
        check_ratings(no_levels, [1], "skip")


def test_ratings_parameters_are_checked():
    with pytest.raises(ValueError, match="no SD for expert levels"):
        RatingsParams.from_params({**RATINGS, "rater_noise": {1: 0.1}})
    with pytest.raises(ValueError, match="thresholds"):
        RatingsParams.from_params({**RATINGS, "thresholds": [0.8, 0.3]})
    with pytest.raises(ValueError, match="unknown"):
        RatingsParams.from_params({**RATINGS, "degradations": ["noise", "rust"]})


def test_table_round_trips_through_csv(tmp_path, reference):
    _, table = simulate_rated_pool(
        captioned(), torch.zeros(0, 1, 32, 32), [], reference, RatingsParams.from_params(RATINGS)
    )
    table.to_csv(tmp_path / "r.csv", index=False)
    again = pd.read_csv(tmp_path / "r.csv", keep_default_na=False)
    assert np.array_equal(again["rating"].to_numpy(), table["rating"].to_numpy())

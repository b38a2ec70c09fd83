"""LPIPS with an explicitly named random-init trunk (no ImageNet weights offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.metrics.errors import MissingWeightsError
from medgen.metrics.floors import pairwise_indices
from medgen.metrics.lpips_metric import (
    LPIPSScorer,
    lpips_diversity_with_floor,
    lpips_linear_weights_file,
)


@pytest.fixture(scope="module")
def scorer() -> LPIPSScorer:
    return LPIPSScorer(pretrained_backbone=False, seed=0)


def test_random_init_is_named_and_linear_weights_ship_with_the_package(scorer):
    assert scorer.name == "lpips-alex-random-init (not comparable to published LPIPS)"
    assert lpips_linear_weights_file("alex").is_file()


def test_identical_images_have_zero_distance_and_distance_is_symmetric(scorer, slices):
    images, _ = slices
    a, b = images[:8], images[8:16]
    assert torch.all(scorer.distance(a, a) == 0)
    torch.testing.assert_close(scorer.distance(a, b), scorer.distance(b, a), rtol=1e-5, atol=1e-7)
    assert torch.all(scorer.distance(a, b) > 0)
    assert scorer.quality(a, a) == 0.0


def test_random_trunk_is_deterministic_given_the_seed(scorer, slices):
    images, _ = slices
    again = LPIPSScorer(pretrained_backbone=False, seed=0)
    torch.testing.assert_close(
        again.distance(images[:4], images[4:8]), scorer.distance(images[:4], images[4:8])
    )


def test_diversity_of_identical_images_is_zero_and_positive_otherwise(scorer, slices):
    images, _ = slices
    assert scorer.diversity(images[:1].repeat(6, 1, 1, 1)) == 0.0
    assert scorer.diversity(images[:6]) > 0.0


def test_diversity_uses_all_pairs_when_small_and_a_seeded_subset_when_large(scorer, slices):
    images, _ = slices
    i, j = pairwise_indices(6, max_pairs=None, seed=0)
    expected = float(scorer.distance(images[:6][i], images[:6][j]).mean())
    assert scorer.diversity(images[:6], max_pairs=None) == pytest.approx(expected, rel=1e-6)
    i, j = pairwise_indices(50, max_pairs=30, seed=4)
    assert len(i) == 30 and np.all(i < j) and len(set(zip(i, j, strict=True))) == 30
    i2, j2 = pairwise_indices(50, max_pairs=30, seed=4)
    assert np.array_equal(i, i2) and np.array_equal(j, j2)


def test_two_channel_images_average_per_channel_distances(scorer, slices):
    images, _ = slices
    a = torch.cat([images[:4], images[4:8]], dim=1)
    b = torch.cat([images[8:12], images[12:16]], dim=1)
    expected = (scorer.distance(a[:, :1], b[:, :1]) + scorer.distance(a[:, 1:], b[:, 1:])) / 2
    torch.testing.assert_close(scorer.distance(a, b), expected)


def test_missing_alexnet_weights_name_the_torch_hub_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        LPIPSScorer(pretrained_backbone=True)
    assert err.value.file == "alexnet-owt-7be5be79.pth"
    assert err.value.directory == str(tmp_path / "hub" / "checkpoints")
    assert "pretrained_backbone: false" in str(err.value)


def test_diversity_with_floor_reports_real_diversity_at_the_same_n(scorer, slices):
    images, _ = slices
    collapsed = images[:1].repeat(20, 1, 1, 1)
    result = lpips_diversity_with_floor(scorer, images[:40], collapsed, max_pairs=50)
    assert result.value == 0.0 and result.floor > 0
    assert result.n_real == result.n_generated == 20 and result.backbone == scorer.name

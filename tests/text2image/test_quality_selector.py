"""The Selector: weighted BCE, learning from ratings, the shuffled-label control, calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.datasets import TensorBundle
from medgen.text2image.quality_selector import (
    QualitySelector,
    SelectorParams,
    expected_calibration_error,
    load_pretrained_vit,
    score_images,
    train_and_evaluate_selector,
    weighted_bce,
)
from tests.torch_threads import single_torch_thread  # noqa: F401

PARAMS = {
    "hidden_size": 32,
    "layers": 1,
    "heads": 2,
    "intermediate_size": 64,
    "patch_size": 4,
    "resolution": 16,
    "pretrained": None,
    "steps": 60,
    "batch_size": 32,
    "lr": 3.0e-3,
    "seed": 0,
    "good_rating": 2,
    "oracle_good": 0.5,
    "calibration_bins": 5,
    "shuffled_controls": 3,
}


def rated_bundle(n_per_split: int = 96, seed: int = 0) -> TensorBundle:
    """Rated 16² images whose quality is visible: the noise SD, uniform over [0.02, 0.8], sets
    the rating (3 below 0.25, 2 below 0.5, else 1); expert levels independent of it. Every image
    is its own noise level, so a label permutation leaves no cluster a model could memorise."""
    g = torch.Generator().manual_seed(seed)
    images, ratings, levels, splits, oracle, paths = [], [], [], [], [], []
    for split in ("train", "test"):
        for i in range(n_per_split):
            sd = 0.02 + 0.78 * float(torch.rand((), generator=g))
            rating = 3 if sd < 0.25 else 2 if sd < 0.5 else 1
            base = torch.full((1, 16, 16), -0.2)
            images.append((base + sd * torch.randn(base.shape, generator=g)).clamp(-1, 1))
            ratings.append(str(rating))
            levels.append(str(1 + (7 * i) % 3))
            splits.append(split)
            oracle.append(str(1.0 - sd))
            paths.append(f"rated/{split}/{i}.png")
    meta = {
        "paths": paths,
        "texts": ["Brain MRI, FLAIR: x"] * len(paths),
        "extra_columns": {
            "rating": ratings,
            "expert_level": levels,
            "split": splits,
            "oracle_quality": oracle,
        },  # fmt: skip
    }
    return TensorBundle({"images": torch.stack(images)}, meta)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("selector")
    return train_and_evaluate_selector(
        rated_bundle(), SelectorParams.from_params(PARAMS), folder / "selector"
    )


def test_selector_learns_the_ratings_and_rating1_scores_fall(trained):
    selector, report, plot = trained
    head = report["headline"]
    assert head["vs_ratings"] > 0.9 and head["vs_oracle"] > 0.9
    assert head["rating1_mean_score_after"] < 0.35  # rating-1 images score low after training
    assert plot.size[0] > 100
    scores = score_images(selector, rated_bundle(8, seed=3)["images"])
    assert scores.shape == (16,) and ((scores >= 0) & (scores <= 1)).all()


def test_a_selector_trained_on_shuffled_labels_stays_at_chance(trained):
    """Negative control: the same recipe on permuted labels ranks held-out images no better
    than chance: the mean of three controls within 4 SD of the null AUROC (96 held-out rows:
    SD ≈ 0.06), and each control far below the real Selector."""
    _, report, _ = trained
    controls = report["shuffled_label_controls"]
    sd = report["shuffled_label_control"]["heldout"]["vs_ratings"]["chance_sd"]
    assert controls["n"] == 3 and len(controls["vs_ratings_aurocs"]) == 3
    assert abs(controls["mean"] - 0.5) < 4 * sd, controls
    assert report["headline"]["shuffled_control_vs_ratings"] == controls["mean"]
    assert max(controls["vs_ratings_aurocs"]) < report["headline"]["vs_ratings"] - 0.2


def test_expert_level_is_a_sample_weight():
    logits = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 0.0])
    weighted = weighted_bce(logits, labels, torch.tensor([1.0, 3.0, 0.0]))
    only_two = weighted_bce(logits[:2], labels[:2], torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(weighted, only_two)  # a weight-0 row changes nothing
    weighted.backward()
    assert logits.grad[2] == 0.0
    expected = (
        torch.nn.functional.binary_cross_entropy_with_logits(logits[0], labels[0])
        + 3 * torch.nn.functional.binary_cross_entropy_with_logits(logits[1], labels[1])
    ) / 4
    torch.testing.assert_close(weighted.detach(), expected.detach())


def test_calibration_error_by_hand():
    scores = np.array([0.1, 0.15, 0.9, 0.95, 0.55])
    labels = np.array([0, 1, 1, 1, 0], dtype=bool)
    ece, table = expected_calibration_error(scores, labels, bins=2)
    # bin [0, 0.5): scores 0.1, 0.15 (mean 0.125), labels 0.5; bin [0.5, 1]: 0.8 vs 2/3
    expected = 2 / 5 * abs(0.5 - 0.125) + 3 / 5 * abs(2 / 3 - 0.8)
    assert ece == pytest.approx(expected)
    assert [row["n"] for row in table] == [2, 3]


def test_missing_pretrained_weights_name_the_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no ViT weights for '.*nowhere'"):
        load_pretrained_vit(str(tmp_path / "nowhere"))


def test_a_saved_vit_folder_loads_as_the_pretrained_backbone(tmp_path):
    model = QualitySelector({**PARAMS})
    model.vit.save_pretrained(tmp_path / "vit")
    loaded = QualitySelector({**PARAMS, "pretrained": str(tmp_path / "vit")})
    for key, value in model.vit.state_dict().items():
        assert torch.equal(value, loaded.vit.state_dict()[key]), key


def test_parameters_and_inputs_are_checked():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SelectorParams.from_params({**PARAMS, "resolution": 18})
    selector = QualitySelector(PARAMS)
    with pytest.raises(ValueError, match="non-finite"):
        score_images(selector, torch.full((1, 1, 16, 16), float("nan")))

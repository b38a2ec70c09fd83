"""The alignment scorer (the Policy): loss, AUROC, training on a synthetic set whose attributes
are visible, the shuffled-caption negative control, scoring errors and a save/load round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu
from torch import nn

from medgen.datasets import TensorBundle, TensorDataset
from medgen.metrics.auroc import auroc, mann_whitney_auroc
from medgen.text2image.alignment import (
    AlignmentParams,
    alignment_scores,
    evaluate_alignment,
    evaluate_scores,
    load_alignment_scorer,
    shuffle_captions,
    sigmoid_pair_loss,
    train_alignment_scorer,
)
from medgen.text2image.slice_captions import slice_caption
from medgen.text2image.tokenizer import tokenizer_to_json, train_tokenizer
from tests.torch_threads import single_torch_thread  # noqa: F401

S = 32
PARAMS = {
    "embed_dim": 32,
    "image_width": 8,
    "text_hidden_size": 32,
    "text_layers": 1,
    "text_heads": 2,
    "text_intermediate_size": 64,
    "resolution": 32,
    "steps": 120,
    "batch_size": 32,
    "lr": 3e-3,
    "seed": 0,
    "swap_kinds": ["modality", "side", "lesion_present", "count"],
    "swap_weight": 0.5,
    "mirror": True,
    "lesion_repeat": 1,
}
# The kinds whose swapped captions read like real ones here (both modalities, both sides and
# lesion presence are balanced), so a scorer that ignores the image cannot tell them apart
# from matched captions. A count swap can write "3 metastases", which no caption here states:
# a scorer trained on shuffled captions already reaches ~0.65 on count from that alone, and
# 120 steps do not teach this tiny one to count the discs beyond it (~0.7).
BALANCED_KINDS = ("modality", "side", "lesion_present")


def captioned_slices(n: int, seed: int, split: str) -> TensorBundle:
    """Dark (T1 post-gadolinium) or bright (FLAIR) ellipses; half carry one or two bright
    discs on the subject's left (image left) or right; captions by `slice_caption`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:S, :S]
    brain = ((yy - 15.5) / 13) ** 2 + ((xx - 15.5) / 11) ** 2 <= 1
    images, texts, modalities = np.empty((n, 1, S, S), np.float32), [], []
    for i in range(n):
        modality = ("t1_gd", "flair")[i % 2]
        image = np.where(brain, -0.5 if modality == "t1_gd" else 0.3, -1.0)
        description = {"n_metastases": 0, "side": None, "lobe": None, "largest_mm": None}
        if rng.random() < 0.5:
            side, count = str(rng.choice(["left", "right"])), int(rng.integers(1, 3))
            cx = rng.integers(7, 11) if side == "left" else rng.integers(21, 25)
            for cy in rng.choice([8, 15, 22], size=count, replace=False):
                image = np.where((yy - cy) ** 2 + (xx - cx) ** 2 <= 5, 1.0, image)
            description = {
                "n_metastases": count,
                "side": side,
                "lobe": "frontal",
                "largest_mm": float(rng.integers(8, 20)),
            }
        images[i, 0] = image + rng.normal(0, 0.05, (S, S))
        texts.append(slice_caption(modality, description))
        modalities.append(modality)
    subjects = [f"{split}-{i // 10:03d}" for i in range(n)]
    return TensorBundle(
        {"images": torch.from_numpy(images).clamp(-1, 1)},
        {
            "texts": texts,
            "modalities": modalities,
            "extra_columns": {"split": [split] * n, "subject": subjects},
        },
    )


def joined(*bundles: TensorBundle) -> TensorBundle:
    meta = {"texts": [], "modalities": [], "extra_columns": {"split": [], "subject": []}}
    for bundle in bundles:
        meta["texts"] += bundle.metadata["texts"]
        meta["modalities"] += bundle.metadata["modalities"]
        for key in ("split", "subject"):
            meta["extra_columns"][key] += bundle.metadata["extra_columns"][key]
    return TensorBundle({"images": torch.cat([b["images"] for b in bundles])}, meta)


@pytest.fixture(scope="module")
def data():
    bundle = joined(captioned_slices(240, 0, "train"), captioned_slices(160, 1, "test"))
    train_texts = bundle.metadata["texts"][:240]
    tokenizer = tokenizer_to_json(
        train_tokenizer(train_texts, vocab_size=200, min_frequency=1, max_length=24)
    )
    return bundle, tokenizer


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    bundle, tokenizer = data
    checkpoints = tmp_path_factory.mktemp("alignment") / "checkpoints"
    scorer, report = train_alignment_scorer(bundle, tokenizer, PARAMS, checkpoints)
    return scorer, report, checkpoints


def test_matched_captions_score_above_swapped_and_shuffled_ones(data, trained):
    bundle, tokenizer = data
    scorer, report, _ = trained
    assert report["n_train"] == 240 and report["n_train_items"] == 480  # mirrored copies
    assert report["swaps_per_kind"]["modality"] == 480
    assert report["loss_last"] < report["loss_first"]
    result = evaluate_alignment(scorer, tokenizer, bundle, splits=("test",))
    assert result["n_images"] == 160 and result["held_out_patients"] == "checked"
    for kind in BALANCED_KINDS:  # count: see BALANCED_KINDS; the control measures it
        entry = result["swapped"][kind]
        assert entry["auroc"] > 0.85, (kind, entry)
        assert entry["balanced_auroc"] > 0.85, (kind, entry)
        assert entry["paired_win_rate"] > 0.85, (kind, entry)
    assert result["swapped_overall"]["auroc"] > 0.9
    assert result["shuffled"]["auroc"] > 0.9
    n = result["swapped"]["side"]["n_matched"]
    assert result["swapped"]["side"]["chance_sd"] == pytest.approx(
        math.sqrt((2 * n + 1) / (12 * n * n))
    )


def test_scores_are_probabilities_and_survive_a_save_load_round_trip(data, trained, tmp_path):
    bundle, tokenizer = data
    scorer = trained[0]
    images, prompts = bundle["images"][240:300], bundle.metadata["texts"][240:300]
    scores = alignment_scores(scorer, tokenizer, images, prompts)
    assert scores.shape == (60,) and scores.dtype == torch.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    dataset = TensorDataset(filepath=str(tmp_path / "scorer.safetensors"))
    dataset.save(scorer)
    again = alignment_scores(dataset.load(), tokenizer, images, prompts)
    assert torch.equal(scores, again)
    # any square size: the scorer resizes to its resolution
    upsampled = torch.nn.functional.interpolate(images, size=64, mode="nearest")
    assert alignment_scores(scorer, tokenizer, upsampled, prompts).shape == (60,)


def test_a_finished_job_is_read_back(data, trained):
    bundle, tokenizer = data
    scorer, _, checkpoints = trained
    again, report = train_alignment_scorer(bundle, tokenizer, PARAMS, checkpoints)
    assert report["skipped"] is True
    assert all(torch.equal(scorer[k], again[k]) for k in scorer.tensors)


def test_a_scorer_trained_on_shuffled_captions_stays_at_chance(data):
    """The negative control. Trained on captions permuted among the training images, the
    scorer can learn caption statistics but nothing about the image, so on held-out pairs its
    AUROC is a draw from the null distribution, whose SD (no ties) is
    sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg)): 0.032 for the 160 shuffled pairs, 0.042
    for the 93 side swaps (the balanced AUROC averages two halves: ~0.06). A tolerance of
    4 SD (0.13 / 0.17) fails by chance with probability < 1e-4, and lies far below the
    > 0.35 lift the real scorer shows above."""
    bundle, tokenizer = data
    scorer, _ = train_alignment_scorer(shuffle_captions(bundle, seed=3), tokenizer, PARAMS, None)
    result = evaluate_alignment(scorer, tokenizer, bundle, splits=("test",))
    for entry in [result["shuffled"], *(result["swapped"][k] for k in BALANCED_KINDS)]:
        assert abs(entry["auroc"] - 0.5) < 4 * entry["chance_sd"], entry
    for kind in BALANCED_KINDS:
        entry = result["swapped"][kind]
        assert abs(entry["balanced_auroc"] - 0.5) < 4 * entry["balanced_chance_sd"], entry


def test_balanced_auroc_sees_through_a_caption_only_scorer():
    """A scorer that ignores the image and prefers "without visible metastases" wins every
    absent -> present swap and loses every present -> absent one: the pooled AUROC is the
    share of lesion-free slices, the balanced one exactly 0.5."""
    captions = captioned_slices(40, 5, "test").metadata["texts"]
    absent = np.mean([c.endswith("without visible metastases") for c in captions])

    def caption_only(texts, rows):
        return np.array([float(t.endswith("without visible metastases")) for t in texts])

    result = evaluate_scores(captions, caption_only, modalities=["t1_gd", "flair"], seed=0)
    entry = result["swapped"]["lesion_present"]
    assert entry["auroc"] == pytest.approx(absent)
    assert entry["by_source"]["absent"]["auroc"] == 1.0
    assert entry["by_source"]["present"]["auroc"] == 0.0
    assert entry["balanced_auroc"] == 0.5
    assert result["swapped"]["modality"]["auroc"] == 0.5  # ties everywhere


def test_shuffle_captions_permutes_within_each_split(data):
    bundle, _ = data
    shuffled = shuffle_captions(bundle, seed=0)
    texts, new = bundle.metadata["texts"], shuffled.metadata["texts"]
    assert torch.equal(shuffled["images"], bundle["images"])
    assert shuffled.metadata["extra_columns"] == bundle.metadata["extra_columns"]
    assert sorted(new[:240]) == sorted(texts[:240]) and sorted(new[240:]) == sorted(texts[240:])
    assert new != texts


def test_bad_inputs_raise_clear_errors(data, trained):
    bundle, tokenizer = data
    scorer = trained[0]
    images, prompts = bundle["images"][:4], bundle.metadata["texts"][:4]
    with pytest.raises(ValueError, match="4 images but 3 prompts"):
        alignment_scores(scorer, tokenizer, images, prompts[:3])
    with pytest.raises(ValueError, match=r"prompts \[1\] are empty"):
        alignment_scores(scorer, tokenizer, images, [prompts[0], " ", *prompts[2:]])
    with pytest.raises(TypeError, match="list of strings"):
        alignment_scores(scorer, tokenizer, images[:1], prompts[0])
    with pytest.raises(ValueError, match="NaN or Inf"):
        alignment_scores(scorer, tokenizer, images * float("nan"), prompts)
    with pytest.raises(ValueError, match=r"\[N, 1, S, S\]"):
        alignment_scores(scorer, tokenizer, images[:, 0], prompts)
    other = tokenizer_to_json(
        train_tokenizer(["a b c"], vocab_size=50, min_frequency=1, max_length=24)
    )
    with pytest.raises(ValueError, match="not the one the scorer was trained with"):
        alignment_scores(scorer, other, images, prompts)
    with pytest.raises(ValueError, match="not an alignment scorer bundle"):
        load_alignment_scorer(TensorBundle(dict(scorer.tensors), {"kind": "selector"}))
    with pytest.raises(ValueError, match="were trained on"):
        evaluate_alignment(scorer, tokenizer, bundle, splits=("train", "test"))


def test_params_refuse_unknown_missing_and_bad_values():
    with pytest.raises(ValueError, match="did you mean 'swap_weight'"):
        AlignmentParams.from_params({**PARAMS, "swap_weigth": 0.5})
    with pytest.raises(ValueError, match="'mirror'"):
        AlignmentParams.from_params({k: v for k, v in PARAMS.items() if k != "mirror"})
    with pytest.raises(ValueError, match="swap_kinds"):
        AlignmentParams.from_params({**PARAMS, "swap_kinds": ["colour"]})
    with pytest.raises(ValueError, match="swap_weight"):
        AlignmentParams.from_params({**PARAMS, "swap_weight": 1.5})
    with pytest.raises(ValueError, match="multiple of 8"):
        AlignmentParams.from_params({**PARAMS, "resolution": 36})
    assert AlignmentParams.from_params(PARAMS).swap_kinds == tuple(PARAMS["swap_kinds"])


class _TableScorer(nn.Module):
    """Logit of image i with text t: image value * (sum of the text's ids) / 100."""

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return images.reshape(len(images), -1)[:, :1] * tokens.sum(1)[None].float() / 100


def test_sigmoid_pair_loss_matches_a_pair_by_pair_computation():
    tokens = torch.tensor([[2, 5, 3], [2, 6, 3], [2, 5, 3]])  # rows 0 and 2: the same caption
    swaps = torch.tensor([[[2, 7, 3], [2, 8, 3]], [[2, 9, 3], [0, 0, 0]], [[2, 6, 3], [2, 4, 3]]])
    valid = torch.tensor([[True, True], [True, False], [True, True]])
    images = torch.tensor([0.5, -1.0, 2.0]).reshape(3, 1, 1, 1)
    batch = {"image": images, "tokens": tokens, "swap_tokens": swaps, "swap_valid": valid}
    w = 0.3
    loss = sigmoid_pair_loss(_TableScorer(), batch, swap_weight=w)

    def logit(i, ids):
        return float(images[i]) * sum(ids) / 100

    def bce(z, y):
        return math.log1p(math.exp(-z)) if y else math.log1p(math.exp(z))

    rows = tokens.tolist()
    pos = [bce(logit(i, rows[j]), 1) for i in range(3) for j in range(3) if rows[i] == rows[j]]
    shuf = [bce(logit(i, rows[j]), 0) for i in range(3) for j in range(3) if rows[i] != rows[j]]
    by_kind = [
        [bce(logit(i, swaps[i, k].tolist()), 0) for i in range(3) if valid[i, k]] for k in range(2)
    ]
    swapped = np.mean([np.mean(v) for v in by_kind])
    expected = (np.mean(pos) + (1 - w) * np.mean(shuf) + w * swapped) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_auroc_agrees_with_mann_whitney_and_sklearn():
    rng = np.random.default_rng(0)
    positive = np.round(rng.normal(0.6, 0.2, 37), 1)  # rounded: ties count half
    negative = np.round(rng.normal(0.4, 0.2, 23), 1)
    u = mannwhitneyu(positive, negative, alternative="two-sided").statistic
    assert mann_whitney_auroc(positive, negative) == pytest.approx(u / (37 * 23))
    value, method = auroc(positive, negative)
    assert value == pytest.approx(u / (37 * 23)) and method.startswith("sklearn")
    assert mann_whitney_auroc([1.0, 2.0], [0.0]) == 1.0
    assert mann_whitney_auroc([1.0], [1.0, 2.0]) == 0.25
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        auroc([], [0.5])

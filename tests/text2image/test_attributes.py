import itertools

import numpy as np
import pytest
import torch

from medgen.datasets import TensorBundle, TensorDataset
from medgen.text2image.attributes import (
    AttributeClassifierParams,
    _score,
    attribute_agreement,
    attributes_from_prompt,
    predict_attributes,
    real_attributes,
    train_attribute_classifiers,
)
from medgen.text2image.slice_captions import SHORT_MODALITY_NAMES, slice_caption

S = 32
PARAMS = {"width": 8, "steps": 150, "batch_size": 32, "lr": 3e-3, "seed": 0}
NONE = {"n_metastases": 0, "side": None, "lobe": None, "largest_mm": None}
DESCRIPTIONS = [
    NONE,
    {"n_metastases": 1, "side": "left", "lobe": None, "largest_mm": 7.4},
    {"n_metastases": 1, "side": "right", "lobe": "frontal", "largest_mm": 14.0},
    {"n_metastases": 2, "side": "left", "lobe": "cerebellum", "largest_mm": 9.6},
    {"n_metastases": 3, "side": "right", "lobe": "occipital", "largest_mm": 21.0},
    {"n_metastases": 12, "side": "left", "lobe": "temporal", "largest_mm": 102.5},
]


@pytest.mark.parametrize(
    ("modality", "description"),
    list(itertools.product([*SHORT_MODALITY_NAMES, "ct"], DESCRIPTIONS)),
)
def test_prompt_attributes_invert_slice_caption(modality, description):
    attributes = attributes_from_prompt(slice_caption(modality, description))
    assert attributes == {
        "modality": modality,
        "lesion_present": description["n_metastases"] > 0,
        "side": description["side"],
    }


@pytest.mark.parametrize(
    "prompt",
    [
        "a photo of a brain",
        "Brain MRI, FLAIR: 2 metastases; largest 14 mm in the middle frontal lobe",
        "Brain MRI, FLAIR: 1 metastases of 5 mm in the left hemisphere",
        "Brain MRI, : without visible metastases",
        "Brain MRI, FLAIR: without visible metastases; maybe",
    ],
)
def test_unreadable_prompt_is_named(prompt):
    with pytest.raises(ValueError, match="cannot read the attributes of prompt") as error:
        attributes_from_prompt(prompt)
    assert repr(prompt) in str(error.value)


def _slices(n: int, seed: int, modalities=("t1_gd", "flair")) -> TensorBundle:
    """Dark (t1_gd) or bright (flair) ellipses; 40 % carry a bright disc left or right of the
    midline. Columns as the caption CSV gives them: strings, side empty without lesion."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:S, :S]
    brain = ((yy - 15.5) / 13) ** 2 + ((xx - 15.5) / 11) ** 2 <= 1
    images = np.empty((n, 1, S, S), dtype=np.float32)
    texts, mods, counts, sides = [], [], [], []
    for i in range(n):
        modality = modalities[i % len(modalities)]
        image = np.where(brain, -0.5 if modality == "t1_gd" else 0.3, -1.0)
        description = NONE
        if rng.random() < 0.4:
            side = str(rng.choice(["left", "right"]))
            cx = rng.integers(7, 12) if side == "left" else rng.integers(20, 25)
            cy = rng.integers(9, 23)
            image = np.where((yy - cy) ** 2 + (xx - cx) ** 2 <= 6.5, 1.0, image)
            description = {
                "n_metastases": int(rng.integers(1, 4)),
                "side": side,
                "lobe": "frontal",
                "largest_mm": 6.0,
            }
        images[i, 0] = image + rng.normal(0, 0.05, (S, S))
        texts.append(slice_caption(modality, description))
        mods.append(modality)
        counts.append(str(description["n_metastases"]))
        sides.append(description["side"] or "")
    return TensorBundle(
        {"images": torch.from_numpy(images).clamp(-1, 1), "row_index": torch.arange(1, n + 1)},
        {
            "texts": texts,
            "modalities": mods,
            "extra_columns": {"n_metastases": counts, "side": sides, "split": ["x"] * n},
        },
    )


@pytest.fixture(scope="module")
def trained():
    state, report = train_attribute_classifiers(_slices(240, seed=0), params=PARAMS)
    return state, report, _slices(120, seed=1)


def _generated(images, prompts, **meta) -> TensorBundle:
    return TensorBundle({"images": images}, {"prompts": list(prompts), **meta})


def test_training_report_and_state(trained):
    state, report, _ = trained
    assert state.metadata["attributes"] == ["modality", "lesion_present", "side"]
    assert state.metadata["classes"]["modality"] == ["flair", "t1_gd"]
    assert report["failed"] == {}
    counts = report["training_counts"]
    assert counts["modality"] == {"flair": 120, "t1_gd": 120}
    assert sum(counts["side"].values()) == counts["lesion_present"]["present"]
    weights = report["class_weights"]["lesion_present"]
    assert weights[0] < 1 < weights[1]  # the rarer lesion slices weigh more
    assert report["loss_last"] < report["loss_first"]


def test_real_accuracy_is_high_and_agrees_with_own_captions(trained):
    state, _, heldout = trained
    generated = _generated(heldout["images"], heldout.metadata["texts"])
    result = attribute_agreement(state, heldout, generated)
    n_lesion = sum(a["lesion_present"] for a in real_attributes(heldout))
    for name, entry in result["attributes"].items():
        real, gen = entry["real"], entry["generated"]
        assert real["accuracy"] >= 0.95 and real["balanced_accuracy"] >= 0.95, (name, real)
        # the same images, prompts equal to their captions: identical numbers
        assert gen["agreement"] == real["accuracy"] == 1.0
        assert gen["confusion"]["counts"] == real["confusion"]["counts"]
        assert gen["n"] == real["n"] == (n_lesion if name == "side" else 120)
        assert real["majority_baseline"] == max(real["n_per_class"].values()) / real["n"]
    assert result["attributes"]["lesion_present"]["real"]["majority_class"] == "absent"


def test_constant_images_agree_at_exactly_the_majority_rate(trained):
    state, _, heldout = trained
    # each attribute's requested classes are balanced: a constant prediction agrees on half
    descriptions = [NONE, NONE, DESCRIPTIONS[1], DESCRIPTIONS[4]]  # 2 absent, left, right
    prompts = [slice_caption(m, d) for m in ("t1_gd", "flair") for d in descriptions]
    images = torch.zeros((len(prompts), 1, S, S))
    result = attribute_agreement(state, heldout, _generated(images, prompts))
    for name, entry in result["attributes"].items():
        gen = entry["generated"]
        assert gen["agreement"] == gen["majority_baseline"] == 0.5, name
        assert gen["balanced_agreement"] == gen["balanced_chance"] == 0.5
    side = result["attributes"]["side"]["generated"]
    assert side["n"] == 4 and side["n_per_class"] == {"left": 2, "right": 2}  # lesion prompts
    assert np.sum(side["confusion"]["counts"]) == 4
    assert side["confusion"]["rows"] == "requested"


def test_images_per_prompt_and_unknown_modalities(trained):
    state, _, heldout = trained
    prompts = [slice_caption("t1_gd", NONE), slice_caption("ct", DESCRIPTIONS[2])]
    images = heldout["images"][:6]
    result = attribute_agreement(state, heldout, _generated(images, prompts, images_per_prompt=3))
    assert result["n_generated"] == 6
    modality = result["attributes"]["modality"]["generated"]
    assert modality["n"] == 3 and modality["excluded_unknown_class"] == 3
    assert result["attributes"]["side"]["generated"]["n"] == 3


def test_state_round_trips_through_a_tensor_file(trained, tmp_path):
    state, _, heldout = trained
    dataset = TensorDataset(filepath=str(tmp_path / "attributes.safetensors"))
    dataset.save(state)
    loaded = dataset.load()
    before, after = (
        predict_attributes(state, heldout["images"]),
        predict_attributes(loaded, heldout["images"]),
    )
    assert all(np.array_equal(before[a], after[a]) for a in before)


def test_bad_generated_bundles_fail_clearly(trained):
    state, _, heldout = trained
    images = heldout["images"][:2]
    with pytest.raises(ValueError, match="needs metadata 'prompts'"):
        attribute_agreement(state, heldout, TensorBundle({"images": images}))
    with pytest.raises(ValueError, match="'a cat'"):
        attribute_agreement(state, heldout, _generated(images, ["a cat", "a dog"]))
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        attribute_agreement(state, heldout, _generated(images, heldout.metadata["texts"][:3]))
    with pytest.raises(ValueError, match=r"\[N, 1, S, S\]"):
        attribute_agreement(state, heldout, _generated(images[:, 0], heldout.metadata["texts"][:2]))


def test_lesion_without_side_names_the_row():
    bundle = _slices(10, seed=2)
    columns = bundle.metadata["extra_columns"]
    row = columns["n_metastases"].index(next(c for c in columns["n_metastases"] if c != "0"))
    columns["side"][row] = ""
    with pytest.raises(ValueError, match=f"CSV row {row + 1}: .*side 'left' or 'right'"):
        real_attributes(bundle)


def test_labels_from_prompts_when_the_columns_are_missing():
    bundle = _slices(20, seed=3)
    expected = real_attributes(bundle)
    del bundle.metadata["extra_columns"]
    assert real_attributes(bundle) == expected


def test_one_modality_fails_that_attribute_only(trained):
    _, _, heldout = trained
    train = _slices(40, seed=4, modalities=("flair",))
    state, report = train_attribute_classifiers(train, params={**PARAMS, "steps": 3})
    assert state.metadata["attributes"] == ["lesion_present", "side"]
    assert "fewer than two modality classes" in report["failed"]["modality"]
    generated = _generated(heldout["images"][:4], heldout.metadata["texts"][:4])
    result = attribute_agreement(state, heldout, generated)
    assert result["attributes"]["modality"]["status"] == "failed"
    assert "agreement" in result["attributes"]["lesion_present"]["generated"]


def test_params_refuse_unknown_and_bad_keys():
    with pytest.raises(ValueError, match="did you mean 'width'"):
        AttributeClassifierParams.from_params({**PARAMS, "widht": 8})
    with pytest.raises(ValueError, match="'seed'"):
        AttributeClassifierParams.from_params({k: v for k, v in PARAMS.items() if k != "seed"})
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        AttributeClassifierParams.from_params({**PARAMS, "steps": 0})


def test_scores_match_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    target = rng.integers(-1, 3, 200)  # -1: not applicable
    predicted = rng.integers(0, 3, 200)
    scored = _score(target, predicted, ["a", "b", "c"], rate="accuracy", rows="true")
    keep = target >= 0
    assert scored["n"] == keep.sum()
    assert scored["accuracy"] == pytest.approx(
        metrics.accuracy_score(target[keep], predicted[keep])
    )
    assert scored["balanced_accuracy"] == pytest.approx(
        metrics.balanced_accuracy_score(target[keep], predicted[keep])
    )
    assert (
        scored["confusion"]["counts"]
        == metrics.confusion_matrix(target[keep], predicted[keep], labels=[0, 1, 2]).tolist()
    )
    empty = _score(np.full(3, -1), np.zeros(3, int), ["a", "b"], rate="accuracy", rows="true")
    assert empty["status"] == "failed" and empty["n"] == 0

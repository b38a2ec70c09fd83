"""Attribute-swapped captions: exact swaps of real caption strings, one attribute at a time."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from medgen.text2image.attributes import attributes_from_prompt
from medgen.text2image.caption_swaps import (
    DEFAULT_FINDING,
    SWAP_KINDS,
    caption_swaps,
    mirrored_caption,
    modality_key,
    parse_caption,
    swap_count,
    swap_modality,
    swap_presence,
    swap_side,
)
from medgen.text2image.slice_captions import SHORT_MODALITY_NAMES, slice_caption

NONE = {"n_metastases": 0, "side": None, "lobe": None, "largest_mm": None}
DESCRIPTIONS = [
    NONE,
    {"n_metastases": 1, "side": "left", "lobe": None, "largest_mm": 7.4},
    {"n_metastases": 1, "side": "right", "lobe": "frontal", "largest_mm": 14.0},
    {"n_metastases": 2, "side": "left", "lobe": "cerebellum", "largest_mm": 9.6},
    {"n_metastases": 3, "side": "right", "lobe": "occipital", "largest_mm": 21.0},
    {"n_metastases": 12, "side": "left", "lobe": "temporal", "largest_mm": 102.5},
]
MODALITIES = [*SHORT_MODALITY_NAMES, "ct"]
CAPTIONS = [slice_caption(m, d) for m, d in itertools.product(MODALITIES, DESCRIPTIONS)]
FINDINGS = [c for c in CAPTIONS if not c.endswith("without visible metastases")]
FLAIR_TWO = slice_caption(
    "flair", {"n_metastases": 2, "side": "left", "lobe": "frontal", "largest_mm": 14.0}
)
GD_NONE = slice_caption("t1_gd", NONE)


@pytest.mark.parametrize(
    ("modality", "description"), list(itertools.product(MODALITIES, DESCRIPTIONS))
)
def test_parse_inverts_slice_caption(modality, description):
    caption = slice_caption(modality, description)
    parsed = parse_caption(caption)
    mm = description["largest_mm"]
    assert parsed.modality == modality
    assert parsed.description == {**description, "largest_mm": None if mm is None else round(mm)}
    assert parsed.caption == caption


def test_swaps_of_a_caption_with_two_metastases():
    assert FLAIR_TWO == "Brain MRI, FLAIR: 2 metastases; largest 14 mm in the left frontal lobe"
    swaps = caption_swaps(FLAIR_TWO, modalities=["t1_gd", "flair"])
    assert {k: (s.caption, s.kind) for k, s in swaps.items()} == {
        "modality": (
            "Brain MRI, T1 post-gadolinium: 2 metastases; largest 14 mm in the left frontal lobe",
            "modality",
        ),
        "side": (
            "Brain MRI, FLAIR: 2 metastases; largest 14 mm in the right frontal lobe",
            "side",
        ),
        "lesion_present": ("Brain MRI, FLAIR: without visible metastases", "lesion_present"),
        "count": ("Brain MRI, FLAIR: 1 metastasis of 14 mm in the left frontal lobe", "count"),
    }


def test_a_caption_without_metastases_has_no_side_or_count_to_swap():
    assert GD_NONE == "Brain MRI, T1 post-gadolinium: without visible metastases"
    swaps = caption_swaps(GD_NONE, modalities=["t1_gd", "flair"])
    assert swaps["side"] is None and swaps["count"] is None
    assert swaps["modality"].caption == "Brain MRI, FLAIR: without visible metastases"
    assert swaps["lesion_present"].caption == slice_caption("t1_gd", DEFAULT_FINDING)
    finding = "Brain MRI, FLAIR: 1 metastasis of 9 mm in the right cerebellum"
    assert (
        swap_presence(GD_NONE, [finding]).caption
        == "Brain MRI, T1 post-gadolinium: 1 metastasis of 9 mm in the right cerebellum"
    )


def test_single_metastasis_and_hemisphere_captions():
    one = "Brain MRI, BRAVO: 1 metastasis of 9 mm in the right hemisphere"
    assert (
        swap_count(one).caption
        == "Brain MRI, BRAVO: 2 metastases; largest 9 mm in the right hemisphere"
    )
    assert swap_side(one).caption == "Brain MRI, BRAVO: 1 metastasis of 9 mm in the left hemisphere"
    assert swap_modality(one, ["bravo"]) is None  # no other modality configured
    assert swap_modality(one, ["FLAIR", "BRAVO"]).caption.startswith("Brain MRI, FLAIR: 1 meta")


@pytest.mark.parametrize("caption", CAPTIONS)
def test_each_swap_changes_exactly_its_attribute(caption):
    """Read back by part 1's own prompt parser (`attributes_from_prompt`) and this one."""
    before, parsed = attributes_from_prompt(caption), parse_caption(caption)
    rng = np.random.default_rng(0)
    for _ in range(3):
        swaps = caption_swaps(caption, modalities=MODALITIES, lesion_findings=FINDINGS, rng=rng)
        for kind, swap in swaps.items():
            if swap is None:
                assert kind in ("side", "count") and before["side"] is None
                continue
            assert swap.kind == kind and swap.caption != caption
            after, new = attributes_from_prompt(swap.caption), parse_caption(swap.caption)
            changed = {k for k in before if before[k] != after[k]}
            if kind == "modality":
                assert changed == {"modality"} and new.description == parsed.description
            elif kind == "side":
                assert changed == {"side"} and new.modality == parsed.modality
                assert {**new.description, "side": before["side"]} == parsed.description
            elif kind == "lesion_present":
                assert "lesion_present" in changed and new.modality == parsed.modality
            else:
                assert changed == set() and new.modality == parsed.modality
                count = parsed.description["n_metastases"]
                assert abs(new.description["n_metastases"] - count) == 1
                assert {**new.description, "n_metastases": count} == parsed.description


def test_random_choices_reach_every_false_value():
    rng = np.random.default_rng(1)
    modalities = {swap_modality(GD_NONE, MODALITIES, rng).caption for _ in range(60)}
    assert modalities == {slice_caption(m, NONE) for m in MODALITIES if m != "t1_gd"}
    counts = {swap_count(FLAIR_TWO, rng).caption.split(": ")[1][:1] for _ in range(30)}
    assert counts == {"1", "3"}
    findings = FINDINGS[:2]
    presence = {swap_presence(GD_NONE, findings, rng).caption for _ in range(30)}
    assert len(presence) == 2


def test_modality_names_and_the_next_one_in_the_cycle():
    assert modality_key("FLAIR") == modality_key("flair") == "flair"
    assert modality_key("ct") == "ct"
    order = ["t1_pre", "t1_gd", "flair"]
    assert swap_modality(GD_NONE, order).caption == slice_caption("flair", NONE)
    flair = slice_caption("flair", NONE)
    assert swap_modality(flair, order).caption == slice_caption("t1_pre", NONE)


def test_mirrored_caption_swaps_the_side_only():
    assert mirrored_caption(FLAIR_TWO) == swap_side(FLAIR_TWO).caption
    assert mirrored_caption(GD_NONE) == GD_NONE


@pytest.mark.parametrize(
    "caption",
    [
        "a photo of a brain",
        "Brain MRI, FLAIR: 2 metastases; largest 14 mm in the middle frontal lobe",
        "Brain MRI, FLAIR: 1 metastases of 5 mm in the left hemisphere",
        "Brain MRI, : without visible metastases",
    ],
)
def test_unreadable_caption_is_named(caption):
    with pytest.raises(ValueError, match="cannot swap the attributes of caption") as error:
        caption_swaps(caption, modalities=["flair"])
    assert repr(caption) in str(error.value)


def test_bad_kinds_and_findings_are_refused():
    with pytest.raises(ValueError, match="unknown swap kinds"):
        caption_swaps(GD_NONE, modalities=["flair"], kinds=["colour"])
    with pytest.raises(ValueError, match="must state metastases"):
        swap_presence(GD_NONE, [GD_NONE])
    assert set(SWAP_KINDS) == {"modality", "side", "lesion_present", "count"}

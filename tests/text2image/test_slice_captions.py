import math

import numpy as np
import pytest

from medgen.data.slicing import axial_plane
from medgen.text2image.slice_captions import (
    brain_box,
    describe_slice,
    feret_diameter_px,
    slice_caption,
)

S = 32
BRAIN = np.zeros((S, S), np.uint8)
BRAIN[2:30, 4:28] = 3  # columns 4..27: midline at column 15.5


def _two_lesions() -> np.ndarray:
    seg = np.zeros((S, S), np.uint8)
    seg[10:13, 6:11] = 3  # 3 x 5 pixels, left of the midline
    seg[11, 8] = 1  # a necrotic pixel inside counts as the same tumour
    seg[20:23, 20:23] = 3  # 3 x 3 pixels (36 mm² at 2 mm), right of the midline
    return seg


def test_two_components_count_size_and_side():
    description = describe_slice(_two_lesions(), BRAIN, pixel_spacing_mm=2.0)
    assert description["n_metastases"] == 2
    # farthest pixel centres of the 3 x 5 block: 2 rows and 4 columns apart, plus one pixel
    assert description["largest_mm"] == round((math.sqrt(2**2 + 4**2) + 1) * 2.0, 1) == 10.9
    assert description["side"] == "left"
    assert description["lobe"] is None  # no slice height given


def test_feret_diameter_of_simple_shapes():
    line = np.zeros((8, 8), bool)
    line[3, 1:6] = True
    assert feret_diameter_px(line) == pytest.approx(5.0)
    dot = np.zeros((8, 8), bool)
    dot[4, 4] = True
    assert feret_diameter_px(dot) == pytest.approx(1.0)


def test_tiny_components_and_oedema_are_ignored():
    seg = _two_lesions()
    seg[2, 26] = 3  # one pixel: 4 mm² < 20 mm²
    seg[25:29, 5:9] = 2  # oedema only
    assert describe_slice(seg, BRAIN, 2.0)["n_metastases"] == 2
    assert describe_slice(seg, BRAIN, 2.0, min_area_mm2=0.0)["n_metastases"] == 3
    assert describe_slice(seg, BRAIN, 2.0, lesion_labels=(1, 2, 3))["n_metastases"] == 3
    # the 3 x 3 block (36 mm²) is dropped at a coarser threshold
    assert describe_slice(seg, BRAIN, 2.0, min_area_mm2=40.0)["n_metastases"] == 1


def test_empty_slice_caption():
    description = describe_slice(np.zeros((S, S), np.uint8), BRAIN, 3.0, 0.5)
    assert description == {"n_metastases": 0, "side": None, "lobe": None, "largest_mm": None}
    assert slice_caption("t1_gd", description) == (
        "Brain MRI, T1 post-gadolinium: without visible metastases"
    )


def _ras_volume(lesion_x: int) -> tuple[np.ndarray, np.ndarray]:
    """Brain box and a lesion, RAS voxel order [x: left->right, y: post->ant, z: inf->sup]."""
    shape = (20, 24, 10)
    brain = np.zeros(shape, np.uint8)
    brain[2:18, 2:22, :] = 3  # midline between x = 9 and 10
    seg = np.zeros(shape, np.uint8)
    seg[lesion_x - 2 : lesion_x + 2, 15:19, 4:7] = 3  # anterior half, slices z = 4..6
    return brain, seg


@pytest.mark.parametrize(("lesion_x", "side"), [(5, "left"), (14, "right")])
def test_side_follows_ras_through_axial_plane(lesion_x, side):
    brain, seg = _ras_volume(lesion_x)  # low RAS x = the subject's left
    brain_planes, seg_planes = axial_plane(brain), axial_plane(seg)
    description = describe_slice(seg_planes[5], brain_planes[5], 2.0, 0.6)
    assert description["side"] == side
    assert description["lobe"] == "frontal"  # anterior half, above the temporal level
    assert f"in the {side} frontal lobe" in slice_caption("flair", description)


@pytest.mark.parametrize(
    ("row", "col", "position", "lobe"),
    [
        (4, 20, 0.8, "frontal"),  # anterior, high
        (18, 20, 0.8, "parietal"),  # behind the frontal bound, high
        (29, 18, 0.8, "occipital"),  # posterior pole
        (26, 12, 0.1, "cerebellum"),  # posterior, low
        (15, 28, 0.3, "temporal"),  # lateral, mid-anterior, low
        (15, 17, 0.3, "frontal"),  # the same row and height, but medial: not temporal
    ],
)
def test_approximate_lobe_table(row, col, position, lobe):
    brain = np.zeros((S, S), bool)
    brain[0:32, 2:30] = True  # midline at column 15.5, half width 14 pixels
    seg = np.zeros((S, S), np.uint8)
    seg[row - 1 : row + 2, col - 1 : col + 2] = 3
    box = brain_box(brain)
    assert describe_slice(seg, brain, 2.0, position, box=box)["lobe"] == lobe


def test_brain_box_of_a_stack_is_the_union():
    stack = np.zeros((2, 8, 8), bool)
    stack[0, 1:3, 2:4] = True
    stack[1, 5, 6] = True
    assert brain_box(stack) == (1, 5, 2, 6)
    assert brain_box(np.zeros((8, 8), bool)) is None


@pytest.mark.parametrize(
    ("description", "text"),
    [
        (
            {"n_metastases": 2, "side": "left", "lobe": "frontal", "largest_mm": 14.2},
            "Brain MRI, FLAIR: 2 metastases; largest 14 mm in the left frontal lobe",
        ),
        (
            {"n_metastases": 1, "side": "right", "lobe": "cerebellum", "largest_mm": 9.6},
            "Brain MRI, FLAIR: 1 metastasis of 10 mm in the right cerebellum",
        ),
        (
            {"n_metastases": 3, "side": "right", "lobe": None, "largest_mm": 20.0},
            "Brain MRI, FLAIR: 3 metastases; largest 20 mm in the right hemisphere",
        ),
    ],
)
def test_caption_wording(description, text):
    assert slice_caption("flair", description) == text


def test_unknown_modality_keeps_its_name_and_bad_shapes_fail():
    assert slice_caption("t2w", {"n_metastases": 0}).startswith("Brain MRI, t2w:")
    with pytest.raises(ValueError, match="same 2D shape"):
        describe_slice(np.zeros((4, 4)), np.zeros((4, 5)), 1.0)

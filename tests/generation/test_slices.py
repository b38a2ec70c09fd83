"""Resizing and selecting model-input slices."""

from __future__ import annotations

import pytest
import torch

from medgen.generation import SliceDataset, prepare_slices, resize_slices, select_slices
from tests.generation.synthetic_slices import synthetic_slices


def test_resize_antialiases_images_and_keeps_mask_labels():
    bundle = synthetic_slices(n=4, size=32, spacing_mm=3.0)
    # a one-pixel checkerboard: plain bilinear at exact 2x would keep single pixels, antialiasing averages them
    board = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2).float() * 2 - 1
    bundle.tensors["images"][0, 0] = board
    small = resize_slices(bundle, 16)
    assert small["images"].shape == (4, 4, 16, 16)
    assert small["images"][0, 0].abs().max() < 0.3  # averaged to ~0, not aliased to ±1
    assert small["seg"].dtype == torch.uint8 and small["seg"].shape == (4, 1, 16, 16)
    assert set(small["seg"].unique().tolist()) <= set(bundle["seg"].unique().tolist())
    assert small["seg"][0].sum() > 0  # a 3-pixel lesion survives nearest resizing at 2x
    assert small.metadata["pixel_spacing_mm"] == pytest.approx(6.0)
    assert small.metadata["size"] == 16
    assert torch.equal(small["subject_index"], bundle["subject_index"])


def test_mask_resize_is_nearest_not_interpolated():
    bundle = synthetic_slices(n=2, size=8)
    bundle.tensors["seg"].zero_()
    bundle.tensors["seg"][0, 0, 2:6, 2:6] = 3
    small = resize_slices(bundle, 4)
    assert small["seg"][0, 0].tolist() == [[0, 0, 0, 0], [0, 3, 3, 0], [0, 3, 3, 0], [0, 0, 0, 0]]


def test_same_resolution_is_a_no_op_and_bad_sizes_fail():
    bundle = synthetic_slices(n=2, size=16)
    assert torch.equal(resize_slices(bundle, 16)["images"], bundle["images"])
    with pytest.raises(ValueError, match="resolution"):
        resize_slices(bundle, 2)


def test_select_with_lesions_and_dataset_items():
    bundle = synthetic_slices(n=6, size=16)  # every other slice has a lesion
    lesions = select_slices(bundle, "with_lesions")
    assert len(lesions) == 3 and all(lesions["seg"][i].sum() > 0 for i in range(3))
    assert select_slices(bundle, "all") is bundle
    with pytest.raises(ValueError, match="one of"):
        select_slices(bundle, "some")
    dataset = SliceDataset(prepare_slices(bundle, 8, "with_lesions"))
    item = dataset[0]
    assert (
        len(dataset) == 3 and item["images"].shape == (4, 8, 8) and item["seg"].shape == (1, 8, 8)
    )

"""Modes: channel selection by modality name, lesion-mask condition, errors, output to data."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import MODALITIES, toy_batch

from medgen.diffusion import MODES, SegMode, binarize_mask, build_mode, lesion_condition


@pytest.mark.parametrize(
    "name, modalities, indices",
    [
        ("bravo", MODALITIES, [3]),
        ("dual", MODALITIES, [0, 1]),
        ("t1_pre", MODALITIES, [0]),
        ("t1_gd", MODALITIES, [1]),
        ("dual", ["bravo", "t1_gd", "flair", "t1_pre"], [3, 1]),
        ("bravo", ["bravo", "t1_gd"], [0]),
    ],
)
def test_conditional_modes_pick_channels_by_name(name, modalities, indices):
    mode = build_mode(name, modalities)
    batch = toy_batch(batch=3, size=8)
    batch["images"] = batch["images"][:, : len(modalities)]
    x0, cond = mode.prepare(batch)
    assert torch.equal(x0, batch["images"][:, indices])
    assert mode.target_channels == len(indices) and mode.condition_channels == 1
    assert mode.condition_names == ("lesion_mask",)
    assert torch.equal(cond, torch.where(batch["seg"] > 0, 1.0, -1.0))
    assert cond.dtype == torch.float32


@pytest.mark.parametrize(
    "name, modalities, missing",
    [
        ("bravo", ["t1_pre", "t1_gd"], "bravo"),
        ("dual", ["t1_pre", "flair"], "t1_gd"),
        ("t1_pre", [], "t1_pre"),
    ],
)
def test_missing_modality_is_named(name, modalities, missing):
    with pytest.raises(ValueError, match=rf"needs modality \['{missing}'\]"):
        build_mode(name, modalities)


def test_seg_mode_is_unconditional_binary_mask():
    mode = build_mode("seg", MODALITIES)
    seg = torch.tensor([[[[0, 1], [2, 3]]]], dtype=torch.uint8)
    x0, cond = mode.prepare({"seg": seg})
    assert cond is None and mode.condition_channels == 0 and mode.target_channels == 1
    assert torch.equal(x0, torch.tensor([[[[-1.0, 1.0], [1.0, 1.0]]]]))
    generated = torch.tensor([[[[-0.3, 0.0], [0.2, 1.0]]]])
    data = mode.to_data(generated)
    assert torch.equal(data["seg"], torch.tensor([[[[0, 0], [1, 1]]]], dtype=torch.uint8))
    assert isinstance(mode, SegMode)


def test_to_data_splits_channels_and_clamps():
    mode = build_mode("dual", MODALITIES)
    generated = torch.tensor([[[[-1.5, 0.5]], [[2.0, -0.2]]]])  # [1, 2, 1, 2]
    data = mode.to_data(generated)
    assert list(data) == ["t1_pre", "t1_gd"]
    assert torch.equal(data["t1_pre"], torch.tensor([[[[-1.0, 0.5]]]]))
    assert torch.equal(data["t1_gd"], torch.tensor([[[[1.0, -0.2]]]]))
    with pytest.raises(ValueError, match=r"expects generated \[B, 2"):
        mode.to_data(generated[:, :1])


def test_3d_batches_work():
    batch = toy_batch(batch=2, size=8, spatial_dims=3)
    x0, cond = build_mode("t1_gd", MODALITIES).prepare(batch)
    assert x0.shape == (2, 1, 8, 8, 8) and cond.shape == (2, 1, 8, 8, 8)


def test_bad_batches_raise_clearly():
    mode = build_mode("bravo", MODALITIES)
    batch = toy_batch(batch=2, size=8)
    with pytest.raises(ValueError, match="has 3 channels but the modality list has 4"):
        mode.prepare({**batch, "images": batch["images"][:, :3]})
    with pytest.raises(KeyError, match=r"needs batch\['seg'\]"):
        mode.prepare({"images": batch["images"]})
    with pytest.raises(ValueError, match="duplicate"):
        build_mode("bravo", ["bravo", "bravo"])
    with pytest.raises(KeyError, match="unknown diffusion mode 'flair2'"):
        build_mode("flair2", MODALITIES)


def test_mask_helpers():
    assert torch.equal(lesion_condition(torch.tensor([0, 1, 3])), torch.tensor([-1.0, 1.0, 1.0]))
    assert torch.equal(
        binarize_mask(torch.tensor([-1.0, 0.0, 1e-3])), torch.tensor([0, 0, 1], dtype=torch.uint8)
    )
    assert set(MODES.names()) == {
        "seg",
        "bravo",
        "dual",
        "t1_pre",
        "t1_gd",
        "class",
        "inpaint",
        "text",
    }

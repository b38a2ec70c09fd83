"""Classical inpainting fills: known voxels untouched, every mask voxel filled, each fill
checked against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.restoration import inpaint_biharmonic

from medgen.datasets import TensorBundle
from medgen.inpainting.baselines import (
    BACKGROUND,
    CLASSICAL_BASELINES,
    SHELL_WIDTH,
    biharmonic,
    fill_cases,
    local_mean_fill,
    mean_fill,
    nearest_fill,
)

SHAPE = (16, 20, 16)


def ball(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape)
    return ((grid - np.array(centre)[:, None, None, None]) ** 2).sum(0) <= radius**2


def synthetic_case(seed: int = 0, shape=SHAPE):
    """A smooth "brain" in an ellipsoid, -1 background, a ball mask inside the brain."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(shape)[:, None, None, None] / 2
    brain = (((grid - centre) / (np.array(shape)[:, None, None, None] / 2.2)) ** 2).sum(0) <= 1
    smooth = 0.3 * np.sin(grid[0] / 3) + 0.2 * np.cos(grid[1] / 4) + 0.1 * grid[2] / shape[2]
    t1 = np.where(brain, smooth + rng.normal(0, 0.02, shape), BACKGROUND).astype(np.float32)
    mask = ball(shape, (8 + seed % 2, 10, 8), 3)
    voided = np.where(mask, BACKGROUND, t1).astype(np.float32)
    return t1, voided, mask, brain


@pytest.mark.parametrize("name", sorted(CLASSICAL_BASELINES))
def test_known_voxels_stay_bit_exact_and_every_mask_voxel_is_filled_from_known_ones(name):
    _, voided, mask, brain = synthetic_case()
    # A sentinel in the mask voxels: a fill that read them would leak it into its output.
    probe = np.where(mask, np.float32(7.0), voided)
    out = CLASSICAL_BASELINES[name](probe, mask, brain)
    assert out.shape == voided.shape and out.dtype == np.float32
    assert np.array_equal(out[~mask], voided[~mask])
    assert np.isfinite(out[mask]).all()
    assert (out[mask] >= voided[~mask].min()).all() and (out[mask] <= voided[~mask].max()).all()
    assert probe[mask][0] == 7.0  # the input is not changed in place


@pytest.mark.parametrize("name", sorted(CLASSICAL_BASELINES))
def test_an_empty_mask_returns_the_volume(name):
    _, voided, _, brain = synthetic_case()
    out = CLASSICAL_BASELINES[name](voided, np.zeros(SHAPE, bool), brain)
    assert np.array_equal(out, voided)


def test_zero_fill_is_the_background_value():
    _, voided, mask, brain = synthetic_case()
    assert (CLASSICAL_BASELINES["zero_fill"](voided, mask, brain)[mask] == -1.0).all()


def test_mean_fill_is_the_mean_of_the_known_brain_voxels():
    t1, voided, mask, brain = synthetic_case()
    known = brain & ~mask
    expected = np.float32(t1[known].astype(np.float64).mean())
    assert (mean_fill(voided, mask, brain)[mask] == expected).all()


def test_local_mean_fill_averages_the_shell_around_the_mask():
    _, _, mask, brain = synthetic_case()
    distance = np.sqrt(
        ((np.indices(SHAPE) - np.array([8, 10, 8])[:, None, None, None]) ** 2).sum(0)
    )
    shell = brain & ~mask & (distance <= 3 + SHELL_WIDTH)
    voided = np.where(brain, np.where(shell, 0.5, -0.2), -1.0).astype(np.float32)
    voided[mask] = -1.0
    out = local_mean_fill(voided, mask, brain)
    assert np.allclose(out[mask], 0.5)
    assert not np.allclose(mean_fill(voided, mask, brain)[mask], 0.5)


def test_nearest_fill_equals_a_brute_force_nearest_known_brain_voxel():
    rng = np.random.default_rng(3)
    shape = (6, 7, 5)
    values = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32) / 210 - 0.5
    brain = rng.random(shape) < 0.7
    mask = rng.random(shape) < 0.3
    out = nearest_fill(values, mask, brain)
    known = np.argwhere(brain & ~mask)
    for voxel in np.argwhere(mask):
        distance = ((known - voxel) ** 2).sum(1)
        nearest = known[distance == distance.min()]
        assert out[tuple(voxel)] in {values[tuple(k)] for k in nearest}, voxel


def test_biharmonic_reproduces_a_linear_ramp_inside_the_mask():
    grid = np.indices(SHAPE).astype(np.float64)
    ramp = (0.03 * grid[0] - 0.02 * grid[1] + 0.04 * grid[2] - 0.2).astype(np.float32)
    mask = ball(SHAPE, (8, 10, 8), 4)
    voided = np.where(mask, BACKGROUND, ramp).astype(np.float32)
    out = biharmonic(voided, mask, np.ones(SHAPE, bool))
    assert np.abs(out[mask] - ramp[mask]).max() < 1e-5


def test_biharmonic_on_the_box_equals_skimage_on_the_whole_volume():
    _, voided, mask, brain = synthetic_case(seed=1)
    # Put the volume's extremes inside the box, so both see the same clipping range.
    voided[7, 6, 8], voided[9, 14, 8] = voided.min(), 0.99
    whole = inpaint_biharmonic(voided.astype(np.float64), mask)
    out = biharmonic(voided, mask, brain)
    assert np.abs(out[mask] - whole[mask]).max() < 1e-6


def test_fill_cases_fills_every_case_and_names_a_bad_one():
    cases = [synthetic_case(seed) for seed in range(2)]
    bundle = TensorBundle(
        {
            "voided": torch.from_numpy(np.stack([c[1] for c in cases])[:, None]),
            "mask": torch.from_numpy(np.stack([c[2] for c in cases])[:, None].astype(np.uint8)),
            "brain": torch.from_numpy(np.stack([c[3] for c in cases])[:, None].astype(np.uint8)),
        },
        {"case_ids": ["A", "B"]},
    )
    out = fill_cases(bundle, "nearest_fill")
    assert out.shape == (2, 1, *SHAPE) and out.dtype == torch.float32
    for i, (_, voided, mask, brain) in enumerate(cases):
        assert np.array_equal(out[i, 0].numpy(), nearest_fill(voided, mask, brain))
    with pytest.raises(KeyError, match="known: "):
        fill_cases(bundle, "median_fill")
    bundle.tensors["brain"][1] = 0
    with pytest.raises(ValueError, match="case B: no known brain voxel"):
        fill_cases(bundle, "mean_fill")


def test_mismatched_inputs_are_refused():
    _, voided, mask, brain = synthetic_case()
    with pytest.raises(ValueError, match="equal"):
        mean_fill(voided, mask[:-1], brain[:-1])
    with pytest.raises(ValueError, match="bool"):
        mean_fill(voided, mask.astype(np.uint8), brain)

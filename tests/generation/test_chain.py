"""The chain: the image model is conditioned on exactly the masks the mask model drew.

Stub networks make the outcome exact: for rectified flow, predicting the velocity
``(target - x) / sigma`` sends every Euler trajectory to ``target`` at t = 0.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medgen.diffusion import build_task, lesion_condition
from medgen.generation import generate_chain, generate_masks, sampler_settings
from tests.generation.synthetic_slices import MODALITIES

SIZE = 8


def rflow_task(mode: str, steps: int = 4):
    config = {"name": "rflow", "num_inference_steps": steps}
    return build_task({"strategy": config, "mode": mode, "modalities": MODALITIES})


def velocity_to(target: torch.Tensor, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    sigma = (timesteps.float() / 1000).view(-1, *[1] * (x.ndim - 1))
    return (target - x) / sigma


class StubMaskModel(nn.Module):
    """Draws a 2x2 lesion whose position depends on the sample's initial noise, so every
    sample gets its own mask; ``empty_first`` makes the first call's masks all empty."""

    def __init__(self, empty_first: bool = False):
        super().__init__()
        self.calls = 0
        self.empty_first = empty_first
        self.targets: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if timesteps[0] >= 999:  # first step: fix this batch's target from its noise
            self.calls += 1
            target = -torch.ones_like(x)
            if not (self.empty_first and self.calls == 1):
                for i, position in enumerate((x[:, 0, 0, 0].abs() * 100).long() % (SIZE - 1)):
                    target[i, 0, position : position + 2, 1:3] = 1.0
            self.targets = target
        return velocity_to(self.targets, x, timesteps)


class StubImageModel(nn.Module):
    """Records the condition channel it is given and paints 0.5 where the lesion is."""

    def __init__(self):
        super().__init__()
        self.conditions: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        image, cond = x[:, :-1], x[:, -1:]
        self.conditions.append(cond.clone())
        return velocity_to(0.5 * cond.expand_as(image), image, timesteps)


def test_images_are_conditioned_on_the_generated_masks():
    mask_model, image_model = StubMaskModel(), StubImageModel()
    samples = generate_chain(
        rflow_task("seg"),
        mask_model,
        rflow_task("bravo"),
        image_model,
        6,
        spatial_shape=(SIZE, SIZE),
        batch_size=4,
        seed=3,
    )
    assert samples.masks.shape == (6, 1, SIZE, SIZE) and samples.masks.dtype == torch.uint8
    assert samples.masks.flatten(1).sum(1).tolist() == [4] * 6
    assert len({tuple(m.flatten().tolist()) for m in samples.masks}) > 1  # not one mask for all
    # every network call of the image model saw exactly the chain's masks as its condition
    seen = torch.cat(image_model.conditions[::4])  # first call of each batch (4 Euler steps)
    assert torch.equal(seen, lesion_condition(samples.masks))
    assert all(torch.equal(c, image_model.conditions[0]) for c in image_model.conditions[:4])
    torch.testing.assert_close(samples.images, 0.5 * lesion_condition(samples.masks))


def test_empty_masks_are_redrawn_within_the_round_budget():
    model = StubMaskModel(empty_first=True)
    masks, rounds = generate_masks(
        rflow_task("seg"),
        model,
        3,
        spatial_shape=(SIZE, SIZE),
        batch_size=8,
        seed=0,
        min_lesion_pixels=1,
        max_rounds=3,
    )
    assert rounds == 2 and ((masks > 0).flatten(1).sum(1) == 4).all()
    kept, rounds = generate_masks(
        rflow_task("seg"),
        StubMaskModel(empty_first=True),
        3,
        spatial_shape=(SIZE, SIZE),
        batch_size=8,
        seed=0,
        min_lesion_pixels=1,
        max_rounds=1,
    )
    assert rounds == 1 and (kept < 0).all()  # no budget left: empty masks are kept


def test_roles_are_checked_and_samplers_reported():
    with pytest.raises(ValueError, match="unconditional"):
        generate_masks(
            rflow_task("bravo"),
            StubImageModel(),
            1,
            spatial_shape=(SIZE, SIZE),
            batch_size=1,
            seed=0,
        )
    assert sampler_settings(rflow_task("seg", steps=30), None) == ("euler", 30, 30)
    ddpm = build_task({"strategy": {"name": "ddpm"}, "mode": "dual", "modalities": MODALITIES})
    assert sampler_settings(ddpm, None) == ("ddim", 50, 50)
    assert sampler_settings(ddpm, 20) == ("ddim", 20, 20)


def test_masks_are_resized_to_an_image_model_working_at_another_resolution():
    mask_model, image_model = StubMaskModel(), StubImageModel()
    samples = generate_chain(
        rflow_task("seg"),
        mask_model,
        rflow_task("bravo"),
        image_model,
        3,
        spatial_shape=(SIZE, SIZE),
        image_spatial_shape=(2 * SIZE, 2 * SIZE),
        batch_size=4,
        seed=1,
    )
    native = (samples.mask_values > 0).float()
    assert native.shape == (3, 1, SIZE, SIZE)
    # each 2x2 lesion drawn at SIZE² becomes a 4x4 lesion at (2 SIZE)², in the same place
    expected = native.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).to(torch.uint8)
    assert torch.equal(samples.masks, expected)
    assert samples.images.shape == (3, 1, 2 * SIZE, 2 * SIZE)
    torch.testing.assert_close(samples.images, 0.5 * lesion_condition(samples.masks))

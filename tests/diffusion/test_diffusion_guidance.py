"""Classifier-free guidance: condition dropout, null condition, guided combination."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import CountingModel

from medgen.diffusion import (
    STRATEGIES,
    combine_guidance,
    drop_condition,
    lesion_condition,
    null_condition,
)
from medgen.diffusion.guidance import guided_model


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.5, -1.0])
def test_combine_guidance_formula(scale):
    g = torch.Generator().manual_seed(0)
    uncond, cond = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    out = combine_guidance(uncond, cond, scale)
    assert torch.equal(out, uncond + scale * (cond - uncond))


class CondEcho(torch.nn.Module):
    """Output = 2 * target channel + 3 * condition channel (affine in the condition)."""

    def forward(self, x, timesteps):
        return 2 * x[:, :1] + 3 * x[:, 1:2]


@pytest.mark.parametrize("scale", [1.0, 2.5, 7.0])
def test_guided_model_is_one_batched_call_with_exact_combination(scale):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 8, 8, generator=g)
    cond = lesion_condition(torch.rand(3, 1, 8, 8, generator=g) > 0.5)
    model = CountingModel(CondEcho())
    out = guided_model(model, cond, scale)(x, torch.full((3,), 10))
    out_cond, out_uncond = 2 * x + 3 * cond, 2 * x  # null condition = zeros
    torch.testing.assert_close(out, out_uncond + scale * (out_cond - out_uncond))
    assert len(model.calls) == 1
    expected_batch = 3 if scale == 1.0 else 6
    assert model.calls[0]["x"].shape == (expected_batch, 2, 8, 8)
    if scale != 1.0:  # second half of the batch carries the null condition
        assert torch.equal(model.calls[0]["x"][3:, 1:], torch.zeros(3, 1, 8, 8))


def test_null_condition_differs_from_an_empty_lesion_mask():
    empty_mask = lesion_condition(torch.zeros(1, 1, 4, 4))
    assert torch.equal(empty_mask, -torch.ones(1, 1, 4, 4))
    assert torch.equal(null_condition(empty_mask), torch.zeros(1, 1, 4, 4))


def test_drop_condition_per_sample_and_seeded():
    cond = lesion_condition(
        torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5
    )
    assert drop_condition(cond, 0.0) is cond
    assert torch.equal(drop_condition(cond, 1.0), torch.zeros_like(cond))
    a = drop_condition(cond, 0.5, torch.Generator().manual_seed(3))
    b = drop_condition(cond, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    dropped = (a == 0).flatten(1).all(1)
    kept = (a == cond).flatten(1).all(1)
    assert torch.all(dropped ^ kept)  # whole samples, never partial
    assert 16 < dropped.sum().item() < 48
    with pytest.raises(ValueError):
        drop_condition(cond, 1.5)


@pytest.mark.parametrize("strategy_cls", [STRATEGIES.get(name) for name in STRATEGIES])
@pytest.mark.parametrize("prob, expect_null", [(0.0, False), (1.0, True)])
def test_training_feeds_null_condition_with_dropout(strategy_cls, prob, expect_null):
    x0 = torch.zeros(4, 1, 8, 8)
    cond = lesion_condition(torch.ones(4, 1, 8, 8))
    model = CountingModel(CondEcho())
    strategy_cls(cond_drop_prob=prob).training_loss(
        model, x0, cond, torch.Generator().manual_seed(0)
    )
    seen = model.calls[0]["x"][:, 1:]
    assert torch.equal(seen, torch.zeros_like(cond) if expect_null else cond)

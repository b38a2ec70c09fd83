"""Each strategy's loss is finite and falls when overfitting one small batch."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import MODALITIES, tiny_unet, toy_batch

from medgen.diffusion import STRATEGIES, DiffusionTask, build_mode, build_strategy


def _eval_loss(task, model, batch):
    # the same noise/timesteps every time, averaged over a few draws
    with torch.no_grad():
        return (
            sum(
                task.loss(model, batch, torch.Generator().manual_seed(100 + s)).item()
                for s in range(4)
            )
            / 4
        )


@pytest.mark.parametrize(
    "name, options",
    [(name, {}) for name in STRATEGIES]
    + [
        ("ddpm", {"min_snr_gamma": 5.0, "cond_drop_prob": 0.1}),
        ("ddpm", {"prediction_type": "v_prediction"}),
        ("edm", {"sigma_data": 1.0, "cond_drop_prob": 0.1}),
        (
            "rflow",
            {
                "timestep_sampling": "logit-normal",
                "min_snr_gamma": 5.0,
                "use_timestep_transform": True,
            },
        ),
    ],
)
def test_overfits_a_single_batch(name, options):
    task = DiffusionTask(build_strategy(name, options), build_mode("bravo", MODALITIES))
    model = tiny_unet(task.in_channels, task.out_channels, seed=0)
    batch = toy_batch(batch=4, size=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    before = _eval_loss(task, model, batch)
    for _ in range(40):
        loss = task.loss(model, batch, generator)
        assert loss.ndim == 0 and torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _eval_loss(task, model, batch)
    assert after < 0.6 * before, (before, after)

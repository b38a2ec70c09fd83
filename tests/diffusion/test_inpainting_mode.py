"""Inpainting as a mode of the diffusion core: masked loss, known values held, RePaint resampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medgen.diffusion import (
    InpaintingMode,
    KnownRegion,
    Resampling,
    build_strategy,
    build_task,
)
from tests.diffusion.diffusion_helpers import tiny_unet

STRATEGIES = {
    "ddpm": {"num_train_timesteps": 50, "clip_sample": False, "num_inference_steps": 4},
    "rflow": {"num_train_timesteps": 50, "num_inference_steps": 4},
    "edm": {"num_inference_steps": 3},
}


def inpaint_batch(n: int = 2, size: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, size, generator=g) * 2 - 1
    mask = torch.zeros(n, 1, size, size, size)
    mask[:, :, 2:5, 3:6, 2:6] = 1
    voided = torch.where(mask > 0, -1.0, images)
    conditioning = torch.rand(n, 2, size, size, size, generator=g)
    return {"images": images, "voided": voided, "mask": mask, "conditioning": conditioning}


def pixel_task(strategy: str) -> object:
    return build_task(
        {
            "strategy": {"name": strategy, **STRATEGIES[strategy]},
            "mode": "inpaint",
            "modalities": ["t1n"],
            "mode_options": {"conditioning_channels": 2},
        }
    )


class Recorder(nn.Module):
    """A tiny 3D UNet that keeps its last input and output (with gradient)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.net = tiny_unet(in_channels, 1, spatial_dims=3)
        self.inputs: list[torch.Tensor] = []
        self.output: torch.Tensor | None = None

    def forward(self, x, timesteps):
        self.inputs.append(x.detach().clone())
        self.output = self.net(x, timesteps)
        if self.output.requires_grad:
            self.output.retain_grad()
        return self.output


def test_channel_counts_and_condition_layout():
    task = pixel_task("ddpm")
    # noisy target 1 + known image 1 + region 1 + 2 maps
    assert task.in_channels == 5 and task.out_channels == 1
    assert isinstance(task.mode, InpaintingMode)
    z0, cond = task.prepare(inpaint_batch())
    batch = inpaint_batch()
    assert torch.equal(cond[:, 0:1], batch["voided"])
    assert torch.equal(cond[:, 1:2], batch["mask"] * 2 - 1)
    assert torch.equal(cond[:, 2:], batch["conditioning"])


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_outputs_outside_the_mask_get_zero_gradient(strategy):
    task = pixel_task(strategy)
    model = Recorder(task.in_channels)
    batch = inpaint_batch()
    loss = task.loss(model, batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    grad = model.output.grad
    outside = (batch["mask"] == 0).expand_as(grad)
    assert grad[outside].abs().max() == 0
    assert grad[~outside].abs().max() > 0
    # the noisy input holds the clean known values outside the mask
    x_t = model.inputs[-1][:, :1]
    if strategy == "edm":  # EDM's network sees c_in(σ) · x: compare through the ratio
        return
    assert torch.equal(x_t[outside[:, :1]], batch["voided"][outside[:, :1]])


def test_loss_region_restricts_the_loss_to_its_voxels():
    task = build_task(
        {
            "strategy": {"name": "rflow", **STRATEGIES["rflow"]},
            "mode": "inpaint",
            "modalities": ["t1n"],
            "mode_options": {"loss_region_key": "score_mask"},
        }
    )
    batch = inpaint_batch()
    score = torch.zeros_like(batch["mask"])
    score[:, :, 2:5, 3:6, 2:4] = 1  # the "healthy" half of the mask
    batch["score_mask"] = score
    model = Recorder(task.in_channels)
    task.loss(model, batch, generator=torch.Generator().manual_seed(0)).backward()
    grad = model.output.grad
    assert grad[(score == 0)].abs().max() == 0
    assert grad[(score == 1)].abs().max() > 0


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("repeats", [0, 1])
def test_sampling_keeps_the_known_values_at_every_step(strategy, repeats):
    task = pixel_task(strategy)
    model = Recorder(task.in_channels).eval()
    batch = inpaint_batch()
    out = task.inpaint(
        model,
        batch,
        generator=torch.Generator().manual_seed(1),
        resampling=Resampling(repeats=repeats),
    )
    outside = batch["mask"] == 0
    assert torch.equal(out[outside], batch["voided"][outside])
    assert torch.isfinite(out).all() and out[~outside].std() > 0
    n = task.strategy.num_solver_steps()
    taken = [i for kind, i, _ in Resampling(repeats=repeats).schedule(n) if kind == "step"]
    # EDM's last step (to sigma 0) is one Euler evaluation, every other step is Heun's two
    per_step = [1 if strategy == "edm" and i == n - 1 else task.strategy.order for i in taken]
    assert len(model.inputs) == sum(per_step)


def test_resampling_schedule():
    assert [k for k, *_ in Resampling().schedule(3)] == ["step"] * 3
    schedule = list(Resampling(repeats=1).schedule(3))
    assert schedule == [
        ("step", 0, 1),
        ("renoise", 1, 0),
        ("step", 0, 1),
        ("step", 1, 2),
        ("renoise", 2, 1),
        ("step", 1, 2),
        ("step", 2, 3),
    ]
    assert Resampling(repeats=2).network_steps(10) == 10 + 2 * 9
    jump = list(Resampling(repeats=1, jump_length=2).schedule(4))
    assert [(k, i, j) for k, i, j in jump if k == "renoise"] == [("renoise", 2, 0)]
    with pytest.raises(ValueError, match="jump_length"):
        Resampling(jump_length=0)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_renoise_follows_the_forward_marginal(strategy):
    s = build_strategy(strategy, STRATEGIES[strategy])
    t_from, t_to = {"ddpm": (10, 40), "rflow": (10.0, 40.0), "edm": (0.5, 3.0)}[strategy]
    a_from, s_from = s.marginal(t_from)
    a_to, s_to = s.marginal(t_to)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000,), 0.7)
    x_from = a_from * x0 + s_from * torch.randn(x0.shape, generator=g)
    x_to = s.renoise(x_from.view(-1, 1, 1, 1), t_from, t_to, g).flatten()
    assert x_to.mean().item() == pytest.approx(a_to * 0.7, abs=0.03)
    assert x_to.std().item() == pytest.approx(s_to, rel=0.03)
    with pytest.raises(ValueError, match="less noisy"):
        s.renoise(x_from.view(-1, 1, 1, 1), t_to, t_from, g)


def test_latent_region_is_max_pooled_and_known_is_encoded():
    class Halve(nn.Module):  # a 'latent space' that averages 2x2x2 blocks
        def encode(self, x):
            return nn.functional.avg_pool3d(x, 2)

        def decode(self, z):
            return nn.functional.interpolate(z, scale_factor=2)

    task = build_task(
        {
            "strategy": {"name": "rflow", **STRATEGIES["rflow"]},
            "mode": "inpaint",
            "modalities": ["t1n"],
            "space": {"name": "latent", "latent_channels": 1, "downsample_factor": 2},
        },
        Halve(),
    )
    assert task.in_channels == 1 + 1 + 1
    batch = inpaint_batch(n=1)
    batch["mask"] = torch.zeros_like(batch["mask"])
    batch["mask"][0, 0, 3, 3, 3] = 1  # one voxel: its latent cell (1, 1, 1) is generated
    _, cond = task.prepare(batch)
    region = (cond[:, 1:2] + 1) / 2
    assert region.sum() == 1 and region[0, 0, 1, 1, 1] == 1
    assert torch.allclose(cond[:, :1], nn.functional.avg_pool3d(batch["voided"], 2))


def test_known_region_validation():
    with pytest.raises(ValueError, match="0 \\(known\\) and 1"):
        KnownRegion(torch.full((1, 1, 4, 4), 0.5), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[B, 1, \*spatial\]"):
        KnownRegion(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))
    task = pixel_task("ddpm")
    with pytest.raises(ValueError, match="use DiffusionTask.inpaint"):
        task.generate(Recorder(5), n=1, spatial_shape=(8, 8, 8))


def test_region_dilation_grows_generation_and_loss_but_not_into_the_unscored_part():
    task = build_task(
        {
            "strategy": {"name": "rflow", **STRATEGIES["rflow"]},
            "mode": "inpaint",
            "modalities": ["t1n"],
            "mode_options": {"loss_region_key": "score_mask", "region_dilation": 1},
        }
    )
    batch = inpaint_batch(n=1)
    batch["mask"] = torch.zeros_like(batch["mask"])
    batch["mask"][0, 0, 3, 3, 3:5] = 1
    batch["score_mask"] = torch.zeros_like(batch["mask"])
    batch["score_mask"][0, 0, 3, 3, 3] = 1  # voxel (3,3,4) has no ground truth
    _, known = task._condition(batch, "cpu", (8, 8, 8))
    assert known.region.sum() == 3 * 3 * 4  # the 1x1x2 mask grown by one voxel
    assert known.loss_region[0, 0, 3, 3, 4] == 0 and known.loss_region[0, 0, 3, 3, 3] == 1
    assert known.loss_region[0, 0, 2, 2, 2] == 1
    # without a dilation the loss region is the scored part itself
    plain = build_task(
        {
            "strategy": {"name": "rflow", **STRATEGIES["rflow"]},
            "mode": "inpaint",
            "modalities": ["t1n"],
            "mode_options": {"loss_region_key": "score_mask"},
        }
    )
    _, known = plain._condition(batch, "cpu", (8, 8, 8))
    assert torch.equal(known.loss_region, batch["score_mask"])

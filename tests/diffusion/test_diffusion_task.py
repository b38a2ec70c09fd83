"""DiffusionTask: strategy + mode + space behind a generic loss_fn(model, batch) and generate()."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from diffusion_helpers import MODALITIES, TINY_UNET, CountingModel, tiny_unet, toy_batch

from medgen.diffusion import (
    STRATEGIES,
    DDPMStrategy,
    DiffusionTask,
    LatentSpace,
    RectifiedFlowStrategy,
    build_mode,
    build_strategy,
    build_task,
    lesion_condition,
)


class PoolAutoencoder:
    """4 latent channels from a 2x average pool (repeated), decoded by upsampling channel 0."""

    def encode(self, x):
        return F.avg_pool2d(x, 2).repeat(1, 4, 1, 1)

    def decode(self, z):
        return F.interpolate(z[:, :1], scale_factor=2, mode="nearest")


def _latent():
    return LatentSpace(PoolAutoencoder(), latent_channels=4, downsample_factor=2)


@pytest.mark.parametrize(
    "mode, latent, in_ch, out_ch",
    [
        ("bravo", False, 2, 1),
        ("dual", False, 3, 2),
        ("seg", False, 1, 1),
        ("t1_gd", True, 5, 4),
        ("seg", True, 4, 4),
    ],
)
def test_channel_counts(mode, latent, in_ch, out_ch):
    task = DiffusionTask(
        RectifiedFlowStrategy(), build_mode(mode, MODALITIES), _latent() if latent else None
    )
    assert (task.in_channels, task.out_channels) == (in_ch, out_ch)
    model = task.build_model({**TINY_UNET, "name": "diffusion_unet"})
    assert (model.in_channels, model.out_channels) == (in_ch, out_ch)


def test_loss_is_an_engine_loss_fn_in_pixel_space():
    task = DiffusionTask(DDPMStrategy(min_snr_gamma=5.0), build_mode("dual", MODALITIES))
    model = tiny_unet(task.in_channels, task.out_channels)
    loss_fn = task.loss
    loss = loss_fn(model, toy_batch(batch=2, size=8))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.out[2].conv.weight.grad.abs().sum() > 0  # the output conv starts at zero


def test_latent_space_training_sees_latents_and_resized_condition():
    task = DiffusionTask(RectifiedFlowStrategy(), build_mode("bravo", MODALITIES), _latent())
    model = CountingModel(tiny_unet(task.in_channels, task.out_channels))
    batch = toy_batch(batch=2, size=16)
    task.loss(model, batch)
    x = model.calls[0]["x"]
    assert x.shape == (2, 5, 8, 8)
    expected_cond = F.avg_pool2d(lesion_condition(batch["seg"]), 2)
    assert torch.equal(x[:, 4:], expected_cond)


def test_generate_pixel_and_latent():
    cond = lesion_condition(toy_batch(batch=3, size=16)["seg"])
    pixel = DiffusionTask(DDPMStrategy(), build_mode("dual", MODALITIES))
    out = pixel.generate(tiny_unet(3, 2), cond=cond, num_steps=2, guidance_scale=2.0)
    assert out.shape == (3, 2, 16, 16)
    assert set(pixel.to_data(out)) == {"t1_pre", "t1_gd"}

    latent = DiffusionTask(RectifiedFlowStrategy(), build_mode("bravo", MODALITIES), _latent())
    model = CountingModel(tiny_unet(5, 4))
    out = latent.generate(model, cond=cond, num_steps=2)
    assert out.shape == (3, 1, 16, 16)  # decoded to data space
    assert model.calls[0]["x"].shape == (3, 5, 8, 8)
    z = latent.generate(model, cond=cond, num_steps=2, decode=False)
    assert z.shape == (3, 4, 8, 8)

    seg = DiffusionTask(RectifiedFlowStrategy(), build_mode("seg", MODALITIES))
    masks = seg.to_data(seg.generate(tiny_unet(1, 1), n=2, spatial_shape=(8, 8), num_steps=2))[
        "seg"
    ]
    assert masks.shape == (2, 1, 8, 8) and masks.dtype == torch.uint8


def test_generate_argument_errors():
    conditional = DiffusionTask(RectifiedFlowStrategy(), build_mode("bravo", MODALITIES))
    with pytest.raises(ValueError, match="is conditional"):
        conditional.generate(tiny_unet(2, 1), n=1, spatial_shape=(8, 8))
    with pytest.raises(ValueError, match="disagrees"):
        conditional.generate(tiny_unet(2, 1), n=2, cond=-torch.ones(1, 1, 8, 8))
    unconditional = DiffusionTask(RectifiedFlowStrategy(), build_mode("seg", MODALITIES))
    with pytest.raises(ValueError, match="needs n and spatial_shape"):
        unconditional.generate(tiny_unet(1, 1), n=2)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.generate(tiny_unet(1, 1), cond=-torch.ones(1, 1, 8, 8))


def test_clipping_in_latent_space_is_refused():
    with pytest.raises(ValueError, match="set clip_sample: false"):
        DiffusionTask(DDPMStrategy(), build_mode("bravo", MODALITIES), _latent())
    DiffusionTask(DDPMStrategy(clip_sample=False), build_mode("bravo", MODALITIES), _latent())


def test_3d_task_loss_and_generate():
    task = DiffusionTask(
        build_strategy("rflow", {"use_timestep_transform": True}), build_mode("t1_pre", MODALITIES)
    )
    model = tiny_unet(task.in_channels, task.out_channels, spatial_dims=3)
    batch = toy_batch(batch=2, size=8, spatial_dims=3)
    assert torch.isfinite(task.loss(model, batch))
    out = task.generate(model, cond=lesion_condition(batch["seg"]), num_steps=2)
    assert out.shape == (2, 1, 8, 8, 8)


@pytest.mark.parametrize("latent", [False, True])
def test_task_config_json_round_trip(latent):
    strategy = DDPMStrategy(clip_sample=not latent, min_snr_gamma=5.0)
    task = DiffusionTask(
        strategy, build_mode("dual", ["t1_gd", "t1_pre"]), _latent() if latent else None
    )
    config = json.loads(json.dumps(task.to_config()))
    rebuilt = build_task(config, PoolAutoencoder() if latent else None)
    assert rebuilt.to_config() == task.to_config()
    assert rebuilt.mode.target_indices == [1, 0]
    assert (
        DiffusionTask.from_config(config, PoolAutoencoder() if latent else None).to_config()
        == config
    )
    with pytest.raises(ValueError, match="missing"):
        build_task({"strategy": {"name": "rflow"}})


#: Options a strategy needs in an unbounded (latent) space.
LATENT_OPTIONS = {"ddpm": {"clip_sample": False}}

#: A DiT small enough for CPU tests, for the class-conditional mode.
TINY_DIT = {
    "name": "dit",
    "spatial_dims": 2,
    "patch_size": 2,
    "hidden_size": 32,
    "depth": 1,
    "num_heads": 2,
    "frequency_embedding_size": 32,
}


@pytest.mark.parametrize("name", list(STRATEGIES))
@pytest.mark.parametrize("mode", ["seg", "bravo", "class"])
@pytest.mark.parametrize("latent", [False, True])
def test_every_strategy_trains_and_generates_through_build_task(name, mode, latent):
    strategy = {"name": name, "num_inference_steps": 2, "cond_drop_prob": 0.5}
    config = {"strategy": strategy, "mode": mode, "modalities": MODALITIES}
    if latent:
        strategy.update(LATENT_OPTIONS.get(name, {}))
        config["space"] = {"name": "latent", "latent_channels": 4, "downsample_factor": 2}
    if mode == "class":
        config["mode_options"] = {"targets": ["bravo"], "label_key": "lesion_present"}
    autoencoder = PoolAutoencoder() if latent else None
    task = build_task(json.loads(json.dumps(config)), autoencoder)
    assert build_task(task.to_config(), autoencoder).to_config() == task.to_config()
    size = 16
    grid = size // 2 if latent else size
    backbone = (
        {**TINY_DIT, "input_size": [grid, grid]}
        if mode == "class"
        else {**TINY_UNET, "name": "diffusion_unet"}
    )
    model = task.build_model(backbone)
    batch = {**toy_batch(batch=2, size=size), "lesion_present": torch.tensor([0, 1])}
    loss = task.loss(model, batch, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()

    if mode == "class":
        cond, shape = torch.tensor([0, 1]), {"spatial_shape": (size, size)}
    elif mode == "bravo":
        cond, shape = lesion_condition(batch["seg"]), {}
    else:
        cond, shape = None, {"n": 2, "spatial_shape": (size, size)}
    out = task.generate(
        model,
        cond=cond,
        guidance_scale=1.0 if cond is None else 2.0,
        generator=torch.Generator().manual_seed(1),
        **shape,
    )
    assert out.shape == (2, 1, size, size) and torch.isfinite(out).all()

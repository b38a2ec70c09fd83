"""The 3D class-conditional generator job: train on a latents bundle, resume, sample per class."""

from __future__ import annotations

import json

import pytest
import torch

from medgen.datasets import TensorBundle, TensorDataset
from medgen.diffusion import DDPMStrategy, DiffusionTask, PrecomputedLatentSpace, build_mode
from medgen.generation.class_conditional_3d import (
    ClassConditionalParams,
    generate_class_conditional,
    train_class_conditional_generator,
)
from tests.conf_parameters import base_parameters, overridden

#: The conf/base generator, shrunk: every other value is the demo's.
PARAMS = overridden(
    base_parameters("latent_diffusion", "latent_diffusion", "volumes", "generator"),
    {
        "backbone": {"hidden_size": 24, "depth": 1, "num_heads": 2, "frequency_embedding_size": 16},
        "training": {"max_steps": 4, "batch_size": 4, "warmup_steps": 0, "log_every": 2},
        "strategy": {"num_inference_steps": 3},
        "sampling": {"batch_size": 3, "device": "cpu"},
    },
)


def _latents(n: int = 8, channels: int = 4, scale: float = 2.0) -> TensorBundle:
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * (n // 2))
    # odd latent depth: the DiT pads 5 -> 6 for patch 2
    latents = torch.randn(n, channels, 4, 6, 5, generator=g) + labels.view(-1, 1, 1, 1, 1)
    metadata = {"scale_factor": scale, "downsample_factor": 4, "latent_channels": channels}
    return TensorBundle({"latents": latents, "lesion_present": labels}, metadata)


def test_train_resume_and_generate(tmp_path):
    bundle = _latents()
    weights, report = train_class_conditional_generator(bundle, PARAMS, tmp_path / "ckpt")
    meta = weights.metadata
    latents = bundle["latents"]
    centred = latents - latents.mean(dim=0, keepdim=True)  # latent_centering: mean (conf/base)
    assert meta["latent_shape"] == [4, 4, 6, 5] and meta["latent_centering"] == "mean"
    assert meta["scale_factor"] == pytest.approx(1 / float(centred.std()))
    torch.testing.assert_close(weights["latent_offset"], latents.mean(dim=0, keepdim=True))
    assert meta["classes"] == ["lesion_absent", "lesion_present"] and meta["has_ema"]
    assert meta["task"]["space"]["name"] == "precomputed_latent"
    assert meta["backbone"]["input_size"] == [4, 6, 5] and meta["backbone"]["num_classes"] == 2
    assert report["steps"] == 4 and report["resumed_from_step"] == 0
    assert report["class_counts"] == [4, 4] and report["final_loss"] > 0
    assert [r["step"] for r in report["history"] if r["kind"] == "step"] == [2, 4]
    json.dumps(report)
    # weights survive the safetensors dataset (JSON metadata, no pickle)
    dataset = TensorDataset(filepath=str(tmp_path / "weights.safetensors"))
    dataset.save(weights)
    weights = dataset.load()

    # same data and configuration: the finished job is read back from its checkpoint
    again, repeated = train_class_conditional_generator(bundle, PARAMS, tmp_path / "ckpt")
    assert repeated["resumed_from_step"] == 4 and repeated["steps"] == 4
    assert repeated["history"] == report["history"]
    assert all(torch.equal(again.tensors[k], v) for k, v in weights.tensors.items())
    # another configuration (uncentred, the bundle's scale factor): the old checkpoints are
    # moved aside, training starts afresh
    uncentred = {**PARAMS, "latent_centering": "none"}
    _, fresh = train_class_conditional_generator(_latents(scale=3.0), uncentred, tmp_path / "ckpt")
    assert fresh["resumed_from_step"] == 0 and (tmp_path / "ckpt.stale" / "latest.pt").is_file()

    latents, labels = generate_class_conditional(weights, 2, PARAMS, seed=3)
    assert latents.shape == (4, 4, 4, 6, 5) and torch.equal(labels, torch.tensor([0, 0, 1, 1]))
    assert torch.isfinite(latents).all()
    again, _ = generate_class_conditional(weights, 2, PARAMS, seed=3)
    assert torch.equal(latents, again)
    # the output is unscaled and the mean added back: the same weights read with scale 1 give
    # 1 / scale times the centred values
    scale = meta["scale_factor"]
    unit = TensorBundle(weights.tensors, json.loads(json.dumps(weights.metadata)))
    unit.metadata["task"]["space"]["scale_factor"] = 1.0
    offset = weights["latent_offset"]
    torch.testing.assert_close(
        generate_class_conditional(unit, 2, PARAMS, seed=3)[0] - offset,
        scale * (latents - offset),
    )


def test_uncentred_latents_keep_the_bundles_scale_and_no_offset(tmp_path):
    params = {**PARAMS, "latent_centering": "none"}
    weights, _ = train_class_conditional_generator(_latents(scale=2.0), params, tmp_path / "c")
    assert weights.metadata["scale_factor"] == 2.0 and "latent_offset" not in weights.tensors
    latents, _ = generate_class_conditional(weights, 1, params, seed=0)
    unit = TensorBundle(weights.tensors, json.loads(json.dumps(weights.metadata)))
    unit.metadata["task"]["space"]["scale_factor"] = 1.0
    torch.testing.assert_close(generate_class_conditional(unit, 1, params, seed=0)[0], 2 * latents)
    with pytest.raises(ValueError, match="latent_centering"):
        ClassConditionalParams.from_params({**PARAMS, "latent_centering": "median"})


@pytest.mark.parametrize(
    "strategy",
    [
        {"name": "ddpm", "num_inference_steps": 3},  # clip_sample false: latents are unbounded
        {"name": "edm", "num_inference_steps": 2, "sigma_data": 1.0},
    ],
)
def test_every_strategy_trains_and_samples_the_3d_generator(tmp_path, strategy):
    params = {**PARAMS, "strategy": {**strategy, "cond_drop_prob": 0.1}}
    weights, report = train_class_conditional_generator(_latents(), params, tmp_path / "ckpt")
    assert report["steps"] == 4 and weights.metadata["task"]["strategy"]["name"] == strategy["name"]
    latents, _ = generate_class_conditional(weights, 1, params, seed=0)
    assert latents.shape == (2, 4, 4, 6, 5) and torch.isfinite(latents).all()


def test_bad_bundles_and_params_are_named(tmp_path):
    bundle = _latents()
    no_scale = TensorBundle(bundle.tensors, {})
    with pytest.raises(ValueError, match="scale_factor"):
        train_class_conditional_generator(no_scale, PARAMS, tmp_path)
    bad_labels = TensorBundle(
        {**bundle.tensors, "lesion_present": torch.full((8,), 2)}, bundle.metadata
    )
    with pytest.raises(ValueError, match=r"values \[2\] not in \[0, 2\)"):
        train_class_conditional_generator(bad_labels, PARAMS, tmp_path)
    with pytest.raises(KeyError, match="needs tensor 'lesion_present'"):
        train_class_conditional_generator(
            TensorBundle({"latents": bundle["latents"]}, bundle.metadata), PARAMS, tmp_path
        )
    wrong_channels = TensorBundle(bundle.tensors, {**bundle.metadata, "latent_channels": 8})
    with pytest.raises(ValueError, match="latents have 4 channels but metadata latent_channels=8"):
        train_class_conditional_generator(wrong_channels, PARAMS, tmp_path)
    with pytest.raises(ValueError, match="n_per_class"):
        generate_class_conditional(TensorBundle({}, {}), 0, PARAMS)


def test_misspelt_or_missing_generator_keys_are_named():
    section = "latent_diffusion.volumes.generator"
    with pytest.raises(
        ValueError, match=rf"Unknown {section} .*'trainig' \(did you mean 'training'\?\)"
    ):
        ClassConditionalParams.from_params({**PARAMS, "trainig": {}})
    sampling = {**PARAMS["sampling"], "guidance": 2.0}
    with pytest.raises(
        ValueError, match=r"sampling parameters: 'guidance' \(did you mean 'guidance_scale'"
    ):
        ClassConditionalParams.from_params({**PARAMS, "sampling": sampling})
    training = {**PARAMS["training"], "max_step": 3}
    with pytest.raises(ValueError, match=r"'max_step' \(did you mean 'max_steps'\?\)"):
        ClassConditionalParams.from_params({**PARAMS, "training": training})
    with pytest.raises(ValueError, match=rf"Missing {section} parameters: 'label_key'"):
        ClassConditionalParams.from_params({k: v for k, v in PARAMS.items() if k != "label_key"})
    with pytest.raises(ValueError, match="needs its parameters"):
        generate_class_conditional(TensorBundle({}, {}), 1)


def test_ddpm_defaults_to_no_clipping_in_latent_space():
    params = ClassConditionalParams.from_params(overridden(PARAMS, {"strategy": {"name": "ddpm"}}))
    assert params.strategy["clip_sample"] is False
    assert params.strategy["cond_drop_prob"] == 0.1
    explicit = {"strategy": {"name": "ddpm", "clip_sample": True}}
    assert ClassConditionalParams.from_params(overridden(PARAMS, explicit)).strategy["clip_sample"]
    space = PrecomputedLatentSpace(latent_channels=4, downsample_factor=4)
    with pytest.raises(ValueError, match="set clip_sample: false"):
        DiffusionTask(DDPMStrategy(), build_mode("class", ["bravo"]), space)

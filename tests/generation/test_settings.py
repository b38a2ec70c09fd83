"""Shared latent_diffusion parameters and per-role overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from medgen.generation import RoleParams, SharedModelParams, deep_merge, model_settings
from tests.conf_parameters import base_parameters
from tests.generation.synthetic_slices import MODALITIES


def parameters() -> dict:
    return base_parameters("latent_diffusion", "latent_diffusion")


def settings(params: dict, role: str):
    return model_settings(role, params[role], params["shared"], MODALITIES)


def test_role_blocks_override_single_keys_of_the_shared_defaults():
    params = parameters()
    params["masks"]["training"] = {"max_steps": 7}
    params["images"]["strategy"] = "ddpm"
    masks, images = settings(params, "masks"), settings(params, "images")
    assert masks.combination == "rflow_seg" and images.combination == "ddpm_bravo"
    assert masks.training["max_steps"] == 7 and images.training["max_steps"] == 800
    assert masks.training["lr"] == images.training["lr"]  # the rest comes from the defaults
    assert images.task_config["strategy"] == {
        "name": "ddpm",
        "sampler": "ddim",
        "num_inference_steps": 50,
        "cond_drop_prob": 0.1,
    }
    assert masks.train_slices == "with_lesions" and images.train_slices == "all"
    assert images.checkpoint_dir == Path("data/06_models/latent_diffusion/ddpm_bravo/checkpoints")


def test_a_changed_shared_key_reaches_both_roles():
    params = parameters()
    params["shared"] = deep_merge(
        params["shared"], {"training": {"batch_size": 4}, "resolution": 16}
    )
    for role in ("masks", "images"):
        s = settings(params, role)
        assert s.training["batch_size"] == 4 and s.resolution == 16


def test_unknown_keys_and_roles_fail_loudly():
    params = parameters()
    params["images"]["trainig"] = {}
    with pytest.raises(ValueError, match=r"'trainig' \(did you mean 'training'\?\)"):
        settings(params, "images")
    with pytest.raises(ValueError, match="role"):
        model_settings("labels", params["images"], params["shared"], MODALITIES)
    params = parameters()
    params["shared"]["resolutoin"] = 64
    with pytest.raises(ValueError, match=r"latent_diffusion.shared.*did you mean 'resolution'"):
        SharedModelParams.from_params(params["shared"])


def test_missing_keys_are_named_not_guessed():
    params = parameters()
    del params["shared"]["resume"]
    with pytest.raises(ValueError, match=r"Missing latent_diffusion.shared parameters: 'resume'"):
        settings(params, "masks")
    with pytest.raises(ValueError, match=r"Missing latent_diffusion.images parameters: 'mode'"):
        RoleParams.from_params({"train_slices": "all"}, "images")
    with pytest.raises(ValueError, match="train_slices must be one of"):
        RoleParams.from_params({"mode": "seg", "train_slices": "lesions"}, "masks")


def test_deep_merge_does_not_modify_its_inputs():
    base = {"a": {"b": 1, "c": 2}}
    merged = deep_merge(base, {"a": {"b": 5}})
    assert merged == {"a": {"b": 5, "c": 2}} and base == {"a": {"b": 1, "c": 2}}


def test_a_latent_role_is_completed_from_the_autoencoders_record():
    from medgen.generation import with_latent_space

    params = parameters()
    params["images"] = {**params["images"], "space": "latent", "resolution": 64}
    s = settings(params, "images")
    assert (s.space, s.resolution, s.combination) == ("latent", 64, "rflow_bravo_latent")
    record = {
        "latent_channels": 3,
        "downsample_factor": 4,
        "scale_factor": 0.7,
        "per_channel": True,
    }
    latent = with_latent_space(s, record)
    assert latent.task_config["space"] == {"name": "latent", **record}
    assert latent.checkpoint_dir == s.checkpoint_dir  # named after the latent combination
    assert "rflow_bravo_latent" in str(s.checkpoint_dir)
    masks = settings(params, "masks")
    assert with_latent_space(masks, None) is masks  # pixel roles need no autoencoder
    with pytest.raises(ValueError, match="run `kedro run --pipelines autoencoder` first"):
        with_latent_space(s, None)
    with pytest.raises(ValueError, match="not a multiple"):
        with_latent_space(s, {**record, "downsample_factor": 3})
    with pytest.raises(ValueError, match=r"lacks \['per_channel'\]"):
        with_latent_space(s, {k: v for k, v in record.items() if k != "per_channel"})
    params["images"]["space"] = "voxel"
    with pytest.raises(ValueError, match="space must be one of"):
        settings(params, "images")

"""Node-level tests of latent_diffusion with tiny, untrained networks (no Kedro session)."""

from __future__ import annotations

import pytest
import torch

from medgen.datasets import TensorBundle
from medgen.diffusion import build_task
from medgen.generation import to_model_bundle
from medgen.pipelines.latent_diffusion import nodes
from tests.conf_parameters import base_parameters, overridden
from tests.generation.synthetic_slices import MODALITIES, synthetic_slices

TINY = {
    "shared": {
        "resolution": 8,
        "backbone": {
            "channels": [8, 16],
            "attention_levels": [False, False],
            "num_head_channels": 8,
            "norm_num_groups": 8,
        },
        "strategies": {"rflow": {"num_inference_steps": 2}},
    },
    "generation": {"n_images": 3, "batch_size": 2, "max_mask_rounds": 1, "grid_columns": 2},
}


@pytest.fixture
def settings() -> dict:
    return overridden(base_parameters("latent_diffusion", "latent_diffusion"), TINY)


def generate(masks, images, slices, settings):
    return nodes.generate_samples(
        masks,
        images,
        slices,
        settings["masks"],
        settings["images"],
        settings["shared"],
        settings["generation"],
        None,
        None,
    )


def tiny_model(mode: str, settings: dict):
    config = {
        "strategy": {"name": "rflow", "num_inference_steps": 2},
        "mode": mode,
        "modalities": MODALITIES,
    }
    torch.manual_seed(0)
    backbone = settings["shared"]["backbone"]
    state = build_task(config).build_model(backbone).state_dict()
    bundle = to_model_bundle(
        state,
        state,
        task_config=config,
        backbone=backbone,
        info={"resolution": 8, "pixel_spacing_mm": 12.0, "steps": 5},
    )
    return {bundle.metadata["combination"]: lambda: bundle}


def test_generate_samples_writes_every_output_per_combination(settings):
    settings["images"]["mode"] = "dual"
    samples, niftis, grids, report = generate(
        tiny_model("seg", settings),
        tiny_model("dual", settings),
        synthetic_slices(n=6, size=16),
        settings,
    )
    assert sorted(samples) == ["rflow_dual", "rflow_seg"]
    dual = samples["rflow_dual"]
    assert dual["images"].shape == (3, 2, 8, 8)
    assert dual.metadata["target_names"] == ["t1_pre", "t1_gd"]
    assert torch.equal(dual["masks"], samples["rflow_seg"]["masks"])
    # dual: two images and a mask per sample; seg: the mask only
    assert len([k for k in niftis if k.startswith("rflow_dual/")]) == 3 * 3
    assert (
        sorted(k for k in niftis if k.startswith("rflow_seg/"))[0]
        == "rflow_seg/nifti/sample-0000-mask"
    )
    assert set(grids) == {
        "rflow_seg/grid_generated",
        "rflow_dual/grid_generated",
        "rflow_dual/grid_real",
        "rflow_dual/grid_comparison",
    }
    assert report["samplers"]["rflow_dual"] == {
        "sampler": "euler",
        "num_steps": 2,
        "network_evaluations": 2,
    }
    assert report["n_images"] == 3 and report["files"]["nifti"] == 12
    assert 0 <= report["empty_masks"] <= 3


def test_generate_samples_names_a_missing_model(settings):
    with pytest.raises(KeyError, match="rflow_bravo"):
        generate(tiny_model("seg", settings), {}, synthetic_slices(n=2), settings)


def test_a_misspelt_generation_key_is_refused_with_a_hint(settings):
    settings["generation"]["n_image"] = 3
    with pytest.raises(ValueError, match=r"'n_image' \(did you mean 'n_images'\?\)"):
        generate(
            tiny_model("seg", settings),
            tiny_model("bravo", settings),
            synthetic_slices(n=2),
            settings,
        )


def test_summary_contents():
    def report(combo, role, loss):
        return {
            "combination": combo,
            "role": role,
            "steps": 10,
            "steps_this_run": 4,
            "epochs": 2.5,
            "final_loss": loss,
            "final_epoch_loss": loss + 0.1,
            "images_per_second": 40.0,
            "train_slices": 12,
            "resolution": 32,
            "seconds": 3.0,
            "history": [{"kind": "step", "step": 10, "loss": loss}],
        }

    generation = {
        "mask_combination": "rflow_seg",
        "image_combination": "rflow_bravo",
        "samplers": {"rflow_bravo": {"sampler": "euler", "num_steps": 30}},
        "files": {"nifti": 48},
        "seconds": 7.5,
    }
    checks = base_parameters("latent_diffusion", "latent_diffusion", "demo_checks")
    summary = nodes.summarise_run(
        {"rflow_seg": lambda: report("rflow_seg", "masks", 0.2), "ddpm_seg": lambda: 1 / 0},
        {"rflow_bravo": lambda: report("rflow_bravo", "images", 0.1)},
        {**generation, "lesion_contrast": {}},
        {"rflow_bravo": lambda: TensorBundle({"images": torch.zeros(2, 1, 8, 8)})},
        synthetic_slices(n=2),
        synthetic_slices(n=2),
        {**checks, "enabled": False},
    )
    assert summary["demo_checks"] == {"status": "not run", "reason": "demo_checks.enabled is false"}
    assert summary["combinations"] == ["rflow_seg", "rflow_bravo"]
    assert summary["training"]["rflow_bravo"]["final_loss"] == 0.1
    assert summary["training"]["rflow_seg"]["steps"] == 10
    assert "history" not in summary["training"]["rflow_seg"]
    assert summary["generation"]["samplers"]["rflow_bravo"]["num_steps"] == 30
    assert summary["seconds"]["generate"] == 7.5 and summary["seconds"]["train_rflow_seg"] == 3.0


def test_lr_finder_node_writes_nothing_unless_enabled(settings):
    args = (settings["masks"], settings["shared"], settings["lr_finder"], None, None)
    assert nodes.find_learning_rate(synthetic_slices(n=4), *args, role="masks") == ({}, {})
    settings["lr_finder"]["num_step"] = 4
    with pytest.raises(ValueError, match=r"lr_finder.*'num_step' \(did you mean 'num_steps'\?\)"):
        nodes.find_learning_rate(synthetic_slices(n=4), *args, role="masks")

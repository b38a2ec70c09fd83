"""The inpainting diffusion model through the one training job: a run resumed from a step-2
checkpoint equals the uninterrupted run, validation scores with the leaderboard scorer, and the
best weights are the EMA of best.pt."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from medgen.autoencoder.loading import load_autoencoder
from medgen.autoencoder.training_3d import train_patch_volume_stage1
from medgen.inpainting.cases import CaseConfig, build_inpainting_cases, population_tissue_prior
from medgen.inpainting.diffusion_training import best_weights, train_inpainting_diffusion
from medgen.inpainting.model_input import encode_model_input, subject_volumes
from medgen.inpainting.params import DiffusionParams
from medgen.training.checkpoint import LATEST, kept_name
from tests.inpainting.test_cases import cohort

PARAMS = {
    "strategy": "ddpm",
    "strategies": {
        "ddpm": {"num_train_timesteps": 100, "sampler": "ddim", "prediction_type": "v_prediction",
                 "clip_sample": False},
    },
    "backbone": {"name": "diffusion_unet", "spatial_dims": 3, "channels": [8, 8],
                 "attention_levels": [False, False], "num_res_blocks": 1,
                 "num_head_channels": 8, "norm_num_groups": 8},
    "conditioning_mix": {"none": 0.2, "honest": 0.4, "oracle": 0.4},
    "region_dilation": 1,
    "training": {"max_steps": 4, "batch_size": 2, "lr": 1e-3, "ema_decay": 0.9,
                 "val_every": 2, "early_stopping_metric": "ssim", "early_stopping_mode": "max",
                 "keep_every": 2, "log_every": 1, "progress": False, "seed": 0},
    "validation": {"cases": 1, "num_steps": 2},
    "resources": None,
    "torch_threads": 1,
}  # fmt: skip
AUTOENCODER = {
    "modalities": None,
    "autoencoder": {"channels": [8, 8], "downsample_factor": 4, "latent_channels": 2,
                    "patch_size": 8, "vq": {"enabled": False}},
    "discriminator": {"enabled": False},
    "stage1": {"crops_per_volume": 2, "training": {"max_steps": 1, "batch_size": 2,
               "progress": False}, "perceptual": {"enabled": False}},
    "stage2": {"training": {"max_steps": 1}},
    "validation": {"batch_size": 1, "tile_size": None},
    "resources": None,
}  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inpainting_job")
    records = cohort(tmp, n_masks=(2, 2))
    cases, _ = build_inpainting_cases(
        records, ["S-0", "S-1"], CaseConfig(size=(16, 16, 16)), "train"
    )
    weights, _ = train_patch_volume_stage1(
        subject_volumes(cases), subject_volumes(cases), AUTOENCODER, tmp / "ae"
    )
    prior = population_tissue_prior(cases)
    model_input = encode_model_input(load_autoencoder(weights), cases, prior, batch_size=2)
    return tmp, cases, model_input, weights


def run(inputs, folder: Path):
    _, cases, model_input, weights = inputs
    return train_inpainting_diffusion(
        model_input, model_input, cases, weights, DiffusionParams.from_params(PARAMS), folder
    )


def test_a_resumed_run_equals_the_uninterrupted_one(inputs):
    tmp = inputs[0]
    straight, _ = run(inputs, tmp / "straight")
    # interrupt: the step-2 checkpoint becomes latest.pt, as if the run had died after step 2
    folder = tmp / "resumed"
    run(inputs, folder)
    shutil.copy(folder / kept_name(2), folder / LATEST)
    resumed, _ = run(inputs, folder)
    assert resumed.resumed_from_step == 2 and not resumed.skipped
    a, b = straight.result, resumed.result
    assert a.steps == b.steps == 4
    for key, value in a.model_state.items():
        assert torch.equal(value, b.model_state[key]), key
    for key, value in a.ema_state.items():
        assert torch.equal(value, b.ema_state[key]), key
    assert [r for r in a.history if r["kind"] == "val"] == [
        r for r in b.history if r["kind"] == "val"
    ]


def test_validation_scores_and_best_weights(inputs):
    tmp = inputs[0]
    outcome, task_config = run(inputs, tmp / "straight")
    vals = [r for r in outcome.result.history if r["kind"] == "val"]
    assert len(vals) == 2 and all(0.0 <= r["ssim"] <= 1.0 and r["image_mse"] >= 0 for r in vals)
    assert outcome.result.best_metric == max(r["ssim"] for r in vals)
    weights, which = best_weights(outcome.result)
    assert which == "best" and set(weights) == set(outcome.result.model_state)
    assert task_config["mode_options"]["region_dilation"] == 1
    assert task_config["space"]["scale_factor"] == inputs[2].metadata["scale_factor"]

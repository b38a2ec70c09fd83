"""The inpainting pipeline's training jobs: the t1n autoencoder, the latent diffusion model and
the U-Net baseline, on cases of ``inpainting.cases.size``.

Options come from the pipeline's own code (`medgen.inpainting.params.DiffusionParams`,
`medgen.inpainting.diffusion_training.task_config`, `UNetBaselineNetwork`); models from the job
factories (`build_stage_task`, `build_inpainting_task`, `build_unet_baseline_task`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch

from medgen.autoencoder.gan import build_autoencoder_gan
from medgen.autoencoder.patch_volume_params import resolve_params
from medgen.autoencoder.patch_volume_weights import weights_bundle
from medgen.check_config.jobs import JobProbe, parameters_on_meta, zeros
from medgen.check_config.jobs_autoencoder import patch_volume_jobs
from medgen.config import config_to_dict
from medgen.datasets import TensorBundle
from medgen.inpainting import diffusion_training, unet_baseline
from medgen.inpainting.params import CONDITIONINGS, DiffusionParams
from medgen.models.patch_volume_autoencoder import build_patch_volume_autoencoder
from medgen.training import TrainingConfig

PIPELINE = "inpainting"


def autoencoder_weights(job_params: Mapping[str, Any], on_meta: bool = True) -> TensorBundle:
    """A weights bundle of the t1n autoencoder as stage 1 would save it: meta tensors, or
    random weights (``on_meta`` false: for a real step, benchmarks/gpu_check.py)."""
    resolved = resolve_params(job_params, 1)
    with parameters_on_meta() if on_meta else nullcontext():
        model = build_patch_volume_autoencoder(resolved.autoencoder.to_dict(), in_channels=1)
        gan = build_autoencoder_gan(
            model,
            discriminator=resolved.discriminator.to_dict(),
            loss={},
            perceptual={"enabled": False},  # not part of the saved weights
        )
        state = gan.state_dict()
        return weights_bundle(
            state, state, resolved, in_channels=1, modalities=["t1n"], source="raw"
        )


def latent_grid(job_params: Mapping[str, Any], size: list[int]) -> tuple[int, list[int]]:
    """(latent channels, latent spatial size) of a t1n case of ``size``."""
    resolved = resolve_params(job_params, 1)
    with torch.device("meta"):
        model = build_patch_volume_autoencoder(resolved.autoencoder.to_dict(), in_channels=1)
        latent = model.encode(torch.empty(1, 1, *size))
    return int(latent.shape[1]), [int(s) for s in latent.shape[2:]]


def diffusion_job(params: Mapping[str, Any], meta_weights: bool = True) -> JobProbe:
    """The latent diffusion model (``inpainting.diffusion``); its frozen autoencoder's weights
    on the meta device unless ``meta_weights`` is false."""
    block = params[PIPELINE]
    options = DiffusionParams.from_params(block["diffusion"])
    size = [int(s) for s in block["cases"]["size"]]
    channels, grid = latent_grid(block["autoencoder"], size)
    latent_meta = {
        "scale_factor": 1.0,
        "latent_channels": channels,
        "downsample_factor": size[0] // grid[0],
        "conditionings": list(CONDITIONINGS),
    }
    config = TrainingConfig.from_dict(options.training)
    task_config = diffusion_training.task_config(options, TensorBundle({}, latent_meta))

    def data() -> dict[str, TensorBundle]:
        latents = zeros((1, channels, *grid))
        mask = zeros((1, 1, *size), torch.uint8)
        model_input = TensorBundle(
            {
                "latents": latents,
                "voided": latents,
                "mask": mask,
                "score_mask": mask,
                **{f"conditioning_{v}": zeros((1, 4, *grid)) for v in CONDITIONINGS},
            },
            latent_meta,
        )
        volume = zeros((1, 1, *size))
        cases = TensorBundle({"t1n": volume, "voided": volume, "mask": mask, "score_mask": mask})
        return {
            "train": model_input,
            "val": model_input,
            "val_cases": cases,
            "autoencoder": autoencoder_weights(block["autoencoder"], on_meta=meta_weights),
        }

    grid_text = " x ".join(str(s) for s in [channels, *grid])
    return JobProbe(
        pipeline=PIPELINE,
        model=f"diffusion UNet on {grid_text} latents",
        factory=diffusion_training.build_inpainting_task,
        data=data,
        options={
            "task_config": task_config,
            "backbone": dict(options.backbone),
            "conditioning_mix": dict(options.conditioning_mix),
            "validation_steps": options.validation.num_steps,
            "seed": config.seed,
            "device": "meta",  # where the factory puts the frozen autoencoder
        },
        training=config,
        resources=options.resources,
    )


def unet_baseline_job(params: Mapping[str, Any]) -> JobProbe:
    """The deterministic 3D U-Net baseline on whole cases (``inpainting.unet_baseline``)."""
    block = params[PIPELINE]["unet_baseline"]
    size = [int(s) for s in params[PIPELINE]["cases"]["size"]]
    network = unet_baseline.UNetBaselineNetwork.from_params(block["network"])
    config = TrainingConfig.from_dict(block["training"])

    def data() -> dict[str, TensorBundle]:
        volume, mask = zeros((1, 1, *size)), zeros((1, 1, *size), torch.uint8)
        tensors = {"t1n": volume, "voided": volume, "mask": mask, "score_mask": mask}
        if block["use_conditioning"]:
            tensors[unet_baseline.CONDITIONING_KEY] = zeros((1, 4, *size))
        return {"cases": TensorBundle(tensors)}

    return JobProbe(
        pipeline=PIPELINE,
        model="3D U-Net baseline (whole cases)",
        factory=unet_baseline.build_unet_baseline_task,
        data=data,
        options={
            "network": config_to_dict(network),
            "use_conditioning": bool(block["use_conditioning"]),
            "seed": config.seed,
        },
        training=config,
        resources=block.get("resources"),
    )


def inpainting_jobs(params: Mapping[str, Any], meta_weights: bool = True) -> list[JobProbe]:
    """Every training job of the inpainting pipeline (its autoencoder trains stage 1 only);
    ``meta_weights``: see `diffusion_job`."""
    block = params[PIPELINE]
    size = tuple(int(s) for s in block["cases"]["size"])
    return [
        *patch_volume_jobs(
            block["autoencoder"],
            pipeline=PIPELINE,
            model="t1n patch-volume autoencoder",
            volume_shape=(1, *size),
            stages=(1,),
        ),
        diffusion_job(params, meta_weights),
        unet_baseline_job(params),
    ]

"""latent_diffusion's training jobs: the two 2D models of the chain and the 3D class DiT.

The 2D roles are resolved by `medgen.generation.model_settings` (what the nodes call) and
built by `medgen.generation.training_job.build_diffusion_task`; the DiT by
`medgen.generation.class_conditional_3d` (`build_class_task`, `backbone_for`,
`build_generator_task`) on latents of the shape the autoencoder pipeline's 3D model gives the
configured volumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from medgen import generation
from medgen.autoencoder.patch_volume_params import resolve_params
from medgen.check_config.jobs import JobProbe, modalities_of, zeros
from medgen.datasets import TensorBundle
from medgen.generation import class_conditional_3d as class_3d
from medgen.generation.settings import ROLES
from medgen.generation.training_job import build_diffusion_task
from medgen.models.patch_volume_autoencoder import PatchVolumeAutoencoder
from medgen.training import TrainingConfig


def diffusion_2d_jobs(params: Mapping[str, Any]) -> list[JobProbe]:
    """The ``masks`` and ``images`` models on slices at their training resolution."""
    block = params["latent_diffusion"]
    modalities = modalities_of(params, "slices")
    probes = []
    for role in ROLES:
        s = generation.model_settings(role, block[role], block["shared"], modalities)
        size = s.resolution
        notes: tuple[str, ...] = ()
        if s.space != "pixel":
            notes = ("latent space: the check measures the network at the pixel grid",)

        def data(size: int = size) -> dict[str, TensorBundle]:
            images = zeros((1, len(modalities), size, size))
            return {"slices": TensorBundle({"images": images, "seg": zeros((1, 1, size, size))})}

        config = TrainingConfig.from_dict(s.training)
        pixel_task = {**s.task_config, "space": {"name": "pixel"}}
        probes.append(
            JobProbe(
                pipeline="latent_diffusion",
                model=f"2D {role} model {s.combination} ({size}²)",
                factory=build_diffusion_task,
                data=data,
                options={"task_config": pixel_task, "backbone": s.backbone, "seed": config.seed},
                training=config,
                resources=s.resources,
                notes=notes,
            )
        )
    return probes


def latent_grid(params: Mapping[str, Any]) -> tuple[int, list[int]]:
    """(latent channels, latent spatial size) the autoencoder pipeline's 3D model gives the
    configured volumes: its encoder run on a meta tensor of their shape."""
    job = params["autoencoder"]["patch_volume"]
    resolved = resolve_params(job, 1)
    channels = len(job.get("modalities") or modalities_of(params, "volumes"))
    size = [int(s) for s in params["volumes"]["size"]]
    with torch.device("meta"):
        autoencoder = PatchVolumeAutoencoder(3, channels, resolved.autoencoder)
        latent = autoencoder.encode(torch.empty(1, channels, *size))
    return int(latent.shape[1]), [int(s) for s in latent.shape[2:]]


def class_generator_job(params: Mapping[str, Any]) -> JobProbe:
    """The class-conditional DiT on the 3D latents (``latent_diffusion.volumes.generator``)."""
    settings = class_3d.ClassConditionalParams.from_params(
        params["latent_diffusion"]["volumes"]["generator"]
    )
    channels, spatial = latent_grid(params)
    job = params["autoencoder"]["patch_volume"]
    metadata = {
        "scale_factor": 1.0,
        "latent_channels": channels,
        "downsample_factor": resolve_params(job, 1).autoencoder.downsample_factor,
        "per_channel": False,
        "modalities": list(job.get("modalities") or modalities_of(params, "volumes")),
    }
    task = class_3d.build_class_task(settings, metadata, channels)
    backbone = task.backbone_config(class_3d.backbone_for(settings.backbone, spatial))
    config = TrainingConfig.from_dict(settings.training)
    label_key = settings.label_key

    def data() -> dict[str, TensorBundle]:
        latents = zeros((1, channels, *spatial))
        return {"latents": TensorBundle({"latents": latents, label_key: zeros((1,), torch.long)})}

    grid = " x ".join(str(s) for s in [channels, *spatial])
    return JobProbe(
        pipeline="latent_diffusion",
        model=f"3D class-conditional {backbone.get('name', 'dit')} on {grid} latents",
        factory=class_3d.build_generator_task,
        data=data,
        options={
            "task_config": task.to_config(),
            "backbone": backbone,
            "label_key": label_key,
            "seed": config.seed,
        },
        training=config,
        resources=None,  # the generator's job takes no resources (ClassConditionalParams)
    )


def latent_diffusion_jobs(params: Mapping[str, Any]) -> list[JobProbe]:
    """Every training job of the latent_diffusion pipeline."""
    return [*diffusion_2d_jobs(params), class_generator_job(params)]

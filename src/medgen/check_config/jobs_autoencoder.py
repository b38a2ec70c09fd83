"""The autoencoder pipeline's training jobs: the 2D VAE-GAN's phases and the 3D stages.

Options are derived exactly as `medgen.autoencoder.training_2d.train_autoencoder_2d` and
`medgen.autoencoder.training_3d` derive them; the models come from their job factories
(`build_phase_task`, `build_stage_task`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medgen.autoencoder import training_2d, training_3d
from medgen.autoencoder.patch_volume_params import resolve_params
from medgen.autoencoder.progressive import parse_phases, phase_training_config
from medgen.check_config.jobs import JobProbe, adversarial_from_step_0, modalities_of, zeros
from medgen.datasets import TensorBundle


def autoencoder_2d_jobs(params: Mapping[str, Any]) -> list[JobProbe]:
    """One probe per progressive phase of ``autoencoder.autoencoder_2d``: the single-channel
    images of the slices (``slices.size``²)."""
    p = training_2d.AutoencoderJob2DParams.from_dict(params["autoencoder"]["autoencoder_2d"])
    size = int(params["slices"]["size"])
    training = {"seed": 0, **p.training}
    phases = parse_phases(p.phases)
    common = {
        "autoencoder": p.autoencoder,
        "discriminator": p.discriminator,
        "loss": p.loss,
        "perceptual": p.perceptual,
        "seed": training["seed"],
        "accum_steps": phase_training_config(training, phases[0]).accum_steps,
    }

    def data() -> dict[str, TensorBundle]:
        return {"images": TensorBundle({"images": zeros((1, 1, size, size))})}

    common, notes = adversarial_from_step_0(common)
    probes = []
    for index, phase in enumerate(phases):
        probes.append(
            JobProbe(
                pipeline="autoencoder",
                model=f"2D VAE-GAN, phase {index} ({phase.resolution}²)",
                factory=training_2d.build_phase_task,
                data=data,
                options={
                    **common,
                    "resolution": list(phase.size(2)),
                    "phase_name": phase.name(index),
                },
                training=phase_training_config(training, phase),
                resources=p.resources,
                notes=notes,
            )
        )
    return probes


def patch_volume_jobs(
    job_params: Mapping[str, Any],
    *,
    pipeline: str,
    model: str,
    volume_shape: tuple[int, ...],
    stages: tuple[int, ...] = (1, 2),
) -> list[JobProbe]:
    """The patch-volume autoencoder's stages on volumes ``[C, *spatial]`` = ``volume_shape``
    (stage 1: random patches, stage 2: whole volumes)."""

    def data() -> dict[str, TensorBundle]:
        volumes = TensorBundle({"images": zeros((1, *volume_shape))})
        return {"train": volumes, "val": volumes}

    probes = []
    for stage in stages:
        resolved = resolve_params(job_params, stage)
        what = "random patches" if stage == 1 else "whole volumes"
        options, notes = adversarial_from_step_0(resolved.worker_kwargs())
        probes.append(
            JobProbe(
                pipeline=pipeline,
                model=f"{model}, stage {stage} ({what})",
                factory=training_3d.build_stage_task,
                data=data,
                options={**options, "validation_batch_size": resolved.validation.batch_size},
                training=resolved.training,
                resources=resolved.resources,
                notes=notes,
            )
        )
    return probes


def autoencoder_jobs(params: Mapping[str, Any]) -> list[JobProbe]:
    """Every training job of the autoencoder pipeline."""
    job = params["autoencoder"]["patch_volume"]
    channels = len(job.get("modalities") or modalities_of(params, "volumes"))
    shape = (channels, *[int(s) for s in params["volumes"]["size"]])
    return autoencoder_2d_jobs(params) + patch_volume_jobs(
        job, pipeline="autoencoder", model="3D patch-volume autoencoder", volume_shape=shape
    )

"""Generated volumes: class-conditional DiT latents, decoded (whole or tiled), as NIfTI files.

What the ``latent_diffusion.volumes`` nodes call after training
(`medgen.generation.class_conditional_3d`): sample latents per class, decode them with the
autoencoder pipeline's 3D model, whole or tile by tile through `decode_tiled` (peak memory
depends on the tile, not on the volume; docs/benchmarks.md), and package them. Every channel of every volume is one
NIfTI file, ``<class>/<modality>/sample_<k>`` under
``data/07_model_output/latent_diffusion_3d/nifti``, with the real volumes' voxel spacing and
an affine centred on the origin.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from medgen.autoencoder.figures import volume_grid
from medgen.autoencoder.latents import select_channels
from medgen.autoencoder.tiled import decode_tiled
from medgen.config import config_tree_from_params, require_positive_ints
from medgen.datasets import TensorBundle
from medgen.generation.class_conditional_3d import (
    ClassConditionalParams,
    generate_class_conditional,
)
from medgen.generation.nifti import volume_to_nifti
from medgen.metrics.images import side_by_side, titled
from medgen.training.tracking import active_mlflow

MLFLOW_PREFIX = "latent_diffusion_3d"


@dataclass(frozen=True)
class VolumeGenerationParams:
    """``latent_diffusion.volumes.generation`` (values in conf/base).

    n_per_class: volumes generated per class.
    seed: seeds the initial noise.
    tile_size: latent tile side for decoding (latent voxels), or null: decode whole volumes,
        one at a time. Tiles bound the memory of large volumes; at the demo's 48x56x48 a whole
        volume decodes ~30x faster than 8³ tiles with their halo and needs less memory
        (docs/benchmarks.md, tiled decoding memory).
    overlap: fraction of a tile shared with its neighbour; `decode_tiled` decodes each tile
        with the decoder's halo, so tiles need no overlap to be exact (0.0).
    """

    n_per_class: int
    seed: int
    tile_size: int | None
    overlap: float

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> VolumeGenerationParams:
        config = config_tree_from_params(cls, params, "latent_diffusion.volumes.generation")
        if config.tile_size is not None:
            require_positive_ints(config, "latent_diffusion.volumes.generation", "tile_size")
        if not 0.0 <= config.overlap < 1.0:
            raise ValueError(
                f"latent_diffusion.volumes.generation.overlap must be in [0, 1), "
                f"got {config.overlap!r}"
            )
        return config


@dataclass
class VolumeOutputs:
    niftis: dict[str, Any] = field(default_factory=dict)
    samples: TensorBundle | None = None
    figures: dict[str, Image.Image] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


def generate_volumes(
    generator: TensorBundle,
    autoencoder: Any,
    real: TensorBundle,
    params: VolumeGenerationParams | Mapping[str, Any],
    generator_params: ClassConditionalParams | Mapping[str, Any],
) -> VolumeOutputs:
    """Sample ``n_per_class`` latents per class, decode them (tiled) and package the results.

    ``generator``: the weights of `train_class_conditional_generator` (its metadata names the
    classes and the label key); ``generator_params``: its parameters (sampling, threads).
    ``real`` (a volumes bundle, e.g. the validation split) gives the voxel spacing, the
    modality names and the comparison figure.
    """
    config = (
        params
        if isinstance(params, VolumeGenerationParams)
        else VolumeGenerationParams.from_params(params)
    )
    classes = list(generator.metadata["classes"])
    label_key = str(generator.metadata["label_key"])
    start = time.perf_counter()
    latents, labels = generate_class_conditional(
        generator, config.n_per_class, generator_params, seed=config.seed
    )
    sampled = time.perf_counter()
    with torch.no_grad():
        if config.tile_size is None:
            autoencoder.eval()
            volumes = torch.cat([autoencoder.decode(z[None]) for z in latents])
        else:
            volumes = decode_tiled(autoencoder, latents, config.tile_size, config.overlap)
    volumes = volumes.clamp(-1.0, 1.0)
    decoded = time.perf_counter()
    modalities = list(generator.metadata.get("modalities") or real.metadata["modalities"])
    if volumes.shape[1] != len(modalities):
        raise ValueError(
            f"decoded volumes have {volumes.shape[1]} channels but the generator's data had "
            f"modalities {modalities}"
        )
    spacing = real.metadata.get("voxel_spacing_mm") or [1.0, 1.0, 1.0]
    out = VolumeOutputs()
    counters: dict[int, int] = {}
    for volume, label in zip(volumes, labels.tolist(), strict=True):
        k = counters[label] = counters.get(label, -1) + 1
        for channel, modality in enumerate(modalities):
            key = f"{classes[label]}/{modality}/sample_{k:03d}"
            out.niftis[key] = volume_to_nifti(
                volume[channel], spacing, f"medgen DiT-3D {classes[label]} {modality}"
            )
    decoding = {"tile_size": config.tile_size, "overlap": config.overlap}
    out.samples = TensorBundle(
        {"images": volumes.contiguous(), label_key: labels.to(torch.int64)},
        {
            "modalities": modalities,
            "voxel_spacing_mm": spacing,
            "intensity_range": [-1.0, 1.0],
            "classes": {str(k): name for k, name in enumerate(classes)},
            "label_key": label_key,
            "decoding": decoding,
            "seed": config.seed,
        },
    )
    captions = [f"generated {classes[label]}" for label in labels.tolist()]
    real_images, _ = select_channels(real, modalities)
    n_real = min(len(real_images), len(volumes))
    real_captions = (
        [f"real ({classes[int(v)]})" for v in real[label_key][:n_real].tolist()]
        if label_key in real.tensors
        else None
    )
    out.figures["generated_volumes"] = side_by_side(
        titled(volume_grid(volumes, captions), f"generated ({modalities[0]})"),
        titled(
            volume_grid(real_images[:n_real], real_captions), f"real validation ({modalities[0]})"
        ),
    )
    out.report = {
        "n_volumes": int(len(volumes)),
        "per_class": {classes[k]: v + 1 for k, v in sorted(counters.items())},
        "shape": list(volumes.shape[1:]),
        "latent_shape": list(latents.shape[1:]),
        "modalities": modalities,
        "voxel_spacing_mm": spacing,
        "nifti_files": len(out.niftis),
        "seconds": round(decoded - start, 2),
        "sampling_seconds": round(sampled - start, 2),
        "decoding_seconds": round(decoded - sampled, 2),
        "decoding": decoding,
    }
    return out


GENERATOR_KEYS = (
    "steps",
    "final_loss",
    "seconds",
    "parameters",
    "class_counts",
    "resumed_from_step",
)
GENERATION_KEYS = (
    "n_volumes",
    "per_class",
    "shape",
    "latent_shape",
    "nifti_files",
    "seconds",
    "sampling_seconds",
    "decoding_seconds",
)


def volumes_summary(
    generator_report: Mapping[str, Any], generation_report: Mapping[str, Any], seconds: float | None
) -> dict[str, Any]:
    """The 3D role's ``summary.json``: the generator's training and the volumes it generated
    (the reports without their histories), plus the run's wall time so far."""
    return {
        "generator": {k: generator_report[k] for k in GENERATOR_KEYS if k in generator_report},
        "generation": {k: generation_report[k] for k in GENERATION_KEYS if k in generation_report},
        "run_seconds": None if seconds is None else round(seconds, 1),
    }


def log_volumes_summary_to_mlflow(summary: Mapping[str, Any]) -> bool:
    """Log ``latent_diffusion_3d/<generator|generation>/<number>`` when a run is active."""
    mlflow = active_mlflow()
    if mlflow is None:
        return False
    metrics = {
        f"{MLFLOW_PREFIX}/{part}/{key}": float(value)
        for part in ("generator", "generation")
        for key, value in summary[part].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    mlflow.log_metrics(metrics)
    return True

"""Generated volumes: class-conditional DiT latents, decoded tile by tile, as NIfTI files.

Decoding goes through `decode_tiled`, so its peak memory depends on the tile, not on the
volume (docs/benchmarks.md). Every channel of every volume is one NIfTI file,
``<class>/<modality>/sample_<k>`` under ``data/07_model_output/autoencoder_3d/nifti``, with
the real volumes' voxel spacing and an affine centred on the origin.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from medgen.autoencoder.figures import reconstruction_grid, volume_grid
from medgen.autoencoder.latents import select_channels
from medgen.autoencoder.tiled import decode_tiled
from medgen.config import refuse_unknown_keys
from medgen.datasets import TensorBundle
from medgen.generation.class_conditional_3d import generate_class_conditional
from medgen.generation.grids import side_by_side, titled
from medgen.generation.nifti import volume_to_nifti

CLASS_NAMES = {0: "lesion_absent", 1: "lesion_present"}


@dataclass(frozen=True)
class VolumeGenerationConfig:
    """``generation_3d`` parameters.

    n_per_class: volumes generated per class (default 2).
    seed: seeds the initial noise (default 0).
    tile_size: latent tile side for decoding (default 8 latent voxels).
    overlap: fraction of a tile shared with its neighbour (default 0.0: `decode_tiled` decodes
        each tile with the decoder's halo, so tiles need no overlap to be exact).
    """

    n_per_class: int = 2
    seed: int = 0
    tile_size: int = 8
    overlap: float = 0.0


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
    options: Mapping[str, Any],
    generator_params: Mapping[str, Any] | None = None,
) -> VolumeOutputs:
    """Sample ``n_per_class`` latents per class, decode them (tiled) and package the results.

    ``real`` (a volumes bundle, e.g. the validation split) gives the voxel spacing, the
    modality names and the comparison figure.
    """
    refuse_unknown_keys(VolumeGenerationConfig, dict(options), "autoencoder.generation_3d")
    config = VolumeGenerationConfig(**dict(options))
    start = time.perf_counter()
    latents, labels = generate_class_conditional(
        generator, config.n_per_class, generator_params, seed=config.seed
    )
    sampled = time.perf_counter()
    with torch.no_grad():
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
            key = f"{CLASS_NAMES.get(label, f'class_{label}')}/{modality}/sample_{k:03d}"
            out.niftis[key] = volume_to_nifti(
                volume[channel], spacing, f"medgen DiT-3D {CLASS_NAMES.get(label)} {modality}"
            )
    out.samples = TensorBundle(
        {"images": volumes.contiguous(), "lesion_present": labels.to(torch.int64)},
        {
            "modalities": modalities,
            "voxel_spacing_mm": spacing,
            "intensity_range": [-1.0, 1.0],
            "classes": {str(k): v for k, v in CLASS_NAMES.items()},
            "decoding": {"tile_size": config.tile_size, "overlap": config.overlap},
            "seed": config.seed,
        },
    )
    captions = [f"generated {CLASS_NAMES.get(label)}" for label in labels.tolist()]
    real_images, _ = select_channels(real, modalities)
    n_real = min(len(real_images), len(volumes))
    real_captions = (
        [f"real ({CLASS_NAMES.get(int(v))})" for v in real["lesion_present"][:n_real].tolist()]
        if "lesion_present" in real.tensors
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
        "per_class": {CLASS_NAMES.get(k, str(k)): v + 1 for k, v in sorted(counters.items())},
        "shape": list(volumes.shape[1:]),
        "latent_shape": list(latents.shape[1:]),
        "modalities": modalities,
        "voxel_spacing_mm": spacing,
        "nifti_files": len(out.niftis),
        "seconds": round(decoded - start, 2),
        "sampling_seconds": round(sampled - start, 2),
        "tiled_decoding_seconds": round(decoded - sampled, 2),
        "decoding": {"tile_size": config.tile_size, "overlap": config.overlap},
    }
    return out


@torch.no_grad()
def reconstruction_figure(
    autoencoder: Any,
    val: TensorBundle,
    *,
    per_channel: bool,
    modalities: list[str] | None = None,
    n: int = 8,
) -> Image.Image:
    """Validation inputs above their posterior-mean reconstructions (first channel; 3D:
    orthogonal views of the first volumes). ``modalities``: the autoencoder's input channels."""
    images = select_channels(val, modalities)[0][:n]
    if per_channel:
        images = images[:, :1]
    recon = autoencoder.decode(autoencoder.encode(images)).clamp(-1, 1)
    if images.ndim == 5:
        count = min(2, len(images))
        return side_by_side(
            titled(volume_grid(images[:count]), "validation volumes"),
            titled(volume_grid(recon[:count]), "reconstructions"),
        )
    return titled(
        reconstruction_grid(images, recon), "validation slices (top), reconstructions (bottom)"
    )

"""What generation leaves on disk for each combination (``<strategy>_<mode>``).

``samples.safetensors`` is the contract with the evaluation pipeline:

* ``images`` float32 ``[N, C, H, W]`` in [-1, 1], C = the mode's target channels in the
  order of ``metadata.target_names`` (for ``seg``: the generated mask itself, in [-1, 1]);
* ``masks`` uint8 ``[N, 1, H, W]`` in {0, 1}: the binary mask each image was conditioned
  on (for ``seg``: the generated mask thresholded at 0);
* metadata: strategy, mode, target_names, sampler, num_steps (solver steps),
  network_evaluations (per sample), guidance_scale, seed,
  pixel_spacing_mm, source_models (+ resolution, n).

Alongside: one NIfTI per generated image and mask, and PNG grids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import nibabel as nib
import torch

from medgen.datasets import TensorBundle
from medgen.generation.nifti import slice_to_nifti


def samples_bundle(
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    strategy: str,
    mode: str,
    target_names: Sequence[str],
    sampler: str,
    num_steps: int,
    network_evaluations: int,
    guidance_scale: float,
    seed: int,
    pixel_spacing_mm: float | None,
    source_models: Mapping[str, Any],
) -> TensorBundle:
    """The evaluation contract described in the module docstring, checked on the way out."""
    if images.ndim != 4 or images.shape[1] != len(target_names):
        raise ValueError(f"images {tuple(images.shape)} do not match targets {list(target_names)}")
    if masks.shape != (images.shape[0], 1, *images.shape[2:]):
        raise ValueError(f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
    tensors = {
        "images": images.detach().cpu().float().clamp(-1.0, 1.0),
        "masks": (masks.detach().cpu() > 0).to(torch.uint8),
    }
    metadata = {
        "strategy": strategy,
        "mode": mode,
        "target_names": list(target_names),
        "sampler": sampler,
        "num_steps": int(num_steps),
        "network_evaluations": int(network_evaluations),
        "guidance_scale": float(guidance_scale),
        "seed": int(seed),
        "pixel_spacing_mm": pixel_spacing_mm,
        "source_models": dict(source_models),
        "n": int(images.shape[0]),
        "resolution": list(images.shape[2:]),
    }
    return TensorBundle(tensors, metadata)


def nifti_files(
    combination: str, bundle: TensorBundle, write_images: bool = True
) -> dict[str, nib.Nifti1Image]:
    """``{"<combination>/nifti/sample-0000-<target>": image, ...-mask: mask}`` for a samples
    bundle; for ``seg`` only the binary mask is written (its [-1, 1] values add nothing)."""
    spacing = bundle.metadata.get("pixel_spacing_mm") or 1.0
    names = bundle.metadata["target_names"]
    mode = bundle.metadata["mode"]
    files: dict[str, nib.Nifti1Image] = {}
    for i in range(len(bundle)):
        stem = f"{combination}/nifti/sample-{i:04d}"
        if write_images and mode != "seg":
            for c, name in enumerate(names):
                files[f"{stem}-{name}"] = slice_to_nifti(
                    bundle["images"][i, c], spacing, f"medgen {combination} {name}, [-1, 1]"
                )
        files[f"{stem}-mask"] = slice_to_nifti(
            bundle["masks"][i, 0], spacing, f"medgen {combination} lesion mask"
        )
    return files

"""What the inpainting diffusion model trains and samples on: latents of the cases, encoded once.

The frozen t1n autoencoder (the library's 3D patch-volume autoencoder, trained on t1n by this
pipeline) encodes the ground truth and the voided image of every case. A model-input bundle per
split holds, per case:

* ``latents`` / ``voided``: unscaled posterior means of t1n and of the voided t1n
  ``[N, C, *latent]``; the space multiplies both by ``scale_factor`` (1/std of the TRAINING
  t1n latents, in the metadata of every split);
* ``mask`` / ``score_mask``: the data-resolution masks (max-pooled to the latent grid by the
  task: a latent cell that overlaps the mask at all is generated);
* ``conditioning_<variant>`` ``[N, 4, *latent]``: growth > threshold and CSF/GM/WM for each
  variant (none, honest, oracle), area-averaged to the latent grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medgen.autoencoder.latents import encode_images, latent_scale_factor
from medgen.datasets import TensorBundle
from medgen.inpainting.cases import conditioning_maps
from medgen.inpainting.params import CONDITIONINGS


def subject_volumes(cases: TensorBundle) -> TensorBundle:
    """One t1n volume per subject (its first case), as the autoencoder's training bundle."""
    index = cases["subject_index"]
    subjects = torch.unique(index).tolist()
    first = [int(torch.nonzero(index == s)[0]) for s in subjects]
    return TensorBundle(
        {"images": cases["t1n"][first]},
        {"modalities": ["t1n"], "subjects": [cases.metadata["subjects"][s] for s in subjects]},
    )


def encode_model_input(
    autoencoder: torch.nn.Module,
    cases: TensorBundle,
    prior: torch.Tensor,
    *,
    batch_size: int,
    scale_factor: float | None = None,
    weights_fingerprint: str = "",
) -> TensorBundle:
    """The model-input bundle of one split (see the module docstring); ``scale_factor`` None
    derives it from these latents (the train split)."""
    latents = encode_images(
        autoencoder, cases["t1n"], per_channel=False, batch_size=batch_size, desc="encoding t1n"
    )
    voided = encode_images(
        autoencoder,
        cases["voided"],
        per_channel=False,
        batch_size=batch_size,
        desc="encoding voided",
    )
    if scale_factor is None:
        scale_factor = latent_scale_factor(latents)
    grid = tuple(latents.shape[2:])
    tensors = {
        "latents": latents,
        "voided": voided,
        "mask": cases["mask"],
        "score_mask": cases["score_mask"],
    }
    for variant in CONDITIONINGS:
        maps = conditioning_maps(cases, variant, prior)
        tensors[f"conditioning_{variant}"] = F.adaptive_avg_pool3d(maps, grid)
    downsample = cases["t1n"].shape[2] // grid[0]
    metadata = {
        **{k: cases.metadata[k] for k in ("split", "case_ids") if k in cases.metadata},
        "scale_factor": float(scale_factor),
        "latent_channels": int(latents.shape[1]),
        "downsample_factor": int(downsample),
        "autoencoder_fingerprint": weights_fingerprint,
        "conditionings": list(CONDITIONINGS),
    }
    return TensorBundle(tensors, metadata)

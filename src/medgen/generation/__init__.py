"""Generation around the training engine and `medgen.diffusion`: the 2D chain and 3D volumes.

* `slices`: resize model-input slices to the training resolution, pick lesion slices.
* `settings`: shared + per-role ``latent_diffusion`` parameters → one model's settings.
* `training_job`: train one model through `medgen.training.launch` (1..N workers, resume).
* `model_bundle`: weights (raw + EMA) and configs as one safetensors `TensorBundle`.
* `chain`: masks from a ``seg`` model, then images conditioned on exactly those masks.
* `generate`: one generation run, from two model bundles to files and a report.
* `outputs`: the ``samples.safetensors`` contract, NIfTI files; `nifti`: slice affines.
* `grids`, `figures`: PNG grids, loss curves, previews, MLflow upload; `reports`: JSON.
* `class_conditional_3d`: the class-conditional 3D DiT on the autoencoder's latents;
  `volumes_3d`: its latents decoded (tiled) by the 3D autoencoder into NIfTI volumes.
"""

from medgen.generation.chain import ChainSamples, generate_chain, generate_masks, sampler_settings
from medgen.generation.generate import GenerationOutputs, GenerationParams, generate_outputs
from medgen.generation.grids import sample_grid
from medgen.generation.model_bundle import (
    combination_name,
    load_diffusion_model,
    state_from_bundle,
    to_model_bundle,
)
from medgen.generation.nifti import nifti_to_slice, slice_affine, slice_to_nifti
from medgen.generation.outputs import nifti_files, samples_bundle
from medgen.generation.reports import run_summary, training_report
from medgen.generation.settings import (
    LrFinderParams,
    ModelSettings,
    RoleParams,
    SharedModelParams,
    deep_merge,
    model_settings,
    with_latent_space,
)
from medgen.generation.slices import SliceDataset, prepare_slices, resize_slices, select_slices
from medgen.generation.training_job import train_diffusion_model

__all__ = [
    "ChainSamples",
    "GenerationOutputs",
    "GenerationParams",
    "LrFinderParams",
    "ModelSettings",
    "RoleParams",
    "SharedModelParams",
    "SliceDataset",
    "combination_name",
    "deep_merge",
    "generate_chain",
    "generate_masks",
    "generate_outputs",
    "load_diffusion_model",
    "model_settings",
    "with_latent_space",
    "nifti_files",
    "nifti_to_slice",
    "prepare_slices",
    "resize_slices",
    "run_summary",
    "sample_grid",
    "sampler_settings",
    "samples_bundle",
    "select_slices",
    "slice_affine",
    "slice_to_nifti",
    "state_from_bundle",
    "to_model_bundle",
    "train_diffusion_model",
    "training_report",
]

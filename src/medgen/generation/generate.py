"""One generation run of the chain, from two model bundles to everything written to disk."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from medgen.config import config_tree_from_params, require_positive_ints
from medgen.datasets import TensorBundle
from medgen.diffusion import binarize_mask
from medgen.generation.chain import generate_chain, sampler_settings
from medgen.generation.figures import real_examples
from medgen.generation.grids import sample_grid
from medgen.generation.lesion_contrast import lesion_contrast_report
from medgen.generation.model_bundle import load_diffusion_model
from medgen.generation.outputs import nifti_files, samples_bundle
from medgen.metrics.images import side_by_side, titled


@dataclass(frozen=True)
class GenerationParams:
    """``latent_diffusion.generation``: one generation run of the chain (values in conf/base).

    n_images: masks drawn, and images generated for them. batch_size: samples per network
    batch. seed: masks use ``seed``, images ``seed + 1``. mask_num_steps / image_num_steps:
    network evaluations per sample (null: the strategy's ``num_inference_steps``, e.g. 30
    Euler steps for rflow, 50 DDIM steps for ddpm). guidance_scale: classifier-free guidance of
    the image model (1.0: none; needs training with ``cond_drop_prob > 0``). use_ema: sample
    with the EMA weights. min_lesion_pixels / max_mask_rounds: masks with fewer lesion pixels
    are redrawn, in at most this many sampling rounds in all. grid_columns: samples per row
    of the PNG grids. write_nifti: also write one NIfTI per image and mask.
    """

    n_images: int
    batch_size: int
    seed: int
    mask_num_steps: int | None
    image_num_steps: int | None
    guidance_scale: float
    use_ema: bool
    min_lesion_pixels: int
    max_mask_rounds: int
    grid_columns: int
    write_nifti: bool

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GenerationParams:
        section = "latent_diffusion.generation"
        config = config_tree_from_params(cls, params, section)
        require_positive_ints(
            config, section, "n_images", "batch_size", "max_mask_rounds", "grid_columns"
        )
        return config


@dataclass
class GenerationOutputs:
    """Keyed by ``<combination>/...`` for the partitioned datasets of the catalog."""

    samples: dict[str, TensorBundle] = field(default_factory=dict)
    niftis: dict[str, Any] = field(default_factory=dict)
    grids: dict[str, Image.Image] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


def lesion_fraction(masks: torch.Tensor) -> float:
    return round(float((masks > 0).float().mean()), 5)


def generate_outputs(
    mask_bundle: TensorBundle,
    image_bundle: TensorBundle,
    real_slices: TensorBundle,
    params: GenerationParams | Mapping[str, Any],
    autoencoder: Any = None,
) -> GenerationOutputs:
    """Run the chain and build samples bundles, NIfTI files, grids and a report.

    ``real_slices`` (already at the image model's resolution) give the comparison grid.
    ``params``: :class:`GenerationParams` (a mapping is validated). ``autoencoder``: the one a
    latent-space model was trained with. When the image model's resolution differs from the
    mask model's, masks are resized to it (see `generate_chain`).
    """
    opts = params if isinstance(params, GenerationParams) else GenerationParams.from_params(params)
    mask_task, mask_model = load_diffusion_model(mask_bundle, opts.use_ema)
    image_task, image_model = load_diffusion_model(
        image_bundle, opts.use_ema, autoencoder=autoencoder
    )
    mask_resolution = mask_bundle.metadata["resolution"]
    resolution = image_bundle.metadata["resolution"]
    if real_slices["images"].shape[-1] != resolution:
        raise ValueError(
            f"real slices are {real_slices['images'].shape[-1]}², the image model works at "
            f"{resolution}²"
        )
    n = int(opts.n_images)
    chain = generate_chain(
        mask_task,
        mask_model,
        image_task,
        image_model,
        n,
        spatial_shape=(mask_resolution, mask_resolution),
        image_spatial_shape=(resolution, resolution),
        batch_size=int(opts.batch_size),
        seed=int(opts.seed),
        mask_num_steps=opts.mask_num_steps,
        image_num_steps=opts.image_num_steps,
        guidance_scale=float(opts.guidance_scale),
        min_lesion_pixels=int(opts.min_lesion_pixels),
        max_mask_rounds=int(opts.max_mask_rounds),
    )
    mask_combo = mask_bundle.metadata["combination"]
    image_combo = image_bundle.metadata["combination"]
    spacing = image_bundle.metadata.get("pixel_spacing_mm")
    mask_spacing = mask_bundle.metadata.get("pixel_spacing_mm")
    weights = "ema" if opts.use_ema else "raw"
    source = {
        "masks": {
            "combination": mask_combo,
            "steps": mask_bundle.metadata.get("steps"),
            "weights": weights,
        },
        "images": {
            "combination": image_combo,
            "steps": image_bundle.metadata.get("steps"),
            "weights": weights,
        },
    }
    out = GenerationOutputs()
    samplers = {}
    mask_outputs = (chain.mask_values, binarize_mask(chain.mask_values), mask_spacing)
    for combo, task, (images, masks, pixel_spacing), steps, guidance in (
        (mask_combo, mask_task, mask_outputs, opts.mask_num_steps, 1.0),
        (
            image_combo,
            image_task,
            (chain.images, chain.masks, spacing),
            opts.image_num_steps,
            opts.guidance_scale,
        ),
    ):
        sampler, num_steps, evaluations = sampler_settings(task, steps)
        samplers[combo] = {
            "sampler": sampler,
            "num_steps": num_steps,
            "network_evaluations": evaluations,
        }
        out.samples[combo] = samples_bundle(
            images,
            masks,
            strategy=task.strategy.name,
            mode=task.mode.name,
            target_names=task.mode.target_names,
            sampler=sampler,
            num_steps=num_steps,
            network_evaluations=evaluations,
            guidance_scale=guidance,
            seed=int(opts.seed),
            pixel_spacing_mm=pixel_spacing,
            source_models=source,
        )
        if opts.write_nifti:
            out.niftis.update(nifti_files(combo, out.samples[combo]))

    columns = int(opts.grid_columns)
    real_images, real_masks = real_examples(real_slices, image_task, n)
    generated = titled(
        sample_grid(chain.images, chain.masks, columns),
        f"generated: {mask_combo} masks -> {image_combo} images",
    )
    real = titled(sample_grid(real_images, real_masks, columns), "real validation slices")
    out.grids = {
        f"{mask_combo}/grid_generated": sample_grid(None, mask_outputs[1], columns * 2),
        f"{image_combo}/grid_generated": generated,
        f"{image_combo}/grid_real": real,
        f"{image_combo}/grid_comparison": side_by_side(generated, real),
    }
    empty = int((chain.masks.flatten(1).sum(1) == 0).sum())
    all_real_images, all_real_masks = real_examples(real_slices, image_task, len(real_slices))
    out.report = {
        "mask_combination": mask_combo,
        "image_combination": image_combo,
        "n_images": n,
        "resolution": resolution,
        "mask_resolution": mask_resolution,
        "pixel_spacing_mm": spacing,
        "samplers": samplers,
        "guidance_scale": float(opts.guidance_scale),
        "seed": int(opts.seed),
        "weights": weights,
        "empty_masks": empty,
        "mask_sampling_rounds": chain.mask_rounds,
        "lesion_fraction": {
            "generated": lesion_fraction(chain.masks),
            "real_lesion_slices": lesion_fraction(real_masks),
        },
        "lesion_contrast": lesion_contrast_report(
            chain.images, chain.masks, all_real_images, all_real_masks
        ),
        "files": {
            "samples": sorted(out.samples),
            "nifti": len(out.niftis),
            "grids": sorted(out.grids),
        },
    }
    return out

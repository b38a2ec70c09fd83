"""``latent_diffusion`` nodes: thin calls into `medgen.generation`.

The 2D chain's outputs keyed by combination (``<strategy>_<mode>``) are dicts saved by
partitioned datasets, so each combination lands in its own folder and runs with other
combinations add to, rather than replace, what is on disk. The 3D role (``volumes``) trains
one class-conditional DiT on the autoencoder pipeline's 3D latents and decodes its volumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from medgen import generation, runtime
from medgen.autoencoder.loading import load_autoencoder
from medgen.datasets import TensorBundle
from medgen.diffusion import build_task
from medgen.generation import demo_checks, figures, volumes_3d
from medgen.generation.class_conditional_3d import train_class_conditional_generator
from medgen.training import TrainingConfig, lr_range_test

log = logging.getLogger(__name__)
Partitions = Mapping[str, Callable[[], Any]]


def _settings(
    role: str,
    role_params: dict[str, Any],
    shared: dict[str, Any],
    modalities: list[str],
    latent_space: dict | None,
) -> generation.ModelSettings:
    """The ``role`` model's settings, its latent space completed from the autoencoder's record."""
    s = generation.model_settings(role, role_params, shared, modalities)
    return generation.with_latent_space(s, latent_space)


def _autoencoder(s: generation.ModelSettings, weights: TensorBundle | None):
    """The frozen autoencoder a latent-space role encodes with; None in pixel space."""
    return load_autoencoder(weights) if s.space == "latent" else None


def train_diffusion_model(
    slices: TensorBundle,
    role_params: dict[str, Any],
    shared: dict[str, Any],
    autoencoder: TensorBundle | None,
    latent_space: dict[str, Any] | None,
    role: str,
) -> tuple[dict[str, TensorBundle], dict[str, dict], dict[str, Any]]:
    """Train the ``role`` model of the chain; returns its model, report and figures."""
    s = _settings(role, role_params, shared, slices.metadata["modalities"], latent_space)
    data = generation.prepare_slices(slices, s.resolution, s.train_slices)
    log.info(
        "training %s on %d slices at %d² (torch threads %d)",
        s.combination,
        len(data),
        s.resolution,
        torch.get_num_threads(),
    )
    run = generation.train_diffusion_model(
        data,
        task_config=s.task_config,
        backbone=s.backbone,
        training=s.training,
        resources=s.resources,
        checkpoint_dir=s.checkpoint_dir,
        resume=s.resume,
        torch_threads=s.torch_threads,
        autoencoder=autoencoder if s.space == "latent" else None,
    )
    info = {
        "resolution": s.resolution,
        "pixel_spacing_mm": data.metadata.get("pixel_spacing_mm"),
        "steps": run.result.steps,
        "training": run.result.config,
    }
    bundle = generation.to_model_bundle(
        run.result.model_state,
        run.result.ema_state,
        task_config=s.task_config,
        backbone=s.backbone,
        info=info,
    )
    report = generation.training_report(
        run.result,
        combination=s.combination,
        role=role,
        seconds=run.seconds,
        train_slices=len(data),
        resolution=s.resolution,
        steps_before=run.resumed_from_step,
    )
    preview = figures.training_preview(
        *generation.load_diffusion_model(bundle, autoencoder=_autoencoder(s, autoencoder)), data
    )
    # The loss curve reaches MLflow from the training callback (<combo>_loss_curve.png).
    figures.log_images_to_mlflow({"training_preview": preview}, f"latent_diffusion/{s.combination}")
    plots = {
        f"{s.combination}/loss_curve": figures.loss_curve_image(run.result.history),
        f"{s.combination}/training_preview": preview,
    }
    return {s.combination: bundle}, {s.combination: report}, plots


def find_learning_rate(
    slices: TensorBundle,
    role_params: dict[str, Any],
    shared: dict[str, Any],
    lr_finder: dict[str, Any],
    autoencoder: TensorBundle | None,
    latent_space: dict[str, Any] | None,
    role: str,
) -> tuple[dict[str, Any], dict[str, dict]]:
    """LR range test of the ``role`` model when ``lr_finder.enabled`` (else writes nothing)."""
    finder = generation.LrFinderParams.from_params(lr_finder)
    if not finder.enabled:
        log.info("lr_finder.enabled is false: skipping the LR range test for %s", role)
        return {}, {}
    s = _settings(role, role_params, shared, slices.metadata["modalities"], latent_space)
    task = build_task(s.task_config, _autoencoder(s, autoencoder))
    config = TrainingConfig.from_dict(s.training)
    torch.manual_seed(config.seed)
    result = lr_range_test(
        task.build_model(s.backbone),
        task.loss,
        generation.SliceDataset(generation.prepare_slices(slices, s.resolution, s.train_slices)),
        config,
        **finder.sweep(),
    )
    name = f"lr_range_test_{s.combination}"
    plot = figures.lr_range_test_image(result)
    figures.log_images_to_mlflow({name: plot}, f"latent_diffusion/{s.combination}")
    suggestion = {
        "combination": s.combination,
        "suggested_lr": result.suggested_lr,
        "diverged_lr": result.diverged_lr,
        "configured_lr": config.lr,
        "lrs": result.lrs,
        "smoothed_losses": result.losses,
        **finder.sweep(),
    }
    return {name: plot}, {name: suggestion}


def generate_samples(
    mask_models: Partitions,
    image_models: Partitions,
    real_slices: TensorBundle,
    masks_params: dict[str, Any],
    images_params: dict[str, Any],
    shared: dict[str, Any],
    generation_params: dict[str, Any],
    autoencoder: TensorBundle | None,
    latent_space: dict[str, Any] | None,
) -> tuple[dict[str, TensorBundle], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Masks from the mask model, images from the image model conditioned on them."""
    start = time.perf_counter()
    modalities = real_slices.metadata["modalities"]
    mask_s = _settings("masks", masks_params, shared, modalities, latent_space)
    image_s = _settings("images", images_params, shared, modalities, latent_space)
    if mask_s.space != "pixel":
        raise ValueError("latent_diffusion.masks.space must be pixel: masks are not encoded")
    options = generation.GenerationParams.from_params(generation_params)
    bundles = {}
    for s, models in ((mask_s, mask_models), (image_s, image_models)):
        if s.combination not in models:
            raise KeyError(
                f"no trained model {s.combination!r} in data/06_models/latent_diffusion "
                f"(found {sorted(models)}): run the training nodes first"
            )
        bundles[s.combination] = models[s.combination]()
    result = generation.generate_outputs(
        bundles[mask_s.combination],
        bundles[image_s.combination],
        generation.resize_slices(real_slices, image_s.resolution),
        options,
        autoencoder=_autoencoder(image_s, autoencoder),
    )
    result.report["seconds"] = round(time.perf_counter() - start, 2)
    figures.log_images_to_mlflow(
        {k.replace("/", "_"): v for k, v in result.grids.items()}, "latent_diffusion/generation"
    )
    return result.samples, result.niftis, result.grids, result.report


def summarise_run(
    mask_reports: Partitions,
    image_reports: Partitions,
    generation_report: dict[str, Any],
    samples: Partitions,
    train: TensorBundle,
    val: TensorBundle,
    demo_check_params: dict[str, Any],
) -> dict[str, Any]:
    """``summary.json`` for this run's two combinations, with the demo checks of the images
    (Fréchet distance beside trivial baselines, lesion contrast); the checks go to MLflow."""
    image_combination = generation_report["image_combination"]
    trainings = [
        mask_reports[generation_report["mask_combination"]](),
        image_reports[image_combination](),
    ]
    checks = demo_checks.slice_demo_checks(
        samples[image_combination](),
        train,
        val,
        generation_report["lesion_contrast"],
        demo_check_params,
    )
    demo_checks.log_demo_checks(checks, "latent_diffusion/demo_checks")
    summary = generation.run_summary(
        trainings, generation_report, runtime.seconds_since_run_start()
    )
    return {**summary, "demo_checks": checks}


def train_volume_generator(
    latents: TensorBundle, generator_params: dict[str, Any], checkpoint_dir: str
) -> tuple[TensorBundle, dict[str, Any]]:
    """The class-conditional 3D DiT on the training latents (lesion present / absent)."""
    return train_class_conditional_generator(latents, generator_params, checkpoint_dir)


def generate_volumes(
    generator: TensorBundle,
    autoencoder: TensorBundle,
    real: TensorBundle,
    generator_params: dict[str, Any],
    generation_params: dict[str, Any],
) -> tuple[dict[str, Any], TensorBundle, dict[str, Any], dict[str, Any]]:
    """Volumes of every class: DiT latents decoded tile by tile; NIfTI, tensors, figure, report."""
    out = volumes_3d.generate_volumes(
        generator, load_autoencoder(autoencoder), real, generation_params, generator_params
    )
    return out.niftis, out.samples, out.figures, out.report


def summarise_volumes(
    generator_report: dict[str, Any],
    generation_report: dict[str, Any],
    samples: TensorBundle,
    train: TensorBundle,
    val: TensorBundle,
    demo_check_params: dict[str, Any],
    autoencoder: TensorBundle,
) -> dict[str, Any]:
    """The 3D role's ``summary.json`` (training, generation and the demo checks of the
    volumes: brain shape, intensities, 2.5D Fréchet distance, lesion effect); also logged to
    MLflow."""
    checks = demo_checks.volume_demo_checks(
        samples, train, val, demo_check_params, load_autoencoder(autoencoder)
    )
    summary = volumes_3d.volumes_summary(
        generator_report, generation_report, runtime.seconds_since_run_start()
    )
    volumes_3d.log_volumes_summary_to_mlflow(summary)
    demo_checks.log_demo_checks(checks, "latent_diffusion_3d/demo_checks")
    return {**summary, "demo_checks": checks}

"""``latent_diffusion`` nodes: thin calls into `medgen.generation`.

Outputs keyed by combination (``<strategy>_<mode>``) are dicts saved by partitioned
datasets, so each combination lands in its own folder and runs with other combinations
add to, rather than replace, what is on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from medgen import generation as G
from medgen import runtime
from medgen.autoencoder.loading import load_autoencoder
from medgen.datasets import TensorBundle
from medgen.diffusion import build_task
from medgen.generation import figures
from medgen.generation.settings import ROLES
from medgen.training import TrainingConfig, lr_range_test

log = logging.getLogger(__name__)
Partitions = Mapping[str, Callable[[], Any]]


def _settings(
    settings: dict[str, Any], role: str, modalities: list[str], latent_space: dict | None
) -> G.ModelSettings:
    """The ``role`` model's settings, its latent space completed from the autoencoder's record."""
    return G.with_latent_space(G.model_settings(settings, role, modalities), latent_space)


def _autoencoder(s: G.ModelSettings, weights: TensorBundle | None):
    """The frozen autoencoder a latent-space role encodes with; None in pixel space."""
    return load_autoencoder(weights) if s.space == "latent" else None


def train_diffusion_model(
    slices: TensorBundle,
    settings: dict[str, Any],
    autoencoder: TensorBundle | None,
    latent_space: dict[str, Any] | None,
    role: str,
) -> tuple[dict[str, TensorBundle], dict[str, dict], dict[str, Any]]:
    """Train the ``role`` model of the chain; returns its model, report and figures."""
    s = _settings(settings, role, slices.metadata["modalities"], latent_space)
    data = G.prepare_slices(slices, s.resolution, s.train_slices)
    log.info(
        "training %s on %d slices at %d² (torch threads %d)",
        s.combination,
        len(data),
        s.resolution,
        torch.get_num_threads(),
    )
    run = G.train_diffusion_model(
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
    if run is None:  # another node of a multi-node job: the first node saves
        return {}, {}, {}
    info = {
        "resolution": s.resolution,
        "pixel_spacing_mm": data.metadata.get("pixel_spacing_mm"),
        "steps": run.result.steps,
        "training": run.result.config,
    }
    bundle = G.to_model_bundle(
        run.result.model_state,
        run.result.ema_state,
        task_config=s.task_config,
        backbone=s.backbone,
        info=info,
    )
    report = G.training_report(
        run.result,
        combination=s.combination,
        role=role,
        seconds=run.seconds,
        train_slices=len(data),
        resolution=s.resolution,
        steps_before=run.resumed_from_step,
    )
    preview = figures.training_preview(
        *G.load_diffusion_model(bundle, autoencoder=_autoencoder(s, autoencoder)), data
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
    settings: dict[str, Any],
    autoencoder: TensorBundle | None,
    latent_space: dict[str, Any] | None,
    role: str,
) -> tuple[dict[str, Any], dict[str, dict]]:
    """LR range test of the ``role`` model when ``lr_finder.enabled`` (else writes nothing)."""
    options = dict(settings.get("lr_finder") or {})
    if not options.pop("enabled", False):
        log.info("lr_finder.enabled is false: skipping the LR range test for %s", role)
        return {}, {}
    s = _settings(settings, role, slices.metadata["modalities"], latent_space)
    task = build_task(s.task_config, _autoencoder(s, autoencoder))
    config = TrainingConfig.from_dict(s.training)
    torch.manual_seed(config.seed)
    result = lr_range_test(
        task.build_model(s.backbone),
        task.loss,
        G.SliceDataset(G.prepare_slices(slices, s.resolution, s.train_slices)),
        config,
        **options,
    )
    name = f"lr_range_test_{s.combination}"
    plot = figures.lr_range_test_image(result)
    figures.log_images_to_mlflow({name: plot}, f"latent_diffusion/{s.combination}")
    suggestion = {
        "combination": s.combination,
        "suggested_lr": result.suggested_lr,
        "diverged_lr": result.diverged_lr,
        "configured_lr": s.training.get("lr"),
        "lrs": result.lrs,
        "smoothed_losses": result.losses,
        **options,
    }
    return {name: plot}, {name: suggestion}


def generate_samples(
    mask_models: Partitions,
    image_models: Partitions,
    real_slices: TensorBundle,
    settings: dict[str, Any],
    autoencoder: TensorBundle | None,
    latent_space: dict[str, Any] | None,
) -> tuple[dict[str, TensorBundle], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Masks from the mask model, images from the image model conditioned on them."""
    start = time.perf_counter()
    modalities = real_slices.metadata["modalities"]
    mask_s, image_s = (_settings(settings, role, modalities, latent_space) for role in ROLES)
    if mask_s.space != "pixel":
        raise ValueError("latent_diffusion.masks.space must be pixel: masks are not encoded")
    options = dict(settings["generation"])
    bundles = {}
    for s, models in ((mask_s, mask_models), (image_s, image_models)):
        if s.combination not in models:
            raise KeyError(
                f"no trained model {s.combination!r} in data/06_models/latent_diffusion "
                f"(found {sorted(models)}): run the training nodes first"
            )
        bundles[s.combination] = models[s.combination]()
    result = G.generate_outputs(
        bundles[mask_s.combination],
        bundles[image_s.combination],
        G.resize_slices(real_slices, image_s.resolution),
        options,
        autoencoder=_autoencoder(image_s, autoencoder),
    )
    result.report["seconds"] = round(time.perf_counter() - start, 2)
    figures.log_images_to_mlflow(
        {k.replace("/", "_"): v for k, v in result.grids.items()}, "latent_diffusion/generation"
    )
    return result.samples, result.niftis, result.grids, result.report


def summarise_run(
    mask_reports: Partitions, image_reports: Partitions, generation_report: dict[str, Any]
) -> dict[str, Any]:
    """``summary.json`` for this run's two combinations."""
    trainings = [
        mask_reports[generation_report["mask_combination"]](),
        image_reports[generation_report["image_combination"]](),
    ]
    return G.run_summary(trainings, generation_report, runtime.seconds_since_run_start())

"""``autoencoder`` nodes: thin calls into `medgen.autoencoder`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medgen import runtime
from medgen.autoencoder import training_2d, training_3d
from medgen.autoencoder.figures import reconstruction_figure
from medgen.autoencoder.latents import Encoding2DParams, Encoding3DParams, encode_splits
from medgen.autoencoder.loading import load_autoencoder
from medgen.autoencoder.reports import (
    autoencoder_summary,
    log_summary_to_mlflow,
    reconstruction_demo_checks,
)
from medgen.datasets import TensorBundle

log = logging.getLogger(__name__)


def train_autoencoder_2d(
    train: TensorBundle, val: TensorBundle, params: dict[str, Any], checkpoint_root: str
) -> tuple[TensorBundle, dict[str, Any], dict[str, Any]]:
    """Train the single-channel 2D VAE-GAN (progressive resolution); weights and report."""
    weights, report = training_2d.train_autoencoder_2d(
        train, val, params, Path(checkpoint_root, "kl_autoencoder_2d")
    )
    figure = reconstruction_figure(load_autoencoder(weights), val, per_channel=True)
    return weights, report, {"reconstructions_2d": figure}


def encode_slices(
    weights: TensorBundle,
    train: TensorBundle,
    val: TensorBundle,
    test: TensorBundle,
    params: dict[str, Any],
) -> tuple[TensorBundle, TensorBundle, TensorBundle, dict[str, Any]]:
    """Every slice split as 2D latents (per modality), and the latent-space record."""
    options = Encoding2DParams.from_params(params)
    latents = encode_splits(
        load_autoencoder(weights),
        {"train": train, "val": val, "test": test},
        autoencoder_kind=weights.metadata["kind"],
        modalities=options.modalities,
        per_channel=True,
        batch_size=options.batch_size,
    )
    meta = latents["train"].metadata
    record = {
        "latent_channels": meta["latent_channels"],
        "downsample_factor": meta["downsample_factor"],
        "scale_factor": meta["scale_factor"],
        "per_channel": True,
        "autoencoder": weights.fingerprint(with_metadata=True),
    }
    return latents["train"], latents["val"], latents["test"], record


def train_volume_autoencoder_stage1(
    train: TensorBundle, val: TensorBundle, params: dict[str, Any], checkpoint_root: str
) -> tuple[TensorBundle, dict[str, Any]]:
    """Stage 1 of the 3D patch-volume autoencoder: encoder and decoder on random patches."""
    return training_3d.train_patch_volume_stage1(
        train, val, params, Path(checkpoint_root, "patch_volume_stage1")
    )


def train_volume_autoencoder_stage2(
    stage1: TensorBundle,
    train: TensorBundle,
    val: TensorBundle,
    params: dict[str, Any],
    checkpoint_root: str,
) -> tuple[TensorBundle, dict[str, Any], dict[str, Any]]:
    """Stage 2 from the stage-1 weights: volume-wise decoding on whole volumes."""
    weights, report = training_3d.train_patch_volume_stage2(
        stage1, train, val, params, Path(checkpoint_root, "patch_volume_stage2")
    )
    figure = reconstruction_figure(
        load_autoencoder(weights),
        val,
        per_channel=False,
        modalities=weights.metadata.get("modalities"),
    )
    return weights, report, {"reconstructions_3d": figure}


def encode_volumes(
    weights: TensorBundle,
    train: TensorBundle,
    val: TensorBundle,
    test: TensorBundle,
    params: dict[str, Any],
) -> tuple[TensorBundle, TensorBundle, TensorBundle]:
    """Every volume split as 3D latents."""
    options = Encoding3DParams.from_params(params)
    latents = encode_splits(
        load_autoencoder(weights),
        {"train": train, "val": val, "test": test},
        autoencoder_kind=weights.metadata["kind"],
        modalities=weights.metadata.get("modalities"),
        per_channel=False,
        batch_size=options.batch_size,
    )
    return latents["train"], latents["val"], latents["test"]


def summarise_autoencoders(
    report_2d: dict[str, Any],
    report_stage1: dict[str, Any],
    report_stage2: dict[str, Any],
    volumes_val: TensorBundle,
) -> dict[str, Any]:
    """``summary.json``: reconstruction quality and times of each model, the 3D model beside
    trilinear down/up-sampling (demo check); also logged to MLflow."""
    summary = autoencoder_summary(
        {
            "autoencoder_2d": report_2d,
            "patch_volume_stage1": report_stage1,
            "patch_volume_stage2": report_stage2,
        },
        runtime.seconds_since_run_start(),
        reconstruction_demo_checks(report_stage2, volumes_val),
    )
    log_summary_to_mlflow(summary)
    return summary

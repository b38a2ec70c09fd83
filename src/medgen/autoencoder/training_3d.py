"""The two training stages of the 3D patch-volume autoencoder, as the Kedro nodes call them.

Stage 1 (`train_patch_volume_stage1`) trains encoder, codebook/posterior and decoder on random
PATCHES cropped from the training volumes (`RandomPatchDataset`). Stage 2
(`train_patch_volume_stage2`) starts from the stage-1 weights -- handed in by the catalog as a
`TensorBundle`, never read from a path in code -- and trains on WHOLE volumes: patch-wise
encoding, volume-wise decoding. As in 3D MedDiffusion (Wang et al. 2024, whose stage-2 optimiser
holds only the decoder and post-quantisation layers), the encoder and the codebook are frozen and
the decoder learns to decode stitched patch latents without seams. Both stages train an
`medgen.autoencoder.gan.AutoencoderGAN` (L1 + KL-or-VQ + perceptual (2.5D for volumes) +
adversarial) as one `medgen.training.TrainingJob` each, with `build_stage_task` as the factory;
the patch discriminator carries over from stage 1 to stage 2.

The pieces: parameters in `patch_volume_params`, patches in `patch_volume_data`, the weights
bundle in `patch_volume_weights`, validation in `patch_volume_validation`.

Outputs: a weights `TensorBundle` and a report (steps, seconds, final loss components,
history, validation PSNR/SSIM/MAE of whole-volume reconstructions via `medgen.metrics.paired`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from medgen.autoencoder.gan import (
    AutoencoderGAN,
    GANComponentsLogger,
    build_autoencoder_gan,
    gan_loss,
)
from medgen.autoencoder.latents import select_channels
from medgen.autoencoder.losses import PerceptualConfig
from medgen.autoencoder.patch_volume_data import RandomPatchDataset
from medgen.autoencoder.patch_volume_params import (
    DEFAULT_AUTOENCODER,
    ResolvedStage,
    resolve_params,
)
from medgen.autoencoder.patch_volume_validation import reconstruction_metrics
from medgen.autoencoder.patch_volume_weights import (
    KIND,
    check_stage1_weights,
    load_patch_volume_autoencoder,
    weights_bundle,
    weights_fingerprint,
)
from medgen.autoencoder.progressive import ImageDataset
from medgen.datasets import TensorBundle
from medgen.models.patch_volume_autoencoder import (
    PatchVolumeAutoencoder,
    build_patch_volume_autoencoder,
)
from medgen.training import MlflowCallback, TrainingJob, TrainingTask, run_job
from medgen.training.results import sub_state_dict


def build_stage_model(
    stage: int,
    autoencoder: Mapping[str, Any],
    discriminator: Mapping[str, Any],
    loss: Mapping[str, Any],
    perceptual: Mapping[str, Any],
    in_channels: int,
    accum_steps: int = 1,
    init_weights: TensorBundle | None = None,
) -> AutoencoderGAN:
    """The module a stage trains: the autoencoder (stage 2: from ``init_weights``, encoder and
    codebook frozen) inside an `AutoencoderGAN` (discriminator from ``init_weights`` too)."""
    model = build_patch_volume_autoencoder(autoencoder, in_channels=in_channels)
    gan = build_autoencoder_gan(
        model,
        discriminator=discriminator,
        loss=loss,
        perceptual=perceptual,
        micro_batches_per_step=accum_steps,
    )
    if init_weights is not None:
        model.load_state_dict(sub_state_dict(init_weights.tensors, "autoencoder."))
        disc_state = sub_state_dict(init_weights.tensors, "discriminator.")
        if gan.discriminator is not None and disc_state:
            gan.discriminator.load_state_dict(disc_state)
    if stage == 2:
        model.freeze_encoder()
    return gan


def build_stage_task(
    data: Mapping[str, TensorBundle],
    *,
    stage: int,
    autoencoder: dict[str, Any],
    discriminator: dict[str, Any],
    loss: dict[str, Any],
    perceptual: dict[str, Any],
    crops_per_volume: int,
    accum_steps: int,
    seed: int,
    validation_batch_size: int = 1,
) -> TrainingTask:
    """The stages' job factory, run in every worker: ``data["train"]`` and ``data["val"]``
    volumes and, in stage 2, the stage-1 weights ``data["init_weights"]``."""
    images = data["train"]["images"].float()
    val_images = data["val"]["images"].float()
    torch.manual_seed(seed)  # the same initial weights on every rank and every re-run
    gan = build_stage_model(
        stage,
        autoencoder,
        discriminator,
        loss,
        perceptual,
        images.shape[1],
        accum_steps,
        data.get("init_weights"),
    )
    if stage == 1:
        train_data: Dataset = RandomPatchDataset(
            images, gan.autoencoder.patch_size, crops_per_volume, seed
        )
    else:
        train_data = ImageDataset(images)

    def val_fn(net: torch.nn.Module) -> dict[str, float]:
        metrics = reconstruction_metrics(net.autoencoder, val_images, validation_batch_size)
        return {k: metrics[k] for k in ("psnr", "ssim", "mae")}

    prefix = stage_name(stage)
    callbacks = [
        GANComponentsLogger(prefix=prefix),
        MlflowCallback(prefix=prefix, artifact_path=f"autoencoder/{prefix}"),
    ]
    return TrainingTask(
        model=gan, loss_fn=gan_loss, train_data=train_data, val_fn=val_fn, callbacks=callbacks
    )


def stage_name(stage: int) -> str:
    return f"patch_volume_stage{stage}"


def _run_stage(
    resolved: ResolvedStage,
    train: TensorBundle,
    val: TensorBundle,
    checkpoint_dir: str | Path,
    init_weights: TensorBundle | None,
) -> tuple[TensorBundle, dict[str, Any]]:
    start = time.perf_counter()
    images, modalities = select_channels(train, resolved.modalities)
    val_images, _ = select_channels(val, resolved.modalities)
    if init_weights is not None:
        check_stage1_weights(init_weights, resolved, modalities)
    # Fails here, in the node, on image sizes the network cannot take.
    probe = PatchVolumeAutoencoder(3, images.shape[1], resolved.autoencoder)
    probe.check_images(images[:1])
    data = {
        "train": TensorBundle({"images": images.float()}),
        "val": TensorBundle({"images": val_images.float()}),
    }
    if init_weights is not None:
        data["init_weights"] = init_weights
    job = TrainingJob(
        name=stage_name(resolved.stage),
        factory=build_stage_task,
        config=resolved.training,
        checkpoint_dir=checkpoint_dir,
        data=data,
        options=resolved.worker_kwargs(),
        runtime_options={"validation_batch_size": resolved.validation.batch_size},
        identity={"modalities": modalities},
        resources=resolved.resources,
        artifact_path=f"autoencoder/{stage_name(resolved.stage)}",
    )
    result = run_job(job).result
    source = "ema" if result.ema_state is not None else "raw"
    weights = weights_bundle(
        result.model_state,
        result.ema_state if result.ema_state is not None else result.model_state,
        resolved,
        in_channels=images.shape[1],
        modalities=modalities,
        source=source,
    )
    model = load_patch_volume_autoencoder(weights)
    validation = reconstruction_metrics(
        model, val_images.float(), resolved.validation.batch_size, resolved.validation.tile_size
    )
    steps = [r for r in result.history if r.get("kind") == "step"]
    report = {
        "kind": KIND,
        "stage": resolved.stage,
        "steps": result.steps,
        "epochs": result.epochs,
        "seconds": round(time.perf_counter() - start, 2),
        "final_losses": {
            k: v
            for k, v in (steps[-1] if steps else {}).items()
            if k not in ("kind", "step", "epoch")
        },
        "history": result.history,
        "weights": source,
        "validation": {
            **validation,
            "volumes": int(val_images.shape[0]),
            "decode": "full"
            if resolved.validation.tile_size is None
            else f"tiled (latent tile {resolved.validation.tile_size})",
        },
        "perceptual_backbone": _perceptual_name(resolved.perceptual),
        "modalities": modalities,
        "config": resolved.autoencoder.to_dict(),
        "training": resolved.training.to_dict(),
        "loss": resolved.loss.to_dict(),
    }
    if init_weights is not None:
        report["trainable"] = (
            "decoder only (encoder and codebook frozen, as in 3D MedDiffusion stage 2)"
        )
        report["started_from"] = {
            "stage": 1,
            "weights_fingerprint": weights_fingerprint(init_weights.tensors),
            # Evidence, not a claim: the frozen encoder must still be the stage-1 encoder.
            "encoder_unchanged": all(
                torch.equal(v, init_weights.tensors[k])
                for k, v in weights.tensors.items()
                if k.startswith("autoencoder.encoder.")
            ),
        }
    return weights, report


def _perceptual_name(config: PerceptualConfig) -> str:
    if not config.enabled:
        return "off"
    trunk = (
        "ImageNet trunk"
        if config.pretrained_backbone
        else "random-init trunk (not published LPIPS)"
    )
    return f"lpips-{config.net}, {trunk}, 2.5D {config.slices_3d} slices x{config.slices_per_plane} per plane"


def train_patch_volume_stage1(
    train: TensorBundle, val: TensorBundle, params: Mapping[str, Any], checkpoint_dir: str | Path
) -> tuple[TensorBundle, dict[str, Any]]:
    """Stage 1: train the patch-volume autoencoder on random patches of ``train``'s volumes.

    Args:
        train / val: volume bundles (``images`` [N, 4, D, H, W] in [-1, 1], ``modalities`` metadata).
        params: the stage parameters (module docstring); ``params["stage1"]`` drives training.
        checkpoint_dir: the engine's checkpoints (an existing ``latest.pt`` of the same job is
            resumed exactly; one of another job is moved to ``<dir>.stale``).

    Returns ``(weights, report)``.
    """
    return _run_stage(resolve_params(params, 1), train, val, checkpoint_dir, None)


def train_patch_volume_stage2(
    stage1_weights: TensorBundle,
    train: TensorBundle,
    val: TensorBundle,
    params: Mapping[str, Any],
    checkpoint_dir: str | Path,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Stage 2: from ``stage1_weights``, fine-tune the decoder on whole volumes.

    Patch-wise encoding with the frozen stage-1 encoder and codebook, volume-wise decoding.
    ``stage1_weights`` must be a stage-1 bundle of the same autoencoder parameters, modalities and
    discriminator (ValueError naming what differs otherwise). Arguments as in stage 1.
    """
    return _run_stage(resolve_params(params, 2), train, val, checkpoint_dir, stage1_weights)


__all__ = [
    "DEFAULT_AUTOENCODER",
    "KIND",
    "RandomPatchDataset",
    "build_stage_model",
    "build_stage_task",
    "check_stage1_weights",
    "load_patch_volume_autoencoder",
    "reconstruction_metrics",
    "resolve_params",
    "train_patch_volume_stage1",
    "train_patch_volume_stage2",
    "weights_fingerprint",
]

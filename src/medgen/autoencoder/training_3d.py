"""The two training stages of the 3D patch-volume autoencoder, as the Kedro nodes call them.

Stage 1 (`train_patch_volume_stage1`) trains encoder, codebook/posterior and decoder on random
PATCHES cropped from the training volumes (`RandomPatchDataset`). Stage 2
(`train_patch_volume_stage2`) starts from the stage-1 weights -- handed in by the catalog as a
`TensorBundle`, never read from a path in code -- and trains on WHOLE volumes: patch-wise
encoding, volume-wise decoding. As in 3D MedDiffusion (Wang et al. 2024, whose stage-2 optimiser
holds only the decoder and post-quantisation layers), the encoder and the codebook are frozen and
the decoder learns to decode stitched patch latents without seams. Both stages train an
`medgen.autoencoder.gan.AutoencoderGAN` (L1 + KL-or-VQ + perceptual (2.5D for volumes) +
adversarial) through the engine; the patch discriminator carries over from stage 1 to stage 2.

Parameters (``params``; every level refuses unknown keys)::

    modalities: null              # channels of `images` to model (null: all, in_channels = 4)
    autoencoder: {...}            # PatchVolumeAutoencoderConfig (its defaults if empty)
    discriminator: {...}          # medgen.autoencoder.gan.PatchDiscriminatorConfig
    stage1: {training: {...}, loss: {...}, perceptual: {...}, crops_per_volume: 16}
    stage2: {training: {...}, loss: {...}, perceptual: {...}}
    validation: {batch_size: 1, tile_size: null}   # tile_size: latent tile for decode_tiled
    resources: null               # medgen.training.Resources (null: one process)

``loss`` is `GANLossWeights`; its ``kl`` weighs the regularisation, which for a VQ autoencoder
is the commitment loss: when ``vq.enabled`` and ``loss.kl`` is not given it defaults to 1.0
(1e-6 would switch the commitment off). ``perceptual`` is `PerceptualConfig`; it defaults to
off in stage 1 (the demo's 16^3 patches are below AlexNet-LPIPS's 31-pixel minimum) and to the
defaults of `PerceptualConfig` in stage 2 (pretrained AlexNet, whose weights must be on disk).

Outputs: a weights `TensorBundle` (``autoencoder.*`` and ``discriminator.*`` state-dict
tensors; metadata ``kind``, ``config``, ``in_channels``, ``latent_channels``,
``downsample_factor``, ``stage`` ...) and a report (steps, seconds, final loss components,
history, validation PSNR/SSIM/MAE of whole-volume reconstructions via `medgen.metrics.paired`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medgen.autoencoder.gan import (
    AutoencoderGAN,
    GANComponentsLogger,
    GANLossWeights,
    PatchDiscriminatorConfig,
    build_autoencoder_gan,
    gan_loss,
)
from medgen.autoencoder.latents import select_channels
from medgen.autoencoder.losses import PerceptualConfig
from medgen.autoencoder.progressive import ImageDataset
from medgen.autoencoder.tiled import decode_tiled
from medgen.config import config_from_params, refuse_unknown_keys
from medgen.datasets import TensorBundle, TensorDataset
from medgen.training.checkpoint import prepare_checkpoint_dir
from medgen.metrics.paired import paired_metrics
from medgen.models.patch_volume_autoencoder import (
    PatchVolumeAutoencoder,
    PatchVolumeAutoencoderConfig,
    build_patch_volume_autoencoder,
)
from medgen.training import (
    JobSpec,
    MlflowCallback,
    TrainingConfig,
    TrainingResult,
    TrainingTask,
    launch,
    run_training_job,
)

KIND = "patch_volume_autoencoder"
FACTORY = "medgen.autoencoder.training_3d:build_stage_task"
DATA_RANGE = 2.0  # images live in [-1, 1]
#: The CPU-demo network (the config defaults): 4x compression, two narrow stages, KL latent.
DEFAULT_AUTOENCODER: dict[str, Any] = PatchVolumeAutoencoderConfig().to_dict()
# Options that change memory or speed, not what is learned: they may differ between stages.
_NOT_LEARNED = ("patch_batch_size",)


@dataclass(frozen=True)
class StageParams:
    """One stage's ``training`` (TrainingConfig dict), ``loss`` (GANLossWeights dict),
    ``perceptual`` (PerceptualConfig dict, None: the stage's default) and, stage 1 only,
    ``crops_per_volume`` (random patches per training volume and epoch, default 16)."""

    training: Mapping[str, Any] = field(default_factory=dict)
    loss: Mapping[str, Any] = field(default_factory=dict)
    perceptual: Mapping[str, Any] | None = None
    crops_per_volume: int = 16


@dataclass(frozen=True)
class ValidationParams:
    """``batch_size`` (1): volumes per encode/decode; ``tile_size`` (None: full decode):
    latent tile side for `decode_tiled` when validating large volumes."""

    batch_size: int = 1
    tile_size: int | None = None


@dataclass(frozen=True)
class PatchVolumeJobParams:
    """The whole ``params`` dict of the two stages (see the module docstring)."""

    modalities: tuple[str, ...] | None = None
    autoencoder: Mapping[str, Any] = field(default_factory=dict)
    discriminator: Mapping[str, Any] = field(default_factory=dict)
    stage1: Mapping[str, Any] = field(default_factory=dict)
    stage2: Mapping[str, Any] = field(default_factory=dict)
    validation: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ResolvedStage:
    """Validated configs of one stage (everything JSON-friendly goes to the worker)."""

    stage: int
    modalities: list[str] | None
    autoencoder: PatchVolumeAutoencoderConfig
    discriminator: PatchDiscriminatorConfig
    training: TrainingConfig
    loss: GANLossWeights
    perceptual: PerceptualConfig
    crops_per_volume: int
    validation: ValidationParams
    resources: Mapping[str, Any] | None

    def worker_kwargs(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "autoencoder": self.autoencoder.to_dict(),
            "discriminator": self.discriminator.to_dict(),
            "loss": self.loss.to_dict(),
            "perceptual": self.perceptual.to_dict(),
            "crops_per_volume": self.crops_per_volume,
            "accum_steps": self.training.accum_steps,
            "seed": self.training.seed,
        }


def resolve_params(params: Mapping[str, Any] | None, stage: int) -> ResolvedStage:
    """Validate ``params`` for ``stage`` (1 or 2); unknown keys and bad values raise ValueError
    (or `medgen.training.ConfigError` for the training section) naming the key."""
    if stage not in (1, 2):
        raise ValueError(f"the patch-volume autoencoder has stages 1 and 2, got {stage!r}")
    top = config_from_params(PatchVolumeJobParams, params, "patch_volume")
    section = top.stage1 if stage == 1 else top.stage2
    refuse_unknown_keys(StageParams, section or {}, f"patch_volume.stage{stage}")
    if stage == 2 and "crops_per_volume" in (section or {}):
        raise ValueError("patch_volume.stage2.crops_per_volume: stage 2 trains on whole volumes")
    stage_params = StageParams(**(section or {}))
    crops = stage_params.crops_per_volume
    if not isinstance(crops, int) or isinstance(crops, bool) or crops < 1:
        raise ValueError(f"patch_volume.stage1.crops_per_volume={crops!r}: must be an integer >= 1")
    autoencoder = PatchVolumeAutoencoderConfig.from_dict(top.autoencoder)
    loss = dict(stage_params.loss or {})
    if autoencoder.vq.enabled and "kl" not in loss:
        loss["kl"] = 1.0  # the regularisation is the VQ commitment loss (module docstring)
    perceptual = stage_params.perceptual
    if perceptual is None:
        perceptual = {"enabled": False} if stage == 1 else {}
    validation = config_from_params(ValidationParams, top.validation, "patch_volume.validation")
    for key in ("batch_size", "tile_size"):
        value = getattr(validation, key)
        if (value is not None or key == "batch_size") and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"patch_volume.validation.{key}={value!r}: must be an integer >= 1")
    return ResolvedStage(
        stage=stage,
        modalities=list(top.modalities) if top.modalities is not None else None,
        autoencoder=autoencoder,
        discriminator=config_from_params(
            PatchDiscriminatorConfig, top.discriminator, "discriminator"
        ),
        training=TrainingConfig.from_dict(stage_params.training),
        loss=config_from_params(GANLossWeights, loss, f"patch_volume.stage{stage}.loss"),
        perceptual=config_from_params(
            PerceptualConfig, perceptual, f"patch_volume.stage{stage}.perceptual"
        ),
        crops_per_volume=crops,
        validation=validation,
        resources=top.resources,
    )


class RandomPatchDataset(Dataset):
    """Random crops of ``patch_size`` from volumes ``[N, C, *S]``: ``crops_per_volume * N`` items.

    Item ``i`` is a crop of volume ``i % N`` at a corner drawn from NumPy's generator seeded
    with ``[seed, i]``: the same index always gives the same crop, so an exactly resumed run sees
    exactly the same data, and nothing depends on the global RNG or on worker processes.
    """

    def __init__(
        self,
        images: torch.Tensor,
        patch_size: Sequence[int],
        crops_per_volume: int = 16,
        seed: int = 0,
    ) -> None:
        size = tuple(images.shape[2:])
        if len(patch_size) != len(size) or any(
            p > s for p, s in zip(patch_size, size, strict=True)
        ):
            raise ValueError(
                f"patch_size {tuple(patch_size)} does not fit in volumes of size {size}"
            )
        self.images, self.patch_size = images, tuple(patch_size)
        self.crops_per_volume, self.seed = crops_per_volume, seed

    def __len__(self) -> int:
        return self.images.shape[0] * self.crops_per_volume

    def __getitem__(self, index: int) -> torch.Tensor:
        volume = self.images[index % self.images.shape[0]]
        # SeedSequence mixes (seed, index) into independent streams; torch's 64-bit seeds
        # would not (the Mersenne Twister keeps only 32 bits of them).
        rng = np.random.default_rng([self.seed, index])
        corner = [
            int(rng.integers(0, s - p + 1))
            for s, p in zip(volume.shape[1:], self.patch_size, strict=True)
        ]
        return volume[
            (slice(None), *(slice(c, c + p) for c, p in zip(corner, self.patch_size, strict=True)))
        ]


# ---------------------------------------------------------------------- weights bundles
def _prefixed(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def weights_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """Short hash of named tensors (names, shapes, dtypes and values)."""
    return TensorBundle(dict(tensors)).fingerprint()


def weights_bundle(
    gan_state: Mapping[str, torch.Tensor],
    autoencoder_state: Mapping[str, torch.Tensor],
    resolved: ResolvedStage,
    *,
    in_channels: int,
    modalities: Sequence[str],
    source: str,
) -> TensorBundle:
    """The stage's output: autoencoder (and discriminator) tensors plus what rebuilds them."""
    tensors = {
        f"autoencoder.{k}": v for k, v in _prefixed(autoencoder_state, "autoencoder.").items()
    }
    tensors.update(
        {f"discriminator.{k}": v for k, v in _prefixed(gan_state, "discriminator.").items()}
    )
    config = resolved.autoencoder
    model = PatchVolumeAutoencoder(3, in_channels, config)
    metadata = {
        "kind": KIND,
        "stage": resolved.stage,
        "config": config.to_dict(),
        "spatial_dims": 3,
        "in_channels": in_channels,
        "latent_channels": config.latent_channels,
        "downsample_factor": config.downsample_factor,
        "decoder_halo": model.decoder_halo,
        "modalities": list(modalities),
        "discriminator": resolved.discriminator.to_dict(),
        "weights": source,
    }
    return TensorBundle(tensors, metadata)


def _check_kind(weights: TensorBundle) -> None:
    if not isinstance(weights, TensorBundle):
        raise TypeError(f"expected a TensorBundle of weights, got {type(weights).__name__}")
    kind = weights.metadata.get("kind")
    if kind != KIND:
        raise ValueError(f"weights bundle has kind {kind!r}, expected {KIND!r}")


def load_patch_volume_autoencoder(weights: TensorBundle) -> PatchVolumeAutoencoder:
    """The autoencoder stored in a weights bundle of either stage, in eval mode."""
    _check_kind(weights)
    meta = weights.metadata
    model = build_patch_volume_autoencoder(
        meta["config"],
        in_channels=int(meta["in_channels"]),
        spatial_dims=int(meta.get("spatial_dims", 3)),
    )
    model.load_state_dict(_prefixed(weights.tensors, "autoencoder."))
    return model.eval()


def check_stage1_weights(
    weights: TensorBundle, resolved: ResolvedStage, modalities: Sequence[str]
) -> None:
    """ValueError unless ``weights`` is a stage-1 bundle of the network ``resolved`` describes."""
    _check_kind(weights)
    meta = weights.metadata
    if meta.get("stage") != 1:
        raise ValueError(
            f"stage 2 starts from stage-1 weights, got weights of stage {meta.get('stage')!r}"
        )
    stored = {k: v for k, v in meta["config"].items() if k not in _NOT_LEARNED}
    wanted = {k: v for k, v in resolved.autoencoder.to_dict().items() if k not in _NOT_LEARNED}
    differ = [
        f"{k}: stage 1 has {stored.get(k)!r}, params have {wanted.get(k)!r}"
        for k in sorted(set(stored) | set(wanted))
        if stored.get(k) != wanted.get(k)
    ]
    if differ:
        raise ValueError(
            "the stage-1 weights were trained with other autoencoder parameters ("
            + "; ".join(differ)
            + "): retrain stage 1 or use its parameters"
        )
    if list(meta.get("modalities", [])) != list(modalities):
        raise ValueError(
            f"the stage-1 weights model modalities {meta.get('modalities')}, stage 2 gets {list(modalities)}"
        )
    if meta.get("discriminator") != resolved.discriminator.to_dict():
        raise ValueError(
            f"the stage-1 discriminator {meta.get('discriminator')} differs from the discriminator "
            f"parameters {resolved.discriminator.to_dict()}: it is carried over to stage 2"
        )


# ---------------------------------------------------------------------- worker side
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
        model.load_state_dict(_prefixed(init_weights.tensors, "autoencoder."))
        disc_state = _prefixed(init_weights.tensors, "discriminator.")
        if gan.discriminator is not None and disc_state:
            gan.discriminator.load_state_dict(disc_state)
    if stage == 2:
        model.freeze_encoder()
    return gan


@torch.no_grad()
def reconstruct_volumes(
    autoencoder: PatchVolumeAutoencoder,
    images: torch.Tensor,
    batch_size: int = 1,
    tile_size: int | None = None,
) -> torch.Tensor:
    """Deterministic reconstructions decode(encode(x)) on the CPU (tiled decode with ``tile_size``)."""
    device = next(autoencoder.parameters()).device
    was_training = autoencoder.training
    autoencoder.eval()
    out = []
    try:
        for start in range(0, images.shape[0], batch_size):
            z = autoencoder.encode(images[start : start + batch_size].to(device))
            decoded = (
                autoencoder.decode(z)
                if tile_size is None
                else decode_tiled(autoencoder, z, tile_size)
            )
            out.append(decoded.float().cpu())
    finally:
        autoencoder.train(was_training)
    return torch.cat(out)


def reconstruction_metrics(
    autoencoder: PatchVolumeAutoencoder,
    images: torch.Tensor,
    batch_size: int = 1,
    tile_size: int | None = None,
) -> dict[str, float]:
    """PSNR / SSIM / MAE / MSE of whole-volume reconstructions (`medgen.metrics.paired`, range 2)."""
    recon = reconstruct_volumes(autoencoder, images, batch_size, tile_size)
    return paired_metrics(recon.clamp(-1.0, 1.0), images.float(), data_range=DATA_RANGE)


def build_stage_task(
    *,
    data_path: str,
    val_path: str,
    init_weights_path: str | None,
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
    """`JobSpec` factory, run in every worker: data and stage-1 weights from files."""
    images = TensorDataset(filepath=data_path).load()["images"].float()
    val_images = TensorDataset(filepath=val_path).load()["images"].float()
    init = TensorDataset(filepath=init_weights_path).load() if init_weights_path else None
    torch.manual_seed(seed)  # the same initial weights on every rank and every re-run
    gan = build_stage_model(
        stage, autoencoder, discriminator, loss, perceptual, images.shape[1], accum_steps, init
    )
    if stage == 1:
        data: Dataset = RandomPatchDataset(
            images, gan.autoencoder.patch_size, crops_per_volume, seed
        )
    else:
        data = ImageDataset(images)

    def val_fn(net: torch.nn.Module) -> dict[str, float]:
        metrics = reconstruction_metrics(net.autoencoder, val_images, validation_batch_size)
        return {k: metrics[k] for k in ("psnr", "ssim", "mae")}

    prefix = f"patch_volume_stage{stage}"
    callbacks = [
        GANComponentsLogger(prefix=prefix),
        MlflowCallback(prefix=prefix, artifact_path=f"autoencoder/{prefix}"),
    ]
    return TrainingTask(
        model=gan, loss_fn=gan_loss, train_data=data, val_fn=val_fn, callbacks=callbacks
    )


# ---------------------------------------------------------------------- node side
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
    checkpoint_dir = Path(checkpoint_dir)
    kwargs = resolved.worker_kwargs()
    job = {
        **kwargs,
        "modalities": modalities,
        "data": weights_fingerprint({"images": images}),
        "init_weights": weights_fingerprint(init_weights.tensors)
        if init_weights is not None
        else None,
    }
    resumable = prepare_checkpoint_dir(checkpoint_dir, job)
    data_path, val_path = (
        checkpoint_dir / "train_volumes.safetensors",
        checkpoint_dir / "val_volumes.safetensors",
    )
    TensorDataset(filepath=str(data_path)).save(TensorBundle({"images": images.float()}))
    TensorDataset(filepath=str(val_path)).save(TensorBundle({"images": val_images.float()}))
    init_path = None
    if init_weights is not None:
        init_path = checkpoint_dir / "stage1_weights.safetensors"
        TensorDataset(filepath=str(init_path)).save(init_weights)
    spec = JobSpec(
        factory=FACTORY,
        config=resolved.training.to_dict(),
        factory_kwargs={
            **kwargs,
            "data_path": str(data_path),
            "val_path": str(val_path),
            "init_weights_path": None if init_path is None else str(init_path),
            "validation_batch_size": resolved.validation.batch_size,
        },
        checkpoint_dir=str(checkpoint_dir),
        resume=resumable,
    )
    result: TrainingResult = launch(
        run_training_job, spec, resolved.resources, log_dir=checkpoint_dir.parent / "worker_logs"
    )
    if result is None:  # a node other than the first of a multi-node run
        return None  # type: ignore[return-value]
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

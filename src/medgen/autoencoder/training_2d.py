"""The 2D autoencoder job: a single-channel KL VAE-GAN trained progressively on MRI slices.

`train_autoencoder_2d` is what the `autoencoder` pipeline's node calls. The autoencoder is
*single-channel*: every modality channel of every slice is one grayscale training image, so
one autoencoder serves t1_pre, t1_gd, flair and bravo, and latent diffusion encodes each
target channel separately (`medgen.autoencoder.latents`, ``per_channel``).

Training: `medgen.autoencoder.progressive` (e.g. 32² then 64²), each phase an engine run of
`AutoencoderGAN` (L1 + KL + optional LPIPS + patch GAN) as one `medgen.training.TrainingJob`.
The GAN's step counter travels with the weights from phase to phase, so
``loss.adversarial_start_step`` counts optimizer steps over all phases together (e.g. the
length of the first phase: the discriminator joins at the last resolution). The weights bundle holds the autoencoder alone (EMA weights when ``ema_decay`` is set; the
discriminator is not needed downstream); `load_autoencoder_2d` is its inverse. The report
has per-phase steps, seconds, final losses and history, and validation reconstruction
PSNR / SSIM / MAE (`medgen.metrics.paired`, data range 2 for [-1, 1]) of the posterior-mean
reconstructions, plus LPIPS when its AlexNet weights are on disk.

Parameters (one dict, e.g. ``params:autoencoder_2d``): see `AutoencoderJob2DParams`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medgen.autoencoder.gan import (
    GANComponentsLogger,
    GANLossWeights,
    build_autoencoder_gan,
    discriminator_config,
    gan_loss,
    patch_discriminator_output_size,
)
from medgen.autoencoder.kl import KLAutoencoder, build_kl_autoencoder, kl_autoencoder_config
from medgen.autoencoder.losses import (
    MIN_LPIPS_SIZE,
    PerceptualConfig,
    build_perceptual_loss,
)
from medgen.autoencoder.progressive import (
    ImageDataset,
    load_init_weights,
    parse_phases,
    phase_images,
    phase_training_config,
    train_progressive,
)
from medgen.config import config_from_params, refuse_unknown_keys
from medgen.datasets import TensorBundle
from medgen.metrics.errors import MissingWeightsError
from medgen.metrics.paired import paired_metrics
from medgen.training import MlflowCallback, TrainingTask
from medgen.training.errors import ConfigError
from medgen.training.results import sub_state_dict

log = logging.getLogger(__name__)

WEIGHTS_KIND = "kl_autoencoder_2d"
DATA_RANGE = 2.0  # images live in [-1, 1]


@dataclass(frozen=True)
class ValidationConfig:
    """The ``validation`` parameters.

    max_slices (None = all): evenly spaced validation slices to reconstruct (all channels).
    batch_size (64): slices per reconstruction batch.
    lpips_net ("alex"): LPIPS trunk; LPIPS is reported only when its pretrained weights
        are on disk (never a random-init LPIPS as a quality number).
    """

    max_slices: int | None = None
    batch_size: int = 64
    lpips_net: str = "alex"

    def __post_init__(self) -> None:
        if self.max_slices is not None and (
            not isinstance(self.max_slices, int) or self.max_slices < 1
        ):
            raise ConfigError(
                f"validation max_slices={self.max_slices!r}: must be null or an integer >= 1"
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"validation batch_size={self.batch_size!r}: must be an integer >= 1")
        if self.lpips_net not in MIN_LPIPS_SIZE:
            raise ConfigError(
                f"validation lpips_net={self.lpips_net!r}: must be one of {tuple(MIN_LPIPS_SIZE)}"
            )


@dataclass(frozen=True)
class AutoencoderJob2DParams:
    """All parameters of the 2D autoencoder job (each section a plain dict in YAML).

    autoencoder: `medgen.autoencoder.kl.KLAutoencoderConfig` (channels, latent_channels, ...).
    discriminator: `medgen.autoencoder.gan.PatchDiscriminatorConfig` ({enabled: false}: no GAN).
    loss: `medgen.autoencoder.gan.GANLossWeights` (l1, kl, perceptual, adversarial,
        adversarial_start_step, discriminator_lr_scale).
    perceptual: `medgen.autoencoder.losses.PerceptualConfig` (enabled, net,
        pretrained_backbone, weights_path, seed).
    training: `medgen.training.TrainingConfig` without max_steps (the phases set it).
    phases: list of {resolution, max_steps[, batch_size, lr, warmup_steps]}.
    validation: `ValidationConfig`.
    resources: `medgen.training.Resources` (None: one process).
    torch_threads (None): intra-op threads per worker (None: torch's default).
    """

    autoencoder: dict[str, Any] = field(default_factory=dict)
    discriminator: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    perceptual: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] | None = None
    torch_threads: int | None = None

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> AutoencoderJob2DParams:
        """Validate every section (unknown keys refused) before anything trains."""
        params = dict(params or {})
        refuse_unknown_keys(cls, params, "autoencoder_2d", ConfigError)
        out = cls(**{k: (dict(v) if isinstance(v, Mapping) else v) for k, v in params.items()})
        kl_autoencoder_config(out.autoencoder)
        discriminator_config(out.discriminator)
        config_from_params(GANLossWeights, out.loss, "loss")
        config_from_params(PerceptualConfig, out.perceptual, "perceptual")
        config_from_params(ValidationConfig, out.validation, "validation")
        for phase in parse_phases(out.phases):
            phase_training_config(out.training, phase)
        return out


def channels_as_images(images: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N * C, 1, H, W]``: each channel of each slice one image."""
    if images.ndim != 4:
        raise ValueError(f"expected 2D slices [N, C, H, W], got {tuple(images.shape)}")
    return images.float().reshape(-1, 1, *images.shape[2:])


def build_phase_task(
    data: Mapping[str, TensorBundle],
    *,
    resolution: Sequence[int],
    phase_name: str,
    autoencoder: Mapping[str, Any],
    discriminator: Mapping[str, Any],
    loss: Mapping[str, Any],
    perceptual: Mapping[str, Any],
    seed: int = 0,
    accum_steps: int = 1,
    mlflow_prefix: str = "autoencoder_2d",
) -> TrainingTask:
    """The phases' job factory (`medgen.autoencoder.progressive`), run in every worker.

    The model is built with ``seed`` (the same initial weights on every rank and re-run),
    then takes the previous phase's weights when ``data`` has them.
    """
    images = phase_images(data["images"]["images"], resolution)
    torch.manual_seed(seed)
    model = build_autoencoder_gan(
        build_kl_autoencoder(autoencoder, in_channels=images.shape[1], spatial_dims=2),
        discriminator=discriminator,
        loss=loss,
        perceptual=perceptual,
        micro_batches_per_step=accum_steps,
    )
    load_init_weights(model, data)
    prefix = f"{mlflow_prefix}/{phase_name}"
    callbacks = [
        MlflowCallback(prefix=prefix, artifact_path=f"autoencoder/{mlflow_prefix}"),
        GANComponentsLogger(prefix=prefix),
    ]
    return TrainingTask(
        model=model, loss_fn=gan_loss, train_data=ImageDataset(images), callbacks=callbacks
    )


def _check_sizes(p: AutoencoderJob2DParams, image_size: Sequence[int]) -> None:
    """Errors before training for sizes the networks cannot take at some phase."""
    factor = kl_autoencoder_config(p.autoencoder).downsample_factor
    disc = discriminator_config(p.discriminator)
    perceptual = config_from_params(PerceptualConfig, p.perceptual, "perceptual")
    for index, phase in enumerate(parse_phases(p.phases)):
        size = phase.size(2)
        if any(s > full for s, full in zip(size, image_size, strict=True)):
            log.warning("phase %d upsamples the %s slices to %s", index, tuple(image_size), size)
        if any(s % factor for s in size):
            raise ConfigError(
                f"phases[{index}] resolution {phase.resolution!r} is not a multiple of the "
                f"autoencoder's downsample factor {factor}"
            )
        if disc.enabled and patch_discriminator_output_size(min(size), disc) < 1:
            raise ConfigError(
                f"phases[{index}] resolution {phase.resolution!r} is too small for the "
                f"discriminator with num_layers_d={disc.num_layers_d}"
            )
        if perceptual.enabled and min(size) < MIN_LPIPS_SIZE[perceptual.net]:
            raise ConfigError(
                f"phases[{index}] resolution {phase.resolution!r} is below LPIPS-{perceptual.net}'s "
                f"minimum of {MIN_LPIPS_SIZE[perceptual.net]} pixels"
            )


def train_autoencoder_2d(
    train: TensorBundle, val: TensorBundle, params: Mapping[str, Any], checkpoint_root: str | Path
) -> tuple[TensorBundle, dict[str, Any]]:
    """Train the single-channel 2D autoencoder on ``train`` slices; validate on ``val``.

    Args:
        train / val: 2D slice bundles (``images`` [N, C, H, W] in [-1, 1], metadata
            ``modalities``).
        params: see `AutoencoderJob2DParams`.
        checkpoint_root: phase checkpoints go to ``<root>/phase_<i>_<res>/``; a re-run resumes.

    Returns:
        ``(weights, report)``, on every node of a multi-node run (`medgen.training.job`).
    """
    p = AutoencoderJob2DParams.from_dict(params)
    _check_sizes(p, train["images"].shape[2:])
    perceptual_loss = build_perceptual_loss(
        p.perceptual
    )  # missing weights fail here, not in a worker
    training = {"seed": 0, **p.training}
    images = channels_as_images(train["images"])
    log.info("training the 2D autoencoder on %d single-channel images", len(images))
    start = time.perf_counter()
    result = train_progressive(
        images,
        p.phases,
        training,
        checkpoint_root,
        name=WEIGHTS_KIND,
        factory=build_phase_task,
        options={
            "autoencoder": p.autoencoder,
            "discriminator": p.discriminator,
            "loss": p.loss,
            "perceptual": p.perceptual,
            "seed": training["seed"],
            "accum_steps": phase_training_config(training, parse_phases(p.phases)[0]).accum_steps,
        },
        resources=p.resources,
        torch_threads=p.torch_threads,
    )
    seconds = time.perf_counter() - start
    use_ema = result.ema_state is not None
    autoencoder = build_kl_autoencoder(p.autoencoder, in_channels=1, spatial_dims=2)
    autoencoder.load_state_dict(
        autoencoder_state(result.ema_state if use_ema else result.model_state)
    )
    weights = to_weights_bundle(
        autoencoder, modalities=train.metadata.get("modalities"), ema=use_ema
    )
    validation_config = config_from_params(ValidationConfig, p.validation, "validation")
    report = {
        "kind": WEIGHTS_KIND,
        "weights": "ema" if use_ema else "raw",
        "train_images": len(images),
        "modalities": list(train.metadata.get("modalities") or []),
        "autoencoder": autoencoder.config.to_dict(),
        "discriminator": discriminator_config(p.discriminator).to_dict(),
        "loss": config_from_params(GANLossWeights, p.loss, "loss").to_dict(),
        "perceptual": {
            **config_from_params(PerceptualConfig, p.perceptual, "perceptual").to_dict(),
            "backbone": perceptual_loss.backbone_name if perceptual_loss is not None else None,
        },
        "training": training,
        "phases": [_phase_report(o) for o in result.phases],
        "seconds": seconds,
        "validation": reconstruction_report(autoencoder, val, validation_config),
    }
    return weights, report


def autoencoder_state(gan_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``autoencoder.*`` entries of an `AutoencoderGAN` state dict, without the prefix."""
    return sub_state_dict(gan_state, "autoencoder.")


def _phase_report(outcome) -> dict[str, Any]:
    steps = [r for r in outcome.history if r.get("kind") == "step"]
    final = (
        {k: v for k, v in steps[-1].items() if k not in ("kind", "step", "epoch")} if steps else {}
    )
    return {**outcome.to_dict(), "final": final}


def to_weights_bundle(
    autoencoder: KLAutoencoder, *, modalities: Sequence[str] | None = None, ema: bool = False
) -> TensorBundle:
    """The autoencoder's state dict + what `load_autoencoder_2d` needs to rebuild it."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in autoencoder.state_dict().items()}
    metadata = {
        "kind": WEIGHTS_KIND,
        "config": autoencoder.config.to_dict(),
        "spatial_dims": autoencoder.spatial_dims,
        "in_channels": autoencoder.in_channels,
        "latent_channels": autoencoder.latent_channels,
        "downsample_factor": autoencoder.downsample_factor,
        "weights": "ema" if ema else "raw",
        "modalities": list(modalities or []),
        "per_channel": True,
    }
    return TensorBundle(tensors, metadata)


def load_autoencoder_2d(bundle: TensorBundle) -> KLAutoencoder:
    """Inverse of `to_weights_bundle`: the autoencoder in eval mode, on the CPU."""
    kind = bundle.metadata.get("kind")
    if kind != WEIGHTS_KIND:
        raise ValueError(f"expected a {WEIGHTS_KIND!r} weights bundle, got kind={kind!r}")
    autoencoder = build_kl_autoencoder(
        bundle.metadata["config"], in_channels=int(bundle.metadata["in_channels"]), spatial_dims=2
    )
    autoencoder.load_state_dict(bundle.tensors)
    return autoencoder.eval()


@torch.no_grad()
def reconstruct_channels(
    autoencoder: KLAutoencoder, images: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """``decode(encode(x))`` of every channel of ``images`` [N, C, H, W], clamped to [-1, 1]."""
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = channels_as_images(images[start : start + batch_size]).to(device)
        recon = autoencoder.decode(autoencoder.encode(batch)).clamp(-1.0, 1.0).cpu()
        out.append(recon.reshape(-1, images.shape[1], *images.shape[2:]))
    return torch.cat(out)


def reconstruction_report(
    autoencoder: KLAutoencoder, val: TensorBundle, config: ValidationConfig | None = None
) -> dict[str, Any]:
    """PSNR / SSIM / MAE / MSE of posterior-mean reconstructions, overall and per modality."""
    config = config or ValidationConfig()
    images = val["images"].float()
    if config.max_slices is not None and len(images) > config.max_slices:
        # Evenly spaced slices: every subject and depth is represented, deterministically.
        index = torch.linspace(0, len(images) - 1, config.max_slices).round().long()
        images = images[index]
    recon = reconstruct_channels(autoencoder, images, config.batch_size)
    modalities = list(
        val.metadata.get("modalities") or [f"channel_{c}" for c in range(images.shape[1])]
    )
    report: dict[str, Any] = {
        "reconstruction": "decode(posterior mean), clamped to [-1, 1]",
        "n_slices": len(images),
        "overall": paired_metrics(
            channels_as_images(recon), channels_as_images(images), data_range=DATA_RANGE
        ),
        "per_modality": {
            name: paired_metrics(recon[:, c : c + 1], images[:, c : c + 1], data_range=DATA_RANGE)
            for c, name in enumerate(modalities)
        },
    }
    report.update(_lpips(recon, images, config.lpips_net))
    return report


def _lpips(recon: torch.Tensor, images: torch.Tensor, net: str) -> dict[str, Any]:
    from medgen.metrics.lpips_metric import LPIPSScorer

    if min(images.shape[2:]) < MIN_LPIPS_SIZE[net]:
        return {"lpips": None, "lpips_skipped": f"images smaller than LPIPS-{net}'s minimum"}
    try:
        scorer = LPIPSScorer(net=net, pretrained_backbone=True)
    except MissingWeightsError as exc:
        return {"lpips": None, "lpips_skipped": str(exc)}
    return {"lpips": scorer.quality(images, recon), "lpips_backbone": scorer.name}


__all__ = [
    "AutoencoderJob2DParams",
    "ValidationConfig",
    "autoencoder_state",
    "build_phase_task",
    "channels_as_images",
    "load_autoencoder_2d",
    "reconstruct_channels",
    "reconstruction_report",
    "to_weights_bundle",
    "train_autoencoder_2d",
]

"""Parameters of the 3D patch-volume autoencoder's two training stages (`training_3d`).

The node's ``params`` dict (every level refuses unknown keys)::

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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medgen.autoencoder.gan import GANLossWeights, PatchDiscriminatorConfig
from medgen.autoencoder.losses import PerceptualConfig
from medgen.config import config_from_params, refuse_unknown_keys
from medgen.models.patch_volume_autoencoder import PatchVolumeAutoencoderConfig
from medgen.training import TrainingConfig

#: The CPU-demo network (the config defaults): 4x compression, two narrow stages, KL latent.
DEFAULT_AUTOENCODER: dict[str, Any] = PatchVolumeAutoencoderConfig().to_dict()


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

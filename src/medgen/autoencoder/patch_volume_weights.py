"""The patch-volume autoencoder's weights bundle: what a stage writes, and how it is read back.

A bundle holds ``autoencoder.*`` and ``discriminator.*`` state-dict tensors and metadata
(``kind``, ``stage``, ``config``, ``in_channels``, ``latent_channels``, ``downsample_factor``,
``decoder_halo``, ``modalities``, ``discriminator``, ``weights``: ema or raw).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from medgen.autoencoder.patch_volume_params import ResolvedStage
from medgen.datasets import TensorBundle
from medgen.models.patch_volume_autoencoder import (
    PatchVolumeAutoencoder,
    build_patch_volume_autoencoder,
)
from medgen.training.results import sub_state_dict

KIND = "patch_volume_autoencoder"
# Options that change memory or speed, not what is learned: they may differ between stages.
_NOT_LEARNED = ("patch_batch_size",)


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
        f"autoencoder.{k}": v for k, v in sub_state_dict(autoencoder_state, "autoencoder.").items()
    }
    tensors.update(
        {f"discriminator.{k}": v for k, v in sub_state_dict(gan_state, "discriminator.").items()}
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
    model.load_state_dict(sub_state_dict(weights.tensors, "autoencoder."))
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

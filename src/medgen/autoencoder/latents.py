"""Latent datasets: every item of a split encoded once by a trained autoencoder.

A latent bundle stores the posterior mean (`LatentAutoencoder.encode`, never a posterior
sample, so the dataset is deterministic) *unscaled*, and the scale factor in its metadata.
The scale factor is Rombach et al.'s (2022, https://arxiv.org/abs/2112.10752, sec. 4.3 and
appendix G) ``1 / std`` of the training latents: diffusion models assume data of roughly unit
variance, and every split is scaled by the training split's factor.

A single-channel autoencoder (the 2D one) encodes each image channel separately
(``per_channel``): latents of modality ``m`` are channels ``m * c ... (m + 1) * c - 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from medgen.autoencoder.protocol import LatentAutoencoder
from medgen.config import config_tree_from_params, require_positive_ints
from medgen.datasets import TensorBundle

# Carried over from the source bundle: labels and indices that condition or identify items.
PASSTHROUGH_KEYS = ("seg", "lesion_present", "subject_index", "slice_index")


@dataclass(frozen=True)
class Encoding2DParams:
    """``autoencoder.encoding_2d``: ``modalities`` to encode (null: every modality of the
    slices), ``batch_size`` slices per encoder batch."""

    modalities: tuple[str, ...] | None
    batch_size: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Encoding2DParams:
        config = config_tree_from_params(cls, params, "autoencoder.encoding_2d")
        require_positive_ints(config, "autoencoder.encoding_2d", "batch_size")
        return config


@dataclass(frozen=True)
class Encoding3DParams:
    """``autoencoder.encoding_3d``: ``batch_size`` volumes per encoder batch (the modalities
    are the 3D autoencoder's own)."""

    batch_size: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Encoding3DParams:
        config = config_tree_from_params(cls, params, "autoencoder.encoding_3d")
        require_positive_ints(config, "autoencoder.encoding_3d", "batch_size")
        return config


def select_channels(
    bundle: TensorBundle, modalities: Sequence[str] | None
) -> tuple[torch.Tensor, list[str]]:
    """``bundle["images"]`` restricted to ``modalities`` (None: all), and their names."""
    available = list(bundle.metadata.get("modalities") or [])
    images = bundle["images"]
    if modalities is None:
        return images, available
    missing = [m for m in modalities if m not in available]
    if missing:
        raise ValueError(f"modalities {missing} are not in the data, which has {available}")
    return images[:, [available.index(m) for m in modalities]], list(modalities)


@torch.no_grad()
def encode_images(
    autoencoder: LatentAutoencoder,
    images: torch.Tensor,
    *,
    per_channel: bool,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    desc: str = "encoding",
) -> torch.Tensor:
    """Posterior means of ``images`` ``[N, C, *spatial]`` on the CPU, in batches.

    ``per_channel``: each channel is a separate single-channel image (latents concatenated
    along channels in the channel order); otherwise all channels are encoded together.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    expected = 1 if per_channel else images.shape[1]
    if autoencoder.in_channels != expected:
        raise ValueError(
            f"autoencoder takes {autoencoder.in_channels} channel(s), the data gives {expected} "
            f"per image (per_channel={per_channel})"
        )
    was_training = getattr(autoencoder, "training", False)
    if hasattr(autoencoder, "eval"):
        autoencoder.eval()
    out = []
    try:
        for start in tqdm(range(0, len(images), batch_size), desc=desc, leave=False):
            batch = images[start : start + batch_size].to(device)
            if per_channel:
                parts = [autoencoder.encode(batch[:, c : c + 1]) for c in range(batch.shape[1])]
                z = torch.cat(parts, dim=1)
            else:
                z = autoencoder.encode(batch)
            out.append(z.float().cpu())
    finally:
        if was_training:
            autoencoder.train()
    return torch.cat(out)


def latent_scale_factor(latents: torch.Tensor) -> float:
    """``1 / std`` over all elements of the (training) latents."""
    std = float(latents.float().std())
    if not torch.isfinite(torch.tensor(std)) or std <= 0:
        raise ValueError(f"latents have standard deviation {std}: cannot derive a scale factor")
    return 1.0 / std


def latent_bundle(
    source: TensorBundle,
    latents: torch.Tensor,
    *,
    scale_factor: float,
    modalities: Sequence[str],
    autoencoder: LatentAutoencoder,
    autoencoder_kind: str,
    per_channel: bool,
) -> TensorBundle:
    """A latent dataset: ``latents`` plus the source's labels/indices and how to use them."""
    tensors = {"latents": latents.contiguous()}
    tensors.update({k: source[k] for k in PASSTHROUGH_KEYS if k in source.tensors})
    metadata: dict[str, Any] = {
        "scale_factor": float(scale_factor),
        "scale_factor_source": "1 / std of the training split's latents",
        "latent": "posterior mean, unscaled (multiply by scale_factor for diffusion)",
        "modalities": list(modalities),
        "per_channel": bool(per_channel),
        "latent_channels": int(autoencoder.latent_channels),
        "downsample_factor": int(autoencoder.downsample_factor),
        "spatial_dims": int(autoencoder.spatial_dims),
        "autoencoder": autoencoder_kind,
        "image_spatial_shape": list(source["images"].shape[2:]),
    }
    for key in ("split", "subjects", "intensity_range", "seg_labels"):
        if key in source.metadata:
            metadata[key] = source.metadata[key]
    return TensorBundle(tensors, metadata)


def encode_splits(
    autoencoder: LatentAutoencoder,
    splits: dict[str, TensorBundle],
    *,
    autoencoder_kind: str,
    modalities: Sequence[str] | None = None,
    per_channel: bool = False,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> dict[str, TensorBundle]:
    """Encode every split; the scale factor comes from the ``train`` split and is stored in all."""
    if "train" not in splits:
        raise ValueError(
            f"encode_splits needs a 'train' split for the scale factor, got {sorted(splits)}"
        )
    encoded: dict[str, tuple[torch.Tensor, list[str]]] = {}
    for name, bundle in splits.items():
        images, names = select_channels(bundle, modalities)
        encoded[name] = (
            encode_images(
                autoencoder,
                images,
                per_channel=per_channel,
                batch_size=batch_size,
                device=device,
                desc=f"encoding {name}",
            ),
            names,
        )
    scale = latent_scale_factor(encoded["train"][0])
    return {
        name: latent_bundle(
            splits[name],
            latents,
            scale_factor=scale,
            modalities=names,
            autoencoder=autoencoder,
            autoencoder_kind=autoencoder_kind,
            per_channel=per_channel,
        )
        for name, (latents, names) in encoded.items()
    }

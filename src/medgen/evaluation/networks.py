"""The two networks evaluation trains on the real training split, and their storage.

Both are stored as a ``TensorBundle`` (weights as tensors, architecture as JSON
metadata), so the catalog writes safetensors and loading runs no pickled code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medgen.config import config_from_params
from medgen.data.labels import has_lesion
from medgen.datasets import TensorBundle
from medgen.metrics import InDomainEncoder, load_in_domain_backbone, train_in_domain_backbone
from medgen.metrics.fidelity import train_segmenter
from medgen.runtime import torch_threads

PROVENANCE = "trained on the real training split"


def subsample(n: int, limit: int | None, seed: int) -> torch.Tensor:
    """Seeded sorted index of at most ``limit`` of ``n`` items (all when limit is None)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.as_tensor(np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False)))


def train_feature_network(slices: TensorBundle, params: Mapping[str, Any], seed: int = 0) -> TensorBundle:
    """Train the in-domain FID encoder on (a seeded subset of) the real training slices.

    Every modality channel is a training image; a lesion-present head is added when
    ``params["lesion_head"]`` is true, so lesion burden is part of the feature space.
    """
    index = subsample(len(slices), params.get("max_train_slices"), seed)
    images = slices["images"][index]
    labels = {"lesion": has_lesion(slices["seg"][index]).long()} if params.get("lesion_head", True) else None
    encoder, history = train_in_domain_backbone(
        images,
        labels,
        epochs=int(params.get("epochs", 3)),
        batch_size=int(params.get("batch_size", 64)),
        learning_rate=float(params.get("learning_rate", 1e-3)),
        feature_dim=int(params.get("feature_dim", 64)),
        width=int(params.get("width", 16)),
        seed=seed,
    )
    metadata = {
        "config": dict(encoder.config),
        "provenance": PROVENANCE,
        "train_slices": len(index),
        "train_images": len(index) * images.shape[1],
        "modalities": slices.metadata.get("modalities"),
        "objective": "rotation prediction" + (" + lesion-present head" if labels else ""),
        "history": history,
    }
    return TensorBundle(dict(encoder.state_dict()), metadata)


def feature_network_from_bundle(bundle: TensorBundle) -> InDomainEncoder:
    """Rebuild the encoder saved by :func:`train_feature_network`."""
    return load_in_domain_backbone({"config": bundle.metadata["config"], "state_dict": bundle.tensors})


@dataclass(frozen=True)
class SegmenterSettings:
    """``params: evaluation.fidelity`` (defaults = the CPU demo's; see
    :func:`medgen.metrics.fidelity.train_segmenter` for the training ones).

    enabled (True): compute conditioning_dice at all. max_train_slices (None: all):
    seeded subset of the real training slices. epochs (8), batch_size (16),
    learning_rate (1e-2), channels ((8, 16, 32)), strides ((2, 2)),
    lesion_fraction (0.5), flip (True). torch_threads (None: torch's default): intra-op
    threads while training; a net this small gains little from more, and on a shared
    CPU two threads made each step over ten times slower (1.1 s against 83 ms).
    """

    enabled: bool = True
    max_train_slices: int | None = None
    epochs: int = 8
    batch_size: int = 16
    learning_rate: float = 1e-2
    channels: tuple[int, ...] = (8, 16, 32)
    strides: tuple[int, ...] = (2, 2)
    lesion_fraction: float = 0.5
    flip: bool = True
    torch_threads: int | None = None


def fit_segmenter(
    images: torch.Tensor, masks: torch.Tensor, params: Mapping[str, Any], seed: int = 0
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the fidelity segmenter on real images/masks (already at the generated size).

    ``params``: :class:`SegmenterSettings` fields (unknown keys raise ValueError).
    Returns the model and what metrics.json reports about its training.
    """
    settings = config_from_params(SegmenterSettings, params, "evaluation.fidelity")
    index = subsample(len(images), settings.max_train_slices, seed)
    train_masks = masks[index]
    start = time.perf_counter()
    with torch_threads(settings.torch_threads):
        model, history = train_segmenter(
            images[index],
            train_masks,
            epochs=int(settings.epochs),
            batch_size=int(settings.batch_size),
            learning_rate=float(settings.learning_rate),
            channels=tuple(settings.channels),
            strides=tuple(settings.strides),
            lesion_fraction=float(settings.lesion_fraction),
            flip=bool(settings.flip),
            seed=seed,
        )
    return model, {
        "train_slices": len(index),
        "train_lesion_slices": int(train_masks.flatten(1).gt(0).any(dim=1).sum()),
        "lesion_fraction": settings.lesion_fraction,
        "epochs": len(history),
        "loss": "DiceCE (sigmoid, batch Dice)",
        "first_loss": history[0],
        "final_loss": history[-1],
        "seconds": round(time.perf_counter() - start, 1),
    }

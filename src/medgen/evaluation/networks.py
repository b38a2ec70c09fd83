"""The two networks evaluation trains on the real training split, and their storage.

Both are stored as a ``TensorBundle`` (weights as tensors, architecture as JSON
metadata), so the catalog writes safetensors and loading runs no pickled code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from medgen.data.labels import has_lesion
from medgen.datasets import TensorBundle
from medgen.metrics import InDomainEncoder, load_in_domain_backbone, train_in_domain_backbone
from medgen.metrics.fidelity import train_segmenter

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


def fit_segmenter(
    images: torch.Tensor, masks: torch.Tensor, params: Mapping[str, Any], seed: int = 0
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the fidelity segmenter on real images/masks (already at the generated size)."""
    index = subsample(len(images), params.get("max_train_slices"), seed)
    model, history = train_segmenter(
        images[index],
        masks[index],
        epochs=int(params.get("epochs", 6)),
        batch_size=int(params.get("batch_size", 32)),
        learning_rate=float(params.get("learning_rate", 1e-2)),
        channels=tuple(params.get("channels", (8, 16, 32))),
        strides=tuple(params.get("strides", (2, 2))),
        seed=seed,
    )
    return model, {"train_slices": len(index), "epochs": len(history), "final_loss": history[-1]}

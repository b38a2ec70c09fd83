"""The two networks evaluation trains on the real training split, and their storage.

Both are stored as a ``TensorBundle`` (weights as tensors, architecture as JSON
metadata), so the catalog writes safetensors and loading runs no pickled code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from medgen.config import config_tree_from_params
from medgen.data.labels import has_lesion
from medgen.datasets import TensorBundle
from medgen.evaluation.params import FidelityParams, InDomainBackboneParams
from medgen.metrics import InDomainEncoder, load_in_domain_backbone, train_in_domain_backbone
from medgen.metrics.fidelity import train_segmenter
from medgen.runtime import torch_threads

logger = logging.getLogger(__name__)


def subsample(n: int, limit: int | None, seed: int) -> torch.Tensor:
    """Seeded sorted index of at most ``limit`` of ``n`` items (all when limit is None)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.as_tensor(
        np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    )


def train_feature_network(
    slices: TensorBundle,
    params: InDomainBackboneParams | Mapping[str, Any],
    seed: int,
    data_name: str = "slices_2d_train (the real training split)",
) -> TensorBundle:
    """Train the in-domain FID encoder on (a seeded subset of) the real training slices.

    Every modality channel is a training image; a lesion-present head is added when
    ``params.lesion_head`` is true, so lesion burden is part of the feature space.
    ``data_name`` names ``slices`` in the encoder's provenance (which its training writes).
    """
    if not isinstance(params, InDomainBackboneParams):
        params = InDomainBackboneParams.from_params(params)
    index = subsample(len(slices), params.max_train_slices, seed)
    images = slices["images"][index]
    labels = {"lesion": has_lesion(slices["seg"][index]).long()} if params.lesion_head else None
    encoder, history = train_in_domain_backbone(
        images,
        labels,
        epochs=int(params.epochs),
        batch_size=int(params.batch_size),
        learning_rate=float(params.learning_rate),
        feature_dim=int(params.feature_dim),
        width=int(params.width),
        seed=seed,
        data_name=data_name,
    )
    metadata = {
        "config": dict(encoder.config),
        "provenance": encoder.provenance,
        "train_slices": len(index),
        "train_images": len(index) * images.shape[1],
        "modalities": slices.metadata.get("modalities"),
        "objective": "rotation prediction" + (" + lesion-present head" if labels else ""),
        "history": history,
    }
    return TensorBundle(dict(encoder.state_dict()), metadata)


def feature_network_from_bundle(bundle: TensorBundle) -> InDomainEncoder:
    """Rebuild the encoder saved by :func:`train_feature_network`."""
    return load_in_domain_backbone(
        {"config": bundle.metadata["config"], "state_dict": bundle.tensors}
    )


def fit_segmenter(
    images: torch.Tensor,
    masks: torch.Tensor,
    params: FidelityParams | Mapping[str, Any],
    seed: int,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the fidelity segmenter on real images/masks (already at the generated size).

    ``params``: `FidelityParams` (a mapping is validated: unknown keys raise ValueError).
    Returns the model and what metrics.json reports about its training.
    """
    settings = (
        params
        if isinstance(params, FidelityParams)
        else config_tree_from_params(FidelityParams, params, "evaluation.scoring.fidelity")
    )
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
    # the time goes to the log, not into metrics.json, whose content must repeat exactly
    logger.info("evaluation: segmenter trained in %.1f s", time.perf_counter() - start)
    return model, {
        "train_slices": len(index),
        "train_lesion_slices": int(train_masks.flatten(1).gt(0).any(dim=1).sum()),
        "lesion_fraction": settings.lesion_fraction,
        "epochs": len(history),
        "loss": "DiceCE (sigmoid, batch Dice)",
        "first_loss": history[0],
        "final_loss": history[-1],
    }

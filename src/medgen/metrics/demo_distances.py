"""The distance checks of `medgen.metrics.demo_checks`: an in-domain feature network trained
on the real training images, and Fréchet distances of generated 2D slices and (2.5D) volumes
to held-out real images beside the trivial baselines and the real-vs-real floor.

Split from demo_checks so that each module stays small: that module holds the parameter
block, the records and the checks that need no feature network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medgen.metrics.backbones import FeatureBackbone, in_domain_backbone
from medgen.metrics.demo_checks import (
    BACKBONE_PROVENANCE,
    CheckBackboneParams,
    DemoCheckParams,
    brain_shape_check,
    check_record,
    diversity_check,
    frechet_check,
    intensity_check,
    lesion_contrast_check,
    noise_baselines,
    overall_status,
)
from medgen.metrics.fid import (
    PLANES,
    extract_channel_features,
    fid_from_channel_features,
    plane_slices,
)
from medgen.metrics.in_domain import train_in_domain_backbone
from medgen.metrics.lesion_effect import lesion_effect_check


def _square(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)


def train_check_backbone(
    images: torch.Tensor, params: CheckBackboneParams, seed: int
) -> FeatureBackbone:
    """The in-domain encoder trained on (a seeded subset of) real 2D images ``[N, C, H, W]``,
    resized to ``params.size``², as a clean-fid backbone."""
    if len(images) > params.max_images:
        generator = torch.Generator().manual_seed(seed)
        images = images[torch.randperm(len(images), generator=generator)[: params.max_images]]
    encoder, _ = train_in_domain_backbone(
        _square(images, params.size).clamp(-1, 1),
        epochs=params.epochs,
        batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        feature_dim=params.feature_dim,
        width=params.width,
        seed=seed,
    )
    return in_domain_backbone(encoder, provenance=BACKBONE_PROVENANCE)


class PlaneFeatures:
    """2.5D Fréchet distances between volume sets whose features are extracted once each."""

    def __init__(self, backbone: FeatureBackbone, slices_per_volume: int, central_fraction: float):
        self.backbone = backbone
        self.options = {
            "slices_per_volume": slices_per_volume,
            "central_fraction": central_fraction,
        }

    def features(self, volumes: torch.Tensor) -> dict[str, np.ndarray]:
        return {
            plane: extract_channel_features(
                plane_slices(volumes, plane, **self.options), self.backbone
            )
            for plane in PLANES
        }

    @staticmethod
    def distance(reference: dict[str, np.ndarray], sample: dict[str, np.ndarray]) -> float:
        """Mean over planes of the per-channel-mean 2D Fréchet distance."""
        return float(
            np.mean([fid_from_channel_features(reference[p], sample[p])[0] for p in PLANES])
        )


def all_plane_slices(volumes: torch.Tensor, slices_per_volume: int) -> torch.Tensor:
    """Slices of every plane of ``volumes``, each resized to the largest side (square)."""
    size = max(volumes.shape[2:])
    return torch.cat(
        [
            _square(plane_slices(volumes, p, slices_per_volume=slices_per_volume), size)
            for p in PLANES
        ]
    )


def _arrays(features: np.ndarray | Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return list(features.values()) if isinstance(features, Mapping) else [features]


def _frechet(
    name: str,
    features: Callable[[torch.Tensor], Any],
    distance: Callable[[Any, Any], float],
    reference: torch.Tensor,
    rows: Mapping[str, torch.Tensor],
    margin: float,
    **values: Any,
) -> dict[str, Any]:
    """Features of the reference and of every row once, their distances, the check record.

    Distances use the sample covariance (what published FIDs use), which is singular unless
    every set has more samples than features: fewer fail the check, naming the counts."""
    ref = features(reference)
    row_features = {key: features(images) for key, images in rows.items()}
    arrays = [a for f in (ref, *row_features.values()) for a in _arrays(f)]
    fewest, dim = min(a.shape[0] for a in arrays), arrays[0].shape[-1]
    if fewest <= dim:
        return check_record(
            name,
            False,
            f"Fréchet distance <= {margin} x the best trivial baseline's",
            reason=f"a set has {fewest} samples for {dim} features: its covariance is "
            "singular (lower backbone.feature_dim or score more images)",
            **values,
        )
    fd = {key: distance(ref, f) for key, f in row_features.items()}
    return frechet_check(
        name,
        fd["generated"],
        {k: fd[k] for k in BASELINES},
        margin=margin,
        real_floor=round(fd["real_train"], 4),
        **values,
    )


def _rows(generated: torch.Tensor, real_train: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """What is scored against the reference: the generated images, the two baselines made
    from the training images, and as many real training images (the floor)."""
    n = len(generated)
    generator = torch.Generator().manual_seed(seed)
    floor = real_train[torch.randperm(len(real_train), generator=generator)[:n]]
    return {"generated": generated, **noise_baselines(real_train, n, seed), "real_train": floor}


BASELINES = ("gaussian_noise", "mean_plus_noise")


def volume_checks(
    generated: torch.Tensor,
    real_train: torch.Tensor,
    real_reference: torch.Tensor,
    params: DemoCheckParams,
    *,
    classes: tuple[torch.Tensor, torch.Tensor] | None = None,
    modalities: list[str] | None = None,
    reconstructed_train: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Brain shape and intensity range of generated volumes ``[N, C, D, H, W]`` against the
    real training volumes, and their 2.5D Fréchet distance to held-out ``real_reference``
    volumes beside the baselines (made from the training volumes) and as many real training
    volumes (the floor: what reproducing the training set would give).

    ``classes``: the ``lesion_present`` labels of the generated and the real training
    volumes, with ``modalities`` their channel names: with ``params.lesion_effect`` set, the
    class-conditional lesion effect is checked too, with the autoencoder's ceiling where
    ``reconstructed_train`` (the training volumes through it) is given."""
    if not params.enabled:
        return {"status": "not run", "reason": "demo_checks.enabled is false"}
    generated, real_train = generated.float(), real_train.float()
    backbone = train_check_backbone(
        all_plane_slices(real_train, params.slices_per_volume), params.backbone, params.seed
    )
    planes = PlaneFeatures(backbone, params.slices_per_volume, params.central_fraction)
    checks = {
        "brain_shape": brain_shape_check(
            generated, real_train, threshold=params.brain_threshold, min_dice=params.min_brain_dice
        ),
        "intensity_range": intensity_check(
            generated,
            real_train,
            threshold=params.brain_threshold,
            tolerance=params.intensity_tolerance,
        ),
        "diversity": diversity_check(generated, real_train, min_ratio=params.min_diversity),
        "frechet_2p5d": _frechet(
            "frechet_2p5d",
            planes.features,
            planes.distance,
            real_reference.float(),
            _rows(generated, real_train, params.seed),
            params.baseline_margin,
            n_generated=len(generated),
            n_reference=len(real_reference),
            backbone=backbone.name,
            **planes.options,
        ),
    }
    if params.lesion_effect is not None and classes is not None:
        checks["lesion_effect"] = lesion_effect_check(
            generated,
            classes[0],
            real_train,
            classes[1],
            modalities or [],
            params.lesion_effect,
            brain_threshold=params.brain_threshold,
            min_ratio=params.min_contrast_ratio,
            reconstructed=reconstructed_train,
        )
    return {"status": overall_status(checks), "checks": checks}


def slice_checks(
    generated: torch.Tensor,
    real_train: torch.Tensor,
    real_reference: torch.Tensor,
    lesion_contrast: Mapping[str, Any],
    params: DemoCheckParams,
) -> dict[str, Any]:
    """2D Fréchet distance of generated slices ``[N, C, H, W]`` to held-out ``real_reference``
    slices (same size and channels) beside the baselines and the floor made from
    ``real_train``; the lesion contrast at the mask (the record of
    `medgen.generation.lesion_contrast_report`) against the real one."""
    if not params.enabled:
        return {"status": "not run", "reason": "demo_checks.enabled is false"}
    generated, real_train = generated.float(), real_train.float()
    backbone = train_check_backbone(real_train, params.backbone, params.seed)
    checks = {
        "frechet_2d": _frechet(
            "frechet_2d",
            lambda images: extract_channel_features(images, backbone),
            lambda ref, sample: fid_from_channel_features(ref, sample)[0],
            real_reference.float(),
            _rows(generated, real_train, params.seed),
            params.baseline_margin,
            n_generated=len(generated),
            n_reference=len(real_reference),
            backbone=backbone.name,
        ),
        "lesion_contrast": lesion_contrast_check(
            lesion_contrast["generated_own_masks"]["mean"],
            lesion_contrast["real"]["mean"],
            min_ratio=params.min_contrast_ratio,
        ),
    }
    return {"status": overall_status(checks), "checks": checks}


__all__ = ["PlaneFeatures", "slice_checks", "train_check_backbone", "volume_checks"]

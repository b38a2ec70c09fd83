"""Checks, written as code, that a demo's outputs are recognisably what they claim to be.

A CPU demo may be small, but a generated "brain volume" that is textured noise tells a user
the software does not work. Each check here compares the outputs with the real data and with
*trivial baselines* that any working model must beat, and returns a JSON-ready record with
``status`` ``passed`` or ``failed``, the values and the criterion, for the pipelines'
``summary.json`` and MLflow:

* :func:`brain_shape_check`: the foreground (channel mean above ``brain_threshold``; medgen
  intensities are [-1, 1] with background at -1) of every generated volume against the mean
  real brain mask (voxels that are foreground in at least half of the real volumes), Dice.
* :func:`intensity_check`: the generated intensities per channel on the real scale (range
  and tissue level).
* :func:`frechet_check`: the Fréchet distance of the generated images to held-out real
  images against two baselines with the same count (:func:`noise_baselines`, made from the
  training images, all a model could know): Gaussian noise with the real intensity mean and
  spread, and the mean real image plus Gaussian noise of the real per-pixel spread. Both have
  the real first two moments, overall or per pixel, and no structure; "clearly below" is
  ``value <= margin * best baseline``. As many real training images are scored the same way
  (the floor: what reproducing the training set would give).
* :func:`diversity_check`: generated volumes differ from each other as real ones do (the
  Fréchet distance of a few volumes alone would pass one mean brain repeated).
* :func:`lesion_contrast_check`: a conditioned image model's lesion contrast at its mask
  against the real contrast; for class-conditional volumes, which have no mask, the class
  effect on the enhancement map (`medgen.metrics.lesion_effect`).
* :func:`reconstruction_check`: an autoencoder's PSNR / SSIM next to trilinear down- and
  up-sampling at the same compression (:func:`trilinear_round_trip`).

Distances use an in-domain feature network (`medgen.metrics.in_domain`) trained here on the
real training images (slices of the three planes for volumes), the same network for every
row, so the rows compare with each other and with nothing else; 2.5D distances are the mean
over the three planes of the per-channel 2D distance, as `medgen.metrics.fid.compute_fid_2p5d`
computes it, with each set's features extracted once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medgen.config import config_tree_from_params
from medgen.metrics.paired import paired_metrics

PASSED, FAILED = "passed", "failed"
BACKBONE_PROVENANCE = "trained for the demo checks on the real training split"


@dataclass(frozen=True)
class CheckBackboneParams:
    """The in-domain feature network of the distance checks (`train_in_domain_backbone`)."""

    max_images: int
    size: int
    epochs: int
    batch_size: int
    learning_rate: float
    feature_dim: int
    width: int


@dataclass(frozen=True)
class LesionEffectParams:
    """The 3D class-conditional lesion effect (`medgen.metrics.lesion_effect`).

    post, pre: the post- and pre-contrast modalities of the enhancement (subtraction) map.
    quantile: of the real lesion-absent brain voxels' enhancement: the "enhancing" threshold.
    """

    post: str
    pre: str
    quantile: float


@dataclass(frozen=True)
class DemoCheckParams:
    """A ``demo_checks`` parameter block (values in conf/base, no defaults in code).

    enabled: run the checks (false: the summary says ``not run``).
    brain_threshold: foreground is a channel mean above it ([-1, 1] units).
    min_brain_dice: the brain-shape criterion.
    intensity_tolerance: largest allowed gap between generated and real intensity quantiles.
    baseline_margin: the generated distance must be at most this fraction of the best
        trivial baseline's.
    min_contrast_ratio: generated lesion contrast / real contrast must reach it.
    min_diversity: generated per-voxel spread across volumes / the real one must reach it.
    slices_per_volume: slices per plane and volume for 2.5D distances (evenly spaced over the
        central ``central_fraction`` of the axis).
    central_fraction: see ``slices_per_volume``.
    seed: seeds the baselines, the backbone and the subsets.
    backbone: :class:`CheckBackboneParams`.
    lesion_effect: :class:`LesionEffectParams` (3D volumes of a class-conditional generator;
        absent or null: not measured; its criterion is ``min_contrast_ratio``).
    """

    enabled: bool
    brain_threshold: float
    min_brain_dice: float
    intensity_tolerance: float
    baseline_margin: float
    min_contrast_ratio: float
    min_diversity: float
    slices_per_volume: int
    central_fraction: float
    seed: int
    backbone: CheckBackboneParams
    lesion_effect: LesionEffectParams | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], section: str) -> DemoCheckParams:
        config = config_tree_from_params(cls, params, section)
        if not 0.0 < config.baseline_margin <= 1.0:
            raise ValueError(
                f"{section}.baseline_margin must be in (0, 1], got {config.baseline_margin}"
            )
        if not 0.0 < config.central_fraction <= 1.0:
            raise ValueError(
                f"{section}.central_fraction must be in (0, 1], got {config.central_fraction}"
            )
        return config


def check_record(name: str, passed: bool, criterion: str, **values: Any) -> dict[str, Any]:
    """One check's JSON-ready record: ``status``, ``criterion`` and its values."""
    return {"check": name, "status": PASSED if passed else FAILED, "criterion": criterion, **values}


def overall_status(checks: Mapping[str, Mapping[str, Any]]) -> str:
    """``passed`` when every check passed, else ``failed``."""
    return PASSED if all(c["status"] == PASSED for c in checks.values()) else FAILED


def foreground_masks(images: torch.Tensor, threshold: float) -> torch.Tensor:
    """``[N, *spatial]`` booleans: the channel mean of ``images [N, C, *spatial]`` above it."""
    return images.float().mean(dim=1) > threshold


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dice of two boolean masks of one shape (1.0 when both are empty)."""
    if a.shape != b.shape:
        raise ValueError(f"masks of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def mean_real_mask(real: torch.Tensor, threshold: float) -> torch.Tensor:
    """Voxels that are foreground in at least half of the real images."""
    return foreground_masks(real, threshold).float().mean(dim=0) >= 0.5


def brain_shape_check(
    generated: torch.Tensor, real: torch.Tensor, *, threshold: float, min_dice: float
) -> dict[str, Any]:
    """Every generated volume's foreground Dice against the mean real mask is ``>= min_dice``;
    the real volumes' own Dice against it is reported as the reference."""
    reference = mean_real_mask(real, threshold)
    generated_dice = [dice(m, reference) for m in foreground_masks(generated, threshold)]
    real_dice = [dice(m, reference) for m in foreground_masks(real, threshold)]
    return check_record(
        "brain_shape",
        min(generated_dice) >= min_dice,
        f"foreground (channel mean > {threshold}) Dice vs the mean real mask >= {min_dice} "
        "for every generated volume",
        generated_dice=[round(d, 4) for d in generated_dice],
        min_generated_dice=round(min(generated_dice), 4),
        real_dice_mean=round(float(np.mean(real_dice)), 4),
    )


def intensity_check(
    generated: torch.Tensor, real: torch.Tensor, *, threshold: float, tolerance: float
) -> dict[str, Any]:
    """Generated intensities on the real scale, per channel: the 1st and 99th percentiles
    within the real ones widened by ``tolerance`` (nothing brighter or darker than real
    tissue; a blurred image passes), and the mean over the mean real brain mask within
    ``tolerance`` of the real mean there (the tissue's level)."""
    brain = mean_real_mask(real, threshold)
    gen_p, real_p = percentiles(generated), percentiles(real)
    gen_mean = generated.float().movedim(1, 0)[:, :, brain].mean(dim=(1, 2))
    real_mean = real.float().movedim(1, 0)[:, :, brain].mean(dim=(1, 2))
    inside = all(
        r[0] - tolerance <= g[0] and g[1] <= r[1] + tolerance
        for g, r in zip(gen_p, real_p, strict=True)
    )
    mean_gap = float((gen_mean - real_mean).abs().max())
    return check_record(
        "intensity_range",
        inside and mean_gap <= tolerance,
        f"per channel: 1st/99th percentiles inside the real ones +- {tolerance}, mean in the "
        f"mean real brain mask within {tolerance} of the real mean",
        generated_percentiles=gen_p,
        real_percentiles=real_p,
        generated_brain_mean=[round(float(v), 4) for v in gen_mean],
        real_brain_mean=[round(float(v), 4) for v in real_mean],
        largest_mean_gap=round(mean_gap, 4),
    )


def percentiles(images: torch.Tensor) -> list[list[float]]:
    """Per channel, the 1st and 99th percentiles of its values (a seeded subsample of at
    most a million values per channel: torch.quantile refuses larger inputs)."""
    flat = images.float().transpose(0, 1).reshape(images.shape[1], -1)
    if flat.shape[1] > 1_000_000:
        index = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(0))
        flat = flat[:, index[:1_000_000]]
    q = torch.tensor([0.01, 0.99])
    return [[round(float(v), 4) for v in torch.quantile(row, q)] for row in flat]


def diversity_check(
    generated: torch.Tensor, real: torch.Tensor, *, min_ratio: float
) -> dict[str, Any]:
    """The generated volumes differ from each other: the mean over voxels of their standard
    deviation across volumes, over the real volumes' one, ``>= min_ratio``. The Fréchet
    distance of a few volumes cannot tell one mean brain repeated from a sample of brains
    (a repeated mean decoded volume scores well below the trivial baselines in the demo)."""
    ratio = float(generated.float().std(dim=0).mean() / real.float().std(dim=0).mean())
    return check_record(
        "diversity",
        ratio >= min_ratio,
        f"per-voxel standard deviation across generated volumes >= {min_ratio} x the real one",
        ratio=round(ratio, 4),
        n_generated=len(generated),
    )


def noise_baselines(real: torch.Tensor, n: int, seed: int) -> dict[str, torch.Tensor]:
    """``n`` images of each trivial baseline, clipped to [-1, 1]:

    * ``gaussian_noise``: i.i.d. Gaussian with each channel's real mean and std;
    * ``mean_plus_noise``: the mean real image plus i.i.d. Gaussian noise with the real
      per-pixel standard deviation across images.
    """
    real = real.float()
    generator = torch.Generator().manual_seed(seed)
    shape = (n, *real.shape[1:])
    dims = [0, *range(2, real.ndim)]
    channel_shape = (1, real.shape[1]) + (1,) * (real.ndim - 2)
    mean_c = real.mean(dim=dims).reshape(channel_shape)
    std_c = real.std(dim=dims).reshape(channel_shape)
    noise = mean_c + std_c * torch.randn(shape, generator=generator)
    pixel_mean, pixel_std = real.mean(dim=0, keepdim=True), real.std(dim=0, keepdim=True)
    mean_plus = pixel_mean + pixel_std * torch.randn(shape, generator=generator)
    return {"gaussian_noise": noise.clamp(-1, 1), "mean_plus_noise": mean_plus.clamp(-1, 1)}


def frechet_check(
    name: str, value: float, baselines: Mapping[str, float], *, margin: float, **values: Any
) -> dict[str, Any]:
    """The generated distance ``value`` is at most ``margin`` times the best baseline's."""
    best = min(baselines.values())
    return check_record(
        name,
        value <= margin * best,
        f"Fréchet distance <= {margin} x the best trivial baseline's",
        generated=round(value, 4),
        baselines={k: round(v, 4) for k, v in baselines.items()},
        ratio_to_best_baseline=round(value / best, 4) if best > 0 else None,
        **values,
    )


def lesion_contrast_check(
    generated: float | None, real: float | None, *, min_ratio: float
) -> dict[str, Any]:
    """Mean lesion contrast at the generated masks ``>= min_ratio`` x the real contrast (a
    missing value, e.g. no usable mask, fails)."""
    usable = generated is not None and real is not None and real > 0
    ratio = generated / real if usable else None
    return check_record(
        "lesion_contrast",
        ratio is not None and ratio >= min_ratio,
        f"generated lesion contrast at its mask >= {min_ratio} x the real contrast",
        generated=generated,
        real=real,
        ratio=None if ratio is None else round(ratio, 4),
    )


def trilinear_round_trip(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Down-sample by ``factor`` per axis (area averaging) and back up (linear), the same
    number of values per channel as a ``factor``x latent with as many channels as the image."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    spatial = images.shape[2:]
    mode = {2: "bilinear", 3: "trilinear"}[len(spatial)]
    small = F.interpolate(images.float(), scale_factor=1.0 / factor, mode="area")
    return F.interpolate(small, size=spatial, mode=mode, align_corners=False)


def reconstruction_check(
    reconstruction: Mapping[str, float],
    images: torch.Tensor,
    *,
    factor: int,
    latent_channels: int,
    data_range: float = 2.0,
) -> dict[str, Any]:
    """An autoencoder's validation ``reconstruction`` metrics (psnr, ssim) against
    :func:`trilinear_round_trip` of the same ``images``, scored with `paired_metrics`;
    passes when the autoencoder beats the baseline on both."""
    baseline = paired_metrics(
        trilinear_round_trip(images, factor).clamp(-1, 1), images.float(), data_range=data_range
    )
    keys = ("psnr", "ssim")
    return check_record(
        "reconstruction_vs_trilinear",
        all(reconstruction[k] > baseline[k] for k in keys),
        f"PSNR and SSIM above trilinear down/up-sampling by {factor} per axis",
        autoencoder={k: round(float(reconstruction[k]), 4) for k in keys},
        trilinear={k: round(float(baseline[k]), 4) for k in keys},
        compression={
            "factor_per_axis": factor,
            "latent_channels": latent_channels,
            "image_channels": int(images.shape[1]),
            "note": "the baseline keeps image_channels values per factor^dims voxels",
        },
        n=int(images.shape[0]),
        data_range=data_range,
    )


def check_metrics(report: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """MLflow metrics of a checks record: ``<prefix>/<check>/passed`` (1/0) and its numbers."""
    metrics: dict[str, float] = {}
    for name, check in report.get("checks", {}).items():
        metrics[f"{prefix}/{name}/passed"] = float(check["status"] == PASSED)
        for key, value in check.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[f"{prefix}/{name}/{key}"] = float(value)
            elif isinstance(value, Mapping):
                for sub, v in value.items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        metrics[f"{prefix}/{name}/{key}_{sub}"] = float(v)
    return metrics


__all__ = [
    "FAILED",
    "PASSED",
    "CheckBackboneParams",
    "DemoCheckParams",
    "brain_shape_check",
    "check_metrics",
    "check_record",
    "dice",
    "diversity_check",
    "foreground_masks",
    "frechet_check",
    "intensity_check",
    "lesion_contrast_check",
    "mean_real_mask",
    "noise_baselines",
    "overall_status",
    "reconstruction_check",
    "trilinear_round_trip",
]

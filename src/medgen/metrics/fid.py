"""Fréchet Inception Distance (and its in-domain variants) through clean-fid.

clean-fid does the work: its dataset/resizer/feature loop
(``cleanfid.fid.get_files_features``), ``cleanfid.fid.compute_fid`` for folders,
and ``cleanfid.fid.frechet_distance`` for the maths. What medgen adds:

- arrays in [-1, 1] are quantised to 8-bit exactly like a PNG would store them
  (:func:`medgen.metrics.images.to_uint8_hwc`) and written as .npy files that
  clean-fid's dataset reads, so arrays and PNG folders give identical features;
- grayscale is repeated to 3 channels; C != 3 channels (MRI sequences) are scored
  one by one and averaged, per-channel values in ``details["per_channel"]``;
- every result names its backbone, mode and counts (:class:`MetricResult`) and, in its
  details, the sample count n per set, the feature size d and the covariance estimator:
  the sample covariance when n > d (full rank), Ledoit-Wolf shrinkage otherwise
  (:func:`resolve_covariance`);
- NaN/Inf images or features raise :class:`~medgen.metrics.errors.NonFiniteInputError`
  instead of being quantised into ordinary pixels;
- 2.5D FID for volumes and real-vs-real floors.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from cleanfid import fid as cleanfid_fid
from cleanfid.utils import EXTENSIONS

from medgen.metrics.backbones import FeatureBackbone
from medgen.metrics.errors import MetricNotApplicable, require_finite
from medgen.metrics.floors import MIN_GROUPS_PER_HALF, two_sample_with_floor
from medgen.metrics.frechet import (
    cleanfid_scipy_compat,
    frechet_distance,
    resolve_covariance,
)
from medgen.metrics.images import (
    ArrayLike,
    as_tensor,
    grayscale_channel_groups,
    to_three_channels,
    to_uint8_hwc,
)
from medgen.metrics.results import MetricResult

PLANES = ("axis_d", "axis_h", "axis_w")


def extract_features(
    images: ArrayLike,
    backbone: FeatureBackbone,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Features [N, F] of 1- or 3-channel images [N, C, H, W] in [-1, 1] via clean-fid.

    Images go through clean-fid's own ResizeDataset (as .npy files in a temporary
    folder), its resizer for ``backbone.cleanfid_mode`` or ``backbone.fn_resize``,
    and its batched feature loop.
    """
    # first: the uint8 quantisation would turn NaN into an ordinary pixel value
    require_finite(images, "images given to the feature network")
    tensor = as_tensor(images)
    if tensor.shape[1] not in (1, 3):
        raise ValueError(f"extract_features takes 1 or 3 channels, got {tensor.shape[1]}")
    if tensor.shape[0] == 0:
        raise MetricNotApplicable("no images to extract features from")
    pixels = to_uint8_hwc(to_three_channels(tensor))
    with tempfile.TemporaryDirectory(prefix="medgen-fid-") as folder:
        files = []
        for i, image in enumerate(pixels):
            path = os.path.join(folder, f"{i:07d}.npy")
            np.save(path, image)
            files.append(path)
        features = cleanfid_fid.get_files_features(
            files,
            model=backbone.extractor,
            num_workers=num_workers,
            batch_size=batch_size,
            device=torch.device(device),
            mode=backbone.cleanfid_mode,
            custom_fn_resize=backbone.fn_resize,
            verbose=False,
        )
    return np.asarray(features, dtype=np.float64).reshape(len(pixels), -1)


def extract_channel_features(images: ArrayLike, backbone: FeatureBackbone, **kwargs) -> np.ndarray:
    """[N, G, F] features of images [N, C, H, W] in [-1, 1], one group G per grayscale
    channel (or one RGB group); ``kwargs`` as for :func:`extract_features`."""
    tensor = as_tensor(images)
    return np.stack(
        [extract_features(group, backbone, **kwargs) for group in grayscale_channel_groups(tensor)],
        axis=1,
    )


def fid_from_channel_features(
    real: np.ndarray, generated: np.ndarray, covariance: str = "auto"
) -> tuple[float, dict]:
    """Mean over channel groups of the Fréchet distance; per-channel values, the sample
    count n, the feature size d and the covariance estimator used in the details."""
    n, d = min(len(real), len(generated)), int(real.shape[-1])
    estimator = resolve_covariance(covariance, n, d)
    per_channel = [
        frechet_distance(generated[:, g], real[:, g], estimator) for g in range(real.shape[1])
    ]
    return float(np.mean(per_channel)), {
        "per_channel": per_channel,
        "feature_dim": d,
        "n_per_set": n,
        "covariance": _describe_covariance(covariance, estimator, n, d),
    }


def _describe_covariance(requested: str, used: str, n: int, d: int) -> str:
    if used == "sample":
        return f"sample (n={n} > d={d}: full rank)"
    why = f"requested; n={n}, d={d}" if requested == used else f"n={n} <= d={d}: sample singular"
    return f"ledoit_wolf shrinkage ({why})"


def compute_fid(
    real: ArrayLike,
    generated: ArrayLike,
    backbone: FeatureBackbone,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    covariance: str = "auto",
) -> MetricResult:
    """FID between real and generated images [N, C, H, W] in [-1, 1] (no floor);
    ``covariance`` as for :func:`resolve_covariance` (default ``auto``)."""
    kwargs = {"batch_size": batch_size, "num_workers": num_workers, "device": device}
    real_feats = extract_channel_features(real, backbone, **kwargs)
    gen_feats = extract_channel_features(generated, backbone, **kwargs)
    value, details = fid_from_channel_features(real_feats, gen_feats, covariance)
    return MetricResult(
        name="fid",
        value=value,
        backbone=backbone.name,
        n_real=len(real_feats),
        n_generated=len(gen_feats),
        mode=backbone.mode,
        details=details,
    )


def fid_with_floor(
    real: ArrayLike,
    generated: ArrayLike,
    backbone: FeatureBackbone,
    *,
    seed: int = 0,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    groups: ArrayLike | None = None,
    min_groups_per_half: int = MIN_GROUPS_PER_HALF,
    covariance: str = "auto",
) -> MetricResult:
    """FID of generated vs a real half, with the real-vs-real floor at the same counts.

    Features are extracted once for each subset the floor protocol uses (the
    reference half serves both the value and the floor) and for no other image.
    ``groups`` (one patient label per real image, e.g. ``subject_index``) makes the two
    real halves patient-disjoint (None: split by image); each half then needs
    ``min_groups_per_half`` patients (default 3) or no floor is given
    (`medgen.metrics.floors`). ``covariance``: :func:`resolve_covariance` (default ``auto``);
    the details name it with n and d.
    """
    kwargs = {"batch_size": batch_size, "num_workers": num_workers, "device": device}
    return two_sample_with_floor(
        lambda sample, reference: fid_from_channel_features(reference, sample, covariance),
        real,
        generated,
        name="fid",
        backbone=backbone.name,
        mode=backbone.mode,
        seed=seed,
        prepare=lambda images: extract_channel_features(images, backbone, **kwargs),
        groups=groups,
        min_groups_per_half=min_groups_per_half,
    )


def _count_images(folder: str | Path) -> int:
    return sum(1 for p in Path(folder).rglob("*") if p.suffix.lstrip(".") in EXTENSIONS)


def compute_fid_folders(
    real_dir: str | Path,
    generated_dir: str | Path,
    backbone: FeatureBackbone,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> MetricResult:
    """FID between two image folders with ``cleanfid.fid.compute_fid`` and our backbone."""
    with cleanfid_scipy_compat():
        value = cleanfid_fid.compute_fid(
            str(generated_dir),
            str(real_dir),
            mode=backbone.cleanfid_mode,
            num_workers=num_workers,
            batch_size=batch_size,
            device=torch.device(device),
            custom_feat_extractor=backbone.extractor,
            custom_fn_resize=backbone.fn_resize,
            verbose=False,
            use_dataparallel=False,
        )
    return MetricResult(
        name="fid",
        value=float(value),
        backbone=backbone.name,
        n_real=_count_images(real_dir),
        n_generated=_count_images(generated_dir),
        mode=backbone.mode,
        details={"source": "cleanfid.fid.compute_fid on folders"},
    )


def plane_slices(
    volumes: ArrayLike,
    plane: str,
    *,
    slices_per_volume: int | None = None,
    central_fraction: float = 1.0,
) -> torch.Tensor:
    """2D slices [N*S, C, a, b] of volumes [N, C, D, H, W] taken perpendicular to one axis.

    ``plane`` names the axis sliced through: ``axis_d`` gives [H, W] slices, ``axis_h``
    [D, W], ``axis_w`` [D, H] (axial/coronal/sagittal depending on orientation).
    Slices are evenly spaced within the central ``central_fraction`` of the axis
    (default: every slice), so edge slices of mostly background can be left out.
    """
    vol = as_tensor(volumes, ndim=5)
    axis = 2 + PLANES.index(plane)
    length = vol.shape[axis]
    margin = (1.0 - central_fraction) / 2.0 * length
    lo, hi = int(np.floor(margin)), max(int(np.ceil(length - margin)) - 1, int(np.floor(margin)))
    count = (hi - lo + 1) if slices_per_volume is None else min(slices_per_volume, hi - lo + 1)
    index = torch.as_tensor(np.unique(np.round(np.linspace(lo, hi, count)).astype(int)))
    taken = vol.index_select(axis, index).movedim(axis, 1)  # [N, S, C, a, b]
    return taken.reshape(-1, *taken.shape[2:])


def _plane_features(
    volumes: ArrayLike,
    backbone: FeatureBackbone,
    *,
    slices_per_volume: int | None,
    central_fraction: float,
    **kwargs,
) -> dict[str, np.ndarray]:
    """Channel features [N*S, G, F] of the volumes' slices in each plane of :data:`PLANES`."""
    return {
        plane: extract_channel_features(
            plane_slices(
                volumes,
                plane,
                slices_per_volume=slices_per_volume,
                central_fraction=central_fraction,
            ),
            backbone,
            **kwargs,
        )
        for plane in PLANES
    }


def _fid_2p5d(
    real: dict[str, np.ndarray], generated: dict[str, np.ndarray], settings: dict
) -> tuple[float, dict]:
    covariance = settings.get("covariance", "auto")
    planes = {
        plane: fid_from_channel_features(real[plane], generated[plane], covariance)
        for plane in PLANES
    }
    per_plane = {plane: value for plane, (value, _) in planes.items()}
    details = {
        "per_plane": per_plane,
        **settings,
        "counts": "n_real/n_generated are volumes",
        "slices_per_set": {plane: d["n_per_set"] for plane, (_, d) in planes.items()},
        "feature_dim": planes[PLANES[0]][1]["feature_dim"],
        "covariance": {plane: d["covariance"] for plane, (_, d) in planes.items()},
    }
    return float(np.mean(list(per_plane.values()))), details


def compute_fid_2p5d(
    real_volumes: ArrayLike,
    generated_volumes: ArrayLike,
    backbone: FeatureBackbone,
    *,
    slices_per_volume: int | None = None,
    central_fraction: float = 1.0,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    covariance: str = "auto",
) -> MetricResult:
    """2.5D FID: a 2D FID per orthogonal plane, averaged (as MAISI reports volume FID)."""
    planes = {"slices_per_volume": slices_per_volume, "central_fraction": central_fraction}
    settings = {**planes, "covariance": covariance}
    kwargs = {**planes, "batch_size": batch_size, "num_workers": num_workers, "device": device}
    value, details = _fid_2p5d(
        _plane_features(real_volumes, backbone, **kwargs),
        _plane_features(generated_volumes, backbone, **kwargs),
        settings,
    )
    return MetricResult(
        name="fid_2p5d",
        value=value,
        backbone=backbone.name,
        n_real=len(real_volumes),
        n_generated=len(generated_volumes),
        mode=backbone.mode,
        details=details,
    )


def fid_2p5d_with_floor(
    real_volumes: ArrayLike,
    generated_volumes: ArrayLike,
    backbone: FeatureBackbone,
    *,
    seed: int = 0,
    slices_per_volume: int | None = None,
    central_fraction: float = 1.0,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    groups: ArrayLike | None = None,
    min_groups_per_half: int = MIN_GROUPS_PER_HALF,
    covariance: str = "auto",
) -> MetricResult:
    """2.5D FID with its real-vs-real floor (volumes split into disjoint halves).

    Slice features are extracted once per subset of volumes, as in :func:`fid_with_floor`;
    ``groups`` (a patient per volume), ``min_groups_per_half`` and ``covariance`` as there.
    """
    planes = {"slices_per_volume": slices_per_volume, "central_fraction": central_fraction}
    settings = {**planes, "covariance": covariance}
    kwargs = {**planes, "batch_size": batch_size, "num_workers": num_workers, "device": device}
    return two_sample_with_floor(
        lambda sample, reference: _fid_2p5d(reference, sample, settings),
        as_tensor(real_volumes, ndim=5),
        as_tensor(generated_volumes, ndim=5),
        name="fid_2p5d",
        backbone=backbone.name,
        mode=backbone.mode,
        seed=seed,
        prepare=lambda volumes: _plane_features(volumes, backbone, **kwargs),
        groups=groups,
        min_groups_per_half=min_groups_per_half,
    )

"""BraTS inpainting ("local synthesis of healthy brain tissue") metrics, as the leaderboard scores.

Reference: Kofler et al., "The Brain Tumor Segmentation (BraTS) Challenge 2023: Local
Synthesis of Healthy Brain Tissue via Inpainting", arXiv:2305.08992.

Two definitions are implemented (:class:`BratsVariant`); the code is ours, written
from reading the sources below, not copied.

``"synapse_scorer"`` (default): the number on the BraTS 2023 and 2024 inpainting
leaderboards. Read in ``Sage-Bionetworks-Challenges/brats2023``:
``evaluation/inpainting/score.py`` (branches ``brats2023`` and ``main``), whose Docker
image copies ``evaluation/evaluation_utils.py`` from the ``BraTS-inpainting/2023_challenge``
submodule pinned at commit 75965eb and pins ``torchmetrics==0.11.4``; the BraTS 2024
Task 8 workflow (``wf-inpainting``, July 2024) pulls the image
``inpainting-evaluation:2023-v1.1.0``, so 2024 used the same scorer. Confirmed there:

1. Only ``<case>-mask-healthy`` is scored (the region with ground truth); score.py
   reads ``t1n`` (target), the prediction and that mask, never the voided image.
2. Prediction and target are first multiplied by the mask (zero outside it), so
   nothing outside the mask enters any number, SSIM windows included.
3. Normalisation: ``np.percentile`` (default linear interpolation) at 0.5 and 99.5 of
   ``t1n * ~mask_healthy`` over the WHOLE volume, background and zeroed mask voxels
   included; the lower bound is raised to 0 if negative; then
   ``(clip(x, lo, hi) - lo) / (hi - lo)`` for both volumes. Here the mask excluded from
   the reference is ``voided_mask`` (default: the score mask, i.e. exactly the scorer).
4. SSIM: torchmetrics ``StructuralSimilarityIndexMeasure(return_full_image=True)`` on
   ``[1, 1, X, Y, Z]``, i.e. 3D: Gaussian window of 11 voxels per axis
   (``int(3.5 * sigma + 0.5) * 2 + 1``), sigma 1.5, K1 0.01, K2 0.03, reflection
   padding (``F.pad(mode="reflect")``, the edge voxel not repeated). The full map is
   averaged over the mask voxels. **Data range**: the scorer leaves torchmetrics'
   default, which is NOT 1 but ``max(range(pred), range(target))`` over the whole
   zeroed, normalised volumes, i.e. the largest normalised value in the mask (<= 1; the
   minimum is the 0 outside the mask).
   We reproduce that; ``ssim_data_range=1.0`` gives the fixed-range variant instead.
5. MSE over mask voxels (torchmetrics ``MeanSquaredError``). The leaderboard's "PSNR" is
   the scorer's ``PSNR_01``, ``PeakSignalNoiseRatio(data_range=1.0)`` =
   ``10 log10(1 / MSE)`` over mask voxels: +inf when MSE is 0 (torchmetrics gives the
   same; we return ``float("inf")``). The scorer also computes a data-driven ``PSNR``,
   hidden from the CSV but left in results.json as ``PSNR_mean``; we do not report it.
6. Summary: pandas ``DataFrame.describe()`` over cases: mean, std (ddof=1), 25 %, 50 %
   and 75 % quantiles (linear interpolation); results.json holds the means, the SDs
   and ``cases_evaluated`` (the number of cases), all_scores.csv also the quartiles
   and median. :func:`summarise_cases` computes the same with numpy.

Not confirmed / deliberate differences: the Docker image's contents (we read the repo it
is built from); the scorer runs in float32 (``torch.Tensor(get_fdata())``), we run in
float64, so agreement is to ~1e-6; the scorer treats any non-zero mask voxel as
inside, we require binary masks; the scorer silently yields NaN where we raise
(zero SSIM data range, empty normalisation range); pandas skips NaN cases in
``describe()``, :func:`summarise_cases` refuses them. For speed the SSIM map is
computed on the mask's bounding box plus the window radius (clipped to the volume),
which gives the same values on the mask voxels as the whole volume (float64 conv3d on
one CPU thread: about 0.3 s for an 8^3 mask, 20 s for a 40^3 mask in 240x240x155).

``"inpainting_package"``: the pip package ``inpainting`` (``BraTS-inpainting/inpainting``,
``inpainting/challenge_metrics_2023.py``, ``generate_metrics``, releases before the
August 2025 torchmetrics-1.8 change). Same masking and normalisation, but it is called
with the voided t1n as normalisation volume (pass ``voided_mask`` = the full void mask,
healthy and tumour) and its volumes are ``[1, X, Y, Z]``, which torchmetrics reads as one
2D image with X channels: the SSIM windows are 2D, slice-wise in the (Y, Z) planes. It
reports extra keys: ``rmse``, ``mae``, ``msle``, ``psnr`` (range ``max(gt, 0) - min(gt, 0)``
over the mask, the empty-state default of torchmetrics' ``PeakSignalNoiseRatio()``),
``psnr_eps`` (same range, machine epsilon added to the MSE), ``psnr_01``, ``psnr_01_eps``.

Inputs: non-negative scanner-like intensities with background 0, shaped [X, Y, Z]
(leading singleton dims allowed), numpy or torch. medgen volumes live in [-1, 1] with
background -1: score :func:`to_scanner_range` of them, ``(x + 1) / 2``, so the background
is 0 as the scorer's floored lower percentile expects (the metrics are invariant to a
positive rescaling, not to an offset).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from medgen.metrics.images import ArrayLike

PERCENTILES = (0.5, 99.5)
SSIM_KERNEL_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
_SSIM_RADIUS = (SSIM_KERNEL_SIZE - 1) // 2


class BratsVariant(StrEnum):
    """Which published definition of the BraTS inpainting metrics to compute."""

    SYNAPSE_SCORER = "synapse_scorer"  # the leaderboard: 3D SSIM, PSNR with range 1
    INPAINTING_PACKAGE = "inpainting_package"  # pip `inpainting`: slice-wise 2D SSIM


def to_scanner_range(volume: ArrayLike) -> ArrayLike:
    """medgen's [-1, 1] (background -1) -> [0, 1] (background 0), as the scorer expects."""
    return (volume + 1) / 2


def percentile_bounds(
    reference: ArrayLike, percentiles: tuple[float, float] = PERCENTILES
) -> tuple[float, float]:
    """The reference's (0.5, 99.5) percentiles over all voxels, lower one floored at 0."""
    lo, hi = np.percentile(np.asarray(reference, dtype=np.float64), list(percentiles))
    lo = max(float(lo), 0.0)
    if not float(hi) > lo:
        raise ValueError(
            f"normalisation range is empty: percentiles {percentiles} of t1n*(1-voided_mask) "
            f"give [{lo}, {float(hi)}] (lower bound floored at 0); is the input in scanner "
            "range with background 0 (see to_scanner_range)?"
        )
    return lo, float(hi)


def brats_inpainting_metrics(
    prediction: ArrayLike,
    target: ArrayLike,
    mask: ArrayLike,
    *,
    voided_mask: ArrayLike | None = None,
    variant: BratsVariant | str = BratsVariant.SYNAPSE_SCORER,
    ssim_data_range: float | None = None,
) -> dict[str, float]:
    """BraTS inpainting metrics of one case (see the module docstring for the definition).

    Args:
        prediction: the inpainted t1n, [X, Y, Z], non-negative, background 0.
        target: the ground-truth t1n, same shape.
        mask: binary score mask (BraTS ``mask-healthy``): the voxels that are scored.
        voided_mask: binary mask of every voxel voided in the model's input, excluded
            from the normalisation percentiles; must contain ``mask``. Default: ``mask``
            (what the leaderboard scorer does).
        variant: ``"synapse_scorer"`` (default, the leaderboard) or ``"inpainting_package"``.
        ssim_data_range: SSIM's L in C1 = (K1 L)^2, C2 = (K2 L)^2. Default ``None``: the
            scorer's torchmetrics default, max(max - min) of the two normalised volumes.

    Returns:
        ``ssim``, ``psnr``, ``mse``, ``n_mask_voxels``. ``psnr`` has data range 1 for the
        scorer and the package's data-driven range for the package variant, which adds
        ``rmse``, ``mae``, ``msle``, ``psnr_eps``, ``psnr_01``, ``psnr_01_eps``. A PSNR
        without epsilon is +inf when ``mse`` is 0.
    """
    try:
        variant = BratsVariant(variant)
    except ValueError:
        options = ", ".join(f"'{v.value}'" for v in BratsVariant)
        raise ValueError(f"unknown variant '{variant}'; choose one of {options}") from None
    pred = _volume(prediction, "prediction")
    gt = _volume(target, "target")
    score_mask = _binary_mask(mask, "mask")
    void = score_mask if voided_mask is None else _binary_mask(voided_mask, "voided_mask")
    shapes = {
        "prediction": pred.shape,
        "target": gt.shape,
        "mask": score_mask.shape,
        "voided_mask": void.shape,
    }
    if len(set(shapes.values())) != 1:
        raise ValueError(
            "shapes differ: " + ", ".join(f"{k} {tuple(s)}" for k, s in shapes.items())
        )
    if not score_mask.any():
        raise ValueError("mask is empty: no voxel to score")
    if (score_mask & ~void).any():
        raise ValueError("voided_mask must contain every voxel of the score mask")

    lo, hi = percentile_bounds(gt.masked_fill(void, 0.0))
    pred_n = (pred * score_mask).clamp(lo, hi).sub(lo).div(hi - lo)
    gt_n = (gt * score_mask).clamp(lo, hi).sub(lo).div(hi - lo)

    slice_wise = variant is BratsVariant.INPAINTING_PACKAGE
    ssim = _masked_ssim(pred_n, gt_n, score_mask, slice_wise, ssim_data_range)
    p, g = pred_n[score_mask], gt_n[score_mask]
    mse = float(torch.mean((p - g) ** 2))
    metrics = {
        "ssim": ssim,
        "psnr": _psnr(mse, 1.0),
        "mse": mse,
        "n_mask_voxels": int(score_mask.sum()),
    }
    if slice_wise:
        target_range = max(float(g.max()), 0.0) - min(float(g.min()), 0.0)
        eps = sys.float_info.epsilon
        metrics |= {
            "psnr": _psnr(mse, target_range),
            "psnr_eps": _psnr(mse, target_range, eps),
            "psnr_01": _psnr(mse, 1.0),
            "psnr_01_eps": _psnr(mse, 1.0, eps),
            "rmse": math.sqrt(mse),
            "mae": float(torch.mean(torch.abs(p - g))),
            "msle": float(torch.mean((torch.log1p(p) - torch.log1p(g)) ** 2)),
        }
    return metrics


def summarise_cases(
    rows: Sequence[Mapping[str, float]], keys: Sequence[str] = ("ssim", "psnr", "mse")
) -> dict[str, dict[str, float]]:
    """Per-key mean, SD (ddof=1, as pandas ``describe``), median, q1, q3 (linear) and n.

    Infinite values (PSNR of a perfect case) propagate as in the scorer's pandas
    summary: the mean becomes +inf and the SD NaN. NaN values are refused.
    """
    if not rows:
        raise ValueError("no cases to summarise")
    summary: dict[str, dict[str, float]] = {}
    for key in keys:
        missing = [i for i, row in enumerate(rows) if key not in row]
        if missing:
            raise ValueError(f"metric '{key}' is missing from case(s) {missing[:10]}")
        values = np.asarray([float(row[key]) for row in rows], dtype=np.float64)
        if np.isnan(values).any():
            bad = np.flatnonzero(np.isnan(values))[:10].tolist()
            raise ValueError(f"metric '{key}' is NaN in case(s) {bad}")
        with np.errstate(invalid="ignore"):
            sd = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
            q1, median, q3 = (float(q) for q in np.percentile(values, [25, 50, 75]))
        summary[key] = {
            "mean": float(np.mean(values)),
            "sd": sd,
            "median": median,
            "q1": q1,
            "q3": q3,
            "n": int(values.size),
        }
    return summary


def _volume(volume: ArrayLike, name: str) -> torch.Tensor:
    """float64 CPU [X, Y, Z] tensor; leading singleton dims dropped; finite."""
    if isinstance(volume, torch.Tensor):
        tensor = volume.detach().cpu()
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(volume))
    tensor = tensor.to(torch.float64)
    while tensor.ndim > 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3:
        raise ValueError(
            f"{name} must be a 3D volume [X, Y, Z] (leading singleton dims allowed), "
            f"got shape {tuple(tensor.shape)}"
        )
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return tensor


def _binary_mask(mask: ArrayLike, name: str) -> torch.Tensor:
    tensor = _volume(mask, name)
    if not ((tensor == 0) | (tensor == 1)).all():
        values = torch.unique(tensor)[:5].tolist()
        raise ValueError(f"{name} must be binary (0/1 or bool), found values such as {values}")
    return tensor.bool()


def _masked_ssim(
    pred_n: torch.Tensor,
    gt_n: torch.Tensor,
    mask: torch.Tensor,
    slice_wise: bool,
    data_range: float | None,
) -> float:
    """torchmetrics' full SSIM map, averaged over the mask voxels."""
    if data_range is None:  # torchmetrics' default, on the whole volumes
        data_range = max(float(pred_n.max() - pred_n.min()), float(gt_n.max() - gt_n.min()))
    if not data_range > 0:
        raise ValueError(
            "SSIM data range is zero: prediction and target are both all zero after "
            "normalisation (the mask holds no intensity above the lower percentile)"
        )
    windowed_axes = (1, 2) if slice_wise else (0, 1, 2)
    crop = _window_crop(mask, windowed_axes)
    pred_c, gt_c, mask_c = pred_n[crop], gt_n[crop], mask[crop]
    too_small = [ax for ax in windowed_axes if pred_c.shape[ax] <= _SSIM_RADIUS]
    if too_small:
        raise ValueError(
            f"volume axes {too_small} are too small ({tuple(mask.shape)}) for the "
            f"{SSIM_KERNEL_SIZE}-voxel SSIM window with reflection padding"
        )
    # 3D: [1, 1, X, Y, Z]; the package's [1, X, Y, Z] is X channels of 2D (Y, Z) images.
    lead = (None,) if slice_wise else (None, None)
    _, ssim_map = structural_similarity_index_measure(
        pred_c[lead],
        gt_c[lead],
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        kernel_size=SSIM_KERNEL_SIZE,
        data_range=data_range,
        k1=SSIM_K1,
        k2=SSIM_K2,
        return_full_image=True,
    )
    return float(ssim_map.reshape(mask_c.shape)[mask_c].mean())


def _window_crop(mask: torch.Tensor, windowed_axes: tuple[int, ...]) -> tuple[slice, ...]:
    """Mask bounding box grown by the window radius on windowed axes, clipped to the volume.

    Every window centred on a mask voxel then lies inside the crop, or reaches past a
    crop face that is also a volume face, where the reflection padding is the same.
    """
    index = torch.nonzero(mask)
    first, last = index.min(0).values.tolist(), index.max(0).values.tolist()
    crop = []
    for axis, size in enumerate(mask.shape):
        radius = _SSIM_RADIUS if axis in windowed_axes else 0
        crop.append(slice(max(first[axis] - radius, 0), min(last[axis] + radius + 1, size)))
    return tuple(crop)


def _psnr(mse: float, data_range: float, epsilon: float = 0.0) -> float:
    """10 log10(L^2 / MSE): +inf for a perfect prediction, -inf for L = 0 (as torchmetrics)."""
    if mse + epsilon == 0:
        return float("inf")
    if data_range == 0:
        return float("-inf")
    return 10.0 * math.log10(data_range**2 / (mse + epsilon))

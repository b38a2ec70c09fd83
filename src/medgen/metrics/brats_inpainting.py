"""BraTS 2023 "local synthesis" (inpainting) metrics, as the challenge computes them.

Reference: Kofler et al., "The Brain Tumor Segmentation (BraTS) Challenge 2023:
Local Synthesis of Healthy Brain Tissue via Inpainting", arXiv:2305.08992, and the
challenge's metrics package (github.com/BraTS-inpainting/inpainting,
``inpainting/challenge_metrics_2023.py``, ``generate_metrics``). We re-implement
that definition (same torchmetrics calls) rather than importing it:

1. Infill region: prediction and ground truth are multiplied by the inpainting
   mask (the "healthy mask"), i.e. zero outside it.
2. Normalisation: both are clipped to the [0.5, 99.5] percentiles of a
   *normalisation volume* and rescaled to [0, 1]; the lower percentile is raised
   to 0 if negative ("strictly positive"). The challenge's normalisation volume is
   the voided T1 the model was given (T1 with the inpainting region, and the
   tumour, set to zero), taken over the whole volume including background zeros.
   If none is passed we use the ground truth with the mask voxels zeroed, which is
   the same thing when only the mask was voided.
3. SSIM: torchmetrics ``structural_similarity_index_measure`` with its defaults
   (Gaussian sigma 1.5, 11-voxel window, data_range from the data) on the whole
   normalised infill volume, full SSIM map kept, then averaged over the mask
   voxels only ("masked SSIM"). The challenge passes volumes shaped [1, X, Y, Z],
   which torchmetrics reads as ONE 2D image with X channels: the SSIM windows are
   2D in the (Y, Z) planes. ``ssim_window="challenge"`` (default) reproduces this;
   ``"3d"`` uses a 3D window instead (not the challenge number).
4. MSE, RMSE, MAE and PSNR on the mask voxels only. ``psnr`` uses torchmetrics'
   default data range (max - min of the ground-truth mask voxels), ``psnr_01`` a
   fixed range of 1 (``psnr_eps`` uses max - min(0, min), as the challenge's
   epsilon variant does); ``*_eps`` variants add machine epsilon to the MSE so exact
   predictions give a finite number instead of +inf, as the challenge reports.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from medgen.metrics.images import ArrayLike, as_tensor

PERCENTILES = (0.5, 99.5)


def percentile_normalise(
    volume: torch.Tensor, reference: torch.Tensor, percentiles: tuple[float, float] = PERCENTILES
) -> torch.Tensor:
    """Clip to the reference's percentiles (lower bound >= 0) and rescale to [0, 1]."""
    v_min, v_max = np.percentile(reference.numpy(), list(percentiles))
    v_min = max(float(v_min), 0.0)
    if v_max <= v_min:
        raise ValueError(f"normalisation volume has an empty intensity range [{v_min}, {v_max}]")
    return (volume.clamp(v_min, float(v_max)) - v_min) / (float(v_max) - v_min)


def _psnr(
    target: torch.Tensor, prediction: torch.Tensor, data_range: float, epsilon: float = 0.0
) -> float:
    mse = torch.mean((prediction.double() - target.double()) ** 2)
    if mse + epsilon == 0:
        return float("inf")
    return float(
        10.0 * torch.log10(torch.tensor(data_range, dtype=torch.float64) ** 2 / (mse + epsilon))
    )


def brats_inpainting_metrics(
    prediction: ArrayLike,
    target: ArrayLike,
    mask: ArrayLike,
    normalisation_volume: ArrayLike | None = None,
    *,
    ssim_window: str = "challenge",
) -> dict[str, float]:
    """Challenge metrics for one subject; volumes shaped [X, Y, Z] (or with leading 1s).

    Args:
        prediction: the inpainted volume (the model's full output).
        target: the ground-truth T1 volume.
        mask: the inpainting ("healthy") mask; non-zero = inpainted voxels.
        normalisation_volume: the voided T1 given to the model (see module doc);
            default: target with the mask voxels set to 0.
        ssim_window: "challenge" (2D windows in the last two axes, as the official
            code) or "3d".
    """
    pred = as_tensor(prediction, ndim=None).squeeze()
    gt = as_tensor(target, ndim=None).squeeze()
    m = as_tensor(mask, ndim=None).squeeze()
    if pred.ndim != 3 or pred.shape != gt.shape or m.shape != gt.shape:
        raise ValueError(
            f"need three equal 3D volumes, got {tuple(pred.shape)}, {tuple(gt.shape)}, "
            f"mask {tuple(m.shape)}"
        )
    if not torch.isin(torch.unique(m), torch.tensor([0.0, 1.0])).all():
        raise ValueError("inpainting mask must be binary (0/1)")
    m = m.bool()
    if not m.any():
        raise ValueError("inpainting mask is empty: nothing to evaluate")
    norm_ref = (
        gt * ~m
        if normalisation_volume is None
        else as_tensor(normalisation_volume, ndim=None).squeeze()
    )
    if norm_ref.shape != gt.shape:
        raise ValueError(
            f"normalisation volume shape {tuple(norm_ref.shape)} != target shape {tuple(gt.shape)}"
        )

    pred_infill = percentile_normalise(pred * m, norm_ref)
    gt_infill = percentile_normalise(gt * m, norm_ref)

    if ssim_window == "challenge":
        batch = (pred_infill[None], gt_infill[None])  # [1, X, Y, Z]: X channels of 2D (Y, Z) images
    elif ssim_window == "3d":
        batch = (pred_infill[None, None], gt_infill[None, None])
    else:
        raise ValueError(f"ssim_window must be 'challenge' or '3d', got '{ssim_window}'")
    _, ssim_map = structural_similarity_index_measure(
        preds=batch[0], target=batch[1], return_full_image=True
    )
    masked_ssim = float(ssim_map.reshape(gt.shape)[m].mean())

    gt_vox, pred_vox = gt_infill[m].double(), pred_infill[m].double()
    mse = float(torch.mean((pred_vox - gt_vox) ** 2))
    target_range = float(
        gt_vox.max() - gt_vox.min()
    )  # torchmetrics' data-driven range (2023 versions)
    # The challenge's epsilon variant computes its own range: max - (0 if min > 0 else min).
    eps_range = float(gt_vox.max() - min(float(gt_vox.min()), 0.0))
    eps = sys.float_info.epsilon
    return {
        "ssim": masked_ssim,
        "mse": mse,
        "rmse": mse**0.5,
        "mae": float(torch.mean(torch.abs(pred_vox - gt_vox))),
        "psnr": _psnr(gt_vox, pred_vox, target_range),
        "psnr_eps": _psnr(gt_vox, pred_vox, eps_range, eps),
        "psnr_01": _psnr(gt_vox, pred_vox, 1.0),
        "psnr_01_eps": _psnr(gt_vox, pred_vox, 1.0, eps),
        "n_mask_voxels": int(m.sum()),
    }

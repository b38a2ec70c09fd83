"""Paired image metrics (reconstructions, inpainting): PSNR, MAE, MSE, SSIM.

``data_range`` is explicit and has no default on purpose: PSNR and SSIM change with
it, and a silently assumed range is the commonest way to publish wrong numbers.
For medgen's [-1, 1] images it is 2.0.
"""

from __future__ import annotations

import torch
from monai.metrics import MAEMetric, MSEMetric, PSNRMetric

from medgen.metrics.images import ArrayLike, as_tensor_pair
from medgen.metrics.ssim import ssim


def psnr(prediction: ArrayLike, target: ArrayLike, *, data_range: float) -> torch.Tensor:
    """Per-image PSNR [N] in dB, 10*log10(data_range^2 / MSE); +inf for identical images."""
    p, t = as_tensor_pair(prediction, target)
    return PSNRMetric(max_val=data_range, reduction="none")(p, t).flatten()


def mae(prediction: ArrayLike, target: ArrayLike) -> torch.Tensor:
    """Per-image mean absolute error [N]."""
    p, t = as_tensor_pair(prediction, target)
    return MAEMetric(reduction="none")(p, t).flatten()


def mse(prediction: ArrayLike, target: ArrayLike) -> torch.Tensor:
    """Per-image mean squared error [N]."""
    p, t = as_tensor_pair(prediction, target)
    return MSEMetric(reduction="none")(p, t).flatten()


def paired_metrics(
    prediction: ArrayLike, target: ArrayLike, *, data_range: float, ssim_kernel_size: int = 11
) -> dict[str, float]:
    """Means over images of PSNR, MAE, MSE and SSIM, plus the settings used.

    PSNR is averaged over finite values; ``psnr_n_identical`` counts images whose
    PSNR is infinite (exact reconstructions) so they are visible, not hidden.
    """
    p, t = as_tensor_pair(prediction, target)
    psnr_values = psnr(p, t, data_range=data_range)
    finite = torch.isfinite(psnr_values)
    return {
        "psnr": float(psnr_values[finite].mean()) if finite.any() else float("inf"),
        "psnr_n_identical": int((~finite).sum()),
        "mae": float(mae(p, t).mean()),
        "mse": float(mse(p, t).mean()),
        "ssim": float(ssim(p, t, data_range=data_range, kernel_size=ssim_kernel_size).mean()),
        "data_range": float(data_range),
        "n": int(p.shape[0]),
    }

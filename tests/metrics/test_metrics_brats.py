"""BraTS 2023 inpainting metrics on hand-constructed volumes with known answers."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from medgen.metrics.brats_inpainting import brats_inpainting_metrics, percentile_normalise


@pytest.fixture
def case():
    """20^3 volume whose normalisation is the identity: the voided volume has far more
    than 0.5 % zeros and far more than 0.5 % voxels at its maximum 1.0, so its 0.5/99.5
    percentiles are exactly 0 and 1. The mask (8^3, 6 voxels from every border) holds a
    gradient from 0.2 to 0.6."""
    gt = torch.zeros(20, 20, 20)
    gt[2:18, 2:18, 2:18] = 1.0
    mask = torch.zeros(20, 20, 20, dtype=torch.bool)
    mask[6:14, 6:14, 6:14] = True
    ramp = torch.linspace(0.2, 0.6, 8).view(8, 1, 1).expand(8, 8, 8)
    gt[6:14, 6:14, 6:14] = ramp + 0.05 * torch.rand(
        8, 8, 8, generator=torch.Generator().manual_seed(0)
    )
    return gt, mask


def test_normalisation_is_identity_for_the_constructed_case(case):
    gt, mask = case
    torch.testing.assert_close(percentile_normalise(gt, gt * ~mask), gt)


def test_perfect_prediction(case):
    gt, mask = case
    m = brats_inpainting_metrics(gt.clone(), gt, mask)
    assert m["mse"] == 0.0 and m["mae"] == 0.0 and m["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert math.isinf(m["psnr"]) and math.isinf(m["psnr_01"])
    assert m["psnr_01_eps"] == pytest.approx(10 * math.log10(1.0 / sys.float_info.epsilon))
    assert m["n_mask_voxels"] == 512


def test_constant_error_inside_mask_and_errors_outside_are_ignored(case):
    gt, mask = case
    prediction = gt.clone()
    prediction[mask] += 0.1
    garbage = prediction.clone()
    garbage[~mask] = torch.rand(int((~mask).sum()), generator=torch.Generator().manual_seed(1))
    clean, noisy = (
        brats_inpainting_metrics(prediction, gt, mask),
        brats_inpainting_metrics(garbage, gt, mask),
    )
    assert clean == noisy
    assert clean["mse"] == pytest.approx(0.01, rel=1e-5)
    assert clean["mae"] == pytest.approx(0.1, rel=1e-5)
    assert clean["psnr_01"] == pytest.approx(20.0, abs=1e-4)
    gt_range = float(gt[mask].max() - gt[mask].min())
    assert clean["psnr"] == pytest.approx(10 * math.log10(gt_range**2 / 0.01), abs=1e-4)
    assert clean["psnr_eps"] == pytest.approx(
        10 * math.log10(float(gt[mask].max()) ** 2 / 0.01), abs=1e-4
    )


def test_masked_ssim_matches_skimage_slicewise_in_challenge_mode(case):
    """The challenge feeds [1, X, Y, Z] to torchmetrics: 2D SSIM maps in (Y, Z) per X slice."""
    gt, mask = case
    prediction = gt.clone()
    prediction[mask] = prediction[mask] * 0.8 + 0.1 * torch.rand(
        512, generator=torch.Generator().manual_seed(2)
    )
    p, g = (prediction * mask).double().numpy(), (gt * mask).double().numpy()
    data_range = max(p.max() - p.min(), g.max() - g.min())
    maps = np.stack(
        [
            structural_similarity(
                p[x],
                g[x],
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=data_range,
                full=True,
            )[1]
            for x in range(20)
        ]
    )
    expected = maps[
        mask.numpy()
    ].mean()  # mask is >= 5 voxels from the border: padding never matters
    result = brats_inpainting_metrics(prediction, gt, mask)
    assert result["ssim"] == pytest.approx(expected, abs=1e-5)
    assert (
        brats_inpainting_metrics(prediction, gt, mask, ssim_window="3d")["ssim"] != result["ssim"]
    )


def test_metrics_are_invariant_to_intensity_scale_through_normalisation(case):
    gt, mask = case
    prediction = gt.clone()
    prediction[mask] += 0.05
    base = brats_inpainting_metrics(prediction, gt, mask)
    scaled = brats_inpainting_metrics(
        prediction * 300, gt * 300, mask, normalisation_volume=gt * ~mask * 300
    )
    for key in ("mse", "psnr", "psnr_01", "ssim"):
        assert scaled[key] == pytest.approx(base[key], rel=1e-4, abs=1e-6)


def test_bad_inputs_are_rejected(case):
    gt, mask = case
    with pytest.raises(ValueError, match="binary"):
        brats_inpainting_metrics(gt, gt, mask.float() * 0.5)
    with pytest.raises(ValueError, match="empty"):
        brats_inpainting_metrics(gt, gt, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="3D volumes"):
        brats_inpainting_metrics(gt[0], gt[0], mask[0])

"""Paired PSNR/MAE/MSE/SSIM against skimage and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from medgen.metrics.paired import mae, mse, paired_metrics, psnr


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(5, 1, 32, 32, generator=g) * 2 - 1
    prediction = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(-1, 1)
    return prediction, target


def test_psnr_mse_mae_match_skimage_and_numpy(pair):
    prediction, target = pair
    p, t = prediction.double().numpy(), target.double().numpy()
    expected_psnr = [peak_signal_noise_ratio(t[i], p[i], data_range=2.0) for i in range(5)]
    np.testing.assert_allclose(
        psnr(prediction, target, data_range=2.0).numpy(), expected_psnr, rtol=1e-5
    )
    np.testing.assert_allclose(
        mse(prediction, target).numpy(),
        [mean_squared_error(t[i], p[i]) for i in range(5)],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        mae(prediction, target).numpy(), np.abs(p - t).mean(axis=(1, 2, 3)), rtol=1e-5
    )


def test_paired_metrics_ssim_matches_skimage_and_reports_data_range(pair):
    prediction, target = pair
    result = paired_metrics(prediction, target, data_range=2.0)
    expected = np.mean(
        [
            structural_similarity(
                target[i, 0].double().numpy(),
                prediction[i, 0].double().numpy(),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=2.0,
            )
            for i in range(5)
        ]
    )
    assert result["ssim"] == pytest.approx(expected, abs=1e-5)
    assert result["data_range"] == 2.0 and result["n"] == 5 and result["psnr_n_identical"] == 0


def test_identical_images_give_infinite_psnr_counted_not_hidden(pair):
    prediction, target = pair
    prediction = prediction.clone()
    prediction[0] = target[0]
    values = psnr(prediction, target, data_range=2.0)
    assert math.isinf(values[0]) and torch.isfinite(values[1:]).all()
    result = paired_metrics(prediction, target, data_range=2.0)
    assert result["psnr_n_identical"] == 1
    assert result["psnr"] == pytest.approx(float(values[1:].mean()), rel=1e-6)


def test_data_range_changes_psnr_by_the_expected_offset(pair):
    prediction, target = pair
    delta = psnr(prediction, target, data_range=2.0) - psnr(prediction, target, data_range=1.0)
    np.testing.assert_allclose(delta.numpy(), 20 * np.log10(2.0), rtol=1e-5)

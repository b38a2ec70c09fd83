"""SSIM/MS-SSIM (MONAI) against skimage and torchmetrics; automatic kernel/scale choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import compute_ms_ssim
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    structural_similarity_index_measure,
)

from medgen.metrics.ssim import (
    MS_SSIM_WEIGHTS,
    MSSSIMConfig,
    choose_ms_ssim_config,
    ms_ssim,
    ms_ssim_diversity,
    ms_ssim_diversity_with_floor,
    ms_ssim_quality,
    ssim,
)


def noisy_pairs(n=4, size=64, seed=0, dims=2, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand((n, 1) + (size,) * dims, generator=g) * 2 - 1
    a = torch.nn.functional.avg_pool2d(a, 3, 1, 1) if dims == 2 else a  # some spatial structure
    b = (a + noise * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    return a, b


def skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    # MONAI: Gaussian sigma 1.5, 11 window, population covariance, valid region == skimage's
    # gaussian_weights with use_sample_covariance=False and its border crop.
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range
    )


def test_ssim_matches_skimage_2d():
    a, b = noisy_pairs()
    ours = ssim(a, b, data_range=2.0)
    expected = [
        skimage_ssim(a[i, 0].double().numpy(), b[i, 0].double().numpy(), 2.0) for i in range(len(a))
    ]
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-5)  # float32 vs float64


def test_ssim_matches_skimage_3d():
    a, b = noisy_pairs(n=1, size=20, dims=3)
    expected = skimage_ssim(a[0, 0].double().numpy(), b[0, 0].double().numpy(), 2.0)
    assert float(ssim(a, b, data_range=2.0)[0]) == pytest.approx(expected, abs=1e-5)


def test_ms_ssim_matches_a_reconstruction_from_torchmetrics_pieces():
    """torchmetrics pads (reflect) while MONAI uses the valid region, so compare scale by
    scale on the valid region: cs from torchmetrics (it crops cs itself), last-scale SSIM
    from its full map with the padding cropped; sigma 0.3 makes torchmetrics' Gaussian
    window 3 wide, equal to ours."""
    a, b = noisy_pairs()
    config = MSSSIMConfig(kernel_size=3, kernel_sigma=0.3, weights=MS_SSIM_WEIGHTS)
    ours, _ = ms_ssim(a, b, config=config)
    x, y, terms = a, b, []
    for level in range(len(MS_SSIM_WEIGHTS)):
        if level < len(MS_SSIM_WEIGHTS) - 1:
            _, cs = structural_similarity_index_measure(
                x, y, sigma=0.3, data_range=2.0, reduction="none", return_contrast_sensitivity=True
            )
            terms.append(torch.relu(cs))
        else:
            _, full = structural_similarity_index_measure(
                x, y, sigma=0.3, data_range=2.0, return_full_image=True
            )
            terms.append(torch.relu(full[..., 1:-1, 1:-1].flatten(1).mean(1)))
        x, y = torch.nn.functional.avg_pool2d(x, 2), torch.nn.functional.avg_pool2d(y, 2)
    expected = torch.prod(torch.stack(terms) ** torch.tensor(MS_SSIM_WEIGHTS).view(-1, 1), dim=0)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    # torchmetrics' own MS-SSIM keeps the reflect-padded border in the coarsest-scale SSIM
    # (4x4 pixels at 64/16, of which only 2x2 are valid), so it differs by a few hundredths.
    theirs = multiscale_structural_similarity_index_measure(
        a, b, sigma=0.3, kernel_size=3, data_range=2.0, reduction="none"
    )
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0.05)


@pytest.mark.parametrize(
    "size,kernel,scales", [(256, 11, 5), (128, 7, 5), (64, 3, 5), (32, 3, 4), (16, 3, 3), (8, 3, 2)]
)
def test_ms_ssim_config_choice_runs_in_monai(size, kernel, scales):
    config = choose_ms_ssim_config((size, size))
    assert (config.kernel_size, config.scales) == (kernel, scales)
    assert sum(config.weights) == pytest.approx(1.0 if scales < 5 else sum(MS_SSIM_WEIGHTS))
    a, b = noisy_pairs(n=1, size=size, noise=0.05)
    values, used = ms_ssim(a, b)
    assert used == config and 0.5 < float(values[0]) < 1


def test_ms_ssim_too_small_images_raise_a_clear_error():
    with pytest.raises(ValueError, match="too small for MS-SSIM"):
        choose_ms_ssim_config((5, 5))


def test_coarsest_scale_rule_catches_what_monai_check_misses():
    a, b = noisy_pairs(n=1, size=5)
    # MONAI's own check passes (5 // 1 > 4) but the second scale has 2 pixels for a 5 window.
    with pytest.raises(RuntimeError):
        compute_ms_ssim(a, b, spatial_dims=2, kernel_size=5, weights=(0.5, 0.5))
    with pytest.raises(ValueError, match="does not fit"):
        ms_ssim(a, b, config=MSSSIMConfig(kernel_size=5, kernel_sigma=1.5, weights=(0.5, 0.5)))


def test_quality_and_diversity_report_settings_and_identity_values():
    a, b = noisy_pairs(n=5)
    value, settings = ms_ssim_quality(a, a)
    assert (
        value == pytest.approx(1.0, abs=1e-6)
        and settings["kernel_size"] == 3
        and settings["scales"] == 5
    )
    same, settings = ms_ssim_diversity(a[:1].repeat(5, 1, 1, 1))
    assert same == pytest.approx(1.0, abs=1e-6) and settings["pairs"] == 10
    different, _ = ms_ssim_diversity(torch.cat([a, b]))
    assert different < 0.9


def test_ms_ssim_diversity_floor_names_its_settings():
    a, b = noisy_pairs(n=8)
    result = ms_ssim_diversity_with_floor(torch.cat([a, b]), a[:1].repeat(8, 1, 1, 1))
    assert result.value == pytest.approx(1.0, abs=1e-6) and result.floor < 0.9
    assert result.mode == "kernel 3, 5 scales" and result.details["kernel_size"] == 3

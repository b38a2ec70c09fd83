"""Scores of training validation samples, checked against independent implementations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy import ndimage

from medgen.generation.lesion_contrast import lesion_contrasts
from medgen.metrics import psnr, ssim
from medgen.metrics.brats_inpainting import brats_inpainting_metrics, to_scanner_range
from medgen.metrics.sample_scores import SampleScorer, boundary_sharpness, lesion_contrast


@dataclass
class Samples:
    generated: torch.Tensor
    real: torch.Tensor | None
    paired: bool
    masks: torch.Tensor | None = None
    score_region: torch.Tensor | None = None


def images_and_masks(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        r, c = torch.randint(4, size - 12, (2,), generator=g).tolist()
        masks[i, 0, r : r + 3 + i, c : c + 4] = 1
    masks[-1] = 0  # no lesion: no value
    images = torch.rand(n, 2, size, size, generator=g) * 1.6 - 0.8
    images[:, :, :2] = -1.0  # background
    return images, masks


def test_lesion_contrast_matches_the_generation_reports_scipy_version():
    images, masks = images_and_masks()
    ours = lesion_contrast(images, masks, ring_px=2, channel=1)
    reference = lesion_contrasts(images, masks, ring_px=2, channel=1)
    assert len(ours) == len(reference) == 5
    assert np.allclose(ours.numpy(), reference, atol=1e-6)


def test_boundary_sharpness_is_the_gradient_magnitude_on_the_edge_band():
    images, masks = images_and_masks()
    ours = boundary_sharpness(images, masks)
    expected = []
    for image, mask in zip(images[:, 0].numpy(), masks[:, 0].numpy() > 0, strict=True):
        band = (ndimage.binary_dilation(mask) & ~mask) | (
            mask & ~ndimage.binary_erosion(mask, border_value=1)
        )
        if mask.any():
            magnitude = np.sqrt(sum(g**2 for g in np.gradient(image.astype(np.float64))))
            expected.append(magnitude[band].mean())
    assert np.allclose(ours.numpy(), expected, atol=1e-5)
    sharp = torch.where(masks > 0, 1.0, -1.0)
    blurred = torch.nn.functional.avg_pool2d(sharp, 5, stride=1, padding=2, count_include_pad=False)
    assert bool((boundary_sharpness(sharp, masks) > boundary_sharpness(blurred, masks)).all())


def test_paired_samples_get_ssim_psnr_and_a_named_lpips():
    real, masks = images_and_masks()
    generated = (real + 0.1 * torch.randn_like(real)).clamp(-1, 1)
    scorer = SampleScorer()
    metrics = ["ssim", "psnr", "lpips", "lesion_contrast", "boundary_sharpness"]
    out = scorer(Samples(generated, real, True, masks), metrics)
    assert out["ssim"] == pytest.approx(float(ssim(generated, real, data_range=2.0).mean()))
    assert out["psnr"] == pytest.approx(float(psnr(generated, real, data_range=2.0).mean()))
    assert 0 < out["lpips"] < 1 and scorer.lpips_name.startswith("lpips-alex")
    assert out["lesion_contrast_real"] == pytest.approx(float(lesion_contrast(real, masks).mean()))
    assert out["boundary_sharpness_ratio"] == pytest.approx(
        out["boundary_sharpness"] / out["boundary_sharpness_real"]
    )
    unpaired = scorer(Samples(generated, real, False, None), metrics)
    assert unpaired == {}  # no pair, no mask: nothing applies, nothing is made up
    assert "ssim" not in scorer(Samples(generated, real, True, masks), ["psnr"])


def test_inpainting_samples_get_the_brats_scorers_region_metrics():
    g = torch.Generator().manual_seed(1)
    real = torch.rand(2, 1, 12, 12, 12, generator=g) * 2 - 1
    region = torch.zeros(2, 1, 12, 12, 12)
    region[:, :, 3:8, 3:8, 3:8] = 1
    generated = torch.where(region > 0, real + 0.2, real).clamp(-1, 1)
    out = SampleScorer()(Samples(generated, real, True, region, region), ["ssim", "psnr", "lpips"])
    rows = [
        brats_inpainting_metrics(
            to_scanner_range(generated[i, 0]), to_scanner_range(real[i, 0]), region[i, 0] > 0
        )
        for i in range(2)
    ]
    assert out["ssim"] == pytest.approx(np.mean([r["ssim"] for r in rows]))
    assert out["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rows]))
    assert "lpips" not in out  # a 2D network: not for volumes

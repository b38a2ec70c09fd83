"""Demo checks: each check passes on inputs built to pass and fails on inputs built to fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.metrics import demo_checks as dc
from medgen.metrics import demo_distances as dd
from medgen.metrics.backbones import in_domain_backbone
from medgen.metrics.fid import compute_fid, compute_fid_2p5d
from medgen.metrics.in_domain import InDomainEncoder
from medgen.metrics.paired import paired_metrics

PARAMS = {
    "enabled": True,
    "brain_threshold": -0.8,
    "min_brain_dice": 0.8,
    "intensity_tolerance": 0.15,
    "baseline_margin": 0.5,
    "min_contrast_ratio": 0.5,
    "min_diversity": 0.25,
    "slices_per_volume": 4,
    "central_fraction": 0.8,
    "seed": 0,
    "backbone": {
        "max_images": 256,
        "size": 16,
        "epochs": 1,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "feature_dim": 2,
        "width": 4,
    },
}


def brains(n: int, size: int = 16, seed: int = 0, channels: int = 2) -> torch.Tensor:
    """Ellipsoid "brains" (background -1) of random size with a brighter core and noise."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.mgrid[0:size, 0:size, 0:size], 0).astype(np.float32) / (size - 1) * 2 - 1
    out = np.full((n, channels, size, size, size), -1.0, dtype=np.float32)
    for i in range(n):
        radii = rng.uniform(0.7, 0.85, size=3)
        inside = ((grid / radii[:, None, None, None]) ** 2).sum(0) <= 1
        core = ((grid / (0.4 * radii[:, None, None, None])) ** 2).sum(0) <= 1
        for c in range(channels):
            level = rng.uniform(0.0, 0.2) + 0.1 * c
            volume = np.where(inside, level, -1.0) + 0.5 * core
            out[i, c] = np.clip(volume + rng.normal(0, 0.05, volume.shape) * inside, -1, 1)
    return torch.from_numpy(out)


def test_params_refuse_unknown_keys_and_bad_margins():
    assert dc.DemoCheckParams.from_params(PARAMS, "x.demo_checks").backbone.size == 16
    with pytest.raises(ValueError, match="tresholds"):
        dc.DemoCheckParams.from_params({**PARAMS, "tresholds": 1}, "x.demo_checks")
    with pytest.raises(ValueError, match="baseline_margin"):
        dc.DemoCheckParams.from_params({**PARAMS, "baseline_margin": 1.5}, "x.demo_checks")
    missing = {k: v for k, v in PARAMS.items() if k != "seed"}
    with pytest.raises(ValueError, match="seed"):
        dc.DemoCheckParams.from_params(missing, "x.demo_checks")


def test_dice_of_constructed_masks():
    a = torch.zeros(4, 4, dtype=torch.bool)
    b = torch.zeros(4, 4, dtype=torch.bool)
    a[:2] = True  # 8 voxels
    b[1:3] = True  # 8 voxels, 4 shared
    assert dc.dice(a, b) == pytest.approx(2 * 4 / 16)
    assert dc.dice(a, a) == 1.0
    assert dc.dice(torch.zeros_like(a), torch.zeros_like(a)) == 1.0
    with pytest.raises(ValueError, match="shapes"):
        dc.dice(a, b[:2])


def test_brain_shape_passes_for_brains_and_fails_for_noise_and_shifted_brains():
    real = brains(6)
    passed = dc.brain_shape_check(brains(3, seed=1), real, threshold=-0.8, min_dice=0.8)
    assert passed["status"] == dc.PASSED
    assert passed["min_generated_dice"] >= 0.8 and passed["real_dice_mean"] > 0.9
    noise = torch.rand(3, 2, 16, 16, 16) * 2 - 1
    assert dc.brain_shape_check(noise, real, threshold=-0.8, min_dice=0.8)["status"] == dc.FAILED
    shifted = torch.roll(brains(3, seed=1), shifts=6, dims=2)
    record = dc.brain_shape_check(shifted, real, threshold=-0.8, min_dice=0.8)
    assert record["status"] == dc.FAILED and record["min_generated_dice"] < 0.8


def test_intensity_check_passes_on_the_real_scale_and_fails_when_dimmed_or_brighter():
    real = brains(6)
    ok = dc.intensity_check(brains(3, seed=1), real, threshold=-0.8, tolerance=0.15)
    assert ok["status"] == dc.PASSED
    dimmed = (brains(3, seed=1) + 1) * 0.6 - 1  # tissue 40 % darker
    assert dc.intensity_check(dimmed, real, threshold=-0.8, tolerance=0.15)["status"] == dc.FAILED
    brighter = brains(3, seed=1)
    brighter[:, :, 4:8, 4:8, 4:8] = 1.0  # brighter than any real tissue
    record = dc.intensity_check(brighter, real, threshold=-0.8, tolerance=0.15)
    assert record["status"] == dc.FAILED
    assert record["generated_percentiles"][0][1] > record["real_percentiles"][0][1] + 0.15


def test_diversity_fails_for_one_volume_repeated():
    real = brains(6)
    assert dc.diversity_check(brains(4, seed=1), real, min_ratio=0.25)["status"] == dc.PASSED
    repeated = brains(1, seed=1).repeat(4, 1, 1, 1, 1)
    record = dc.diversity_check(repeated, real, min_ratio=0.25)
    assert record["status"] == dc.FAILED and record["ratio"] == 0.0
    # the same spread as the real volumes: ratio 1
    assert dc.diversity_check(real, real, min_ratio=0.25)["ratio"] == pytest.approx(1.0)


def test_noise_baselines_have_the_real_moments():
    # away from the [-1, 1] clipping: channel levels -0.2 / 0.2, a per-voxel pattern, noise
    generator = torch.Generator().manual_seed(0)
    pattern = 0.3 * torch.rand(1, 2, 6, 6, 6, generator=generator)
    level = torch.tensor([-0.2, 0.2]).reshape(1, 2, 1, 1, 1)
    real = level + pattern + 0.05 * torch.randn(60, 2, 6, 6, 6, generator=generator)
    baselines = dc.noise_baselines(real, 2000, seed=0)
    noise, mean_plus = baselines["gaussian_noise"], baselines["mean_plus_noise"]
    assert noise.shape == mean_plus.shape == (2000, *real.shape[1:])
    dims = (0, 2, 3, 4)
    assert torch.allclose(noise.mean(dim=dims), real.mean(dim=dims), atol=0.01)
    assert torch.allclose(noise.std(dim=dims), real.std(dim=dims), atol=0.01)
    assert torch.allclose(mean_plus.mean(0), real.mean(0), atol=0.01)
    assert torch.allclose(mean_plus.std(0), real.std(0), atol=0.01)
    assert torch.equal(dc.noise_baselines(real, 2000, seed=0)["gaussian_noise"], noise)


def test_frechet_check_threshold_is_margin_times_the_best_baseline():
    baselines = {"gaussian_noise": 10.0, "mean_plus_noise": 4.0}
    assert dc.frechet_check("fd", 2.0, baselines, margin=0.5)["status"] == dc.PASSED
    record = dc.frechet_check("fd", 2.01, baselines, margin=0.5)
    assert record["status"] == dc.FAILED and record["ratio_to_best_baseline"] == pytest.approx(
        0.5025
    )


def test_lesion_contrast_check():
    assert dc.lesion_contrast_check(0.1, 0.19, min_ratio=0.5)["status"] == dc.PASSED
    assert dc.lesion_contrast_check(0.09, 0.19, min_ratio=0.5)["status"] == dc.FAILED
    missing = dc.lesion_contrast_check(None, 0.19, min_ratio=0.5)
    assert missing["status"] == dc.FAILED and missing["ratio"] is None


def test_trilinear_round_trip_keeps_constants_and_loses_detail():
    constant = torch.full((1, 2, 8, 8, 8), 0.25)
    assert torch.allclose(dc.trilinear_round_trip(constant, 4), constant)
    # area down-sampling = the mean of each 4^3 block (an independent computation)
    image = torch.rand(1, 1, 8, 8, 8)
    small = torch.nn.functional.interpolate(image, scale_factor=0.25, mode="area")
    blocks = image.reshape(1, 1, 2, 4, 2, 4, 2, 4).mean(dim=(3, 5, 7))
    assert torch.allclose(small, blocks)
    assert not torch.allclose(dc.trilinear_round_trip(image, 4), image)


def test_reconstruction_check_against_the_trilinear_baseline():
    images = brains(3)
    baseline = paired_metrics(
        dc.trilinear_round_trip(images, 4).clamp(-1, 1), images, data_range=2.0
    )
    better = {"psnr": baseline["psnr"] + 1, "ssim": baseline["ssim"] + 0.01}
    record = dc.reconstruction_check(better, images, factor=4, latent_channels=2)
    assert record["status"] == dc.PASSED
    assert record["trilinear"]["psnr"] == pytest.approx(baseline["psnr"], abs=1e-4)
    worse = {"psnr": baseline["psnr"] + 1, "ssim": baseline["ssim"] - 0.01}
    assert (
        dc.reconstruction_check(worse, images, factor=4, latent_channels=2)["status"] == dc.FAILED
    )


def _untrained_backbone(size: int = 16):
    torch.manual_seed(0)
    return in_domain_backbone(
        InDomainEncoder(feature_dim=8, width=4, input_size=size), provenance="test"
    )


def test_plane_distance_equals_compute_fid_2p5d():
    backbone = _untrained_backbone()
    real, generated = brains(6), brains(6, seed=3)
    planes = dd.PlaneFeatures(backbone, slices_per_volume=4, central_fraction=0.8)
    ours = planes.distance(planes.features(real), planes.features(generated))
    library = compute_fid_2p5d(real, generated, backbone, slices_per_volume=4, central_fraction=0.8)
    assert ours == pytest.approx(library.value, rel=1e-9)


def test_volume_checks_pass_for_real_volumes_and_fail_for_a_baseline():
    params = dc.DemoCheckParams.from_params(PARAMS, "x.demo_checks")
    train, reference = brains(8, seed=0), brains(4, seed=10)
    report = dd.volume_checks(brains(4, seed=20), train, reference, params)
    checks = report["checks"]
    assert checks["brain_shape"]["status"] == checks["intensity_range"]["status"] == dc.PASSED
    assert checks["diversity"]["status"] == dc.PASSED
    fd = checks["frechet_2p5d"]
    assert set(fd["baselines"]) == {"gaussian_noise", "mean_plus_noise"}
    assert fd["n_generated"] == 4 and fd["n_reference"] == 4 and fd["real_floor"] >= 0
    # generated = the Gaussian-noise baseline itself: ratio 1 to a baseline, never "clearly below"
    noise = dc.noise_baselines(train, 4, params.seed)["gaussian_noise"]
    failed = dd.volume_checks(noise, train, reference, params)
    assert failed["status"] == dc.FAILED
    assert failed["checks"]["brain_shape"]["status"] == dc.FAILED
    assert failed["checks"]["frechet_2p5d"]["generated"] == pytest.approx(
        failed["checks"]["frechet_2p5d"]["baselines"]["gaussian_noise"], abs=1e-4
    )
    off = dd.volume_checks(
        noise, train, reference, dc.DemoCheckParams.from_params({**PARAMS, "enabled": False}, "x")
    )
    assert off["status"] == "not run"


def test_slice_checks_use_the_2d_distance_and_the_lesion_contrast():
    params = dc.DemoCheckParams.from_params(
        {**PARAMS, "backbone": {**PARAMS["backbone"], "size": 16}}, "x"
    )
    train, reference = brains(8, seed=0)[:, :, 8], brains(4, seed=10)[:, :, 8]
    contrast = {"generated_own_masks": {"mean": 0.12}, "real": {"mean": 0.2}}
    report = dd.slice_checks(brains(6, seed=20)[:, :, 8], train, reference, contrast, params)
    assert report["checks"]["lesion_contrast"]["status"] == dc.PASSED
    assert report["checks"]["frechet_2d"]["n_generated"] == 6
    noise = dc.noise_baselines(train, 6, params.seed)["mean_plus_noise"]
    failed = dd.slice_checks(noise, train, reference, contrast, params)
    fd = failed["checks"]["frechet_2d"]
    assert fd["status"] == dc.FAILED
    assert fd["generated"] == pytest.approx(fd["baselines"]["mean_plus_noise"], abs=1e-4)


def test_too_few_samples_for_the_features_fail_with_the_counts():
    params = dc.DemoCheckParams.from_params(
        {**PARAMS, "backbone": {**PARAMS["backbone"], "feature_dim": 8}}, "x"
    )
    train, reference = brains(8, seed=0)[:, :, 8], brains(4, seed=10)[:, :, 8]
    contrast = {"generated_own_masks": {"mean": 0.12}, "real": {"mean": 0.2}}
    fd = dd.slice_checks(brains(6, seed=20)[:, :, 8], train, reference, contrast, params)
    record = fd["checks"]["frechet_2d"]
    assert record["status"] == dc.FAILED and "4 samples for 8 features" in record["reason"]


def test_check_metrics_flatten_status_and_numbers():
    report = {
        "status": dc.FAILED,
        "checks": {
            "fd": dc.frechet_check(
                "fd", 3.0, {"gaussian_noise": 4.0, "mean_plus_noise": 5.0}, margin=0.5
            )
        },
    }
    metrics = dc.check_metrics(report, "demo")
    assert metrics["demo/fd/passed"] == 0.0
    assert metrics["demo/fd/generated"] == 3.0
    assert metrics["demo/fd/baselines_mean_plus_noise"] == 5.0
    assert metrics["demo/fd/ratio_to_best_baseline"] == 0.75


def test_compute_fid_cross_check_of_the_2d_rows():
    """The 2D rows use the same per-channel distance as `compute_fid`."""
    backbone = _untrained_backbone()
    real, generated = brains(20, seed=0)[:, :, 8], brains(20, seed=1)[:, :, 8]
    from medgen.metrics.fid import extract_channel_features, fid_from_channel_features

    ours = fid_from_channel_features(
        extract_channel_features(real, backbone),
        extract_channel_features(generated, backbone),
        "auto",
    )[0]
    assert ours == pytest.approx(compute_fid(real, generated, backbone, covariance="auto").value)

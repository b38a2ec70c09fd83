"""FID through clean-fid: maths against scipy, array path against clean-fid's folder path."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from torch import nn

from medgen.metrics import frechet as frechet_module
from medgen.metrics.backbones import custom_backbone, in_domain_backbone
from medgen.metrics.errors import MetricNotApplicable, NonFiniteInputError
from medgen.metrics.fid import (
    PLANES,
    compute_fid,
    compute_fid_2p5d,
    compute_fid_folders,
    extract_features,
    fid_2p5d_with_floor,
    fid_from_channel_features,
    fid_with_floor,
    frechet_distance,
    plane_slices,
)
from medgen.metrics.frechet import resolve_covariance
from medgen.metrics.images import to_uint8_hwc
from medgen.metrics.in_domain import InDomainEncoder


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Independent textbook FD: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b))."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * np.real(root)))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


@pytest.mark.parametrize(
    "dim,shift,scale", [(4, 0.0, 1.0), (8, 0.5, 1.0), (8, 0.2, 2.0), (16, 1.0, 0.5)]
)
def test_frechet_distance_matches_independent_scipy_implementation(dim, shift, scale):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(400, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(size=(300, dim)) * scale + shift
    # Both use scipy's sqrtm on the same float64 matrices: agreement to 1e-8 relative.
    assert frechet_distance(a, b) == pytest.approx(scipy_frechet(a, b), rel=1e-8, abs=1e-10)


def test_frechet_distance_scipy_118_compat_shim_gives_same_value(monkeypatch):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(200, 6)) + 0.3
    expected = frechet_distance(a, b)
    original = frechet_module.cleanfid_fid.linalg
    monkeypatch.setattr(frechet_module, "_scipy_sqrtm_has_disp", lambda: False)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    assert frechet_module.cleanfid_fid.linalg is original  # restored after use


def textbook_ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """Ledoit & Wolf (2004), Lemma 3.2-3.4: S = X'X / n of the centred data, m = tr(S) / p,
    d2 = ||S - mI||^2 / p, b2 = min(mean_k ||x_k x_k' - S||^2 / (n p), d2);
    shrunk = (b2 / d2) m I + (1 - b2 / d2) S (Frobenius norms)."""
    x = x - x.mean(axis=0)
    n, p = x.shape
    s = x.T @ x / n
    m = np.trace(s) / p
    d2 = np.sum((s - m * np.eye(p)) ** 2) / p
    b2 = min(sum(np.sum((np.outer(v, v) - s) ** 2) for v in x) / n**2 / p, d2)
    return b2 / d2 * m * np.eye(p) + (1 - b2 / d2) * s


def test_ledoit_wolf_frechet_distance_matches_a_textbook_implementation():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(12, 20)) @ rng.normal(size=(20, 20))  # n = 12 <= d = 20
    b = rng.normal(size=(15, 20)) + 0.4
    s_a, s_b = textbook_ledoit_wolf(a), textbook_ledoit_wolf(b)
    root = scipy.linalg.sqrtm(s_a @ s_b)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * np.real(root))
    assert frechet_distance(a, b, "ledoit_wolf") == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(a, b) == frechet_distance(a, b, "ledoit_wolf")  # auto: n <= d
    with pytest.raises(MetricNotApplicable, match="n=12 samples of d=20 features is singular"):
        frechet_distance(a, b, "sample")
    big_a, big_b = rng.normal(size=(40, 20)), rng.normal(size=(40, 20))
    assert frechet_distance(big_a, big_b) == frechet_distance(big_a, big_b, "sample")  # n > d


def test_covariance_choice_is_named_with_n_and_d():
    assert resolve_covariance("auto", 21, 20) == "sample"
    assert resolve_covariance("auto", 20, 20) == "ledoit_wolf"
    with pytest.raises(ValueError, match="covariance must be one of"):
        resolve_covariance("oas", 30, 20)
    rng = np.random.default_rng(0)
    _, details = fid_from_channel_features(
        rng.normal(size=(10, 1, 16)), rng.normal(size=(9, 1, 16))
    )
    assert details["n_per_set"] == 9 and details["feature_dim"] == 16
    assert details["covariance"] == "ledoit_wolf shrinkage (n=9 <= d=16: sample singular)"
    _, details = fid_from_channel_features(rng.normal(size=(30, 1, 4)), rng.normal(size=(30, 1, 4)))
    assert details["covariance"] == "sample (n=30 > d=4: full rank)"


def test_non_finite_images_and_features_are_refused(slices):
    images, _ = slices
    backbone = custom_backbone("test-cnn", small_cnn())
    broken = images[:10].clone()
    broken[3] = float("nan")
    with pytest.raises(NonFiniteInputError, match="images given to the feature network"):
        extract_features(broken, backbone)
    features = np.ones((5, 3))
    features[0, 0] = np.inf
    with pytest.raises(NonFiniteInputError, match="1 Inf"):
        frechet_distance(features, np.ones((5, 3)))
    with pytest.raises(MetricNotApplicable, match="at least 2 samples"):
        frechet_distance(np.ones((1, 3)), np.ones((5, 3)))


def test_array_path_equals_cleanfid_compute_fid_on_png_folders(tmp_path, slices):
    images, _ = slices
    real, generated = images[:40], (images[40:80] * 0.8 + 0.1)
    backbone = custom_backbone("test-cnn", small_cnn())
    for name, batch in (("real", real), ("gen", generated)):
        (tmp_path / name).mkdir()
        for i, pixels in enumerate(to_uint8_hwc(batch)):
            Image.fromarray(pixels[..., 0], mode="L").save(tmp_path / name / f"{i:03d}.png")
    from_arrays = compute_fid(real, generated, backbone)
    from_folders = compute_fid_folders(tmp_path / "real", tmp_path / "gen", backbone)
    assert from_folders.n_real == 40 and from_folders.n_generated == 40
    # The value is ~2e-4 and the two paths batch the images differently, so float32 features
    # differ in their last bits: agreement is to 1e-6 relative or 1e-8 absolute.
    assert from_arrays.value == pytest.approx(from_folders.value, rel=1e-6, abs=1e-8)
    assert from_arrays.value > 0


def test_custom_feat_extractor_receives_images_in_0_255_at_native_resolution(slices):
    images, _ = slices
    net = small_cnn()
    features = extract_features(images[:10], custom_backbone("test-cnn", net), batch_size=4)
    quantised = torch.from_numpy(to_uint8_hwc(images[:10])).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        expected = net(quantised.repeat(1, 3, 1, 1) / 255.0).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_fid_of_set_with_itself_is_zero_and_grows_with_shift(slices):
    images, _ = slices
    backbone = in_domain_backbone(InDomainEncoder(feature_dim=16, width=8, input_size=32))
    result = compute_fid(images, images, backbone)
    assert abs(result.value) < 1e-8
    assert (result.n_real, result.n_generated) == (96, 96)
    assert result.backbone.startswith("in_domain") and "native" in result.mode
    values = [
        compute_fid(images, (images + s).clamp(-1, 1), backbone).value for s in (0.05, 0.2, 0.5)
    ]
    assert values[0] > 1e-6 and values == sorted(values) and values[2] > 10 * values[0]


def test_two_channel_images_are_scored_per_channel_and_averaged(slices):
    images, _ = slices
    backbone = custom_backbone("test-cnn", small_cnn())
    pair_real = torch.cat([images[:40], -images[:40]], dim=1)
    pair_gen = torch.cat([images[40:80], (-images[40:80] + 0.3).clamp(-1, 1)], dim=1)
    result = compute_fid(pair_real, pair_gen, backbone)
    per_channel = [
        compute_fid(pair_real[:, c : c + 1], pair_gen[:, c : c + 1], backbone).value for c in (0, 1)
    ]
    assert result.details["per_channel"] == pytest.approx(per_channel, rel=1e-9)
    assert result.value == pytest.approx(np.mean(per_channel), rel=1e-9)


def test_fid_with_floor_uses_half_counts_and_a_small_floor(slices):
    images, _ = slices
    backbone = custom_backbone("test-cnn", small_cnn())
    shifted = (images + 0.4).clamp(-1, 1)
    result = fid_with_floor(images, shifted, backbone, seed=3)
    assert result.n_real == result.n_generated == 48
    assert result.details["n_real_total"] == 96
    assert result.details["covariance"] == "sample (n=48 > d=12: full rank)"
    assert 0 < result.floor < result.value
    groups = torch.arange(96) // 16  # 6 patients: halves of 3
    refused = fid_with_floor(images, shifted, backbone, groups=groups, min_groups_per_half=4)
    assert refused.floor is None and "fewer than the 4 per half" in refused.details["no_floor"]
    assert refused.n_real == refused.n_generated == 96 and refused.value > 0


def test_plane_slices_shapes_and_spacing():
    volumes = (
        torch.arange(2 * 1 * 4 * 5 * 6, dtype=torch.float32).reshape(2, 1, 4, 5, 6) / 240 - 0.5
    )
    assert plane_slices(volumes, "axis_d").shape == (8, 1, 5, 6)
    assert plane_slices(volumes, "axis_h").shape == (10, 1, 4, 6)
    assert plane_slices(volumes, "axis_w").shape == (12, 1, 4, 5)
    two = plane_slices(volumes, "axis_w", slices_per_volume=2)
    torch.testing.assert_close(two[:2], volumes[0, :, :, :, [0, 5]].permute(3, 0, 1, 2))


def test_fid_2p5d_returns_three_planes_and_their_mean():
    torch.manual_seed(0)
    real = torch.rand(8, 1, 12, 12, 12) * 2 - 1
    gen = (real * 0.5 + 0.2).clamp(-1, 1)
    backbone = in_domain_backbone(InDomainEncoder(feature_dim=8, width=4, input_size=16))
    result = compute_fid_2p5d(real, gen, backbone, slices_per_volume=6, central_fraction=0.8)
    assert set(result.details["per_plane"]) == set(PLANES)
    assert result.value == pytest.approx(np.mean(list(result.details["per_plane"].values())))
    assert all(v > 0 for v in result.details["per_plane"].values())
    floored = fid_2p5d_with_floor(real, gen, backbone, slices_per_volume=6)
    assert floored.n_real == floored.n_generated == 4
    assert set(floored.details["per_plane"]) == set(PLANES) and floored.floor is not None

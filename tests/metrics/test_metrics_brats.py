"""BraTS inpainting metrics on constructed volumes with known answers.

The base case has exact normalisation bounds: 42 % of its voxels are background 0 and
47 % hold the head value TISSUE, so the 0.5 / 99.5 percentiles of t1n*(1-mask) are
exactly 0 and TISSUE, and a normalised voxel is simply value / TISSUE.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity
from torchmetrics.image import StructuralSimilarityIndexMeasure

from medgen.metrics.brats_inpainting import (
    BratsVariant,
    brats_inpainting_metrics,
    percentile_bounds,
    summarise_cases,
    to_scanner_range,
)

SHAPE = (24, 24, 24)
TISSUE = 200.0
MASK = (slice(8, 16),) * 3  # 8^3 = 512 voxels, 8 voxels from every border
SCORER, PACKAGE = BratsVariant.SYNAPSE_SCORER, BratsVariant.INPAINTING_PACKAGE


def make_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Head [2:22]^3 at TISSUE with a darker 'ventricle'; the mask holds values in [40, 140]."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(SHAPE)
    gt[2:22, 2:22, 2:22] = TISSUE
    gt[4:8, 4:20, 4:20] = 120.0
    mask = np.zeros(SHAPE, dtype=bool)
    mask[MASK] = True
    x = np.linspace(0.0, 1.0, 8)
    ramp = 40 + 60 * x[:, None, None] + 20 * x[None, :, None] * x[None, None, :]
    gt[MASK] = ramp + rng.uniform(0, 20, (8, 8, 8))
    return gt, mask


def noisy_prediction(gt: np.ndarray, mask: np.ndarray, seed: int = 1) -> np.ndarray:
    """A wrong-but-plausible infill: the ground truth rescaled, shifted and noised in the mask."""
    rng = np.random.default_rng(seed)
    pred = gt.copy()
    pred[mask] = 0.6 * gt[mask] + 40 + rng.normal(0, 30, int(mask.sum()))
    return pred


def infill(volume: np.ndarray, mask: np.ndarray, lo: float = 0.0, hi: float = TISSUE):
    """The scorer's normalised infill written out by hand: zero outside, clip, rescale."""
    return (np.clip(volume * mask, lo, hi) - lo) / (hi - lo)


def torchmetrics_default_range(p: np.ndarray, g: np.ndarray) -> float:
    return max(p.max() - p.min(), g.max() - g.min())


def skimage_map(p: np.ndarray, g: np.ndarray, data_range: float) -> np.ndarray:
    """Independent SSIM map (scipy Gaussian filter, mode 'reflect' = edge voxel repeated)."""
    return structural_similarity(
        p,
        g,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        full=True,
    )[1]


def mirror_padded_map(p: np.ndarray, g: np.ndarray, data_range: float) -> np.ndarray:
    """SSIM map with scipy's 'mirror' boundary, which is torch's 'reflect' (edge not repeated)."""

    def blur(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, sigma=1.5, mode="mirror", truncate=3.5)  # 11-voxel window

    mu_p, mu_g = blur(p), blur(g)
    var_p, var_g = blur(p * p) - mu_p**2, blur(g * g) - mu_g**2
    cov = blur(p * g) - mu_p * mu_g
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_p * mu_g + c1) * (2 * cov + c2)) / (
        (mu_p**2 + mu_g**2 + c1) * (var_p + var_g + c2)
    )


@pytest.fixture
def case() -> tuple[np.ndarray, np.ndarray]:
    return make_case()


def test_base_case_normalisation_bounds_are_exact(case):
    gt, mask = case
    assert percentile_bounds(gt * ~mask) == (0.0, TISSUE)


def test_to_scanner_range_maps_medgen_background_to_zero():
    x = np.array([-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(to_scanner_range(x), [0.0, 0.5, 1.0])
    scanner = to_scanner_range(torch.tensor([-1.0, 0.0, 1.0]))
    assert isinstance(scanner, torch.Tensor) and scanner.tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("variant", list(BratsVariant))
def test_identical_volumes_are_perfect(case, variant):
    gt, mask = case
    m = brats_inpainting_metrics(gt.copy(), gt, mask, variant=variant)
    assert m["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert m["mse"] == 0.0 and math.isinf(m["psnr"]) and m["psnr"] > 0
    assert m["n_mask_voxels"] == 512


@pytest.mark.parametrize("offset", [0.05, 0.1, 0.3])
def test_constant_offset_in_mask_gives_mse_offset_squared(case, offset):
    """gt + offset * TISSUE stays inside [0, TISSUE], so every normalised error is `offset`."""
    gt, mask = case
    pred = gt.copy()
    pred[mask] += offset * TISSUE
    m = brats_inpainting_metrics(pred, gt, mask)
    assert m["mse"] == pytest.approx(offset**2, rel=1e-12)
    assert m["psnr"] == pytest.approx(-10 * math.log10(offset**2), abs=1e-9)


def test_normalisation_excludes_the_masked_voxels(case):
    """Half the mask holds 5000 (1.85 % of the volume): included, it would set the 99.5th
    percentile. Excluded, hi = TISSUE: the 100-voxels err by 20 / 200 = 0.1 and the 5000-voxels
    clip to 1 in both images, so MSE = 0.5 * 0.1^2."""
    gt, mask = case
    gt[MASK] = 100.0
    gt[8:12, 8:16, 8:16] = 5000.0
    pred = gt.copy()
    pred[mask] += 20.0
    assert percentile_bounds(gt)[1] == 5000.0  # the trap: the mask's extremes, if included
    m = brats_inpainting_metrics(pred, gt, mask)
    assert m["mse"] == pytest.approx(0.5 * 0.1**2, rel=1e-12)


def test_voided_mask_is_used_for_normalisation_only(case):
    """A 'tumour' outside the score mask holds 5000 in 5 % of the volume. By default (the
    leaderboard) it stays in the reference (hi = 5000); voided, it is excluded (hi = 200).
    The scored voxels are the same either way."""
    gt, mask = case
    tumour = np.zeros(SHAPE, dtype=bool)
    tumour[16:22, 2:8, 2:22] = True
    gt[tumour] = 5000.0
    pred = gt.copy()
    pred[mask] += 20.0
    default = brats_inpainting_metrics(pred, gt, mask)
    voided = brats_inpainting_metrics(pred, gt, mask, voided_mask=mask | tumour)
    assert default["mse"] == pytest.approx((20 / 5000) ** 2, rel=1e-12)
    assert voided["mse"] == pytest.approx((20 / TISSUE) ** 2, rel=1e-12)
    assert default["n_mask_voxels"] == voided["n_mask_voxels"] == 512


def test_lower_bound_is_floored_at_zero_and_values_are_clipped(case):
    """Background -50: the raw 0.5th percentile is -50, floored to 0, so lo = 0 and hi = 200.
    gt = 100 -> 0.5; prediction -50 clips to 0 and 400 clips to 1: every error is 0.5.
    (Unfloored: errors 0.6 and 0.4, MSE 0.26; unclipped: 0.75 and 1.5.)"""
    gt, mask = case
    gt[gt == 0] = -50.0
    gt[MASK] = 100.0
    pred = gt.copy()
    pred[8:12, 8:16, 8:16] = -50.0
    pred[12:16, 8:16, 8:16] = 400.0
    assert np.percentile(gt * ~mask, 0.5) == -50.0
    assert percentile_bounds(gt * ~mask) == (0.0, TISSUE)
    assert brats_inpainting_metrics(pred, gt, mask)["mse"] == pytest.approx(0.25, rel=1e-12)


@pytest.mark.parametrize("variant", list(BratsVariant))
def test_errors_outside_the_mask_never_count(case, variant):
    """Windows of boundary mask voxels overlap the outside, but the scorer zeroes the prediction
    outside the mask before SSIM, so garbage there changes nothing: still a perfect score."""
    gt, mask = case
    pred = gt.copy()
    pred[~mask] = np.random.default_rng(3).uniform(0, 400, int((~mask).sum()))
    m = brats_inpainting_metrics(pred, gt, mask, variant=variant)
    assert m["ssim"] == pytest.approx(1.0, abs=1e-12) and m["mse"] == 0.0


def test_ssim_is_averaged_over_mask_voxels_not_the_volume(case):
    """Zero-padding the case by 10 voxels keeps lo, hi and the SSIM data range, so the masked
    mean cannot move, while the volume mean of the same map moves towards 1 (all-zero windows
    score 1)."""
    gt, mask = case
    pred = noisy_prediction(gt, mask)
    small = brats_inpainting_metrics(pred, gt, mask)
    big = brats_inpainting_metrics(np.pad(pred, 10), np.pad(gt, 10), np.pad(mask, 10))
    assert big["ssim"] == pytest.approx(small["ssim"], abs=1e-12)

    p, g = infill(pred, mask), infill(gt, mask)
    full_map = skimage_map(p, g, torchmetrics_default_range(p, g))
    big_map = skimage_map(np.pad(p, 10), np.pad(g, 10), torchmetrics_default_range(p, g))
    assert small["ssim"] == pytest.approx(full_map[mask].mean(), abs=1e-10)
    assert full_map.mean() - small["ssim"] > 0.1  # what a volume average would report
    assert big_map.mean() > full_map.mean() + 0.01


@pytest.mark.parametrize("data_range", [None, 1.0])
def test_default_ssim_matches_skimage_3d(case, data_range):
    """skimage pads with scipy 'reflect' (edge repeated), torch with 'reflect' (edge not
    repeated); here everything within 8 voxels of a border is 0 in both zeroed infills, so both
    paddings see zeros and the full maps agree everywhere."""
    gt, mask = case
    pred = noisy_prediction(gt, mask)
    p, g = infill(pred, mask), infill(gt, mask)
    expected_range = torchmetrics_default_range(p, g) if data_range is None else data_range
    assert expected_range < 1.0 or data_range == 1.0  # the default range is really data-driven
    expected = skimage_map(p, g, expected_range)[mask].mean()
    result = brats_inpainting_metrics(pred, gt, mask, ssim_data_range=data_range)
    assert result["ssim"] == pytest.approx(expected, abs=1e-10)
    assert result["ssim"] < 0.9


def test_matches_the_scorers_torchmetrics_call_on_the_whole_float32_volume(case):
    """The scorer's own procedure: torchmetrics' SSIM class with its defaults (data range from
    the data) on the whole [1, 1, X, Y, Z] float32 infills, full map averaged over the mask.
    We crop and run float64, so agreement is to float32 precision."""
    gt, mask = case
    pred = noisy_prediction(gt, mask)
    p, g = (torch.from_numpy(infill(v, mask)).float()[None, None] for v in (pred, gt))
    _, ssim_map = StructuralSimilarityIndexMeasure(return_full_image=True)(p, g)
    expected = float(ssim_map[0, 0][torch.from_numpy(mask)].mean())
    assert brats_inpainting_metrics(pred, gt, mask)["ssim"] == pytest.approx(expected, abs=1e-5)


def test_ssim_uses_reflection_padding_at_the_volume_border(case):
    """Mask on the volume face x = 0: the map matches the mirror-padded (torch 'reflect')
    reference on every mask voxel, and skimage's edge-repeating padding on the mask voxels
    whose windows stay inside the volume (x >= 5) but not at the face. Also checks that
    cropping to the mask's neighbourhood is exact."""
    gt, _ = case
    mask = np.zeros(SHAPE, dtype=bool)
    mask[0:9, 6:14, 6:14] = True
    gt[0:9, 6:14, 6:14] = gt[8:17, 8:16, 8:16] + 30.0
    pred = noisy_prediction(gt, mask, seed=4)
    p, g = infill(pred, mask), infill(gt, mask)
    data_range = torchmetrics_default_range(p, g)
    mirror = mirror_padded_map(p, g, data_range)
    result = brats_inpainting_metrics(pred, gt, mask)
    assert result["ssim"] == pytest.approx(mirror[mask].mean(), abs=1e-10)

    edge_repeat = skimage_map(p, g, data_range)
    interior = mask.copy()
    interior[:5] = False
    np.testing.assert_allclose(edge_repeat[interior], mirror[interior], atol=1e-10)
    assert np.abs(edge_repeat[mask] - mirror[mask]).max() > 1e-4


def test_package_variant_is_slice_wise_2d_and_differs_from_the_3d_scorer(case):
    gt, mask = case
    pred = noisy_prediction(gt, mask)
    p, g = infill(pred, mask), infill(gt, mask)
    data_range = torchmetrics_default_range(p, g)
    slice_maps = np.stack([skimage_map(p[x], g[x], data_range) for x in range(SHAPE[0])])
    package = brats_inpainting_metrics(pred, gt, mask, variant=PACKAGE)
    scorer = brats_inpainting_metrics(pred, gt, mask, variant=SCORER)
    assert package["ssim"] == pytest.approx(slice_maps[mask].mean(), abs=1e-10)
    assert scorer["ssim"] == pytest.approx(skimage_map(p, g, data_range)[mask].mean(), abs=1e-10)
    assert abs(package["ssim"] - scorer["ssim"]) > 0.02
    assert package["mse"] == scorer["mse"]


def test_package_variant_extra_keys(case):
    gt, mask = case
    pred = gt.copy()
    pred[mask] += 0.1 * TISSUE
    m = brats_inpainting_metrics(pred, gt, mask, variant="inpainting_package")
    p, g = infill(pred, mask)[mask], infill(gt, mask)[mask]
    assert set(m) == {
        "ssim",
        "psnr",
        "psnr_eps",
        "psnr_01",
        "psnr_01_eps",
        "mse",
        "rmse",
        "mae",
        "msle",
        "n_mask_voxels",
    }
    assert m["rmse"] == pytest.approx(0.1, rel=1e-12) and m["mae"] == pytest.approx(0.1)
    assert m["msle"] == pytest.approx(np.mean((np.log1p(p) - np.log1p(g)) ** 2), rel=1e-12)
    assert m["psnr_01"] == pytest.approx(20.0, abs=1e-9)
    assert m["psnr"] == pytest.approx(10 * math.log10(g.max() ** 2 / 0.01), abs=1e-9)
    eps = sys.float_info.epsilon
    assert m["psnr_eps"] == pytest.approx(10 * math.log10(g.max() ** 2 / (0.01 + eps)), abs=1e-9)
    assert m["psnr_01_eps"] == pytest.approx(10 * math.log10(1 / (0.01 + eps)), abs=1e-9)
    perfect = brats_inpainting_metrics(gt, gt, mask, variant=PACKAGE)
    assert perfect["psnr_01_eps"] == pytest.approx(10 * math.log10(1 / eps))


@pytest.mark.parametrize("variant", list(BratsVariant))
def test_metrics_are_invariant_to_a_positive_intensity_scale(case, variant):
    gt, mask = case
    pred = noisy_prediction(gt, mask)
    base = brats_inpainting_metrics(pred, gt, mask, variant=variant)
    scaled = brats_inpainting_metrics(pred * 300, gt * 300, mask, variant=variant)
    for key in ("mse", "psnr", "ssim"):
        assert scaled[key] == pytest.approx(base[key], rel=1e-9)


def test_accepts_numpy_or_torch_with_leading_singleton_dims(case):
    gt, mask = case
    pred = noisy_prediction(gt, mask)
    base = brats_inpainting_metrics(pred, gt, mask)
    other = brats_inpainting_metrics(
        torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None], mask.astype(np.uint8)
    )
    assert other == base


def test_summary_matches_numpy_and_the_scorers_pandas_describe():
    rng = np.random.default_rng(5)
    rows = [
        {"ssim": s, "psnr": p, "mse": e}
        for s, p, e in zip(
            rng.uniform(0.5, 1, 7), rng.uniform(15, 30, 7), rng.uniform(0, 0.05, 7), strict=True
        )
    ]
    summary = summarise_cases(rows)
    described = pd.DataFrame(rows).describe()
    for key in ("ssim", "psnr", "mse"):
        v = np.array([row[key] for row in rows])
        s = summary[key]
        assert s["n"] == 7
        assert s["mean"] == pytest.approx(np.mean(v), rel=1e-12)
        assert s["sd"] == pytest.approx(np.std(v, ddof=1), rel=1e-12)
        assert s["median"] == pytest.approx(np.median(v), rel=1e-12)
        assert s["q1"] == pytest.approx(np.percentile(v, 25), rel=1e-12)
        assert s["q3"] == pytest.approx(np.percentile(v, 75), rel=1e-12)
        for ours, theirs in (("mean", "mean"), ("sd", "std"), ("q1", "25%"), ("q3", "75%")):
            assert s[ours] == pytest.approx(described.loc[theirs, key], rel=1e-12)


def test_summary_propagates_an_infinite_psnr_like_the_scorers_pandas_describe():
    """A perfect case has PSNR +inf: mean +inf, SD NaN and linear quantiles next to it NaN,
    exactly as pandas describe() in the scorer (which then drops NaN keys from results.json)."""
    values = [20.0, math.inf, 30.0, 25.0, 22.0]
    s = summarise_cases([{"psnr": v} for v in values], keys=("psnr",))["psnr"]
    with np.errstate(invalid="ignore"):
        described = pd.Series(values).describe()
    assert s["mean"] == math.inf and math.isnan(s["sd"]) and s["n"] == 5
    for ours, theirs in (("q1", "25%"), ("median", "50%"), ("q3", "75%")):
        np.testing.assert_equal(s[ours], described[theirs])
    assert math.isnan(summarise_cases([{"mse": 0.1}], keys=("mse",))["mse"]["sd"])  # ddof=1


def test_summary_errors():
    with pytest.raises(ValueError, match="no cases"):
        summarise_cases([])
    with pytest.raises(ValueError, match="'psnr' is missing from case"):
        summarise_cases([{"ssim": 1.0, "psnr": 1.0, "mse": 0.0}, {"ssim": 1.0, "mse": 0.0}])
    with pytest.raises(ValueError, match="NaN"):
        summarise_cases([{"ssim": math.nan, "psnr": 1.0, "mse": 0.0}])


def test_input_errors(case):
    gt, mask = case
    with pytest.raises(ValueError, match="shapes differ"):
        brats_inpainting_metrics(gt[:-1], gt, mask)
    with pytest.raises(ValueError, match="shapes differ"):
        brats_inpainting_metrics(gt, gt, mask, voided_mask=mask[:, :-1])
    with pytest.raises(ValueError, match="mask must be binary"):
        brats_inpainting_metrics(gt, gt, mask * 0.5)
    with pytest.raises(ValueError, match="voided_mask must be binary"):
        brats_inpainting_metrics(gt, gt, mask, voided_mask=mask * 2)
    with pytest.raises(ValueError, match="mask is empty"):
        brats_inpainting_metrics(gt, gt, np.zeros_like(mask))
    with pytest.raises(ValueError, match="normalisation range is empty"):
        brats_inpainting_metrics(gt, np.zeros(SHAPE), mask)
    with pytest.raises(ValueError, match="must contain every voxel"):
        brats_inpainting_metrics(gt, gt, mask, voided_mask=np.zeros_like(mask))
    with pytest.raises(ValueError, match="3D volume"):
        brats_inpainting_metrics(gt[0], gt[0], mask[0])
    with pytest.raises(ValueError, match="NaN or Inf"):
        brats_inpainting_metrics(np.full(SHAPE, np.nan), gt, mask)
    with pytest.raises(ValueError, match="unknown variant 'slicewise'"):
        brats_inpainting_metrics(gt, gt, mask, variant="slicewise")
    empty_infill = gt.copy()
    empty_infill[mask] = 0.0
    with pytest.raises(ValueError, match="SSIM data range is zero"):
        brats_inpainting_metrics(empty_infill, empty_infill, mask)

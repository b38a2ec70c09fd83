"""The 3D class-conditional lesion effect: constructed volumes with and without enhancing
lesions, an independent AUROC (sklearn), and the check's verdicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medgen.metrics import demo_checks as dc
from medgen.metrics import demo_distances as dd
from medgen.metrics import lesion_effect as le

MODALITIES = ["t1_pre", "t1_gd"]
PARAMS = dc.LesionEffectParams(post="t1_gd", pre="t1_pre", quantile=0.99)


def volumes(labels: list[int], seed: int, lesion_side: int = 4, size: int = 16) -> torch.Tensor:
    """Cubes of brain (t1_gd ≈ t1_pre plus noise, bright scalp in both) in a -1 background;
    a label-1 volume gets a ``lesion_side``³ block that enhances (t1_gd + 0.8)."""
    rng = np.random.default_rng(seed)
    out = np.full((len(labels), 2, size, size, size), -1.0, dtype=np.float32)
    for i, label in enumerate(labels):
        pre = rng.uniform(0.0, 0.4, (size - 4,) * 3).astype(np.float32)
        gd = pre + rng.normal(0.0, 0.02, pre.shape).astype(np.float32)
        pre[0], gd[0] = 1.0, 1.0  # scalp: bright in both, so it cancels on the subtraction map
        if label:
            corner = rng.integers(2, size - 4 - lesion_side - 1, size=3)
            block = tuple(slice(c, c + lesion_side) for c in corner)
            gd[block] += 0.8
        out[i, 0, 2:-2, 2:-2, 2:-2] = pre
        out[i, 1, 2:-2, 2:-2, 2:-2] = np.clip(gd, -1, 1)
    return torch.from_numpy(out)


def _check(generated, generated_labels, real, real_labels, min_ratio=0.5):
    return le.lesion_effect_check(
        generated,
        torch.tensor(generated_labels),
        real,
        torch.tensor(real_labels),
        MODALITIES,
        PARAMS,
        brain_threshold=-0.8,
        min_ratio=min_ratio,
    )


def _check_with_ceiling(real, real_labels, reconstructed):
    return le.lesion_effect_check(
        real,
        torch.tensor(real_labels),
        real,
        torch.tensor(real_labels),
        MODALITIES,
        PARAMS,
        brain_threshold=-0.8,
        min_ratio=0.5,
        reconstructed=reconstructed,
    )


def test_enhancing_fraction_counts_the_constructed_lesion_and_ignores_the_bright_scalp():
    absent = volumes([0, 0, 0], seed=0)
    threshold = le.enhancement_threshold(absent, 1, 0, brain_threshold=-0.8, quantile=0.99)
    # healthy enhancement is noise of sd 0.02: its 0.99 quantile is about 2.3 sd
    assert 0.02 < threshold < 0.08
    present = volumes([1], seed=1)
    fraction = le.enhancing_fractions(present, 1, 0, threshold, brain_threshold=-0.8)[0]
    lesion_share = 4**3 / 12**3
    # the whole block enhances, plus about 1 % of healthy voxels above the threshold
    assert lesion_share <= fraction <= lesion_share + 0.02
    # raw intensities would count the scalp (a twelfth of the brain) in every volume
    assert le.enhancing_fractions(absent, 1, 0, threshold, brain_threshold=-0.8).max() < 0.03


def test_class_effect_auroc_equals_sklearn_with_ties():
    fractions = np.array([0.1, 0.3, 0.3, 0.2, 0.3, 0.05])
    labels = np.array([1, 1, 0, 0, 1, 0])
    effect = le.class_effect(fractions, labels)
    assert effect["auroc"] == pytest.approx(roc_auc_score(labels, fractions), abs=1e-4)
    assert effect["effect"] == pytest.approx(
        fractions[labels == 1].mean() - fractions[labels == 0].mean(), abs=1e-5
    )
    assert "reason" in le.class_effect(fractions, np.ones(6, dtype=int))


def test_check_passes_when_the_generator_follows_its_label_and_fails_when_it_ignores_it():
    real_labels = [1, 1, 1, 0, 0, 0]
    real = volumes(real_labels, seed=2)
    follows = _check(volumes([1, 1, 0, 0], seed=3), [1, 1, 0, 0], real, real_labels)
    assert follows["status"] == dc.PASSED
    assert follows["generated"]["auroc"] == 1.0 and follows["real"]["auroc"] == 1.0
    assert follows["ratio"] == pytest.approx(1.0, abs=0.3)
    # an autoencoder that loses the enhancement (post-contrast = pre-contrast): no ceiling
    washed = real.clone()
    washed[:, 1] = washed[:, 0]
    lost = _check_with_ceiling(real, real_labels, washed)["autoencoder_reconstructions"]
    assert lost["effect"] == 0.0 and lost["auroc"] == 0.5
    assert (
        _check_with_ceiling(real, real_labels, real)["autoencoder_reconstructions"]
        == (follows["real"])
    )
    # lesions in every volume whatever the label: no class effect
    ignores = _check(volumes([1, 1, 1, 1], seed=4), [1, 1, 0, 0], real, real_labels)
    assert ignores["status"] == dc.FAILED and abs(ignores["ratio"]) < 0.3
    # the effect inverted (lesions under label 0) fails too
    inverted = _check(volumes([0, 0, 1, 1], seed=5), [1, 1, 0, 0], real, real_labels)
    assert inverted["status"] == dc.FAILED and inverted["ratio"] < 0


def test_check_refuses_missing_modalities_and_reports_a_cohort_without_one_class():
    real = volumes([1, 1], seed=6)
    report = _check(real, [1, 0], real, [1, 1])
    assert report["status"] == dc.FAILED and "both classes" in report["reason"]
    with pytest.raises(ValueError, match="t1_gd"):
        le.lesion_effect_check(
            real,
            torch.tensor([1, 0]),
            real,
            torch.tensor([1, 0]),
            ["t1_pre", "flair"],
            PARAMS,
            brain_threshold=-0.8,
            min_ratio=0.5,
        )


def test_volume_checks_include_the_lesion_effect_only_when_configured_and_labelled():
    from tests.metrics.test_demo_checks import PARAMS as CHECKS

    labels = [1, 1, 0, 0, 1, 0, 1, 0]
    train, reference = volumes(labels, seed=7), volumes([1, 0, 1, 0], seed=8)
    generated = volumes([1, 1, 0, 0], seed=9)
    configured = dc.DemoCheckParams.from_params(
        {**CHECKS, "lesion_effect": {"post": "t1_gd", "pre": "t1_pre", "quantile": 0.99}}, "x"
    )
    classes = (torch.tensor([1, 1, 0, 0]), torch.tensor(labels))
    report = dd.volume_checks(
        generated, train, reference, configured, classes=classes, modalities=MODALITIES
    )
    assert report["checks"]["lesion_effect"]["status"] == dc.PASSED
    unlabelled = dd.volume_checks(generated, train, reference, configured)
    assert "lesion_effect" not in unlabelled["checks"]
    plain = dc.DemoCheckParams.from_params(CHECKS, "x")
    assert plain.lesion_effect is None
    with pytest.raises(ValueError, match="quantil"):
        dc.DemoCheckParams.from_params({**CHECKS, "lesion_effect": {"post": "a", "pre": "b"}}, "x")

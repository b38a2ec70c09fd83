"""metrics.json content: schema, floors, named backbones, missing weights, absent sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from evaluation_helpers import TINY_SCORING, generated_bundle, partitions, real_slices, scoring

from medgen.datasets import TensorBundle
from medgen.evaluation import GeneratedSource, evaluate_sources, kind_of, numbers_are_finite
from medgen.evaluation.records import RECORD_KEYS
from medgen.metrics import MissingWeightsError


def _source(metrics, name):
    return next(s for s in metrics["sources"] if s["source"] == name)


def _record(entry, metric, backbone_prefix=""):
    return next(
        r
        for r in entry["metrics"]
        if r["metric"] == metric and r["backbone"].startswith(backbone_prefix)
    )


def test_metrics_json_schema_is_strict_json(metrics):
    json.dumps(metrics, allow_nan=False)
    assert numbers_are_finite(metrics)
    assert {
        "schema_version",
        "reference",
        "backbones",
        "feature_network",
        "lpips",
        "sources",
    } <= set(metrics)
    for entry in metrics["sources"]:
        assert {"source", "status"} <= set(entry)
        for record in entry.get("metrics", []):
            assert tuple(record) == RECORD_KEYS
            assert record["status"] in {"ok", "missing_weights", "skipped", "failed"}
            if record["status"] == "ok":
                assert isinstance(record["value"], float) and isinstance(record["floor"], float)
                assert record["n_real"] > 0 and record["n_generated"] > 0


def test_image_source_has_fid_with_floor_diversity_and_fidelity(metrics):
    entry = _source(metrics, "latent_diffusion/ddpm_bravo")
    assert entry["status"] == "evaluated" and entry["kind"] == "image_2d"
    assert entry["failures"] == [] and metrics["status"] == "ok" and metrics["failures"] == []
    fid = _record(entry, "fid", "in_domain")
    # named by the training that made it: 12 slices x 4 modalities, ceil(48 / 16) steps
    assert fid["backbone"] == (
        "in_domain (trained on slices_2d_train (the real training split), 48 images, 3 steps)"
    )
    # floor: two patient-disjoint halves of the 16 test slices (patients of 6, 6 and 4
    # slices: 10 vs 6); value and floor at the smaller half's count
    assert fid["n_real"] == fid["n_generated"] == 6
    assert "protocol" in fid["details"]
    assert fid["details"]["real_split"] == {
        "by": "group (patient-disjoint halves)",
        "groups_total": 3,
        "groups_a": 2,
        "groups_b": 1,
        "min_groups_per_half": 1,
    }
    # 6 samples of 8 in-domain features: the sample covariance would be singular
    assert fid["details"]["covariance"] == "ledoit_wolf shrinkage (n=6 <= d=8: sample singular)"
    assert fid["details"]["feature_dim"] == 8
    lpips = _record(entry, "lpips_diversity")
    assert "random-init" in lpips["backbone"]
    ms_ssim = _record(entry, "ms_ssim_diversity")
    assert ms_ssim["details"]["kernel_size"] >= 3 and ms_ssim["details"]["scales"] >= 2
    dice = _record(entry, "conditioning_dice")
    assert dice["status"] == "ok" and 0.0 <= dice["value"] <= 1.0
    assert 0.0 <= dice["details"]["chance_dice"] <= 1.0  # Dice against other patients' masks
    segmenter = dice["details"]["segmenter"]
    # a seeded 12 of the 24 training slices; every other one holds a lesion
    chosen = np.random.default_rng(0).choice(24, size=12, replace=False)
    assert segmenter["train_slices"] == 12
    assert segmenter["train_lesion_slices"] == int((chosen % 2 == 0).sum())
    assert segmenter["epochs"] == 1 and segmenter["loss"].startswith("DiceCE")


def test_missing_pretrained_weights_are_reported_with_the_file_to_place(metrics):
    assert metrics["backbones"]["inception_v3"]["status"] == "missing_weights"
    record = _record(_source(metrics, "latent_diffusion/ddpm_bravo"), "fid", "inception_v3")
    assert record["status"] == "missing_weights" and record["value"] is None
    assert "inception-2015-12-05.pt" in record["details"]["message"]


def test_fail_policy_stops_on_missing_weights(real, feature_network, samples):
    params = scoring(fid={"backbones": ["inception_v3"], "on_missing_weights": "fail"})
    with pytest.raises(MissingWeightsError, match="inception-2015-12-05.pt"):
        evaluate_sources(samples, real["test"], real["train"], feature_network, params, seed=0)


def test_mask_source_is_scored_against_real_masks(metrics):
    entry = _source(metrics, "latent_diffusion/ddpm_seg")
    assert entry["kind"] == "mask_2d"
    names = {r["metric"] for r in entry["metrics"]}
    assert {
        "fid",
        "ms_ssim_diversity",
        "lesion_present_fraction",
        "mean_lesion_area_fraction",
    } <= names
    assert _record(entry, "lesion_present_fraction")["floor"] == pytest.approx(0.5)


def test_expected_source_without_samples_is_not_present(metrics):
    absent = _source(metrics, "inpainting")
    assert absent["status"] == "not present" and "inpainting" in absent["note"]


def test_nothing_generated_yet_still_gives_a_report(real, feature_network):
    out = evaluate_sources(None, real["test"], real["train"], feature_network, TINY_SCORING, seed=0)
    assert [s["status"] for s in out["sources"]] == ["not present", "not present"]


def test_source_kinds_registry():
    assert kind_of(GeneratedSource.from_bundle("a/b", generated_bundle("seg"))).name == "mask_2d"
    assert kind_of(GeneratedSource.from_bundle("a/b", generated_bundle("bravo"))).name == "image_2d"
    volume = TensorBundle({"images": generated_bundle()["images"][:, :, None]}, {})
    assert kind_of(GeneratedSource.from_bundle("a/v", volume)) is None


def test_source_without_evaluator_is_listed(real, feature_network):
    volume = TensorBundle({"images": generated_bundle()["images"][:, :, None]}, {"mode": "bravo"})
    params = scoring(fid={"backbones": ["in_domain"]})
    out = evaluate_sources(
        partitions(vol=volume), real["test"], real["train"], feature_network, params, seed=0
    )
    assert _source(out, "latent_diffusion/vol")["status"] == "no evaluator"


def test_reference_can_be_restricted_to_lesion_slices(real):
    from medgen.evaluation import select_reference

    chosen = select_reference(real["test"], "with_lesions")
    assert len(chosen) == 8 and bool((chosen["seg"].flatten(1) > 0).any(dim=1).all())
    assert select_reference(real["test"], "all") is real["test"]
    with pytest.raises(ValueError, match="reference_slices"):
        select_reference(real["test"], "some")


def test_floors_split_by_slice_when_the_reference_has_no_patients(real, feature_network, samples):
    tensors = {k: v for k, v in real["test"].tensors.items() if k != "subject_index"}
    reference = TensorBundle(tensors, real["test"].metadata)
    params = scoring(fid={"backbones": ["in_domain"]}, fidelity={"enabled": False})
    out = evaluate_sources(samples, reference, real["train"], feature_network, params, seed=0)
    fid = _record(_source(out, "latent_diffusion/ddpm_bravo"), "fid")
    assert fid["details"]["real_split"]["by"].startswith("sample") and fid["n_real"] == 8


def test_misspelt_fidelity_setting_is_refused(real, feature_network, samples):
    params = scoring(fidelity={"epoch": 3})
    with pytest.raises(
        ValueError, match="scoring.fidelity.*'epoch' \\(did you mean 'epochs'\\?\\)"
    ):
        evaluate_sources(samples, real["test"], real["train"], feature_network, params, seed=0)


def _nan_bundle(mode: str):
    bundle = generated_bundle(mode)
    images = bundle["images"].clone()
    images[::2] = float("nan")  # a diverged generator: every other sample is NaN
    masks = bundle["masks"].float()
    masks[1, 0, :2, :2] = float("inf")
    return TensorBundle({"images": images, "masks": masks}, bundle.metadata)


def test_nan_samples_fail_every_metric_and_their_source(real, feature_network):
    samples = partitions(ddpm_bravo=_nan_bundle("bravo"), ddpm_seg=_nan_bundle("seg"))
    out = evaluate_sources(samples, real["test"], real["train"], feature_network, TINY_SCORING, 0)
    assert out["status"] == "failed"
    for name in ("latent_diffusion/ddpm_bravo", "latent_diffusion/ddpm_seg"):
        entry = _source(out, name)
        assert entry["status"] == "failed"
        statuses = {
            r["metric"]: r["status"] for r in entry["metrics"] if r["backbone"] != "inception_v3"
        }
        assert set(statuses.values()) == {"failed"}, statuses
        assert len(entry["failures"]) == len(statuses)
        assert all(f"{name}: " in line for line in out["failures"] if line.startswith(name))
    seg = _source(out, "latent_diffusion/ddpm_seg")
    # the NaN masks do not read as "no lesion" (nan > 0 is False): the statistic fails
    present = _record(seg, "lesion_present_fraction")
    assert present["value"] is None
    assert (
        "NonFiniteInputError: generated masks hold 6144 NaN and 0 Inf values (6 of 12"
        in (present["details"]["message"])
    )
    dice = _record(_source(out, "latent_diffusion/ddpm_bravo"), "conditioning_dice")
    assert dice["status"] == "failed" and "generated images hold" in dice["details"]["message"]


def test_an_unexpected_error_is_a_failure_not_a_skip(real, feature_network, samples, monkeypatch):
    from medgen.evaluation import evaluators

    def broken(*args, **kwargs):
        raise ValueError("covariance exploded")

    monkeypatch.setattr(evaluators, "fid_with_floor", broken)
    params = scoring(fid={"backbones": ["in_domain"]}, fidelity={"enabled": False})
    out = evaluate_sources(samples, real["test"], real["train"], feature_network, params, seed=0)
    fid = _record(_source(out, "latent_diffusion/ddpm_bravo"), "fid")
    assert fid["status"] == "failed" and fid["value"] is None
    assert fid["details"]["message"] == "ValueError: covariance exploded"
    assert _source(out, "latent_diffusion/ddpm_bravo")["status"] == "failed"
    assert out["failures"][0].startswith("latent_diffusion/ddpm_bravo: fid (in_domain")


def test_a_failing_evaluator_fails_its_source_only(real, feature_network):
    wrong = generated_bundle("bravo")
    wrong.metadata["target_names"] = ["t2"]  # not a modality of the real slices
    samples = partitions(ddpm_t2=wrong, ddpm_seg=generated_bundle("seg"))
    params = scoring(fid={"backbones": ["in_domain"]})
    out = evaluate_sources(samples, real["test"], real["train"], feature_network, params, seed=0)
    entry = _source(out, "latent_diffusion/ddpm_t2")
    assert entry["status"] == "failed" and entry["metrics"] == []
    assert "image_2d evaluator: ValueError: generated channels ['t2']" in entry["failures"][0]
    assert _source(out, "latent_diffusion/ddpm_seg")["status"] == "evaluated"


def test_undefined_metrics_are_skipped_with_the_reason(real, feature_network):
    one = generated_bundle("bravo", n=1)
    params = scoring(fid={"backbones": ["in_domain"]})
    out = evaluate_sources(
        partitions(ddpm_bravo=one), real["test"], real["train"], feature_network, params, seed=0
    )
    entry = _source(out, "latent_diffusion/ddpm_bravo")
    assert entry["status"] == "evaluated"
    messages = {r["metric"]: (r["status"], r["details"].get("message")) for r in entry["metrics"]}
    assert messages["fid"] == ("skipped", "Fréchet distance needs at least 2 samples per set")
    assert messages["lpips_diversity"] == ("skipped", "diversity needs at least 2 images, got 1")
    # every other slice holds a lesion; sample 0 does: the Dice is defined
    assert messages["conditioning_dice"][0] == "ok"


def test_lpips_on_images_its_trunk_cannot_take_is_skipped(real, feature_network):
    small = generated_bundle("bravo", size=16)
    params = scoring(fid={"backbones": ["in_domain"]}, fidelity={"enabled": False})
    out = evaluate_sources(
        partitions(ddpm_bravo=small), real["test"], real["train"], feature_network, params, 0
    )
    lpips = _record(_source(out, "latent_diffusion/ddpm_bravo"), "lpips_diversity")
    assert (
        lpips["status"] == "skipped" and "cannot take 16x16 images" in lpips["details"]["message"]
    )


def test_a_floor_needs_enough_patients_per_half(real, feature_network, samples):
    params = scoring(
        floors={"min_patients_per_half": 2},
        fid={"backbones": ["in_domain"]},
        fidelity={"enabled": False},
    )
    out = evaluate_sources(samples, real["test"], real["train"], feature_network, params, seed=0)
    fid = _record(_source(out, "latent_diffusion/ddpm_bravo"), "fid")
    assert fid["status"] == "ok" and fid["floor"] is None and isinstance(fid["value"], float)
    assert fid["details"]["no_floor"] == (
        "the real reference holds 3 patients: its patient-disjoint halves have 2 and 1, "
        "fewer than the 2 per half a floor needs"
    )
    # the value against all 16 real slices, at the 12 generated
    assert fid["n_generated"] == fid["n_real"] == 12
    assert out["reference"]["n_patients"] == 3 and out["reference"]["min_patients_per_half"] == 2


def test_the_reference_joins_held_out_splits_with_distinct_patients():
    from medgen.evaluation import held_out_reference

    val, test = real_slices(12, seed=1), real_slices(16, seed=5)
    val.metadata["subjects"] = ["V0", "V1"]
    test.metadata["subjects"] = ["T0", "T1", "T2"]
    joined = held_out_reference({"test": test, "val": val}, ["val", "test"])
    assert len(joined) == 28 and torch.equal(joined["images"][12:], test["images"])
    assert joined["subject_index"].tolist() == [0] * 6 + [1] * 6 + [2] * 6 + [3] * 6 + [4] * 4
    assert joined.metadata["subjects"] == ["V0", "V1", "T0", "T1", "T2"]
    assert joined.metadata["split"] == "val+test"
    assert joined.metadata["slices_per_split"] == {"val": 12, "test": 16}
    assert held_out_reference(test, ["val", "test"]) is test
    with pytest.raises(KeyError, match="reference splits \\['val'\\] not given"):
        held_out_reference({"test": test}, ["val", "test"])


def test_bad_reference_and_covariance_settings_are_refused(real, feature_network, samples):
    for params, message in (
        (scoring(reference_splits=["train"]), "reference_splits must be"),
        (scoring(fid={"covariance": "oas"}), "fid.covariance must be one of"),
        (scoring(floors={"min_patients_per_half": 0}), "min_patients_per_half must be >= 1"),
    ):
        with pytest.raises(ValueError, match=message):
            evaluate_sources(samples, real["test"], real["train"], feature_network, params, 0)

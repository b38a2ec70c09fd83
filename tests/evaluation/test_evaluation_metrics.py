"""metrics.json content: schema, floors, named backbones, missing weights, absent sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
from evaluation_helpers import TINY_SCORING, generated_bundle, partitions, scoring

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
            assert record["status"] in {"ok", "missing_weights", "skipped"}
            if record["status"] == "ok":
                assert isinstance(record["value"], float) and isinstance(record["floor"], float)
                assert record["n_real"] > 0 and record["n_generated"] > 0


def test_image_source_has_fid_with_floor_diversity_and_fidelity(metrics):
    entry = _source(metrics, "latent_diffusion/ddpm_bravo")
    assert entry["status"] == "evaluated" and entry["kind"] == "image_2d"
    fid = _record(entry, "fid", "in_domain")
    assert "trained on the real training split" in fid["backbone"]
    # floor: two patient-disjoint halves of the 16 test slices (patients of 6, 6 and 4
    # slices: 10 vs 6); value and floor at the smaller half's count
    assert fid["n_real"] == fid["n_generated"] == 6
    assert "protocol" in fid["details"]
    assert fid["details"]["real_split"] == {
        "by": "group (patient-disjoint halves)",
        "groups_a": 2,
        "groups_b": 1,
    }
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

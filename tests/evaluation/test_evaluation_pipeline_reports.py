"""Sources their own pipeline scores (3D volumes, inpainting, text2image) in metrics.json and
on the report's first screen."""

from __future__ import annotations

import copy
import io
import re

import torch
from evaluation_helpers import TINY_SCORING, generated_bundle, partitions, real_slices

from medgen.datasets import TensorBundle
from medgen.evaluation import build_report, collect_sources, evaluate_sources
from medgen.evaluation.pipeline_reports import pipeline_report_entry
from medgen.evaluation.report import headline_record, summary_table

VOLUMES = {
    "generation": {"n_volumes": 4},
    "demo_checks": {
        "status": "failed",
        "checks": {
            "frechet_2p5d": {
                "status": "passed",
                "criterion": "Fréchet distance <= 0.8 x the best trivial baseline's",
                "generated": 3.5,
                "baselines": {"gaussian_noise": 40.0, "mean_plus_noise": 12.0},
                "real_floor": 1.25,
                "n_generated": 4,
                "n_reference": 6,
                "backbone": "in_domain (trained for the demo checks)",
            },
            "brain_shape": {"status": "passed", "min_generated_dice": 0.91, "real_dice_mean": 0.95},
            "diversity": {"status": "failed", "ratio": 0.31, "n_generated": 4},
        },
    },
}
INPAINTING = {
    "scorer": "leaderboard",
    "n_cases": 6,
    "n_patients": 3,
    "headline": {"best_baseline_by_ssim": "mean_fill"},
    "table": {
        "diffusion": {"ssim": {"mean": 0.61}, "psnr": {"mean": 18.0}, "mse": {"mean": 0.02}},
        "mean_fill": {"ssim": {"mean": 0.55}, "psnr": {"mean": 16.0}, "mse": {"mean": 0.03}},
    },
}
SWAP = {"n_negative": 20, "auroc": 0.7, "balanced_auroc": 0.6, "chance_sd": 0.05}
STAGE = {
    "n_images": 8,
    "proxy": {"reward": 0.4, "selector": 0.5, "policy": 0.3},
    "oracle": {"quality": 0.45, "attribute_agreement": 0.6},
    "frechet_to_real_heldout": {"value": 2.0, "n_a": 8, "n_b": 8, "d": 4},
}
TEXT2IMAGE = {
    "prompt_agreement": {"attributes": {"modality": {"generated": {"agreement": 0.8}}}},
    "prompt_agreement_mean": 0.8,
    "rlhf": {
        "selector_auroc": {
            "vs_ratings": 0.9,
            "vs_oracle": 0.88,
            "shuffled_control_vs_ratings": 0.5,
        },
        "alignment_auroc": {"modality_swap": SWAP, "shuffled": {"auroc": 0.9, "n_negative": 20}},
        "proxy_vs_oracle_gaps": {"reinforced": {"quality_gap": 0.12}},
    },
    "stages": {
        "stages": {
            "start": STAGE,
            "reinforced": {
                **STAGE,
                "frechet_to_real_heldout": {"status": "failed", "reason": "n=3 <= d=8"},
            },
        },
        "real_heldout_reference": {
            "oracle_quality": 0.9,
            "frechet_real_train_vs_heldout": {"value": 0.5},
        },
    },
    "best_of_n": {"acceptance_rate": 0.25},
}


def _by_metric(entry):
    return {r["metric"]: r for r in entry["metrics"]}


def test_volume_records_keep_the_floor_baselines_and_check_status():
    entry = pipeline_report_entry("latent_diffusion_3d", VOLUMES, {"source": "latent_diffusion_3d"})
    records = _by_metric(entry)
    fd = records["frechet_2p5d"]
    assert (fd["status"], fd["value"], fd["floor"]) == ("ok", 3.5, 1.25)
    assert fd["details"]["baselines"]["mean_plus_noise"] == 12.0 and fd["n_real"] == 6
    assert records["brain_shape_dice_min"]["value"] == 0.91
    assert records["diversity_ratio"]["details"]["check"] == "failed"
    from medgen.evaluation.report import record_row

    assert record_row(records["diversity_ratio"])[-1] == "ok; demo check failed"
    assert record_row(records["frechet_2p5d"])[-1] == "ok; demo check passed"
    # a demo check that fails is a result, not a failed evaluation
    assert (
        entry["status"] == "evaluated" and entry["read_from"] == "latent_diffusion.volumes.summary"
    )
    assert "lesion_class_effect" not in records  # not configured in this summary


def test_volume_records_give_the_lesion_effect_beside_the_real_one():
    summary = copy.deepcopy(VOLUMES)
    summary["demo_checks"]["checks"]["lesion_effect"] = {
        "status": "failed",
        "criterion": "class effect generated / real >= 0.5",
        "ratio": 0.1,
        "generated": {"n_present": 2, "n_absent": 2, "effect": 0.002, "auroc": 0.5},
        "real": {"n_present": 13, "n_absent": 3, "effect": 0.02, "auroc": 0.69},
    }
    effect = _by_metric(pipeline_report_entry("latent_diffusion_3d", summary, {}))[
        "lesion_class_effect"
    ]
    assert (effect["value"], effect["floor"], effect["n_real"]) == (0.002, 0.02, 16)
    assert effect["details"]["ratio"] == 0.1 and effect["details"]["check"] == "failed"
    assert effect["details"]["real_auroc"] == 0.69
    # a generated set with one class only has no effect: the record fails with the reason
    summary["demo_checks"]["checks"]["lesion_effect"]["generated"] = {
        "n_present": 4,
        "n_absent": 0,
        "reason": "both classes are needed for a class effect",
    }
    missing = _by_metric(pipeline_report_entry("latent_diffusion_3d", summary, {}))[
        "lesion_class_effect"
    ]
    assert missing["status"] == "failed"
    assert "both classes" in missing["details"]["message"]


def test_inpainting_records_give_the_learned_method_with_every_other_in_details():
    records = _by_metric(pipeline_report_entry("inpainting", INPAINTING, {"source": "inpainting"}))
    ssim = records["masked_ssim"]
    assert ssim["value"] == 0.61 and ssim["details"]["methods"]["mean_fill"] == 0.55
    assert records["masked_mse"]["details"]["higher_is_better"] is False
    assert ssim["n_generated"] == 6 and ssim["details"]["n_patients"] == 3
    assert ssim["details"]["baseline"] == {"name": "mean_fill", "value": 0.55}
    entry = {"metrics": list(records.values())}
    assert headline_record(entry) is ssim  # the pipeline's headline, not the first record
    assert "baseline mean_fill: 0.55" in summary_table(
        [{"source": "inpainting", "status": "evaluated", **entry}]
    )


def test_text2image_records_per_stage_and_a_missing_number_fails_with_the_reason():
    entry = pipeline_report_entry("text2image_rlhf", TEXT2IMAGE, {"source": "text2image_rlhf"})
    records = _by_metric(entry)
    assert records["prompt_attribute_agreement"]["value"] == 0.8
    assert records["selector_auroc_vs_oracle"]["details"]["shuffled_label_control"] == 0.5
    assert records["policy_auroc/modality_swap"]["value"] == 0.6  # the balanced one
    assert records["start/frechet_in_domain"]["floor"] == 0.5
    assert records["reinforced/quality_gap"]["value"] == 0.12
    assert records["best_of_n_acceptance_rate"]["value"] == 0.25
    assert headline_record(entry)["metric"] == "reinforced/oracle_quality"  # the final stage
    failed = records["reinforced/frechet_in_domain"]
    assert failed["status"] == "failed" and "n=3 <= d=8" in failed["details"]["message"]
    assert entry["status"] == "failed" and any("n=3 <= d=8" in f for f in entry["failures"])


def test_a_malformed_summary_fails_its_source_naming_the_summary():
    broken = copy.deepcopy(INPAINTING)
    broken["table"] = ["not", "a", "table"]
    entry = pipeline_report_entry("inpainting", broken, {"source": "inpainting"})
    assert entry["status"] == "failed" and "inpainting.summary" in entry["failures"][0]


def test_summaries_replace_no_evaluator_and_not_present(real, feature_network):
    volumes = TensorBundle({"images": torch.rand(2, 2, 8, 8, 8) * 2 - 1})
    samples = partitions(ddpm_bravo=generated_bundle("bravo"))
    samples["latent_diffusion_3d"] = lambda: volumes
    # text2image's prompt images: 2D, but no real modality names (no 2D evaluator, no grid)
    samples["text2image_rlhf/best_of_n"] = lambda: TensorBundle({"images": torch.rand(3, 1, 8, 8)})
    scoring = {**TINY_SCORING, "expected_sources": ["latent_diffusion", "inpainting"]}
    without = evaluate_sources(samples, real["test"], real["train"], feature_network, scoring, 0)
    statuses = {e["source"]: e["status"] for e in without["sources"]}
    assert statuses["latent_diffusion_3d"] == "no evaluator"
    assert statuses["text2image_rlhf/best_of_n"] == "no evaluator"
    assert statuses["inpainting"] == "not present"

    summaries = {
        "latent_diffusion_3d": VOLUMES,
        "text2image_rlhf": TEXT2IMAGE,
        "inpainting": INPAINTING,
    }
    metrics = evaluate_sources(
        samples, real["test"], real["train"], feature_network, scoring, 0, summaries=summaries
    )
    entries = {e["source"]: e for e in metrics["sources"]}
    assert entries["latent_diffusion_3d"]["kind"] == "pipeline_report"
    assert entries["latent_diffusion_3d"]["n_generated"] == 2  # the samples' own identity
    assert entries["text2image_rlhf/best_of_n"]["kind"] == "pipeline_report"
    # a pipeline with a summary but no samples file gets its entry from the summary alone
    assert (
        entries["inpainting"]["kind"] == "pipeline_report"
        and "n_generated" not in entries["inpainting"]
    )

    sources, _ = collect_sources(samples, [])
    page = build_report(metrics, sources, real_slices(16, seed=5), None, grid_samples=2)
    first_screen = page[: page.index("<h2>Feature networks</h2>")]
    for source in ("ddpm_bravo", "latent_diffusion_3d", "text2image_rlhf/best_of_n", "inpainting"):
        assert source in first_screen
    assert "frechet_2p5d" in first_screen
    text = re.sub(r"data:image/png;base64,[^\"]+", "", page)
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_the_headline_is_the_in_domain_fid_when_there_is_one():
    records = [
        {"metric": "lpips_diversity", "status": "ok"},
        {"metric": "fid", "status": "missing_weights"},
        {"metric": "fid", "status": "ok", "backbone": "in_domain"},
    ]
    assert headline_record({"metrics": records})["backbone"] == "in_domain"
    assert headline_record({"metrics": records[:2]})["metric"] == "lpips_diversity"
    assert headline_record({"metrics": []}) is None


def test_report_embeds_each_pipelines_own_figures_under_its_source():
    from PIL import Image

    from medgen.evaluation.pipeline_figures import figure_pngs, pipeline_figures

    def picture(value: int) -> Image.Image:
        return Image.new("L", (4, 3), value)

    loads = []
    cases = {f"case_{i}": (lambda i=i: loads.append(i) or picture(i)) for i in range(4)}
    pictures = pipeline_figures(
        {"inpainting": cases, "text2image_rlhf": picture(9), "latent_diffusion_3d": None}, limit=2
    )
    # at most ``limit`` partitions, spread over the sorted names, and only those are loaded;
    # absent figures are no entry
    assert [name for name, _ in pictures["inpainting"]] == ["case_0", "case_3"] and loads == [0, 3]
    three = [name for name, _ in figure_pngs(cases, 3)]
    assert three == ["case_0", "case_2", "case_3"]  # round(1.5) = 2
    assert set(pictures) == {"inpainting", "text2image_rlhf"}
    assert figure_pngs(None, 3) == []
    png = pictures["text2image_rlhf"][0][1]
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size == (4, 3)

    entry = pipeline_report_entry("inpainting", INPAINTING, {"source": "inpainting"})
    metrics = {
        "sources": [entry],
        "backbones": {},
        "reference": {"dataset": "x", "n_slices": 0, "resize": "none"},
        "lpips": {"backbone": "none"},
    }
    page = build_report(metrics, [], real_slices(4, seed=0), None, pictures=pictures)
    section = page[page.index("<h3>inpainting</h3>") :]
    assert section.count('alt="inpainting: case_') == 2
    assert "voided input, inpainting" in section  # the caption says what the columns are


AUTOENCODER = {
    "models": {
        "autoencoder_2d": {"validation_reconstruction": {"psnr": 23.6, "ssim": 0.71}},
        "patch_volume_stage2": {"validation_reconstruction": {"psnr": 20.9, "ssim": 0.57}},
    },
    "demo_checks": {
        "status": "passed",
        "checks": {
            "reconstruction_vs_trilinear": {
                "status": "passed",
                "trilinear": {"psnr": 19.5, "ssim": 0.48},
                "compression": {"factor_per_axis": 4},
                "n": 4,
            }
        },
    },
}
DATA = {
    "subjects_total": 24,
    "subjects_valid": 23,
    "subjects_per_split": {"train": 15, "val": 4, "test": 4},
    "slices_per_split": {"train": 900, "val": 250, "test": 256},
    "rejected": [{"subject": "x", "reason": "NaN"}],
}


def test_autoencoder_and_data_records_cover_the_pipelines_that_generate_nothing():
    ae = _by_metric(pipeline_report_entry("autoencoder", AUTOENCODER, {"source": "autoencoder"}))
    psnr = ae["patch_volume_stage2/reconstruction_psnr"]
    assert psnr["value"] == 20.9 and psnr["details"]["baseline"] == {
        "name": "trilinear",
        "value": 19.5,
    }
    assert headline_record({"metrics": list(ae.values())}) is psnr
    # the 2D model has no trivial baseline in its summary: none is invented
    assert "baseline" not in ae["autoencoder_2d/reconstruction_ssim"]["details"]
    data = _by_metric(pipeline_report_entry("data_processing", DATA, {"source": "data_processing"}))
    assert (
        data["subjects_valid"]["value"] == 23 and data["subjects_valid"]["details"]["rejected"] == 1
    )
    assert data["held_out_patients"]["value"] == 8
    broken = _by_metric(
        pipeline_report_entry("data_processing", {**DATA, "subjects_per_split": {}}, {})
    )
    assert broken["held_out_patients"]["status"] == "failed"


def test_sources_are_listed_in_the_data_flows_order():
    from medgen.evaluation.evaluate import _pipeline_rank

    expected = ["data_processing", "autoencoder", "latent_diffusion", "inpainting"]
    entries = [
        {"source": "inpainting", "pipeline": "inpainting"},
        {"source": "latent_diffusion_3d", "pipeline": "latent_diffusion_3d"},
        {"source": "other"},
        {"source": "data_processing"},
    ]
    ranked = sorted(entries, key=lambda e: _pipeline_rank(e, expected))
    assert [e["source"] for e in ranked] == [
        "data_processing",
        "latent_diffusion_3d",
        "inpainting",
        "other",
    ]

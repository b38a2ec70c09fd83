"""report.html: tables, embedded images, no external resources, absent sources, loss curves."""

from __future__ import annotations

import re

from evaluation_helpers import loss_summary, real_slices

from medgen.evaluation import build_report, collect_sources


def _report(metrics, samples, summary=None):
    sources, _ = collect_sources(samples, [])
    return build_report(metrics, sources, real_slices(16, seed=5), summary, grid_samples=3)


def test_report_has_tables_embedded_images_and_no_external_resources(metrics, samples):
    page = _report(metrics, samples, loss_summary())
    assert page.startswith("<!DOCTYPE html>") and page.count("<table>") >= 3
    assert "latent_diffusion/ddpm_bravo" in page and "conditioning_dice" in page
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    # per source: metric bars + sample grid; plus the loss curves
    assert len(images) == 5 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_report_lists_absent_sources_and_missing_weights(metrics, samples):
    page = _report(metrics, samples)
    assert "not present" in page and "inpainting" in page
    assert "inception-2015-12-05.pt" in page
    assert "summary not present" in page


def test_loss_curves_skipped_without_history(metrics, samples):
    page = _report(metrics, samples, {"combinations": ["ddpm_bravo"], "training": {}})
    assert "no loss history" in page


def test_loss_curves_come_from_training_reports(metrics, samples):
    """latent_diffusion keeps histories in training.json, not in its run summary."""
    sources, _ = collect_sources(samples, [])
    history = loss_summary()["training"]["ddpm_bravo"]["history"]
    page = build_report(
        metrics,
        sources,
        real_slices(16, seed=5),
        {"combinations": ["ddpm_bravo"]},
        grid_samples=3,
        training_reports={"ddpm_bravo": lambda: {"combination": "ddpm_bravo", "history": history}},
    )
    assert "no loss history" not in page and "latent_diffusion training loss" in page


def test_table_rows_give_n_d_patients_per_half_and_why_there_is_no_floor():
    from medgen.evaluation.report import record_row

    split = {"by": "group (patient-disjoint halves)", "groups_total": 2, "groups_a": 1}
    record = {
        "metric": "fid",
        "status": "ok",
        "value": 0.3,
        "floor": None,
        "backbone": "in_domain (trained on x)",
        "mode": "native",
        "n_real": 4,
        "n_generated": 4,
        "details": {
            "no_floor": "2 patients: halves of 1 and 1",
            "feature_dim": 16,
            "covariance": "ledoit_wolf shrinkage (n=4 <= d=16: sample singular)",
            "real_split": {**split, "groups_b": 1},
        },
    }
    assert record_row(record) == [
        "fid",
        "in_domain (trained on x)",
        0.3,
        "no floor: 2 patients: halves of 1 and 1",
        "4 / 4",
        16,
        "1 + 1",
        "native; covariance ledoit_wolf shrinkage (n=4 <= d=16: sample singular)",
        "ok",
    ]
    failed = {**record, "status": "failed", "value": None, "details": {"message": "E: boom"}}
    assert record_row(failed)[3:] == [None, "", "", "", "native", "failed: E: boom"]


def test_report_lists_failures_first_and_never_prints_nan(metrics, samples):
    from medgen.evaluation.report import inpainting_section

    broken = {**metrics, "failures": ["latent_diffusion/ddpm_bravo: fid (in_domain): E: NaN in"]}
    page = _report(broken, samples)
    assert page.index("1 metric(s) failed") < page.index("<h2>Feature networks</h2>")
    stat = {"mean": float("nan"), "sd": float("inf"), "median": 0.5}
    row = {"ssim": stat, "psnr": stat, "mse": stat, "n_cases": 1, "n_patients": 1}
    section = inpainting_section({"table": {"diffusion": row}, "headline": {}})
    assert "n/a ± n/a (0.5000)" in section and "nan" not in section.lower()

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

"""The self-contained HTML report: tables, sample grids, metric bars, loss curves.

Every picture is a PNG embedded as a base64 data URI and there is no script, style
sheet or font from elsewhere, so the file opens offline and can be mailed as is.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from medgen.datasets import TensorBundle
from medgen.evaluation.context import real_images, real_masks
from medgen.evaluation.figures import (
    comparison_rows,
    find_histories,
    image_grid,
    loss_curves,
    metric_bars,
)
from medgen.evaluation.sources import GeneratedSource

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 75em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; } code { font-size: 0.85em; } .absent { color: #a33; }
"""
COLUMNS = ("metric", "backbone", "value", "floor", "n_real", "n_generated", "mode", "status")


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_text(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metrics_table(records: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for r in records:
        row = [r.get(c) for c in COLUMNS]
        if r["status"] != "ok":
            row[-1] = f"{r['status']}: {r['details'].get('message', '')}"
        elif r["metric"] == "ms_ssim_diversity":
            d = r["details"]
            row[6] = (
                f"kernel {d.get('kernel_size')}, {d.get('scales')} scales, {d.get('pairs')} pairs"
            )
        rows.append(row)
    return _table(rows, COLUMNS)


def sample_grid(source: GeneratedSource, reference: TensorBundle, k: int) -> bytes:
    """Generated samples (and their masks) above real reference slices at the same size."""
    if source.mode == "seg":
        real = real_masks(reference, source.size) * 2 - 1
    else:
        real = real_images(reference, source.target_names, source.size)
    # real slices spread over the whole reference, not k neighbours of one subject
    spread = torch.linspace(0, len(real) - 1, min(k, len(real))).round().long()
    rows, _ = comparison_rows(source.images, source.masks, real[spread], k)
    return image_grid(rows)


def _source_section(
    entry: Mapping[str, Any], source: GeneratedSource | None, reference: TensorBundle, k: int
) -> str:
    name = entry["source"]
    if entry["status"] == "not present":
        return f'<h3>{_text(name)}</h3><p class="absent">not present: {_text(entry["note"])}</p>'
    meta = entry.get("metadata", {})
    facts = ", ".join(
        f"{key}={_text(meta[key])}"
        for key in (
            "strategy",
            "mode",
            "target_names",
            "sampler",
            "num_steps",
            "network_evaluations",
            "guidance_scale",
            "seed",
        )
        if key in meta
    )
    parts = [
        f"<h3>{_text(name)}</h3>",
        f"<p>kind {_text(entry.get('kind'))}; {entry['n_generated']} generated, shape {_text(entry['shape'])}; {facts}</p>",
    ]
    if entry["status"] != "evaluated":
        parts.append(f'<p class="absent">{_text(entry["status"])}</p>')
        return "".join(parts)
    parts.append(metrics_table(entry["metrics"]))
    parts.append(_img(metric_bars(entry["metrics"], name), f"{name}: metrics vs real floor"))
    if source is not None:
        parts.append(
            "<p>Sample grid: generated channels (top), conditioning masks, real reference slices "
            "resized to the generated size (bottom).</p>"
        )
        parts.append(_img(sample_grid(source, reference, k), f"{name}: generated beside real"))
    return "".join(parts)


def _loss_section(
    summary: Mapping[str, Any] | None, training_reports: Mapping[str, Any] | None
) -> str:
    if summary is None and not training_reports:
        return "<p>latent_diffusion summary not present: no loss curves.</p>"
    # latent_diffusion keeps each model's loss history in its training.json, not in the
    # run summary; partitions may arrive as loaders
    reports = {k: v() if callable(v) else v for k, v in (training_reports or {}).items()}
    histories = find_histories(summary or {}) | find_histories(reports)
    if not histories:
        return "<p>The latent_diffusion summary holds no loss history: loss curves skipped.</p>"
    return _img(loss_curves(histories), "latent_diffusion training loss")


def _stat(entry: Mapping[str, Any], digits: int) -> str:
    return f"{entry['mean']:.{digits}f} ± {entry['sd']:.{digits}f} ({entry['median']:.{digits}f})"


def inpainting_section(summary: Mapping[str, Any] | None) -> str:
    """The inpainting pipeline's method x metric table (its leaderboard-scorer numbers)."""
    if summary is None:
        return (
            "<p>inpainting summary not present (run <code>kedro run --pipeline inpainting</code>)."
            "</p>"
        )
    rows = [
        [
            method,
            _stat(entry["ssim"], 4),
            _stat(entry["psnr"], 2),
            _stat(entry["mse"], 5),
            entry["n_cases"],
            entry["n_patients"],
        ]
        for method, entry in summary["table"].items()
    ]
    head = summary.get("headline", {})
    verdict = (
        f"<p>Best baseline by SSIM: {_text(head.get('best_baseline_by_ssim'))} "
        f"({head.get('best_baseline_ssim', float('nan')):.4f}); diffusion (honest conditioning): "
        f"{head.get('diffusion_ssim') or float('nan'):.4f}; diffusion beats it: "
        f"{_text(head.get('diffusion_beats_best_baseline'))}.</p>"
    )
    return (
        f"<p>Scorer: {_text(summary.get('scorer'))}. {_text(summary.get('note'))}</p>"
        + _table(
            rows,
            ("method", "SSIM mean ± SD (median)", "PSNR dB", "MSE", "n cases", "n patients"),
        )
        + verdict
    )


def build_report(
    metrics: Mapping[str, Any],
    sources: Sequence[GeneratedSource],
    reference: TensorBundle,
    summary: Mapping[str, Any] | None = None,
    grid_samples: int = 8,
    training_reports: Mapping[str, Any] | None = None,
    inpainting_summary: Mapping[str, Any] | None = None,
) -> str:
    """report.html from the metrics.json content, the generated sources and the real reference."""
    by_name = {s.name: s for s in sources}
    backbone_rows = [
        [name, b["status"], b.get("name", ""), b.get("mode", b.get("message", ""))]
        for name, b in metrics["backbones"].items()
    ]
    network = metrics.get("feature_network", {})
    ref = metrics["reference"]
    body = [
        "<h1>medgen evaluation</h1>",
        "<p>Every value names its backbone and sample counts and sits next to its real floor: "
        "the same metric measured between two patient-disjoint halves of the real data (FID) or on real "
        "data at the same n (diversity), or the segmenter's Dice on real images (fidelity). "
        "Lower FID is better; diversity should resemble the real floor.</p>",
        f"<p>Real reference: {_text(ref['dataset'])}, {ref['n_slices']} slices "
        f"({_text(ref.get('slices', 'all'))}); {_text(ref['resize'])}.</p>",
        "<h2>Feature networks</h2>",
        _table(backbone_rows, ("requested", "status", "backbone", "mode / message")),
        f"<p>in_domain encoder: {_text(network.get('provenance'))}, {_text(network.get('train_slices'))} slices "
        f"({_text(network.get('train_images'))} single-modality images), objective "
        f"{_text(network.get('objective'))}, final losses {_text(network.get('final_losses'))}. "
        "Its FIDs compare runs that use this same network, never published Inception FIDs.</p>",
        f"<p>LPIPS: {_text(metrics['lpips']['backbone'])}.</p>",
        "<h2>Sources</h2>",
    ]
    body += [
        _source_section(e, by_name.get(e["source"]), reference, grid_samples)
        for e in metrics["sources"]
    ]
    if not metrics["sources"]:
        body.append("<p>No generated sources expected or found.</p>")
    body += ["<h2>latent_diffusion training</h2>", _loss_section(summary, training_reports)]
    body += ["<h2>Inpainting (BraTS local synthesis)</h2>", inpainting_section(inpainting_summary)]
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>medgen evaluation</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )

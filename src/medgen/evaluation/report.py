"""The self-contained HTML report: tables, sample grids, metric bars, loss curves.

Every picture is a PNG embedded as a base64 data URI and there is no script, style
sheet or font from elsewhere, so the file opens offline and can be mailed as is.
"""

from __future__ import annotations

import base64
import html
import math
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
from medgen.evaluation.pipeline_figures import CAPTIONS
from medgen.evaluation.sources import GeneratedSource

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 75em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; } code { font-size: 0.85em; } .absent { color: #a33; }
"""
COLUMNS = (
    "metric",
    "backbone",
    "value",
    "floor",
    "n (gen / real)",
    "d",
    "patients per half",
    "mode",
    "status",
)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
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


def _patients_per_half(details: Mapping[str, Any]) -> str:
    split = details.get("real_split") or {}
    if "groups_a" in split:
        return f"{split['groups_a']} + {split['groups_b']}"
    if "groups_total" in split:
        return f"{split['groups_total']} in all"
    return "unknown (split by slice)" if split.get("by", "").startswith("sample (halves") else ""


def record_row(r: Mapping[str, Any]) -> list[Any]:
    """One metrics-table row: the numbers, how many samples, features and patients
    they rest on, and the status with its reason."""
    d = r.get("details") or {}
    mode = r.get("mode")
    if r["metric"] == "ms_ssim_diversity" and r["status"] == "ok":
        mode = f"kernel {d.get('kernel_size')}, {d.get('scales')} scales, {d.get('pairs')} pairs"
    if d.get("covariance"):
        mode = f"{mode or ''}; covariance {d['covariance']}".lstrip("; ")
    floor = r.get("floor")
    if r["status"] == "ok" and floor is None and d.get("no_floor"):
        floor = f"no floor: {d['no_floor']}"
    if r["status"] == "ok" and d.get("check") in ("passed", "failed"):
        # measured fine, and its pipeline's demo check says whether it is good enough
        status = f"ok; demo check {d['check']}"
    elif r["status"] == "ok":
        status = "ok"
    elif r["status"] == "missing_weights":  # the message is given once, above the sources
        status = "missing weights (see Feature networks)"
    else:
        status = f"{r['status']}: {d.get('message', '')}"
    n = f"{r.get('n_generated')} / {r.get('n_real')}" if r["status"] == "ok" else ""
    return [
        r["metric"],
        r.get("backbone"),
        r.get("value"),
        floor,
        n,
        d.get("feature_dim", ""),
        _patients_per_half(d),
        mode,
        status,
    ]


def headline_record(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The number a source is summed up by: the record its pipeline marked as the headline,
    else its in-domain FID, else its first measured record, else its first record."""
    records = entry.get("metrics") or []
    marked = [r for r in records if (r.get("details") or {}).get("headline")]
    ok = [r for r in records if r["status"] == "ok"]
    fid = [r for r in ok if r["metric"] == "fid"]
    return (marked or fid or ok or records or [None])[0]


def _comparison(record: Mapping[str, Any], floor: Any) -> str:
    """The floor, or the best trivial baseline where a source has no real-vs-real floor."""
    baseline = (record.get("details") or {}).get("baseline")
    if floor is None and isinstance(baseline, Mapping):
        return f"baseline {baseline.get('name')}: {_text(baseline.get('value'))}"
    return _text(floor)


def summary_table(sources: Sequence[Mapping[str, Any]]) -> str:
    """The first screen: one row per source with its headline number beside its floor."""
    rows = []
    for entry in sources:
        record = headline_record(entry)
        if record is None:
            rows.append([entry["source"], entry["status"], "", "", "", "", entry.get("note", "")])
            continue
        row = record_row(record)
        measured = (
            f"{sum(r['status'] == 'ok' for r in entry['metrics'])} of {len(entry['metrics'])}"
        )
        rows.append(
            [
                entry["source"],
                entry["status"],
                row[0],
                row[2],
                _comparison(record, row[3]),
                measured,
                row[8],
            ]
        )
    header = (
        "source", "status", "headline metric", "value", "floor / baseline", "metrics measured", "note",
    )  # fmt: skip
    return _table(rows, header)


def metrics_table(records: Sequence[Mapping[str, Any]]) -> str:
    return _table([record_row(r) for r in records], COLUMNS)


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


def _pictures(name: str, pictures: Sequence[tuple[str, bytes]]) -> str:
    if not pictures:
        return ""
    caption = f"<p>{_text(CAPTIONS.get(name, 'Figures of its pipeline.'))}</p>"
    return caption + "".join(_img(png, f"{name}: {figure}") for figure, png in pictures)


def _source_section(
    entry: Mapping[str, Any],
    source: GeneratedSource | None,
    reference: TensorBundle,
    k: int,
    pictures: Sequence[tuple[str, bytes]] = (),
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
    counts = (
        f"{entry['n_generated']} generated, shape {_text(entry['shape'])}; "
        if "n_generated" in entry
        else ""
    )
    read_from = (
        f"; numbers read from <code>{_text(entry['read_from'])}</code>"
        if entry.get("read_from")
        else ""
    )
    parts = [
        f"<h3>{_text(name)}</h3>",
        f"<p>kind {_text(entry.get('kind'))}{read_from}; {counts}{facts}</p>",
    ]
    if entry["status"] == "failed":
        parts.append(
            '<p class="absent">failed: '
            + "; ".join(_text(f) for f in entry.get("failures", []))
            + "</p>"
        )
    if not entry.get("metrics"):
        if entry["status"] != "failed":
            parts.append(f'<p class="absent">{_text(entry["status"])}</p>')
        return "".join(parts)
    parts.append(metrics_table(entry["metrics"]))
    if any(r.get("floor") is not None for r in entry["metrics"]):  # counts alone need no bars
        parts.append(_img(metric_bars(entry["metrics"], name), f"{name}: metrics vs real floor"))
    # a 2D source this pipeline scored: its grid beside real slices of the same modalities
    if source is not None and entry.get("kind") != "pipeline_report":
        parts.append(
            "<p>Sample grid: generated channels (top), conditioning masks, real reference slices "
            "resized to the generated size (bottom).</p>"
        )
        parts.append(_img(sample_grid(source, reference, k), f"{name}: generated beside real"))
    # a source its own pipeline scored: the figures that pipeline drew beside real images
    parts.append(_pictures(name, pictures))
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


def _number(value: Any, digits: int) -> str:
    # a missing number reads "n/a", never "nan"
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "n/a"


def _stat(entry: Mapping[str, Any], digits: int) -> str:
    mean, sd, median = (_number(entry.get(k), digits) for k in ("mean", "sd", "median"))
    return f"{mean} ± {sd} ({median})"


def inpainting_section(summary: Mapping[str, Any] | None) -> str:
    """The inpainting pipeline's method x metric table (its leaderboard-scorer numbers)."""
    if summary is None:
        return (
            "<p>inpainting summary not present (run <code>kedro run --pipelines inpainting</code>)."
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
        f"({_number(head.get('best_baseline_ssim'), 4)}); diffusion (honest conditioning): "
        f"{_number(head.get('diffusion_ssim'), 4)}; diffusion beats it: "
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


def _failures(metrics: Mapping[str, Any]) -> str:
    failures = metrics.get("failures") or []
    if not failures:
        return ""
    items = "".join(f"<li>{_text(f)}</li>" for f in failures)
    return f'<p class="absent">{len(failures)} metric(s) failed:</p><ul class="absent">{items}</ul>'


def build_report(
    metrics: Mapping[str, Any],
    sources: Sequence[GeneratedSource],
    reference: TensorBundle,
    summary: Mapping[str, Any] | None = None,
    grid_samples: int = 8,
    training_reports: Mapping[str, Any] | None = None,
    inpainting_summary: Mapping[str, Any] | None = None,
    pictures: Mapping[str, Sequence[tuple[str, bytes]]] | None = None,
) -> str:
    """report.html from the metrics.json content, the generated sources and the real reference;
    ``pictures``: per source scored by its own pipeline, that pipeline's figures
    (`medgen.evaluation.pipeline_figures`)."""
    by_name = {s.name: s for s in sources}
    backbone_rows = [
        [name, b["status"], b.get("name", ""), b.get("mode", b.get("message", ""))]
        for name, b in metrics["backbones"].items()
    ]
    network = metrics.get("feature_network", {})
    ref = metrics["reference"]
    body = [
        "<h1>medgen evaluation</h1>",
        _failures(metrics),
        "<h2>Summary</h2>",
        summary_table(metrics["sources"]),
        "<p>Every value names its backbone and sample counts and sits next to its real floor: "
        "the same metric measured between two patient-disjoint halves of the real data (FID) or on real "
        "data at the same n (diversity), or the segmenter's Dice on real images (fidelity). "
        "Lower FID is better; diversity should resemble the real floor.</p>",
        f"<p>Real reference: {_text(ref['dataset'])}, {ref['n_slices']} slices "
        f"({_text(ref.get('slices', 'all'))}) of {_text(ref.get('n_patients'))} patients; "
        f"a floor needs {_text(ref.get('min_patients_per_half'))} patients in each "
        f"patient-disjoint half, else the table says why it gives none; n = samples per set, "
        f"d = feature size (the covariance is the sample one only where n > d). "
        f"Sizes: {_text(ref['resize'])}.</p>",
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
        _source_section(
            e,
            by_name.get(e["source"]),
            reference,
            grid_samples,
            (pictures or {}).get(e["source"], ()),
        )
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

"""Evaluate every generated source against the real data: the metrics.json content."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from medgen.datasets import TensorBundle
from medgen.evaluation.context import EvaluationContext, held_out_reference, select_reference
from medgen.evaluation.evaluators import kind_of
from medgen.evaluation.networks import feature_network_from_bundle
from medgen.evaluation.params import ON_MISSING_WEIGHTS, ScoringParams
from medgen.evaluation.pipeline_reports import pipeline_report_entry
from medgen.evaluation.records import SCHEMA_VERSION
from medgen.evaluation.sources import GeneratedSource, collect_sources
from medgen.metrics import LPIPSScorer, MissingWeightsError, build_backbone, in_domain_backbone

logger = logging.getLogger(__name__)


def build_backbones(
    names: list[str], feature_network: TensorBundle, on_missing_weights: str
) -> dict[str, Any]:
    """Each requested FID backbone, or the MissingWeightsError message when its weights are absent.

    ``on_missing_weights``: ``report`` puts the message (file to place, where)
    in metrics.json and the report and goes on; ``fail`` raises it and stops the run.
    """
    if on_missing_weights not in ON_MISSING_WEIGHTS:
        raise ValueError(
            f"on_missing_weights must be one of {ON_MISSING_WEIGHTS}, got '{on_missing_weights}'"
        )
    backbones: dict[str, Any] = {}
    for name in names:
        if name == "in_domain":
            encoder = feature_network_from_bundle(feature_network)
            backbones[name] = in_domain_backbone(encoder)  # named by its training
            continue
        try:
            backbones[name] = build_backbone(name)
        except MissingWeightsError as error:
            if on_missing_weights == "fail":
                raise
            logger.warning("evaluation: FID backbone %s unavailable: %s", name, error)
            backbones[name] = str(error)
    return backbones


def _describe_backbone(backbone: Any) -> dict[str, Any]:
    if isinstance(backbone, str):
        return {"status": "missing_weights", "message": backbone}
    return {"status": "ok", "name": backbone.name, "mode": backbone.mode}


def _evaluate_source(
    source: GeneratedSource, ctx: EvaluationContext, summaries: Mapping[str, Any]
) -> dict[str, Any]:
    """One source's metrics.json entry; status ``failed`` (with every failure's reason)
    when a metric or the evaluator itself failed. A source its own pipeline scores (3D
    volumes, inpainting) takes its records from that pipeline's summary."""
    entry = {
        "source": source.name,
        "pipeline": source.pipeline,
        "n_generated": len(source.images),
        "shape": list(source.images.shape[1:]),
        "metadata": source.metadata,
    }
    kind = kind_of(source)
    if kind is None and summaries.get(source.pipeline) is not None:
        return pipeline_report_entry(source.pipeline, summaries[source.pipeline], entry)
    if kind is None:
        logger.warning("evaluation: no evaluator for %s (shape %s)", source.name, entry["shape"])
        return {**entry, "status": "no evaluator", "kind": None, "metrics": []}
    logger.info("evaluation: %s as %s", source.name, kind.name)
    try:
        records = kind.evaluate(source, ctx)
    except Exception as error:  # reported as the source's failure, never hidden
        logger.error("evaluation: evaluating %s failed: %s", source.name, error, exc_info=True)
        reason = f"{kind.name} evaluator: {type(error).__name__}: {error}"
        return {**entry, "status": "failed", "kind": kind.name, "metrics": [], "failures": [reason]}
    failures = [
        f"{r['metric']} ({r['backbone']}): {r['details'].get('message', '')}"
        for r in records
        if r["status"] == "failed"
    ]
    status = "failed" if failures else "evaluated"
    return {**entry, "status": status, "kind": kind.name, "metrics": records, "failures": failures}


def evaluate_sources(
    partitions: Mapping[str, Callable[[], TensorBundle]] | None,
    reference: TensorBundle | Mapping[str, TensorBundle],
    train: TensorBundle,
    feature_network: TensorBundle,
    params: ScoringParams | Mapping[str, Any],
    seed: int,
    summaries: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Metrics for every generated source present; absent expected sources are listed as such.

    ``summaries``: the summaries of the pipelines that score their own outputs, by source
    pipeline (`medgen.evaluation.pipeline_reports.SUMMARY_OF`); a source or an expected
    pipeline with one is recorded from it.

    ``reference``: the held-out split bundles by name (``{"val": ..., "test": ...}``, joined
    by `held_out_reference` in ``params.reference_splits`` order) or one bundle.
    ``params``: `ScoringParams` (``evaluation.scoring``; a mapping is validated); ``seed``
    seeds subsets, pair draws, the floors' splits and the segmenter. The result holds no
    timings or paths, so the same inputs, configuration and seed give identical content.
    """
    start = time.perf_counter()
    if not isinstance(params, ScoringParams):
        params = ScoringParams.from_params(params)
    which = params.reference_slices
    splits = list(params.reference_splits)
    reference = select_reference(held_out_reference(reference, splits), which)
    ctx = EvaluationContext(
        reference=reference,
        train=train,
        backbones=build_backbones(
            list(params.fid.backbones), feature_network, params.fid.on_missing_weights
        ),
        lpips=LPIPSScorer(
            net=params.lpips.net,
            pretrained_backbone=bool(params.lpips.pretrained_backbone),
            seed=seed,
        ),
        params=params,
        seed=seed,
    )
    sources, absent = collect_sources(partitions, params.expected_sources)
    summaries = {k: v for k, v in (summaries or {}).items() if v is not None}
    entries = [_evaluate_source(source, ctx, summaries) for source in sources]
    for note in list(absent):
        if note["source"] in summaries:  # scored by its pipeline, no samples file needed
            absent.remove(note)
            identity = {"source": note["source"], "pipeline": note["source"]}
            entries.append(
                pipeline_report_entry(note["source"], summaries[note["source"]], identity)
            )
    failures = [f"{e['source']}: {reason}" for e in entries for reason in e.get("failures", [])]
    network = feature_network.metadata
    # the report lists the pipelines in the data flow's order (expected_sources), not in the
    # order their files were found
    ordered = sorted(entries + absent, key=lambda e: _pipeline_rank(e, params.expected_sources))
    logger.info("evaluation: %d sources in %.1f s", len(entries), time.perf_counter() - start)
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "failed" if failures else "ok",
        "failures": failures,
        "reference": describe_reference(reference, splits, which, params),
        "backbones": {name: _describe_backbone(b) for name, b in ctx.backbones.items()},
        "feature_network": {k: v for k, v in network.items() if k != "history"}
        | {"final_losses": {k: v[-1] for k, v in network.get("history", {}).items() if v}},
        "lpips": {"backbone": ctx.lpips.name},
        "sources": ordered,
    }


def _pipeline_rank(entry: Mapping[str, Any], expected: Sequence[str]) -> int:
    pipeline = str(entry.get("pipeline") or entry["source"])
    for rank, name in enumerate(expected):
        if pipeline == name or pipeline.startswith(f"{name}_") or pipeline.startswith(f"{name}/"):
            return rank
    return len(expected)


def describe_reference(
    reference: TensorBundle, splits: list[str], which: str, params: ScoringParams
) -> dict[str, Any]:
    """metrics.json's account of the real reference: splits, slices, patients."""
    groups = reference.tensors.get("subject_index")
    return {
        "dataset": " + ".join(f"slices_2d_{s}" for s in splits) + " (real held-out splits)",
        "splits": splits,
        "slices": which,
        "n_slices": len(reference),
        "n_patients": None if groups is None else int(groups.unique().numel()),
        "min_patients_per_half": int(params.floors.min_patients_per_half),
        "resize": "real slices resized to each source's size (antialiased bilinear; masks: area, >0.5)",
    }

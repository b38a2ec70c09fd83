"""``evaluation`` nodes: thin calls into :mod:`medgen.evaluation`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from medgen.datasets import TensorBundle
from medgen.evaluation import (
    ReportParams,
    build_report,
    collect_sources,
    evaluate_sources,
    held_out_reference,
    log_to_mlflow,
    select_reference,
    train_feature_network,
)
from medgen.evaluation.pipeline_figures import pipeline_figures

Partitions = Mapping[str, Callable[[], TensorBundle]] | None


def train_in_domain_feature_network(
    slices: TensorBundle, params: dict[str, Any], seed: int
) -> TensorBundle:
    """Train the offline in-domain FID encoder on the real training slices."""
    return train_feature_network(slices, params, seed=seed)


def evaluate_generated_sources(
    samples: Partitions,
    reference_val: TensorBundle,
    reference_test: TensorBundle,
    train: TensorBundle,
    feature_network: TensorBundle,
    latent_diffusion_summary: Mapping[str, Any] | None,
    volumes_summary: Mapping[str, Any] | None,
    inpainting_summary: Mapping[str, Any] | None,
    text2image_summary: Mapping[str, Any] | None,
    params: dict[str, Any],
    seed: int,
    data_summary: Mapping[str, Any] | None = None,
    autoencoder_summary: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every generated source present and log the numbers to MLflow."""
    # latent_diffusion.summary is an input only so that Kedro runs this node after the 2D
    # chain (see pipeline.py); the other pipelines score their own outputs (data_processing
    # and autoencoder generate nothing: their summaries give the cohort and reconstruction).
    reference = {"val": reference_val, "test": reference_test}
    summaries = {
        "data_processing": data_summary,
        "autoencoder": autoencoder_summary,
        "latent_diffusion_3d": volumes_summary,
        "inpainting": inpainting_summary,
        "text2image_rlhf": text2image_summary,
    }
    metrics = evaluate_sources(
        samples, reference, train, feature_network, params, seed, summaries=summaries
    )
    log_to_mlflow(metrics)
    return metrics


def build_evaluation_report(
    metrics: dict[str, Any],
    samples: Partitions,
    reference_val: TensorBundle,
    reference_test: TensorBundle,
    latent_diffusion_summary: Mapping[str, Any] | None,
    params: dict[str, Any],
    training_reports: Partitions = None,
    inpainting_summary: Mapping[str, Any] | None = None,
    volume_figures: Mapping[str, Any] | None = None,
    inpainting_figures: Mapping[str, Any] | None = None,
    text2image_stages_grid: Any = None,
    autoencoder_figures: Mapping[str, Any] | None = None,
) -> str:
    """The self-contained report.html."""
    options = ReportParams.from_params(params)
    figures = {
        "autoencoder": autoencoder_figures,
        "latent_diffusion_3d": volume_figures,
        "inpainting": inpainting_figures,
        "text2image_rlhf": None
        if text2image_stages_grid is None
        else {"stages_grid": text2image_stages_grid},
    }
    sources, _ = collect_sources(samples, [])
    # the reference slices the metrics were computed against, as metrics.json records them
    splits = {"val": reference_val, "test": reference_test}
    chosen = metrics["reference"]["splits"]
    reference = select_reference(held_out_reference(splits, chosen), metrics["reference"]["slices"])
    return build_report(
        metrics,
        sources,
        reference,
        latent_diffusion_summary,
        grid_samples=options.grid_samples,
        training_reports=training_reports,
        inpainting_summary=inpainting_summary,
        pictures=pipeline_figures(figures, options.figures_per_source),
    )

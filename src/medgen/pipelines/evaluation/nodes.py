"""``evaluation`` nodes: thin calls into :mod:`medgen.evaluation`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from medgen.datasets import TensorBundle
from medgen.evaluation import (
    build_report,
    collect_sources,
    evaluate_sources,
    log_to_mlflow,
    select_reference,
    train_feature_network,
)

Partitions = Mapping[str, Callable[[], TensorBundle]] | None


def train_in_domain_feature_network(slices: TensorBundle, params: dict[str, Any]) -> TensorBundle:
    """Train the offline in-domain FID encoder on the real training slices."""
    return train_feature_network(slices, params["in_domain_backbone"], seed=int(params.get("seed", 0)))


def evaluate_generated_sources(
    samples: Partitions,
    reference: TensorBundle,
    train: TensorBundle,
    feature_network: TensorBundle,
    latent_diffusion_summary: Mapping[str, Any] | None,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Score every generated source present and log the numbers to MLflow."""
    # latent_diffusion_summary is not used here: it is an input only so that Kedro runs
    # this node after latent_diffusion in `kedro run` (see pipeline.py).
    metrics = evaluate_sources(samples, reference, train, feature_network, params)
    log_to_mlflow(metrics)
    return metrics


def build_evaluation_report(
    metrics: dict[str, Any],
    samples: Partitions,
    reference: TensorBundle,
    latent_diffusion_summary: Mapping[str, Any] | None,
    params: dict[str, Any],
    training_reports: Partitions = None,
) -> str:
    """The self-contained report.html."""
    sources, _ = collect_sources(samples, [])
    reference = select_reference(reference, params.get("reference_slices", "all"))
    grid = int(params.get("report", {}).get("grid_samples", 8))
    return build_report(
        metrics, sources, reference, latent_diffusion_summary, grid_samples=grid, training_reports=training_reports
    )

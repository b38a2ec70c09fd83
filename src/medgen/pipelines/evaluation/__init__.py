"""The `evaluation` pipeline: honest metrics for every generated source, and report.html."""

from medgen.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]

"""The `evaluation` pipeline (not built yet: empty, so `kedro run` skips it)."""

from medgen.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]

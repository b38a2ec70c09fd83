"""``data_processing``: the embedded cohort, validation, preprocessing, splits, model inputs."""

from medgen.pipelines.data_processing.pipeline import create_pipeline

__all__ = ["create_pipeline"]

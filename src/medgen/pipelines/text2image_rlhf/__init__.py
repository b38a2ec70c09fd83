"""The `text2image_rlhf` pipeline (not built yet: empty, so `kedro run` skips it)."""

from medgen.pipelines.text2image_rlhf.pipeline import create_pipeline

__all__ = ["create_pipeline"]

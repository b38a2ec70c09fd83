"""The `inpainting` pipeline (not built yet: empty, so `kedro run` skips it)."""

from medgen.pipelines.inpainting.pipeline import create_pipeline

__all__ = ["create_pipeline"]

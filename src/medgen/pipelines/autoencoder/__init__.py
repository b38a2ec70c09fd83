"""The `autoencoder` pipeline (not built yet: empty, so `kedro run` skips it)."""

from medgen.pipelines.autoencoder.pipeline import create_pipeline

__all__ = ["create_pipeline"]

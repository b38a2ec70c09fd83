"""The `latent_diffusion` pipeline (not built yet: empty, so `kedro run` skips it)."""

from medgen.pipelines.latent_diffusion.pipeline import create_pipeline

__all__ = ["create_pipeline"]

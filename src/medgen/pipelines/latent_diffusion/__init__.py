"""The ``latent_diffusion`` pipeline: a mask model and a mask-conditioned image model, then
generation with the chain (2D, pixel space). See docs/latent_diffusion.md."""

from medgen.pipelines.latent_diffusion.pipeline import create_pipeline

__all__ = ["create_pipeline"]

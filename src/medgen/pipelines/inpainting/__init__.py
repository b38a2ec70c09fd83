"""The `inpainting` pipeline: healthy tissue filled into masked regions of 3D T1 volumes."""

from medgen.pipelines.inpainting.pipeline import create_pipeline

__all__ = ["create_pipeline"]

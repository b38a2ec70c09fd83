"""The `text2image_rlhf` pipeline: text + modality → image (part 1: offline generator)."""

from medgen.pipelines.text2image_rlhf.pipeline import create_pipeline

__all__ = ["create_pipeline"]

"""Project pipelines: the six medgen pipelines, and ``__default__`` running them in order."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

PIPELINE_ORDER = (
    "data_processing",
    "autoencoder",
    "latent_diffusion",
    "inpainting",
    "text2image_rlhf",
    "evaluation",
)


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline; those not built yet are empty.

    Kedro 1.x loads only the pipelines a command asks for (``--pipeline NAME``), so the
    registry returns whatever was found; ``__default__`` is the sum of all six.
    """
    found = find_pipelines(raise_errors=True)
    pipelines = {name: found[name] for name in PIPELINE_ORDER if name in found}
    if all(name in found for name in PIPELINE_ORDER):
        # Kedro orders nodes by their data dependencies, so the sum runs each stage after
        # the stage whose outputs it reads.
        pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    elif "__default__" in found:
        pipelines["__default__"] = found["__default__"]
    return pipelines

"""The pictures of the sources their own pipeline scores, for report.html.

The autoencoder, 3D volumes, inpainting and text2image pipelines draw their outputs beside
real images (reconstructions beside their inputs; generated volumes beside real validation
volumes; input, inpainting, truth, error and per-voxel SD; every stage beside the real
held-out image of each prompt) into their own reporting folders. The report embeds those
figures under each source instead of drawing them a second time. Each arrives from the catalog as a PIL image, a partitioned dataset of them
(name → loader) or None when its pipeline has not run.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping

from PIL import Image

Figure = Image.Image | Callable[[], Image.Image]

# what each source's figures show, under the pictures in the report
CAPTIONS = {
    "autoencoder": "Validation reconstructions of the 2D and 3D autoencoders beside the real "
    "inputs.",
    "latent_diffusion_3d": "Generated volumes (central slices of each plane) beside real "
    "validation volumes, captioned with their class.",
    "inpainting": "Per case, three planes through the mask centre: voided input, inpainting "
    "(mean of K samples, mask outlined), ground truth, absolute error, per-voxel SD.",
    "text2image_rlhf": "Held-out prompts (rows) through every stage (columns, the same noise "
    "per row), and the real held-out image each prompt is the caption of.",
}


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def figure_pngs(
    figures: Figure | Mapping[str, Figure] | None, limit: int
) -> list[tuple[str, bytes]]:
    """``[(name, PNG bytes)]``: one image, or ``limit`` partitions spread evenly over their
    sorted names (the first and the last included: not three masks of one patient)."""
    if figures is None:
        return []
    if isinstance(figures, Image.Image):
        return [("figure", png_bytes(figures))]
    names = sorted(figures)
    if len(names) > limit:
        step = (len(names) - 1) / max(limit - 1, 1)
        names = [names[round(i * step)] for i in range(limit)]
    out = []
    for name in names:
        figure = figures[name]
        out.append((name, png_bytes(figure() if callable(figure) else figure)))
    return out


def pipeline_figures(
    figures_by_source: Mapping[str, Figure | Mapping[str, Figure] | None], limit: int
) -> dict[str, list[tuple[str, bytes]]]:
    """``{source: [(name, PNG bytes)]}`` of the sources whose figures are present."""
    pictures = {name: figure_pngs(figures, limit) for name, figures in figures_by_source.items()}
    return {name: found for name, found in pictures.items() if found}


__all__ = ["CAPTIONS", "figure_pngs", "pipeline_figures", "png_bytes"]

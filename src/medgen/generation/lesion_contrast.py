"""Does the image model put a lesion where the mask is? A contrast check that works at 32².

For each image with a lesion mask, the *lesion contrast* is the mean intensity inside the
mask minus the mean over a ring of brain pixels around it (``ring_px`` pixels wide).
Comparing three numbers answers the question without a trained segmenter:

* generated images with their own masks (what the model was asked for),
* the same images with the masks of *other* samples (control: the contrast any region of
  a generated slice has by chance),
* real slices with their masks (what the model should reach).

A model that ignores its condition gives the same value with its own and with shuffled
masks.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

BRAIN_THRESHOLD = -0.8  # medgen intensities are [-1, 1] with background at -1


def lesion_contrasts(
    images: torch.Tensor, masks: torch.Tensor, ring_px: int = 2, channel: int = 0
) -> np.ndarray:
    """Per image with at least 2 mask pixels and 2 ring pixels: mean(in mask) − mean(ring)."""
    if images.shape[0] != masks.shape[0] or images.shape[2:] != masks.shape[2:]:
        raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} disagree")
    values = []
    for image, mask in zip(
        images[:, channel].float().numpy(), masks[:, 0].numpy() > 0, strict=True
    ):
        ring = ndimage.binary_dilation(mask, iterations=ring_px) & ~mask & (image > BRAIN_THRESHOLD)
        if mask.sum() >= 2 and ring.sum() >= 2:
            values.append(float(image[mask].mean() - image[ring].mean()))
    return np.asarray(values, dtype=np.float64)


def _summary(values: np.ndarray) -> dict[str, float | int | None]:
    if len(values) == 0:
        return {"n": 0, "mean": None, "median": None}
    return {
        "n": len(values),
        "mean": round(float(values.mean()), 4),
        "median": round(float(np.median(values)), 4),
    }


def lesion_contrast_report(
    generated: torch.Tensor,
    generated_masks: torch.Tensor,
    real: torch.Tensor,
    real_masks: torch.Tensor,
    ring_px: int = 2,
) -> dict[str, object]:
    """The three contrasts of the module docstring, for the first image channel."""
    shuffled = torch.roll(generated_masks, shifts=1, dims=0)  # every image gets another's mask
    return {
        "definition": f"mean intensity in the lesion mask minus a {ring_px}-pixel ring of brain "
        "around it, first image channel, [-1, 1] units",
        "generated_own_masks": _summary(lesion_contrasts(generated, generated_masks, ring_px)),
        "generated_shuffled_masks": _summary(lesion_contrasts(generated, shuffled, ring_px)),
        "real": _summary(lesion_contrasts(real, real_masks, ring_px)),
    }

"""Model-input slices for 2D diffusion: resizing to the training resolution and selection.

Images and label maps are resized by `medgen.data.resize` (antialiased bilinear; labels
nearest-exact). ``pixel_spacing_mm`` in the metadata is scaled with the size, so NIfTI files
written from resized slices keep true physical dimensions.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from medgen.data.labels import has_lesion
from medgen.data.resize import resize_images, resize_labels
from medgen.datasets import TensorBundle

LABEL_KEYS = ("seg", "tissue")
SLICE_SELECTIONS = ("all", "with_lesions")


def resize_slices(bundle: TensorBundle, resolution: int) -> TensorBundle:
    """Return ``bundle`` with ``images`` and label maps resized to ``resolution``² pixels."""
    images = bundle["images"]
    height, width = images.shape[-2:]
    if height != width:
        raise ValueError(f"slices must be square, got {height}x{width}")
    if not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"resolution must be an integer >= 4, got {resolution!r}")
    metadata = dict(bundle.metadata)
    if resolution == height:
        return TensorBundle(dict(bundle.tensors), metadata)
    size = (resolution, resolution)
    tensors = dict(bundle.tensors)
    tensors["images"] = resize_images(images, size).clamp(-1.0, 1.0)
    for key in LABEL_KEYS:
        if key in tensors:
            tensors[key] = resize_labels(tensors[key], size)
    metadata["size"] = resolution
    if metadata.get("pixel_spacing_mm") is not None:
        metadata["pixel_spacing_mm"] = float(metadata["pixel_spacing_mm"]) * height / resolution
    return TensorBundle(tensors, metadata)


def select_slices(
    bundle: TensorBundle, selection: str, param: str = "slice selection"
) -> TensorBundle:
    """``all`` slices, or only those ``with_lesions`` (possibly none); ``param`` names the
    setting that chose ``selection``, for the error message."""
    if selection not in SLICE_SELECTIONS:
        raise ValueError(f"{param} must be one of {SLICE_SELECTIONS}, got {selection!r}")
    if selection == "all":
        return bundle
    keep = has_lesion(bundle["seg"])
    tensors = {k: v[keep] for k, v in bundle.tensors.items()}
    return TensorBundle(tensors, {**bundle.metadata, "selection": selection})


def prepare_slices(bundle: TensorBundle, resolution: int, selection: str = "all") -> TensorBundle:
    """Resize then select: the slices one model trains on.

    A mask model trained on every slice would mostly learn to draw empty masks (about two
    thirds of the slices have no lesion): ``with_lesions`` trains it on lesion slices only.
    """
    slices = select_slices(resize_slices(bundle, resolution), selection, "train_slices")
    if selection == "with_lesions" and len(slices) == 0:
        raise ValueError(f"no slice contains a lesion: cannot train on slices {selection!r}")
    return slices


class SliceDataset(Dataset):
    """``{"images", "seg"}`` samples of a bundle, the batch format of the diffusion modes."""

    def __init__(self, bundle: TensorBundle):
        self.images = bundle["images"].float()
        self.seg = bundle["seg"]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"images": self.images[index], "seg": self.seg[index]}

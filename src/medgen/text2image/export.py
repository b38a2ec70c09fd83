"""Axial slices of the slice bundles as 8-bit PNG files, each with a caption of what it shows.

`export_captioned_slices` turns the ``slices_2d_{split}`` bundles into

* PNG partitions for a Kedro ``partitions.PartitionedDataset`` of ``pillow.ImageDataset``
  with ``filename_suffix: .png``: keys ``<split>/<subject>_<modality>_z<slice:03d>``,
  values callables that build the image, which the dataset calls one at a time when it
  saves (``save_lazily``, its default), so no more than one PNG is held in memory;
* the caption table ``captions_2d.csv`` (``CAPTION_2D_COLUMNS``) with ``path`` relative
  to the CSV's folder, ``slices/<key>.png``: the CSV sits next to the ``slices/`` folder.

One row and one PNG per (slice, modality): the modality is part of the prompt, as the
generator conditions on text only. Splits stay the patient split they came from, since
each bundle holds only its split's subjects. Captions come from `slice_captions`, with a
slice's height measured within its subject's slices in the bundle (0 the lowest, 1 the
highest: the bundle keeps the slices with enough brain, the volume's depth is not stored)
and the lobe rule's brain box taken over all of the subject's slices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from medgen.config import config_from_params, require_positive_ints
from medgen.data.resize import resize_images
from medgen.datasets import TensorBundle
from medgen.text2image.slice_captions import (
    MIN_AREA_MM2,
    TUMOUR_LABELS,
    brain_box,
    describe_slice,
    slice_caption,
)

CAPTION_2D_COLUMNS = [
    "path",
    "text",
    "modality",
    "split",
    "subject",
    "slice_index",
    "n_metastases",
    "side",
    "lobe",
    "largest_mm",
]
PNG_FOLDER = "slices"


@dataclass(frozen=True)
class ExportConfig:
    """Which slices and channels become captioned PNGs (``params:`` block of the export node).

    ``every_nth_slice`` keeps every n-th of a subject's slices counted from its lowest one;
    ``max_slices_per_subject`` then keeps that many, evenly spread from bottom to top;
    ``size`` resizes the PNGs (antialiased bilinear; None: the bundle's size) while the
    captions are measured on the bundle's own label maps. ``lesion_labels`` and
    ``min_lesion_area_mm2`` define a visible metastasis (see `slice_captions`).
    """

    modalities: tuple[str, ...] = ("t1_gd", "flair")
    every_nth_slice: int = 2
    size: int | None = None
    max_slices_per_subject: int | None = None
    lesion_labels: tuple[int, ...] = TUMOUR_LABELS
    min_lesion_area_mm2: float = MIN_AREA_MM2

    def __post_init__(self) -> None:
        section = "text2image_export"
        require_positive_ints(self, section, "every_nth_slice")
        for key in ("size", "max_slices_per_subject"):
            if getattr(self, key) is not None:
                require_positive_ints(self, section, key)
        if not self.modalities:
            raise ValueError(f"{section}.modalities must name at least one modality")
        if self.min_lesion_area_mm2 < 0:
            raise ValueError(
                f"{section}.min_lesion_area_mm2 must be >= 0, got {self.min_lesion_area_mm2}"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> ExportConfig:
        return config_from_params(cls, params, "text2image_export")


def to_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """[-1, 1] intensities as 8-bit grey values: round((x + 1) * 127.5), clipped to 0..255."""
    values = np.asarray(image, dtype=np.float32)
    return np.clip(np.rint((values + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _png(images: torch.Tensor, item: int, channel: int, size: int | None) -> Image.Image:
    plane = images[item : item + 1, channel : channel + 1]
    if size is not None:
        plane = resize_images(plane, (size, size))
    return Image.fromarray(to_uint8(plane[0, 0].numpy()))


def select_slices(
    subject_index: np.ndarray, slice_index: np.ndarray, config: ExportConfig
) -> np.ndarray:
    """Bundle items to export, subject by subject and from the lowest slice up."""
    chosen = []
    for subject in np.unique(subject_index):
        items = np.flatnonzero(subject_index == subject)
        items = items[np.argsort(slice_index[items], kind="stable")][:: config.every_nth_slice]
        limit = config.max_slices_per_subject
        if limit is not None and items.size > limit:
            items = items[np.unique(np.linspace(0, items.size - 1, limit).round().astype(int))]
        chosen.append(items)
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def _brain_masks(bundle: TensorBundle) -> np.ndarray:
    """[N, H, W] brain masks: the tissue map where there is one, else the first channel
    above background (the rule of `medgen.data.slicing.brain_mask`)."""
    if "tissue" in bundle.tensors:
        return bundle["tissue"][:, 0].numpy() > 0
    return bundle["images"][:, 0].numpy() > -0.9


def _check_bundle(split: str, bundle: TensorBundle, config: ExportConfig) -> list[str]:
    available = list(bundle.metadata.get("modalities", []))
    missing = [m for m in config.modalities if m not in available]
    if missing:
        raise ValueError(
            f"slices_2d_{split} has no modality {missing} for the caption export "
            f"(it holds {available}); change text2image_export.modalities"
        )
    if len(bundle) and "seg" not in bundle.tensors:
        raise ValueError(f"slices_2d_{split} has no 'seg' label map: captions need the lesions")
    if len(bundle) and not bundle.metadata.get("pixel_spacing_mm"):
        raise ValueError(f"slices_2d_{split} metadata lacks 'pixel_spacing_mm'")
    subjects = list(bundle.metadata.get("subjects", []))
    bad = [s for s in subjects if "/" in s or "\\" in s or s.startswith(".")]
    if bad:
        raise ValueError(f"slices_2d_{split}: subject ids {bad} cannot name files")
    return subjects


def export_captioned_slices(
    bundles: Mapping[str, TensorBundle], config: ExportConfig
) -> tuple[dict[str, Callable[[], Image.Image]], pd.DataFrame]:
    """PNG partitions and the caption table of the chosen slices of every split's bundle."""
    partitions: dict[str, Callable[[], Image.Image]] = {}
    rows = []
    for split, bundle in bundles.items():
        subjects = _check_bundle(split, bundle, config)
        if len(bundle) == 0:
            continue
        spacing = float(bundle.metadata["pixel_spacing_mm"])
        channels = [bundle.metadata["modalities"].index(m) for m in config.modalities]
        subject_index = bundle["subject_index"].numpy()
        slice_index = bundle["slice_index"].numpy()
        seg, brain = bundle["seg"][:, 0].numpy(), _brain_masks(bundle)
        # per subject: in-plane brain box and axial range, over all of its slices
        extent = {}
        for subject in np.unique(subject_index):
            items = subject_index == subject
            extent[subject] = (
                brain_box(brain[items]),
                slice_index[items].min(),
                slice_index[items].max(),
            )
        for item in select_slices(subject_index, slice_index, config):
            box, lowest, highest = extent[subject_index[item]]
            z = int(slice_index[item])
            position = float((z - lowest) / (highest - lowest)) if highest > lowest else None
            description = describe_slice(
                seg[item],
                brain[item],
                spacing,
                position,
                box=box,
                lesion_labels=config.lesion_labels,
                min_area_mm2=config.min_lesion_area_mm2,
            )
            subject = subjects[int(subject_index[item])]
            for modality, channel in zip(config.modalities, channels, strict=True):
                key = f"{split}/{subject}_{modality}_z{z:03d}"
                partitions[key] = partial(_png, bundle["images"], int(item), channel, config.size)
                rows.append(
                    {
                        "path": f"{PNG_FOLDER}/{key}.png",
                        "text": slice_caption(modality, description),
                        "modality": modality,
                        "split": split,
                        "subject": subject,
                        "slice_index": z,
                        **description,
                    }
                )
    return partitions, pd.DataFrame(rows, columns=CAPTION_2D_COLUMNS)

"""What one axial slice shows, as numbers (`describe_slice`) and as a prompt (`slice_caption`).

A text-to-image generator conditions on text only, so the prompt of a 2D slice must state
what *that slice* shows, not what the whole volume holds: "Brain MRI, FLAIR: 2 metastases;
largest 14 mm in the left frontal lobe". The rules, all documented here:

* **Metastasis** = a 2D connected component (8-connectivity) of the tumour labels, by
  default necrotic core (1) and enhancing rim (3) as in BraTS-METS, without the oedema
  (2). That is the definition the volume captions use (`medgen.data.lesions`), so a slice
  through a lesion's centre states about the volume caption's diameter; oedema would also
  merge neighbouring lesions and name a metastasis in slices that only cut its oedema.
  Components smaller than ``MIN_AREA_MM2`` (20 mm², the area of a 5 mm disc: 3 pixels
  at the cohort's 3 mm slices) are ignored: they are the caps of a lesion or resampling
  debris, not something a reader would call a visible metastasis.
* **Size** = the largest component's Feret (maximum caliper) diameter in mm: the largest
  distance between two of its pixel centres plus one pixel, times the pixel spacing. A run
  of n pixels measures n pixels, the convention of the volume captions' extent; a 3 x 5
  pixel rectangle measures sqrt(2² + 4²) + 1 pixels. Like any pixel count it reads a
  round lesion about one pixel too large (skimage's ``feret_diameter_max`` agrees within
  0.3 pixel); the equivalent-circle diameter would understate elongated lesions instead.
  "Largest" is the component with the largest diameter, ties broken by area.
* **Side**: slices are in neurological view (`medgen.data.slicing.axial_plane`: columns
  run from the subject's left to right, RAS +x), so a component whose centroid lies left
  of the brain's midline column (the centre of the brain mask's column extent) is on the
  subject's *left*.
* **Lobe** (approximate, not an atlas): the centroid's position within the brain's
  bounding box (rows anterior->posterior, columns from the midline) and the slice's
  relative height are mapped linearly onto the MNI152 brain box and named with the same
  bounding-box rules as the volume captions (`medgen.data.anatomy.approximate_lobe`:
  frontal, parietal, temporal, occipital, cerebellum). Without a slice height the lobe is
  unknown and the prompt names the hemisphere only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from medgen.data.anatomy import approximate_lobe, hemisphere
from medgen.data.labels import ENHANCING, NECROTIC

# Short modality words for prompts (the volume captions' MODALITY_NAMES are sentence-style).
SHORT_MODALITY_NAMES = {
    "t1_pre": "T1 pre-contrast",
    "t1_gd": "T1 post-gadolinium",
    "flair": "FLAIR",
    "bravo": "BRAVO",
}
TUMOUR_LABELS = (NECROTIC, ENHANCING)
MIN_AREA_MM2 = 20.0
DESCRIPTION_KEYS = ("n_metastases", "side", "lobe", "largest_mm")

# The nilearn MNI152 2009 brain mask spans x -72..72, y -106 (posterior)..72 (anterior) mm.
_MNI_HALF_WIDTH_MM = 72.0
_MNI_ANTERIOR_MM, _MNI_POSTERIOR_MM = 72.0, -106.0
# MNI z of the lowest and highest axial slice with >= 15 % brain (slices.min_brain_fraction)
# in the embedded cohort: slice_position 0 and 1 when measured over a subject's slices.
_MNI_INFERIOR_MM, _MNI_SUPERIOR_MM = -50.0, 70.0

BrainBox = tuple[int, int, int, int]  # first row, last row, first column, last column


def brain_box(brain: np.ndarray) -> BrainBox | None:
    """Inclusive row and column extent of a mask [H, W] or a stack of masks [..., H, W]."""
    mask = np.asarray(brain, dtype=bool).reshape(-1, *np.shape(brain)[-2:]).any(axis=0)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def feret_diameter_px(component: np.ndarray) -> float:
    """Feret diameter of the True pixels of ``component`` in pixels: the largest distance
    between two pixel centres plus one pixel, so a run of n pixels measures n."""
    component = np.asarray(component, dtype=bool)
    edge = component & ~ndimage.binary_erosion(component)  # the farthest pair lies on it
    pixels = np.argwhere(edge).astype(float)
    gaps = pixels[:, None, :] - pixels[None, :, :]
    return float(np.sqrt((gaps**2).sum(-1)).max()) + 1.0


def _components(seg: np.ndarray, labels: Sequence[int], min_pixels: float) -> list[np.ndarray]:
    tumour = np.isin(seg, labels)
    labelled, count = ndimage.label(tumour, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(labelled.ravel(), minlength=count + 1)
    return [labelled == k for k in range(1, count + 1) if areas[k] >= min_pixels]


def describe_slice(
    seg: np.ndarray,
    brain: np.ndarray,
    pixel_spacing_mm: float,
    slice_position: float | None = None,
    *,
    box: BrainBox | None = None,
    lesion_labels: Sequence[int] = TUMOUR_LABELS,
    min_area_mm2: float = MIN_AREA_MM2,
) -> dict[str, Any]:
    """Count, side, approximate lobe and Feret diameter (mm) of the metastases in one slice.

    Args:
        seg: lesion label map [H, W] in neurological view (rows anterior->posterior,
            columns the subject's left->right), as `axial_plane` makes it.
        brain: brain mask [H, W] (a tissue map > 0 will do); its column extent gives the
            midline.
        pixel_spacing_mm: in-plane size of one pixel.
        slice_position: relative axial height, 0 the lowest and 1 the highest brain slice;
            None leaves the lobe unknown.
        box: the brain's in-plane extent for the lobe rule, best the subject's whole brain
            (`brain_box` of all its slices); default: this slice's brain mask.
        lesion_labels: seg values that make up a metastasis (default core + rim).
        min_area_mm2: smaller components are not counted.

    Returns ``{n_metastases, side, lobe, largest_mm}``; the last three are None without a
    counted metastasis (``lobe`` also without ``slice_position``).
    """
    seg, brain = np.asarray(seg), np.asarray(brain) > 0
    if seg.ndim != 2 or seg.shape != brain.shape:
        raise ValueError(
            f"describe_slice expects seg and brain of the same 2D shape, got {seg.shape} and "
            f"{brain.shape}"
        )
    if pixel_spacing_mm <= 0:
        raise ValueError(f"pixel_spacing_mm must be > 0, got {pixel_spacing_mm}")
    components = _components(seg, lesion_labels, min_area_mm2 / pixel_spacing_mm**2)
    if not components:
        return {"n_metastases": 0, "side": None, "lobe": None, "largest_mm": None}
    largest = max(components, key=lambda c: (feret_diameter_px(c), int(c.sum())))
    row, col = np.argwhere(largest).mean(axis=0)

    own_box = brain_box(brain)
    width = brain.shape[1]
    midline = (own_box[2] + own_box[3]) / 2 if own_box else (width - 1) / 2
    box = box or own_box or (0, brain.shape[0] - 1, 0, width - 1)
    return {
        "n_metastases": len(components),
        "side": hemisphere(float(col - midline)),  # +column = subject's right, as RAS +x
        "lobe": None
        if slice_position is None
        else _approximate_lobe(row, col - midline, float(slice_position), box),
        "largest_mm": round(feret_diameter_px(largest) * pixel_spacing_mm, 1),
    }


def _approximate_lobe(row: float, offset: float, position: float, box: BrainBox) -> str:
    """The lobe rule of the volume captions at the MNI point this relative position maps to."""
    first_row, last_row, first_col, last_col = box
    anterior_posterior = (row - first_row) / max(last_row - first_row, 1)
    half_width = max((last_col - first_col) / 2, 1.0)
    x_mm = offset / half_width * _MNI_HALF_WIDTH_MM
    y_mm = _MNI_ANTERIOR_MM + anterior_posterior * (_MNI_POSTERIOR_MM - _MNI_ANTERIOR_MM)
    z_mm = _MNI_INFERIOR_MM + np.clip(position, 0.0, 1.0) * (_MNI_SUPERIOR_MM - _MNI_INFERIOR_MM)
    return approximate_lobe(float(x_mm), float(y_mm), float(z_mm))


def slice_caption(modality: str, description: dict[str, Any]) -> str:
    """The prompt of one slice: "Brain MRI, <modality>: <what the slice shows>"."""
    name = SHORT_MODALITY_NAMES.get(modality, modality)
    count = description["n_metastases"]
    if not count:
        return f"Brain MRI, {name}: without visible metastases"
    side, lobe = description["side"], description["lobe"]
    if lobe is None:
        location = f"the {side} hemisphere"
    elif lobe == "cerebellum":
        location = f"the {side} cerebellum"
    else:
        location = f"the {side} {lobe} lobe"
    size = f"{description['largest_mm']:.0f} mm"
    if count == 1:
        return f"Brain MRI, {name}: 1 metastasis of {size} in {location}"
    return f"Brain MRI, {name}: {count} metastases; largest {size} in {location}"

"""Classical fills for 3D inpainting: the trivial and classical rows every learned method is
shown beside (docs/DESIGN "Honest evaluation").

Every fill is ``fill(voided, mask, brain) -> filled`` on one case:

* ``voided``: float [D, H, W] in [-1, 1], the T1 with the mask voxels set to -1;
* ``mask``: bool [D, H, W], the voxels to fill;
* ``brain``: bool [D, H, W], the brain voxels.

Known voxels (outside ``mask``) come back bit-exact; every mask voxel gets a value. The
*known brain voxels* a fill may learn from are ``brain & ~mask``.

==================  ==========================================================================
name                fill of the mask voxels
==================  ==========================================================================
``zero_fill``       the scanner's zero, i.e. background: -1 in the [-1, 1] convention (what the
                    voided T1 already holds; the floor any method must beat)
``mean_fill``       the mean of all known brain voxels (one number per case)
``local_mean_fill`` the mean of the known brain voxels within `SHELL_WIDTH` voxels (Euclidean)
                    of the mask, a shell that follows the local tissue (falls back to
                    ``mean_fill`` when the shell holds no brain voxel)
``nearest_fill``    the value of the nearest known brain voxel (Euclidean; scipy's exact EDT)
``biharmonic``      the biharmonic interpolant (Damelin & Hoang 2018) of all known voxels,
                    ``skimage.restoration.inpaint_biharmonic`` in 3D on the mask's bounding box
                    plus `BIHARMONIC_MARGIN` voxels
==================  ==========================================================================

`fill_cases` applies one fill to every case of a "cases" `TensorBundle`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from skimage.restoration import inpaint_biharmonic

from medgen.datasets import TensorBundle

Fill = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

#: Background intensity in the [-1, 1] image convention (the scanner's zero).
BACKGROUND = -1.0
#: Width in voxels of the shell around the mask that ``local_mean_fill`` averages.
SHELL_WIDTH = 3.0
#: Voxels added on each side of the mask's bounding box for ``biharmonic``. The discrete
#: bi-Laplacian couples voxels up to 2 apart, so with a margin >= 2 (and the box inside the
#: volume) the box holds every equation of the full-volume solve: the same linear system,
#: only smaller to set up. One difference is kept on purpose: skimage clips the result to the
#: range of the known voxels it sees, here those of the box (the local range, not the
#: volume's).
BIHARMONIC_MARGIN = 2


def zero_fill(voided: np.ndarray, mask: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Mask voxels set to `BACKGROUND` (-1: the scanner's zero in [-1, 1])."""
    out = _checked_copy(voided, mask, brain)
    out[mask] = BACKGROUND
    return out


def mean_fill(voided: np.ndarray, mask: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Mask voxels set to the mean of all known brain voxels (computed in float64)."""
    out = _checked_copy(voided, mask, brain)
    if mask.any():
        out[mask] = voided[_known_brain(mask, brain)].mean(dtype=np.float64)
    return out


def local_mean_fill(voided: np.ndarray, mask: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Mask voxels set to the mean of the known brain voxels within `SHELL_WIDTH` voxels of
    the mask (``mean_fill``'s whole-brain mean when that shell is empty)."""
    out = _checked_copy(voided, mask, brain)
    if not mask.any():
        return out
    known = _known_brain(mask, brain)
    shell = (ndimage.distance_transform_edt(~mask) <= SHELL_WIDTH) & known
    out[mask] = voided[shell if shell.any() else known].mean(dtype=np.float64)
    return out


def nearest_fill(voided: np.ndarray, mask: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Each mask voxel takes the value of its nearest known brain voxel (Euclidean distance in
    voxels; among equally near ones, the one scipy's EDT picks)."""
    out = _checked_copy(voided, mask, brain)
    if not mask.any():
        return out
    known = _known_brain(mask, brain)
    # The EDT measures the distance to the nearest zero: the known brain voxels are the zeros.
    nearest = ndimage.distance_transform_edt(~known, return_distances=False, return_indices=True)
    out[mask] = voided[tuple(axis[mask] for axis in nearest)]
    return out


def biharmonic(voided: np.ndarray, mask: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Mask voxels solved from the discrete biharmonic equation with all known voxels
    (brain and background) as boundary values, on the mask's bounding box plus
    `BIHARMONIC_MARGIN` voxels, in float64; ``brain`` is not used."""
    out = _checked_copy(voided, mask, brain)
    if not mask.any():
        return out
    box = _bounding_box(mask, BIHARMONIC_MARGIN)
    if mask[box].all():
        raise ValueError("biharmonic fill: the mask covers its whole box, no known voxel to use")
    solved = inpaint_biharmonic(voided[box].astype(np.float64), mask[box], channel_axis=None)
    region = out[box]  # a view: writes go into out
    region[mask[box]] = solved[mask[box]]
    return out


CLASSICAL_BASELINES: dict[str, Fill] = {
    "zero_fill": zero_fill,
    "mean_fill": mean_fill,
    "local_mean_fill": local_mean_fill,
    "nearest_fill": nearest_fill,
    "biharmonic": biharmonic,
}


def fill_cases(bundle: TensorBundle, name: str) -> torch.Tensor:
    """The classical baseline ``name`` applied to every case of a cases bundle (tensors
    ``voided`` float [N, 1, D, H, W], ``mask`` and ``brain`` {0, 1} [N, 1, D, H, W]); the filled
    volumes, float32 [N, 1, D, H, W]. Errors name the case (``metadata["case_ids"]``)."""
    if name not in CLASSICAL_BASELINES:
        raise KeyError(f"unknown classical baseline {name!r}; known: {sorted(CLASSICAL_BASELINES)}")
    fill = CLASSICAL_BASELINES[name]
    for key in ("voided", "mask", "brain"):
        if key not in bundle.tensors:
            raise KeyError(f"cases bundle needs tensor {key!r}; it has {sorted(bundle.tensors)}")
    voided, mask, brain = bundle["voided"], bundle["mask"], bundle["brain"]
    if voided.ndim != 5 or voided.shape[1] != 1:
        raise ValueError(
            f"cases bundle: 'voided' must be [N, 1, D, H, W], got {tuple(voided.shape)}"
        )
    case_ids = bundle.metadata.get("case_ids") or [f"#{i}" for i in range(voided.shape[0])]
    filled = []
    for i in range(voided.shape[0]):
        try:
            filled.append(
                fill(
                    voided[i, 0].numpy().astype(np.float32),
                    mask[i, 0].numpy() > 0,
                    brain[i, 0].numpy() > 0,
                )
            )
        except ValueError as exc:
            raise ValueError(f"{name}, case {case_ids[i]}: {exc}") from exc
    return torch.from_numpy(np.stack(filled)[:, None]).float()


def _checked_copy(voided: np.ndarray, mask: np.ndarray, brain: np.ndarray) -> np.ndarray:
    if voided.ndim != 3 or mask.shape != voided.shape or brain.shape != voided.shape:
        raise ValueError(
            f"voided, mask and brain must be equal [D, H, W] volumes, got {voided.shape}, "
            f"{mask.shape}, {brain.shape}"
        )
    if mask.dtype != np.bool_ or brain.dtype != np.bool_:
        raise ValueError(f"mask and brain must be bool arrays, got {mask.dtype}, {brain.dtype}")
    return voided.copy()


def _known_brain(mask: np.ndarray, brain: np.ndarray) -> np.ndarray:
    known = brain & ~mask
    if not known.any():
        raise ValueError("no known brain voxel outside the mask to fill from")
    return known


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The slices of ``mask``'s bounding box grown by ``margin`` voxels (inside the volume)."""
    box = []
    for axis, size in enumerate(mask.shape):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, size)))
    return tuple(box)

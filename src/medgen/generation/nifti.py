"""2D slices as NIfTI files with a physically meaningful affine.

A generated slice is stored as a one-slice 3D NIfTI image. The medgen slice convention
(``docs/data.md``) is axial, rows running anterior→posterior and columns left→right, so
in RAS+ world coordinates a step along a column index moves +x (towards the patient's
right) and a step along a row index moves -y (posterior). The voxel array is stored as
``[column, row, 1]`` (the transpose of the image), which makes the affine diagonal,
``diag(s, -s, s)``, with the slice centre at the world origin: axis codes ``R P S``.
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch


def slice_affine(pixel_spacing_mm: float, height: int, width: int) -> np.ndarray:
    """Voxel ``(column, row, 0)`` → RAS mm for a ``height`` x ``width`` slice of square pixels."""
    if not pixel_spacing_mm or pixel_spacing_mm <= 0:
        raise ValueError(f"pixel_spacing_mm must be > 0, got {pixel_spacing_mm!r}")
    s = float(pixel_spacing_mm)
    affine = np.diag([s, -s, s, 1.0])
    # centre of the slice at (0, 0, 0): there is no scanner position for a synthetic slice
    affine[:3, 3] = [-(width - 1) / 2 * s, (height - 1) / 2 * s, 0.0]
    return affine


def slice_to_nifti(
    image: torch.Tensor | np.ndarray, pixel_spacing_mm: float, description: str = ""
) -> nib.Nifti1Image:
    """A ``[H, W]`` (or ``[1, H, W]``) slice as a ``[W, H, 1]`` NIfTI-1 image in mm.

    float tensors are stored as float32 (medgen intensities in [-1, 1]); integer tensors
    (masks, labels) as uint8.
    """
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected one 2D slice [H, W], got shape {array.shape}")
    height, width = array.shape
    return _aligned_nifti(
        array.T[:, :, None], slice_affine(pixel_spacing_mm, height, width), description
    )


def volume_affine(voxel_spacing_mm: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Voxel ``(i, j, k)`` → RAS mm for a volume stored in RAS voxel order, centred at 0."""
    spacing = [float(s) for s in voxel_spacing_mm]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"voxel_spacing_mm must be three values > 0, got {voxel_spacing_mm!r}")
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing, strict=True)]
    return affine


def volume_to_nifti(
    volume: torch.Tensor | np.ndarray, voxel_spacing_mm: Sequence[float], description: str = ""
) -> nib.Nifti1Image:
    """A ``[X, Y, Z]`` volume in RAS voxel order (medgen's volume convention) as NIfTI-1."""
    array = (
        volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    )
    if array.ndim != 3:
        raise ValueError(f"expected one volume [X, Y, Z], got shape {array.shape}")
    return _aligned_nifti(array, volume_affine(voxel_spacing_mm, array.shape), description)


def _aligned_nifti(array: np.ndarray, affine: np.ndarray, description: str) -> nib.Nifti1Image:
    dtype = np.float32 if np.issubdtype(array.dtype, np.floating) else np.uint8
    nifti = nib.Nifti1Image(np.ascontiguousarray(array.astype(dtype)), affine)
    nifti.header.set_xyzt_units("mm")
    # code 2 ("aligned"): coordinates are anatomical, not those of a real scanner session
    nifti.set_qform(nifti.affine, code=2)
    nifti.set_sform(nifti.affine, code=2)
    if description:
        nifti.header["descrip"] = description[:79].encode()
    return nifti


def nifti_to_slice(nifti: nib.Nifti1Image) -> np.ndarray:
    """Inverse of `slice_to_nifti`: the ``[H, W]`` slice (rows anterior→posterior)."""
    return np.asarray(nifti.dataobj)[:, :, 0].T

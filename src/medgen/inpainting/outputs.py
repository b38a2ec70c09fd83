"""The inpainting pipeline's files: NIfTI volumes with the input's affine, and figures.

``<case>_inpainted.nii.gz`` (the composited mean of the K samples) and ``<case>_std.nii.gz``
(their per-voxel SD), ``<case>`` being BraTS's ``{patient}_{mask}`` stem, in the intensity units
of the model ([-1, 1]) on the case grid, with the case's affine (RAS, real spacing).
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np
import torch

from medgen.datasets import TensorBundle
from medgen.inpainting.figures import triplanar_figure


def case_nifti(volume: torch.Tensor, affine: Any, description: str) -> nib.Nifti1Image:
    """One ``[1, X, Y, Z]`` volume as float32 NIfTI-1 with ``affine`` (voxel → RAS mm)."""
    image = nib.Nifti1Image(volume.squeeze().float().numpy(), np.asarray(affine, dtype=float))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    image.header["descrip"] = description[:79].encode()
    return image


def inpainted_niftis(
    cases: TensorBundle, samples: TensorBundle, variant: str = "honest"
) -> dict[str, nib.Nifti1Image]:
    """``{<case>_inpainted, <case>_std: NIfTI}`` of one conditioning variant."""
    out = {}
    for i, case_id in enumerate(cases.metadata["case_ids"]):
        affine = cases.metadata["affine"][i]
        out[f"{case_id}_inpainted"] = case_nifti(
            samples[f"{variant}_mean"][i], affine, f"medgen inpainting ({variant}), mean of K"
        )
        out[f"{case_id}_std"] = case_nifti(
            samples[f"{variant}_sd"][i], affine, f"medgen inpainting ({variant}), per-voxel SD"
        )
    return out


def triplanar_figures(
    cases: TensorBundle, samples: TensorBundle, n: int, variant: str = "honest"
) -> dict[str, Any]:
    """Figures of the first ``n`` cases, keyed by case id."""
    out = {}
    for i, case_id in enumerate(cases.metadata["case_ids"][:n]):
        out[case_id] = triplanar_figure(
            cases["voided"][i],
            samples[f"{variant}_mean"][i],
            cases["t1n"][i],
            samples[f"{variant}_sd"][i],
            cases["mask"][i],
            f"{case_id}: diffusion ({variant} conditioning), K={samples.metadata['samples_per_case']}",
        )
    return out

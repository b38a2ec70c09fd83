"""Triplanar figures of inpainted cases: voided | inpainted | ground truth | |difference| | SD.

Each row is one plane (axial, coronal, sagittal) through the centre of the mask, in RAS voxel
order shown radiologically upright (anterior/superior at the top). Images share the [-1, 1]
grey scale; the difference and SD panels have their own colour scale, stated in the title.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from medgen.metrics.images import figure_image, new_figure

PANELS = ("voided", "inpainted", "ground truth", "|difference|", "SD (K samples)")


def _planes(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    x, y, z = centre
    # RAS voxel order [x, y, z]: transpose so rows run top -> bottom (anterior or superior up)
    return [
        np.flipud(volume[:, :, z].T),  # axial: columns left -> right, anterior up
        np.flipud(volume[:, y, :].T),  # coronal: superior up
        np.flipud(volume[x, :, :].T),  # sagittal: superior up
    ]


def triplanar_figure(
    voided: torch.Tensor,
    inpainted: torch.Tensor,
    truth: torch.Tensor,
    sd: torch.Tensor,
    mask: torch.Tensor,
    title: str,
) -> Image.Image:
    """The figure of one case (volumes ``[1, D, H, W]`` or ``[D, H, W]``) as a PIL image."""
    vols = [v.squeeze().float().numpy() for v in (voided, inpainted, truth)]
    diff = np.abs(vols[1] - vols[2])
    sd_np = sd.squeeze().float().numpy()
    m = mask.squeeze().numpy() > 0
    centre = tuple(int(round(c)) for c in np.argwhere(m).mean(axis=0)) if m.any() else None
    centre = centre or tuple(s // 2 for s in m.shape)
    diff_max = max(float(diff.max()), 1e-6)
    sd_max = max(float(sd_np.max()), 1e-6)
    fig = new_figure(figsize=(11, 7))
    axes = fig.subplots(3, 5)
    for column, (name, volume) in enumerate(zip(PANELS, [*vols, diff, sd_np], strict=True)):
        for row, plane in enumerate(_planes(volume, centre)):
            ax = axes[row, column]
            if column < 3:
                ax.imshow(plane, cmap="gray", vmin=-1, vmax=1)
            else:
                ax.imshow(plane, cmap="magma", vmin=0, vmax=diff_max if column == 3 else sd_max)
            mask_plane = _planes(m.astype(float), centre)[row]
            if column in (0, 1):
                ax.contour(mask_plane, levels=[0.5], colors="tab:cyan", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                scale = (
                    f" (0-{diff_max:.2f})"
                    if column == 3
                    else f" (0-{sd_max:.2f})"
                    if column == 4
                    else ""
                )
                ax.set_title(name + scale, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return figure_image(fig, dpi=80, tight=False)

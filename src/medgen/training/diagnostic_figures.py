"""The figures of the training diagnostics: a heatmap and labelled image panels.

Bare matplotlib ``Figure`` objects (Agg when saved; pyplot's backend is never touched), as
`callbacks.save_loss_curve` draws; matplotlib is imported only when a figure is drawn. Images
are medgen's ``[N, C, *spatial]`` tensors in [-1, 1], shown in grey from -1 to 1; the first
channel is shown, and of a volume its middle slice along the last axis. Anything else (latents)
is shown with its own range, so a latent panel says ``(auto range)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

DATA_RANGE = (-1.0, 1.0)


def display_plane(image: torch.Tensor) -> np.ndarray:
    """``[C, *spatial]`` → the 2D array shown: channel 0, a volume's middle last-axis slice."""
    plane = image[0].detach().float().cpu()
    while plane.ndim > 2:
        plane = plane[..., plane.shape[-1] // 2]
    return plane.numpy()


def _in_data_range(images: torch.Tensor) -> bool:
    return bool(images.numel()) and float(images.min()) >= -1.05 and float(images.max()) <= 1.05


def image_rows(
    rows: Sequence[tuple[str, torch.Tensor]],
    titles: Sequence[str] | None = None,
    suptitle: str = "",
    masks: torch.Tensor | None = None,
):
    """One row of panels per ``(label, images [N, C, *spatial])``; ``titles``: one per column;
    ``masks`` ``[N, 1, *spatial]`` drawn as a contour on every panel of its column."""
    from matplotlib.figure import Figure

    columns = max(len(images) for _, images in rows)
    figure = Figure(figsize=(1.6 * columns + 0.8, 1.7 * len(rows) + 0.4))
    axes = np.atleast_2d(figure.subplots(len(rows), columns, squeeze=False))
    for r, (label, images) in enumerate(rows):
        fixed = _in_data_range(images)
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(images):
                ax.set_axis_off()
                continue
            limits = DATA_RANGE if fixed else (None, None)
            ax.imshow(display_plane(images[c]), cmap="gray", vmin=limits[0], vmax=limits[1])
            if masks is not None and c < len(masks):
                plane = display_plane(masks[c])
                if plane.max() > plane.min():
                    ax.contour(plane, levels=[0.5], colors="red", linewidths=0.6)
            if titles is not None and r == 0 and c < len(titles):
                ax.set_title(titles[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(label if fixed else f"{label}\n(auto range)", fontsize=7)
    if suptitle:
        figure.suptitle(suptitle, fontsize=9)
    figure.tight_layout()
    return figure


def heatmap(
    values: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str], title: str
):
    """``values`` [rows, columns] (NaN: no data) as an image with a colour bar."""
    from matplotlib.figure import Figure

    rows, columns = values.shape
    figure = Figure(figsize=(min(2.5 + 0.35 * columns, 16), 1.5 + 0.3 * rows))
    ax = figure.subplots()
    shown = np.ma.masked_invalid(values)
    im = ax.imshow(shown, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(rows), list(row_labels), fontsize=7)
    step = max(1, columns // 12)
    ax.set_xticks(range(0, columns, step), list(column_labels)[::step], fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_title(title, fontsize=9)
    figure.colorbar(im, ax=ax, label="mean training loss")
    figure.tight_layout()
    return figure

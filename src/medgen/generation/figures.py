"""Figures of a training run: loss curve, a sample preview, the LR range test; MLflow upload."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from medgen.data.labels import has_lesion
from medgen.datasets import TensorBundle
from medgen.diffusion import DiffusionTask, lesion_condition
from medgen.generation.grids import sample_grid
from medgen.metrics.images import side_by_side, titled
from medgen.training import LRFinderResult, MlflowCallback, plot_lr_range_test, save_loss_curve


def _render(plot, *args: Any) -> Image.Image:
    """Run a ``plot(..., path)`` function into a temporary PNG and read it back."""
    with tempfile.TemporaryDirectory() as tmp:
        path = plot(*args, Path(tmp) / "figure.png")
        with Image.open(path) as image:
            return image.convert("RGB")


def loss_curve_image(history: Sequence[Mapping[str, Any]]) -> Image.Image:
    return _render(save_loss_curve, history)


def lr_range_test_image(result: LRFinderResult) -> Image.Image:
    return _render(plot_lr_range_test, result)


def real_examples(
    slices: TensorBundle, task: DiffusionTask, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets, masks)`` of ``n`` slices with a lesion, evenly spread over the bundle
    (neighbouring slices of one subject look alike); all slices count if none has a lesion."""
    index = torch.nonzero(has_lesion(slices["seg"])).flatten()
    if index.numel() == 0:
        index = torch.arange(len(slices))
    if index.numel() > n:
        index = index[torch.linspace(0, index.numel() - 1, n).round().long()]
    batch = {"images": slices["images"][index], "seg": slices["seg"][index]}
    masks = (slices["seg"][index] > 0).to(torch.uint8)
    return task.mode.target(batch), masks


@torch.no_grad()
def training_preview(
    task: DiffusionTask, model: nn.Module, slices: TensorBundle, n: int = 8, seed: int = 0
) -> Image.Image:
    """Samples of a trained network next to real slices: masks of real lesion slices are the
    condition of a conditional model, so both panels show the same masks."""
    real, masks = real_examples(slices, task, n)
    generator = torch.Generator().manual_seed(seed)
    spatial = tuple(real.shape[2:])
    if task.mode.conditional:
        generated = task.generate(model, cond=lesion_condition(masks), generator=generator)
        panel = sample_grid(generated.clamp(-1, 1), masks)
        reference = sample_grid(real, masks)
    else:
        generated = task.generate(model, real.shape[0], spatial_shape=spatial, generator=generator)
        panel = sample_grid(None, generated > 0)
        reference = sample_grid(None, masks)
    return side_by_side(titled(panel, "generated (EMA)"), titled(reference, "training slices"))


def log_images_to_mlflow(images: Mapping[str, Image.Image], artifact_path: str) -> bool:
    """Log PIL images as ``<artifact_path>/<name>.png`` to the active run (False: no run)."""
    callback = MlflowCallback(artifact_path=artifact_path)
    logged = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, image in images.items():
            path = Path(tmp) / f"{Path(name).name}.png"
            image.save(path)
            logged = callback.log_artifact(path) or logged
    return logged

"""Conditioning fidelity: does a generated image contain the lesion it was asked for?

A segmentation network trained on *real* images with their masks segments the
generated images; Dice against the masks they were conditioned on measures how
faithfully the generator followed the condition. The same Dice on real held-out
images (with their own masks) is the reference next to it: a generator cannot be
expected to beat the segmenter's accuracy on real data.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from medgen.metrics.images import ArrayLike, as_tensor
from medgen.metrics.results import MetricResult


def dice_score(prediction: ArrayLike, target: ArrayLike) -> torch.Tensor:
    """Per-image binary Dice [N] = 2|P∩T| / (|P| + |T|) over all channels and voxels.

    Images whose target is empty get NaN (undefined), matching MONAI's DiceMetric
    with ``ignore_empty=True``; aggregate with nanmean and report how many were empty.
    """
    p = as_tensor(prediction, ndim=None) > 0.5
    t = as_tensor(target, ndim=None) > 0.5
    if p.shape != t.shape or p.ndim < 3:
        raise ValueError(
            f"prediction and target must be equal [N, C, ...] masks, got {tuple(p.shape)}, "
            f"{tuple(t.shape)}"
        )
    p, t = p.flatten(1).double(), t.flatten(1).double()
    intersection = (p * t).sum(dim=1)
    denominator = p.sum(dim=1) + t.sum(dim=1)
    dice = 2.0 * intersection / denominator.clamp(min=1e-12)
    return torch.where(t.sum(dim=1) > 0, dice, torch.full_like(dice, float("nan")))


def build_segmenter(
    in_channels: int = 1,
    spatial_dims: int = 2,
    channels: tuple[int, ...] = (8, 16, 32),
    strides: tuple[int, ...] = (2, 2),
) -> UNet:
    """A tiny MONAI UNet (default 3 levels, 8-32 channels) with one sigmoid output.

    Batch norm rather than MONAI's default instance norm: with a tiny bottleneck (8x8
    for 32x32 inputs) instance norm erases the absolute intensity that tells a bright
    lesion from bright normal tissue, and training converged far more slowly in our tests.
    """
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=1,
        channels=channels,
        strides=strides,
        num_res_units=1,
        norm="BATCH",
    )


def train_segmenter(
    images: ArrayLike,
    masks: ArrayLike,
    *,
    epochs: int = 20,
    batch_size: int = 16,
    learning_rate: float = 1e-2,
    channels: tuple[int, ...] = (8, 16, 32),
    strides: tuple[int, ...] = (2, 2),
    seed: int = 0,
) -> tuple[UNet, list[float]]:
    """Train the segmenter on real images [N, C, H, W] and binary masks [N, 1, H, W].

    DiceCE loss on sigmoid outputs, Adam; returns the model (eval mode) and the
    per-epoch mean loss.
    """
    x = as_tensor(images, ndim=None)
    y = (as_tensor(masks, ndim=None) > 0.5).float()
    if x.shape[0] != y.shape[0] or y.shape[1] != 1 or x.shape[2:] != y.shape[2:]:
        raise ValueError(
            f"images {tuple(x.shape)} and masks {tuple(y.shape)} do not match (masks need 1 channel)"
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_segmenter(x.shape[1], x.ndim - 2, channels, strides)
    # batch=True: one Dice over the whole batch, so slices without lesions do not make
    # the per-image Dice term undefined-and-noisy (most brain slices have no lesion).
    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    history: list[float] = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for s in range(0, len(x), batch_size):
            idx = order[s : s + batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError("segmenter training produced a non-finite loss")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(x))
    return model.eval(), history


def segment(
    model: torch.nn.Module, images: ArrayLike, *, threshold: float = 0.5, batch_size: int = 64
) -> torch.Tensor:
    """Binary masks [N, 1, ...] (float 0/1) from the segmenter's sigmoid output."""
    x = as_tensor(images, ndim=None)
    model.eval()
    with torch.no_grad():
        probs = torch.cat(
            [torch.sigmoid(model(x[s : s + batch_size])) for s in range(0, len(x), batch_size)]
        )
    return (probs > threshold).float()


def conditioning_fidelity(
    model: torch.nn.Module,
    generated: ArrayLike,
    conditioning_masks: ArrayLike,
    real: ArrayLike,
    real_masks: ArrayLike,
    *,
    segmenter_name: str = "unet-segmenter (trained on the real training split)",
) -> MetricResult:
    """Mean Dice(segment(generated), conditioning masks), with the same Dice on real images
    as ``floor`` (here the reference level the generator is measured against)."""
    gen_dice = dice_score(segment(model, generated), conditioning_masks).numpy()
    real_dice = dice_score(segment(model, real), real_masks).numpy()
    if np.isnan(gen_dice).all() or np.isnan(real_dice).all():
        raise ValueError("every conditioning/real mask is empty: Dice is undefined")
    return MetricResult(
        name="conditioning_dice",
        value=float(np.nanmean(gen_dice)),
        floor=float(np.nanmean(real_dice)),
        backbone=segmenter_name,
        n_real=len(real_dice),
        n_generated=len(gen_dice),
        details={
            "n_generated_empty_masks": int(np.isnan(gen_dice).sum()),
            "n_real_empty_masks": int(np.isnan(real_dice).sum()),
            "floor_meaning": "Dice of the same segmenter on real images with their own masks",
        },
    )

"""The generation chain: lesion masks from a ``seg`` model, then images conditioned on them.

A mask model (unconditional ``seg`` mode) draws N masks; each is thresholded to a binary
mask, turned into the {-1, +1} lesion condition, and a conditional image model (``bravo``,
``dual``, ``t1_pre``, ``t1_gd``) generates the images for those exact masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medgen.data.resize import resize_binary_masks
from medgen.diffusion import DiffusionTask, binarize_mask, lesion_condition


@dataclass
class ChainSamples:
    """Generated masks and the images generated from them (all on CPU)."""

    mask_values: torch.Tensor  # [N, 1, h, w] float, the mask model's output clamped to [-1, 1]
    masks: (
        torch.Tensor
    )  # [N, 1, H, W] uint8 {0, 1}: thresholded (at the images' size), the condition
    images: torch.Tensor  # [N, C, H, W] float in [-1, 1], C = the image mode's targets
    mask_rounds: int  # sampling rounds spent on masks (more than 1 when empty ones were redrawn)


def sampler_settings(task: DiffusionTask, num_steps: int | None) -> tuple[str, int, int]:
    """``(sampler name, solver steps, network evaluations per sample)`` a `generate` call with
    ``num_steps`` (None: the strategy's) will use; the two counts differ for Heun (EDM)."""
    strategy = task.strategy
    steps = strategy.num_solver_steps(num_steps)
    return str(strategy.sampler), steps, strategy.network_evaluations(steps)


def generate_in_batches(
    task: DiffusionTask,
    model: nn.Module,
    n: int,
    *,
    cond: torch.Tensor | None = None,
    spatial_shape: tuple[int, ...],
    batch_size: int,
    generator: torch.Generator,
    **sampling: Any,
) -> torch.Tensor:
    """``task.generate`` in chunks of ``batch_size`` (bounded memory), concatenated on CPU."""
    chunks = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        chunk_cond = None if cond is None else cond[start : start + count]
        out = task.generate(
            model,
            count if chunk_cond is None else None,
            chunk_cond,
            spatial_shape=spatial_shape,
            generator=generator,
            **sampling,
        )
        chunks.append(out.cpu())
    return torch.cat(chunks)


def generate_masks(
    task: DiffusionTask,
    model: nn.Module,
    n: int,
    *,
    spatial_shape: tuple[int, ...],
    batch_size: int,
    seed: int,
    min_lesion_pixels: int = 0,
    max_rounds: int = 1,
    **sampling: Any,
) -> tuple[torch.Tensor, int]:
    """``n`` masks ``[n, 1, *spatial]`` in [-1, 1] from a ``seg`` model.

    With ``min_lesion_pixels > 0``, masks with fewer lesion pixels are redrawn, for at most
    ``max_rounds`` rounds in total (whatever is left after that is kept, so exactly ``n``
    masks come back). Returns the masks and the rounds used.
    """
    if task.mode.conditional:
        raise ValueError(f"the mask model must be unconditional (seg mode), got {task.mode.name!r}")
    generator = torch.Generator().manual_seed(seed)
    draw = lambda count: generate_in_batches(  # noqa: E731
        task,
        model,
        count,
        spatial_shape=spatial_shape,
        batch_size=batch_size,
        generator=generator,
        **sampling,
    ).clamp(-1.0, 1.0)
    masks = draw(n)
    rounds = 1
    while min_lesion_pixels > 0 and rounds < max_rounds:
        too_small = binarize_mask(masks).flatten(1).sum(1) < min_lesion_pixels
        if not too_small.any():
            break
        masks[too_small] = draw(int(too_small.sum()))
        rounds += 1
    return masks, rounds


def generate_chain(
    mask_task: DiffusionTask,
    mask_model: nn.Module,
    image_task: DiffusionTask,
    image_model: nn.Module,
    n: int,
    *,
    spatial_shape: tuple[int, ...],
    image_spatial_shape: tuple[int, ...] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    mask_num_steps: int | None = None,
    image_num_steps: int | None = None,
    guidance_scale: float = 1.0,
    min_lesion_pixels: int = 0,
    max_mask_rounds: int = 1,
) -> ChainSamples:
    """``n`` masks, then one image per mask conditioned on exactly that mask.

    ``*_num_steps`` None: each strategy's default (rflow 30 Euler steps, DDIM 50).
    ``guidance_scale`` applies to the image model (the mask model has no condition).
    ``spatial_shape`` is the masks' size; ``image_spatial_shape`` (default: the same) the
    images', when the image model works at another resolution (e.g. in latent space): the
    binary masks are then resized to it (area average, > 0.5) before conditioning.
    """
    if not image_task.mode.conditional:
        raise ValueError(f"the image model must be conditional, got mode {image_task.mode.name!r}")
    mask_values, rounds = generate_masks(
        mask_task,
        mask_model,
        n,
        spatial_shape=spatial_shape,
        batch_size=batch_size,
        seed=seed,
        min_lesion_pixels=min_lesion_pixels,
        max_rounds=max_mask_rounds,
        num_steps=mask_num_steps,
    )
    image_spatial_shape = tuple(image_spatial_shape or spatial_shape)
    masks = resize_binary_masks(binarize_mask(mask_values), image_spatial_shape).to(torch.uint8)
    images = generate_in_batches(
        image_task,
        image_model,
        n,
        cond=lesion_condition(masks),
        spatial_shape=image_spatial_shape,
        batch_size=batch_size,
        generator=torch.Generator().manual_seed(seed + 1),
        num_steps=image_num_steps,
        guidance_scale=guidance_scale,
    )
    return ChainSamples(mask_values, masks, images.clamp(-1.0, 1.0), rounds)

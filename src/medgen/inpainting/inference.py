"""Inference: K samples per case, composited in image space, their mean and per-voxel SD.

Each case's K samples share the case's known latent and conditioning and differ only in their
noise; the noise of a batch depends only on the seed and the batch's position, so every
conditioning variant sees the same noise (the ablation compares conditionings, not draws). The
mean of the K decoded samples is composited as ``voided·(1−m) + mean·m`` (known voxels stay
bit-exact: compositing after averaging), and the SD of the K composites is the uncertainty map
(zero outside the mask).
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from medgen.datasets import TensorBundle
from medgen.diffusion import DiffusionTask, Resampling
from medgen.inpainting.diffusion_training import case_batch
from medgen.inpainting.unet_baseline import composite


def inpaint_cases(
    task: DiffusionTask,
    model: torch.nn.Module,
    model_input: TensorBundle,
    cases: TensorBundle,
    *,
    variant: str,
    samples_per_case: int,
    num_steps: int,
    resampling: Resampling | None,
    batch_size: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(mean [N,1,*S], sd [N,1,*S], seconds)`` of every case under one conditioning."""
    n = len(cases["t1n"])
    pairs = [(i, k) for i in range(n) for k in range(samples_per_case)]
    decoded = torch.empty((n, samples_per_case, *cases["t1n"].shape[1:]))
    start = time.perf_counter()
    model.eval()
    for b, first in enumerate(
        tqdm(range(0, len(pairs), batch_size), desc=f"inpainting ({variant})", leave=False)
    ):
        chunk = pairs[first : first + batch_size]
        batch = case_batch(model_input, [i for i, _ in chunk], variant)
        generator = torch.Generator().manual_seed(seed * 100_003 + b)
        out = task.inpaint(
            model, batch, num_steps=num_steps, generator=generator, resampling=resampling
        ).cpu()
        for (i, k), volume in zip(chunk, out, strict=True):
            decoded[i, k] = volume.clamp(-1, 1)
    seconds = time.perf_counter() - start
    mask = cases["mask"]
    mean = composite(cases["voided"], decoded.mean(dim=1), mask)
    # the K composites agree outside the mask: their SD is the decoded samples' inside it
    spread = decoded.std(dim=1) if samples_per_case > 1 else torch.zeros_like(mean)
    sd = torch.where(mask > 0, spread, torch.zeros_like(spread))
    return mean, sd, seconds

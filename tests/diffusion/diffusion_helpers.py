"""Helpers for medgen.diffusion tests: tiny networks, a call counter, toy batches."""

from __future__ import annotations

import torch
from torch import nn

from medgen.models import build_diffusion_unet

MODALITIES = ["t1_pre", "t1_gd", "flair", "bravo"]

#: A UNet small enough for CPU tests (two levels, attention only in the middle block).
TINY_UNET = {
    "channels": [8, 16],
    "attention_levels": [False, False],
    "num_res_blocks": 1,
    "num_head_channels": 8,
    "norm_num_groups": 8,
}


class CountingModel(nn.Module):
    """Wraps a model and records every call's input batch size, channels and timesteps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[dict] = []

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.calls.append({"x": x.detach().clone(), "timesteps": timesteps.detach().clone()})
        return self.model(x, timesteps)


def tiny_unet(
    in_channels: int, out_channels: int, spatial_dims: int = 2, seed: int = 0
) -> nn.Module:
    torch.manual_seed(seed)
    return build_diffusion_unet(
        {**TINY_UNET, "spatial_dims": spatial_dims}, in_channels, out_channels
    )


def toy_batch(batch: int = 4, size: int = 16, spatial_dims: int = 2, seed: int = 0) -> dict:
    """Images in [-1, 1] with a bright square 'lesion' wherever seg > 0."""
    g = torch.Generator().manual_seed(seed)
    spatial = (size,) * spatial_dims
    seg = torch.zeros(batch, 1, *spatial, dtype=torch.long)
    for b in range(batch):
        lo = 2 + 2 * b % (size // 2)
        region = (b, 0, *[slice(lo, lo + size // 4)] * spatial_dims)
        seg[region] = 1 + b % 3
    base = torch.rand(batch, len(MODALITIES), *spatial, generator=g) * 0.2 - 0.6
    images = torch.where(seg > 0, base + 1.2, base).clamp(-1, 1)
    return {"images": images, "seg": seg, "tissue": torch.zeros_like(seg)}

"""Generating part of a tensor while the rest is known: the inpainting constraint of the core.

`KnownRegion` holds ``region`` ``[B, 1, *spatial]`` (1 = generate, 0 = known) and the ``known``
values ``[B, C, *spatial]``. Training and sampling apply it the same way, so the network sees in
sampling what it saw in training: the tensor is noisy inside the region and holds the *clean*
known values outside it at every noise level (the starting design of the inpainting pipeline:
"the latent is noisy inside the mask and clean outside"), and the loss counts region voxels only,
so outputs outside the region get no gradient.

`Resampling` is RePaint's resampling schedule (Lugmayr et al. 2022, https://arxiv.org/abs/2201.09865,
Algorithm 1 with jumps): after every ``jump_length`` solver steps the sample is pushed back
``jump_length`` steps along the forward process and those steps are taken again, ``repeats``
times, which lets the generated region harmonise with the known one. It needs the strategy's
:meth:`~medgen.diffusion.base.DiffusionStrategy.marginal`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KnownRegion:
    """``region`` ``[B, 1, *spatial]`` in {0, 1} (1 = generate) and ``known`` ``[B, C, *spatial]``.

    Raises:
        ValueError: if the shapes disagree or the region is not binary.
    """

    region: torch.Tensor
    known: torch.Tensor
    #: the part of the region the loss counts (default None: the whole region)
    loss_region: torch.Tensor | None = None

    def __post_init__(self) -> None:
        r, k = self.region, self.known
        if self.loss_region is not None and self.loss_region.shape != r.shape:
            raise ValueError(
                f"known region: loss_region {tuple(self.loss_region.shape)} must have the region's "
                f"shape {tuple(r.shape)}"
            )
        if (
            r.ndim != k.ndim
            or r.shape[0] != k.shape[0]
            or r.shape[1] != 1
            or r.shape[2:] != k.shape[2:]
        ):
            raise ValueError(
                f"known region: region {tuple(r.shape)} must be [B, 1, *spatial] of known "
                f"{tuple(k.shape)}"
            )
        if not bool(((r == 0) | (r == 1)).all()):
            raise ValueError("known region: region must hold only 0 (known) and 1 (generate)")

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> KnownRegion:
        loss_region = None if self.loss_region is None else self.loss_region.to(device, dtype)
        return KnownRegion(self.region.to(device, dtype), self.known.to(device, dtype), loss_region)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` inside the region, the known values outside it."""
        region = self.region.to(x.dtype)
        return region * x + (1.0 - region) * self.known.to(x.dtype)

    def per_sample_mse(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error over loss-region voxels (all channels) per sample, shape ``[B]``; a
        sample with an empty loss region contributes 0."""
        counted = self.region if self.loss_region is None else self.loss_region
        weight = counted.to(torch.float32).expand_as(pred)
        squared = (pred.float() - target.float()).pow(2) * weight
        return squared.flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1.0)


@dataclass(frozen=True)
class Resampling:
    """RePaint resampling: ``repeats`` extra passes over every ``jump_length`` solver steps
    (default 0: none; ``jump_length`` default 1)."""

    repeats: int = 0
    jump_length: int = 1

    def __post_init__(self) -> None:
        for name in ("repeats", "jump_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"resampling {name} must be an int >= 0, got {value!r}")
        if self.jump_length < 1:
            raise ValueError(f"resampling jump_length must be >= 1, got {self.jump_length}")

    def schedule(self, num_steps: int) -> Iterator[tuple[str, int, int]]:
        """``("step", i, i + 1)``: take solver step ``i``; ``("renoise", i, j)``: push the sample
        at the start time of step ``i`` back to that of step ``j < i``. Never after the last
        step (the sample is finished there)."""
        jumps: dict[int, int] = {}
        i = 0
        while i < num_steps:
            yield ("step", i, i + 1)
            i += 1
            back = min(self.jump_length, i)
            if self.repeats and i < num_steps and i % self.jump_length == 0:
                if jumps.get(i, 0) < self.repeats:
                    jumps[i] = jumps.get(i, 0) + 1
                    yield ("renoise", i, i - back)
                    i -= back

    def network_steps(self, num_steps: int) -> int:
        """Solver steps taken in total under this schedule."""
        return sum(1 for kind, _, _ in self.schedule(num_steps) if kind == "step")

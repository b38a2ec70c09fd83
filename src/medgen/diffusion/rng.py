"""Random draws that honour an optional ``torch.Generator`` on any device.

A generator lives on one device; the draw is made there and moved, so a CPU generator seeds GPU
runs reproducibly too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _device_of(generator: torch.Generator | None, device: torch.device | str) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def randn(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape``."""
    out = torch.randn(
        tuple(shape), generator=generator, device=_device_of(generator, device), dtype=dtype
    )
    return out.to(device)


def rand(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape``."""
    return torch.rand(tuple(shape), generator=generator, device=_device_of(generator, device)).to(
        device
    )


def randint(
    high: int,
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Integers uniform in [0, high)."""
    out = torch.randint(
        0, high, tuple(shape), generator=generator, device=_device_of(generator, device)
    )
    return out.to(device)

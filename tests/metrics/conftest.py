"""Shared fixtures: small seeded synthetic brain-like slices in [-1, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.torch_threads import single_torch_thread  # noqa: F401  (autouse fixture)


def make_slices(
    n: int, size: int = 32, seed: int = 0, lesion: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ellipse "heads" with a brighter "ventricle" and optional disc "lesions"; images and lesion masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) * 2 - 1
    images = np.full((n, 1, size, size), -1.0, dtype=np.float32)
    masks = np.zeros((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        a, b = rng.uniform(0.6, 0.85), rng.uniform(0.7, 0.9)
        head = (xx / a) ** 2 + (yy / b) ** 2 <= 1
        img = np.where(head, rng.uniform(0.0, 0.3), -1.0)
        img += 0.4 * (((xx / 0.2) ** 2 + (yy / 0.35) ** 2) <= 1)
        if lesion and rng.random() < 0.7:
            cx, cy, r = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.12, 0.25)
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
            img = np.where(disc, 0.9, img)
            masks[i, 0] = disc
        img += rng.normal(0, 0.03, img.shape)
        images[i, 0] = np.clip(img, -1, 1)
    return torch.from_numpy(images), torch.from_numpy(masks)


@pytest.fixture(scope="session")
def slices() -> tuple[torch.Tensor, torch.Tensor]:
    return make_slices(96, size=32, seed=0)

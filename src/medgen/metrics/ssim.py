"""SSIM and MS-SSIM through MONAI, with automatic kernel/scale choice for small images.

Images are [N, C, H, W] (or [N, C, D, H, W]) in [-1, 1], so the default
``data_range`` is 2.0. Results name the kernel size and scales used, because
MS-SSIM on 64x64 slices cannot use the textbook 11x11 window at 5 scales.

MONAI's validity rule (``monai.metrics.regression.compute_ms_ssim``) is, per side,
``side // max(1, scales - 1) ** 2 > kernel_size - 1``. Because MONAI convolves
without padding, the coarsest scale (``side // 2 ** (scales - 1)`` pixels) must
also hold a whole window: ``side // 2 ** (scales - 1) >= kernel_size``. MONAI only
checks the first rule, which for 2 scales admits sizes that then fail inside
``conv2d``; we check both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import compute_ms_ssim, compute_ssim_and_cs

from medgen.metrics.floors import one_sample_with_floor, pairwise_indices
from medgen.metrics.images import ArrayLike, as_tensor, as_tensor_pair
from medgen.metrics.results import MetricResult

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003
DEFAULT_DATA_RANGE = 2.0  # images live in [-1, 1]


@dataclass(frozen=True)
class MSSSIMConfig:
    """The MS-SSIM settings actually used, reported next to every value."""

    kernel_size: int
    kernel_sigma: float
    weights: tuple[float, ...]

    @property
    def scales(self) -> int:
        return len(self.weights)

    def describe(self) -> dict:
        return {
            "kernel_size": self.kernel_size,
            "kernel_sigma": self.kernel_sigma,
            "scales": self.scales,
            "weights": list(self.weights),
        }


def ms_ssim_is_valid(spatial_shape: tuple[int, ...], kernel_size: int, scales: int) -> bool:
    """Both MONAI's check and the coarsest-scale window rule (see module docstring)."""
    div = max(1, scales - 1) ** 2
    return all(
        s // div > kernel_size - 1 and s // 2 ** (scales - 1) >= kernel_size for s in spatial_shape
    )


def choose_ms_ssim_config(
    spatial_shape: tuple[int, ...],
    *,
    kernel_size: int = 11,
    min_kernel_size: int = 3,
    kernel_sigma: float = 1.5,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    min_scales: int = 2,
) -> MSSSIMConfig:
    """The largest odd kernel <= ``kernel_size`` that fits all 5 standard scales; if
    even ``min_kernel_size`` does not fit, drop the coarsest scales (weights of the
    remaining scales renormalised to sum to 1) down to ``min_scales``.

    Keeping the 5 published scales takes priority over the kernel size because the
    scale weights are what make MS-SSIM values comparable with the literature
    (e.g. 64x64 -> kernel 3, 5 scales). Raises ValueError if nothing fits.
    """
    for scales in range(len(weights), min_scales - 1, -1):
        for k in range(kernel_size, min_kernel_size - 1, -1):
            if k % 2 == 1 and ms_ssim_is_valid(tuple(spatial_shape), k, scales):
                w = np.asarray(weights[:scales], dtype=np.float64)
                w = tuple(float(v) for v in (w / w.sum() if scales < len(weights) else w))
                return MSSSIMConfig(kernel_size=k, kernel_sigma=kernel_sigma, weights=w)
    raise ValueError(
        f"images of spatial shape {tuple(spatial_shape)} are too small for MS-SSIM with at least "
        f"{min_scales} scales and a kernel of at least {min_kernel_size} (need each side >= "
        f"{min_kernel_size * 2 ** (min_scales - 1)})"
    )


def ssim(
    images_a: ArrayLike,
    images_b: ArrayLike,
    *,
    data_range: float = DEFAULT_DATA_RANGE,
    kernel_size: int = 11,
    kernel_sigma: float = 1.5,
) -> torch.Tensor:
    """Per-image SSIM [N] (MONAI, Gaussian window, valid region only, channel mean).

    The window shrinks to the largest odd size fitting the image if ``kernel_size``
    does not.
    """
    a, b = as_tensor_pair(images_a, images_b)
    dims = a.ndim - 2
    k = min(kernel_size, min(a.shape[2:]))
    k -= 1 - k % 2
    if k < 3:
        raise ValueError(f"images of spatial shape {tuple(a.shape[2:])} are too small for SSIM")
    full, _ = compute_ssim_and_cs(
        a,
        b,
        spatial_dims=dims,
        kernel_size=(k,) * dims,
        kernel_sigma=(kernel_sigma,) * dims,
        data_range=data_range,
    )
    return full.reshape(full.shape[0], -1).mean(dim=1)


def ms_ssim(
    images_a: ArrayLike,
    images_b: ArrayLike,
    *,
    data_range: float = DEFAULT_DATA_RANGE,
    config: MSSSIMConfig | None = None,
    batch_size: int = 256,
) -> tuple[torch.Tensor, MSSSIMConfig]:
    """Per-image MS-SSIM [N] (MONAI) and the config used (chosen automatically if None)."""
    a, b = as_tensor_pair(images_a, images_b)
    dims = a.ndim - 2
    config = config or choose_ms_ssim_config(tuple(a.shape[2:]))
    if not ms_ssim_is_valid(tuple(a.shape[2:]), config.kernel_size, config.scales):
        raise ValueError(
            f"MS-SSIM config {config.describe()} does not fit images of shape {tuple(a.shape[2:])}"
        )
    values = [
        compute_ms_ssim(
            a[s : s + batch_size],
            b[s : s + batch_size],
            spatial_dims=dims,
            data_range=data_range,
            kernel_size=config.kernel_size,
            kernel_sigma=config.kernel_sigma,
            weights=config.weights,
        )
        for s in range(0, len(a), batch_size)
    ]
    return torch.cat(values).flatten(), config


def ms_ssim_quality(
    real: ArrayLike,
    generated: ArrayLike,
    *,
    data_range: float = DEFAULT_DATA_RANGE,
    config: MSSSIMConfig | None = None,
) -> tuple[float, dict]:
    """Mean paired MS-SSIM of (real[k], generated[k]) and the settings used."""
    values, config = ms_ssim(real, generated, data_range=data_range, config=config)
    return float(values.mean()), config.describe()


def ms_ssim_diversity(
    images: ArrayLike,
    *,
    data_range: float = DEFAULT_DATA_RANGE,
    config: MSSSIMConfig | None = None,
    max_pairs: int | None = 2000,
    seed: int = 0,
) -> tuple[float, dict]:
    """Mean MS-SSIM over distinct pairs of one set (lower = more diverse) and the settings used.

    All pairs for small sets, else ``max_pairs`` seeded distinct pairs.
    """
    x = as_tensor(images, ndim=None)
    i, j = pairwise_indices(len(x), max_pairs, seed)
    values, config = ms_ssim(
        x[torch.as_tensor(i)], x[torch.as_tensor(j)], data_range=data_range, config=config
    )
    return float(values.mean()), {**config.describe(), "pairs": len(i)}


def ms_ssim_diversity_with_floor(
    real: ArrayLike,
    generated: ArrayLike,
    *,
    data_range: float = DEFAULT_DATA_RANGE,
    config: MSSSIMConfig | None = None,
    max_pairs: int | None = 2000,
    seed: int = 0,
) -> MetricResult:
    """Generated-set mean pairwise MS-SSIM next to the real set's at the same n."""
    real_t, gen_t = as_tensor(real, ndim=None), as_tensor(generated, ndim=None)
    config = config or choose_ms_ssim_config(tuple(real_t.shape[2:]))
    return one_sample_with_floor(
        lambda images: ms_ssim_diversity(
            images, data_range=data_range, config=config, max_pairs=max_pairs, seed=seed
        ),
        real_t,
        gen_t,
        name="ms_ssim_diversity",
        backbone="none (pixel space)",
        mode=f"kernel {config.kernel_size}, {config.scales} scales",
        seed=seed,
    )

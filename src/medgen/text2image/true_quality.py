"""The known truth behind the simulated ratings: degradations of known severity, and the oracle.

`oracle_quality` is a hand-written image-quality function in [0, 1] that works on any 2D slice
(real, degraded or generated) from image statistics, each compared with its spread over REAL
training slices (`fit_oracle_reference`). It stands for what an expert sees: the simulated
raters observe it with noise (`medgen.text2image.rated_pool`), the learned Selector only ever
sees their ratings, and the oracle is then used to measure whether fine-tuning on the Selector
raised true quality or only the proxy (reward hacking).

Statistics (u = the image mapped to [0, 1]; the head = the filled foreground of a smoothed copy):

* ``noise``: Immerkær's noise estimate (median |3x3 Laplacian-difference| / 0.6745 x √(π/2)·…,
  here the median form) inside the eroded head, over the head's 90th-percentile intensity;
* ``sharpness``: √(mean |∇u|² / var u): blur lowers it;
* ``bias``: RMS of the non-constant part of a quadratic surface fitted to the log of the head's
  local-maximum envelope (a smooth multiplicative field);
* ``ghost``: the 95th percentile of a smoothed copy outside the dilated head, over the head level
  (motion ghosts and noise put signal where air should be);
* ``head_fraction``: the share of the image that is head (noise or a blank image get it wrong).

Each statistic becomes a robust z-score (median, IQR/1.349 of the real slices); the penalty is how
far it lies beyond the real slices' 0.5 %-99.5 % range on its bad side(s), and
``quality = exp(−Σ penalties / temperature)``. Real slices score near 1, every degradation
lowers it monotonically with severity (tested), noise and constant images score near 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medgen.data.resize import resize_images

#: Which side of each statistic is bad: "high", "low" or "both".
BAD_SIDE = {
    "noise": "high",
    "sharpness": "low",
    "bias": "high",
    "ghost": "high",
    "head_fraction": "both",
}
TEMPERATURE = 2.0
MIN_REAL = 8  # quantiles and spreads of fewer slices say nothing
_HEAD_THRESHOLD = 0.2  # of the smoothed image's 99th percentile


def _gaussian(u: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=u.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    u = F.pad(u, (radius, radius, 0, 0), mode="reflect")
    u = F.conv2d(u, kernel.view(1, 1, 1, -1))
    u = F.pad(u, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(u, kernel.view(1, 1, -1, 1))


def _masked_quantile(values: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    flat = torch.where(mask, values, torch.nan).flatten(1)
    return torch.nan_to_num(torch.nanquantile(flat, q, dim=1), nan=0.0)


def _head(u: torch.Tensor) -> torch.Tensor:
    smooth = _gaussian(u, 1.0)
    top = torch.quantile(smooth.flatten(1), 0.99, dim=1).view(-1, 1, 1, 1)
    head = (smooth > _HEAD_THRESHOLD * top) & (top > 1e-3)
    filled = [ndimage.binary_fill_holes(m[0]) for m in head.numpy()]
    return torch.from_numpy(np.stack(filled))[:, None]


def _quadratic_bias(log_env: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMS over ``mask`` of the non-constant part of a weighted quadratic fit."""
    n, _, h, w = log_env.shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    basis = torch.stack([torch.ones_like(xx), xx, yy, xx**2, xx * yy, yy**2]).flatten(1).T
    weights = mask.float().flatten(1)
    values = log_env.flatten(1)
    lhs = torch.einsum("pi,np,pj->nij", basis, weights, basis) + 1e-6 * torch.eye(6)
    rhs = torch.einsum("pi,np,np->ni", basis, weights, values)
    coef = torch.linalg.solve(lhs, rhs)
    fit = (basis[:, 1:] @ coef[:, 1:].T).T
    fit = fit - (fit * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)
    return ((fit**2 * weights).sum(1) / weights.sum(1).clamp(min=1)).sqrt()


@torch.no_grad()
def quality_statistics(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The oracle's statistics ``{name: [N]}`` of images [N, 1, H, W] in [-1, 1]."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"oracle quality needs images [N, 1, H, W], got {tuple(images.shape)}")
    u = ((images.float().cpu() + 1) / 2).clamp(0, 1)
    head = _head(u)
    inner = -F.max_pool2d(-head.float(), 5, 1, 2) > 0.5
    outer = ~(F.max_pool2d(head.float(), 7, 1, 3) > 0.5)
    level = _masked_quantile(u, head, 0.9).clamp(min=1e-3)
    laplace = torch.tensor([[1.0, -2, 1], [-2, 4, -2], [1, -2, 1]]).view(1, 1, 3, 3) / 6
    response = F.conv2d(F.pad(u, (1, 1, 1, 1), mode="reflect"), laplace).abs()
    noise = _masked_quantile(response, inner, 0.5) / 0.6745 / level
    gy = (u[..., 2:, 1:-1] - u[..., :-2, 1:-1]) / 2
    gx = (u[..., 1:-1, 2:] - u[..., 1:-1, :-2]) / 2
    variance = u[..., 1:-1, 1:-1].flatten(1).var(1).clamp(min=1e-8)
    sharpness = ((gx**2 + gy**2).flatten(1).mean(1) / variance).sqrt()
    envelope = F.max_pool2d(_gaussian(u, 1.0), 7, 1, 3)
    log_env = torch.log(envelope.clamp(min=1e-3) / level.view(-1, 1, 1, 1))
    bias = _quadratic_bias(log_env, inner)
    ghost = _masked_quantile(_gaussian(u, 2.0), outer, 0.95) / level
    return {
        "noise": noise,
        "sharpness": sharpness,
        "bias": bias,
        "ghost": ghost,
        "head_fraction": head.float().mean(dim=(1, 2, 3)),
    }


def at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images resized (antialiased) to ``size``²: the statistics depend on the pixel grid, so the
    oracle compares every image with the real slices on one grid (the generator's)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.float()
    return resize_images(images.float(), (size, size)).clamp(-1, 1)


def fit_oracle_reference(real_images: torch.Tensor, size: int) -> dict[str, Any]:
    """Per statistic the real slices' median, robust spread and 0.5 / 99.5 % z-bounds at
    ``size``² (JSON)."""
    if len(real_images) < MIN_REAL:
        raise ValueError(
            f"the oracle's reference needs >= {MIN_REAL} real slices, got {len(real_images)}"
        )
    reference: dict[str, Any] = {
        "n_real": len(real_images), "size": int(size), "temperature": TEMPERATURE,
    }  # fmt: skip
    for name, values in quality_statistics(at_size(real_images, size)).items():
        v = values.double()
        median = float(v.median())
        spread = max(float(v.quantile(0.75) - v.quantile(0.25)) / 1.349, 1e-6)
        reference[name] = {
            "median": median,
            "spread": spread,
            "z_low": (float(v.quantile(0.005)) - median) / spread,
            "z_high": (float(v.quantile(0.995)) - median) / spread,
        }
    return reference


def oracle_penalties(images: torch.Tensor, reference: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """How far each statistic lies beyond the real range on its bad side, in robust z units."""
    out = {}
    for name, values in quality_statistics(at_size(images, reference["size"])).items():
        ref = reference[name]
        z = (values.double() - ref["median"]) / ref["spread"]
        penalty = torch.zeros_like(z)
        if BAD_SIDE[name] in ("high", "both"):
            penalty = penalty + (z - ref["z_high"]).clamp(min=0)
        if BAD_SIDE[name] in ("low", "both"):
            penalty = penalty + (ref["z_low"] - z).clamp(min=0)
        out[name] = penalty
    return out


def oracle_quality(images: torch.Tensor, reference: Mapping[str, Any]) -> torch.Tensor:
    """The simulated true quality [N] in [0, 1] (evaluation only: never a training target)."""
    if len(images) == 0:
        return torch.zeros(0)
    total = sum(oracle_penalties(images, reference).values())
    return torch.exp(-total / float(reference.get("temperature", TEMPERATURE))).float()


# ------------------------------------------------------------- degradations of known severity
def add_noise(x: torch.Tensor, severity: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Gaussian noise of SD 0.2·severity (in the [-1, 1] range)."""
    noise = torch.randn(x.shape, generator=g)
    return (x + 0.2 * severity.view(-1, 1, 1, 1) * noise).clamp(-1, 1)


def bias_field(x: torch.Tensor, severity: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A smooth multiplicative field exp(0.7·severity · f), f a unit-SD bicubic 4x4 surface."""
    n, _, h, w = x.shape
    field = F.interpolate(torch.randn(n, 1, 4, 4, generator=g), size=(h, w), mode="bicubic",
                          align_corners=True)  # fmt: skip
    field = (field - field.mean((2, 3), keepdim=True)) / field.std((2, 3), keepdim=True).clamp(
        min=1e-8
    )
    u = (x + 1) / 2
    v = u * torch.exp(0.7 * severity.view(-1, 1, 1, 1) * field)
    v = v / v.amax((2, 3), keepdim=True).clamp(min=1e-6) * u.amax((2, 3), keepdim=True)
    return v * 2 - 1


def blur(x: torch.Tensor, severity: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Gaussian blur of σ = 4·severity pixels at 64² (scaled with the size)."""
    out = x.clone()
    for i, s in enumerate(severity.tolist()):
        sigma = 4.0 * s * x.shape[-1] / 64
        if sigma > 0.05:
            out[i : i + 1] = _gaussian(x[i : i + 1], sigma)
    return out


def motion_ghosting(x: torch.Tensor, severity: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Two copies shifted ±d along the phase-encoding (row) axis, weight 0.6·severity."""
    n, _, h, _ = x.shape
    shifts = torch.randint(h // 6, h // 3 + 1, (n,), generator=g)
    u = (x + 1) / 2
    ghosts = torch.stack(
        [
            (torch.roll(u[i], int(d), -2) + torch.roll(u[i], -int(d), -2)) / 2
            for i, d in enumerate(shifts)
        ]
    )
    weight = (0.6 * severity).view(-1, 1, 1, 1)
    return ((1 - weight) * u + weight * ghosts) * 2 - 1


DEGRADATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]] = {
    "noise": add_noise,
    "bias_field": bias_field,
    "blur": blur,
    "motion_ghosting": motion_ghosting,
}


def degrade(x: torch.Tensor, kind: str, severity: torch.Tensor, seed: int) -> torch.Tensor:
    """``x`` [N, 1, H, W] in [-1, 1] degraded by ``kind`` at ``severity`` [N] in [0, 1]."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; known: {sorted(DEGRADATIONS)}")
    if ((severity < 0) | (severity > 1)).any():
        raise ValueError("degradation severity must be in [0, 1]")
    return DEGRADATIONS[kind](x.float(), severity.float(), torch.Generator().manual_seed(seed))

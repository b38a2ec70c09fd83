"""The training loss per sample, and what the training diagnostics read from it.

:meth:`~medgen.diffusion.base.DiffusionStrategy.training_terms` returns `TrainingTerms`: the
per-sample (weighted) MSE whose mean is the scalar the optimizer sees, with the tensors it came
from. :meth:`~medgen.diffusion.task.DiffusionTask.loss` adds the perceptual term per sample
(`medgen.diffusion.perceptual`) and, when observers are attached
(`medgen.diffusion.diagnostics`), hands each one `LossDetails`: per-sample losses, the diffusion
time of each sample as a fraction in [0, 1], and the loss inside and outside the conditioning
mask. Nothing here changes the scalar.

Diffusion time as a fraction (`time_fraction`): ``t / T`` for strategies with
``num_train_timesteps`` (DDPM's step, rectified flow's flow time σ = t / T); for EDM, whose time
is the noise level σ with ``ln σ ~ N(p_mean, p_std²)`` in training, the quantile of σ under that
distribution, so equal bins hold equal shares of the training samples and are labelled by their σ
range (`time_bin_labels`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch

from medgen.diffusion.enums import PredictionType
from medgen.diffusion.known_region import KnownRegion

#: A spatial lesion condition is {-1, +1}; area pooling to a latent grid gives a cell any lesion
#: overlaps a value above -1.
_INSIDE = -1.0 + 1e-4


@dataclass(frozen=True)
class TrainingTerms:
    """``per_sample`` [B]: the (Min-SNR / λ(σ) weighted) MSE of each sample, whose mean is the
    strategy's scalar loss; ``x0``, ``x_t``, ``timesteps``, ``prediction``, ``target`` and
    ``weights`` ([B] or None) it was computed from; ``known``: the inpainting region or None."""

    per_sample: torch.Tensor
    x0: torch.Tensor
    x_t: torch.Tensor
    timesteps: torch.Tensor
    prediction: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor | None
    known: KnownRegion | None


@dataclass(frozen=True)
class LossDetails:
    """One loss computation as the training diagnostics see it (all detached).

    per_sample: [B] the loss of each sample (MSE + weight · perceptual): the optimizer's scalar
        is its mean. mse / perceptual: [B] the two terms (perceptual None when off).
    timesteps: [B] the strategy's times; time_fraction: [B] in [0, 1] (module docstring).
    region: [B, 1, *grid] the conditioning mask on the loss's grid, or None.
    region_sums / region_counts / outside_sums / outside_counts: [B] the weighted squared error
        summed over (and the number of values in) the mask and the rest, or None.
    x0: the clean batch in the space's coordinates.
    """

    per_sample: torch.Tensor
    mse: torch.Tensor
    perceptual: torch.Tensor | None
    timesteps: torch.Tensor
    time_fraction: torch.Tensor
    region: torch.Tensor | None
    region_sums: torch.Tensor | None
    region_counts: torch.Tensor | None
    outside_sums: torch.Tensor | None
    outside_counts: torch.Tensor | None
    x0: torch.Tensor


def _sigma_training_distribution(strategy: Any) -> NormalDist | None:
    """The normal distribution of ln σ in training of a σ-parameterised strategy (EDM)."""
    if hasattr(strategy, "p_mean") and hasattr(strategy, "p_std"):
        return NormalDist(float(strategy.p_mean), float(strategy.p_std))
    return None


def time_fraction(strategy: Any, timesteps: torch.Tensor) -> torch.Tensor:
    """Each sample's diffusion time as a fraction in [0, 1] (0: clean data; module docstring)."""
    steps = getattr(strategy, "num_train_timesteps", None)
    t = timesteps.detach().float()
    if steps:
        return (t / float(steps)).clamp(0.0, 1.0)
    normal = _sigma_training_distribution(strategy)
    if normal is None:
        raise ValueError(f"{strategy.name}: no diffusion time scale to bin the loss by")
    z = (t.clamp_min(1e-20).log() - normal.mean) / (normal.stdev * math.sqrt(2.0))
    return (0.5 * (1.0 + torch.erf(z))).clamp(0.0, 1.0)


def time_bin_labels(strategy: Any, bins: int) -> list[str]:
    """Metric-name-safe labels of ``bins`` equal bins of `time_fraction`: ``t_0000-0100`` (of
    T = 1000 steps), or ``sigma_0.0521-0.138`` for EDM."""
    edges = [i / bins for i in range(bins + 1)]
    steps = getattr(strategy, "num_train_timesteps", None)
    if steps:
        width = len(str(int(steps)))
        return [
            f"t_{round(lo * steps):0{width}d}-{round(hi * steps):0{width}d}"
            for lo, hi in zip(edges, edges[1:], strict=False)
        ]
    normal = _sigma_training_distribution(strategy)
    if normal is None:
        raise ValueError(f"{strategy.name}: no diffusion time scale to bin the loss by")

    def sigma(q: float) -> str:
        if q <= 0:
            return "0"
        if q >= 1:
            return "inf"
        return f"{math.exp(normal.inv_cdf(q)):.3g}"

    return [f"sigma_{sigma(lo)}-{sigma(hi)}" for lo, hi in zip(edges, edges[1:], strict=False)]


def predicted_x0(
    strategy: Any, x_t: torch.Tensor, prediction: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The clean sample x̂0 a prediction implies, from the forward marginal
    ``x_t = a·x0 + s·ε`` (:meth:`~medgen.diffusion.base.DiffusionStrategy.marginal`):
    ``(x_t − s ε̂) / a`` (ε), ``a x_t − s v̂`` (v, with a² + s² = 1), ``(x_t + s v̂) / (a + s)``
    (rectified-flow velocity ``v = x0 − ε``), or the prediction itself (EDM's denoiser)."""
    kind = PredictionType(strategy.prediction_type)
    if kind == PredictionType.SAMPLE:
        return prediction
    values = timesteps.detach().reshape(-1).tolist()
    if len(values) == 1 and x_t.shape[0] > 1:
        values = values * x_t.shape[0]
    coefficients = torch.tensor([strategy.marginal(t) for t in values], dtype=torch.float32)
    shape = (-1, *([1] * (x_t.ndim - 1)))
    a = coefficients[:, 0].to(x_t.device).view(shape)
    s = coefficients[:, 1].to(x_t.device).view(shape)
    pred = prediction.to(x_t.dtype)
    if kind == PredictionType.EPSILON:
        return (x_t - s * pred) / a
    if kind == PredictionType.V_PREDICTION:
        return a * x_t - s * pred
    if kind == PredictionType.FLOW_VELOCITY:
        return (x_t + s * pred) / (a + s)
    raise ValueError(f"{strategy.name}: no x0 for prediction type {kind}")


def loss_region(task: Any, cond: torch.Tensor | None, known: KnownRegion | None):
    """The conditioning mask on the loss's grid as {0, 1} ``[B, 1, *grid]``: the inpainting
    loss region (what the loss counts), or the lesion of a spatially conditioned mode (a cell
    any lesion overlaps); None for modes without one."""
    if known is not None:
        counted = known.region if known.loss_region is None else known.loss_region
        return counted.detach().float()
    if cond is not None and task.mode.spatial_condition:
        return (cond[:, :1].detach() > _INSIDE).float()
    return None


def loss_details(
    task: Any,
    terms: TrainingTerms,
    per_sample: torch.Tensor,
    perceptual: torch.Tensor | None,
    region: torch.Tensor | None,
) -> LossDetails:
    """`LossDetails` of one loss computation (``per_sample``: the total per sample)."""
    sums = counts = out_sums = out_counts = None
    if region is not None:
        squared = (terms.prediction.detach().float() - terms.target.detach().float()).pow(2)
        if terms.weights is not None:
            squared = squared * terms.weights.detach().float().view(-1, *([1] * (squared.ndim - 1)))
        inside = region.to(squared.device).expand_as(squared)
        sums = (squared * inside).flatten(1).sum(1)
        counts = inside.flatten(1).sum(1)
        out_sums = (squared * (1.0 - inside)).flatten(1).sum(1)
        out_counts = (1.0 - inside).flatten(1).sum(1)
    return LossDetails(
        per_sample=per_sample.detach(),
        mse=terms.per_sample.detach(),
        perceptual=None if perceptual is None else perceptual.detach(),
        timesteps=terms.timesteps.detach(),
        time_fraction=time_fraction(task.strategy, terms.timesteps),
        region=region,
        region_sums=sums,
        region_counts=counts,
        outside_sums=out_sums,
        outside_counts=out_counts,
        x0=terms.x0.detach(),
    )


def assemble_loss(
    task: Any,
    terms: TrainingTerms,
    batch: Any,
    cond: torch.Tensor | None,
    known: KnownRegion | None,
) -> torch.Tensor:
    """The task's scalar loss from the strategy's terms: ``mean(mse + w · perceptual)``, telling
    the task's loss observers (`LossDetails`) first."""
    per_sample, perceptual = terms.per_sample, None
    if task.perceptual is not None:
        perceptual = task.perceptual(task, terms, batch)
        per_sample = per_sample + task.perceptual.weight * perceptual
    if task.loss_observers:
        details = loss_details(task, terms, per_sample, perceptual, loss_region(task, cond, known))
        for observe in task.loss_observers:
            observe(details)
    return per_sample.mean()

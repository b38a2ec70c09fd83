"""Min-SNR-γ loss weighting.

Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"
(https://arxiv.org/abs/2303.09556). The paper treats each timestep as a task and clamps the
loss weight *expressed on the x0 prediction* at ``min(SNR(t), γ)`` (γ = 5 recommended). A network
predicting another quantity converts that x0 weight through the factor linking its error to the
x0 error:

==================  ==========================  =====================================
target              x0 error = k · target error  weight on the target's squared error
==================  ==========================  =====================================
``sample`` (x0)     k = 1                        ``min(SNR, γ)``
``epsilon``         k² = 1 / SNR                 ``min(SNR, γ) / SNR``
``v_prediction``    k² = 1 / (SNR + 1)           ``min(SNR, γ) / (SNR + 1)``
``flow_velocity``   k² = σ² = 1 / (1 + √SNR)²    ``min(SNR, γ) / (1 + √SNR)²``
==================  ==========================  =====================================

The first three rows are the paper's. ``v_prediction`` is the variance-preserving velocity
``√ᾱ ε − √(1−ᾱ) x0`` (Salimans & Ho 2022). ``flow_velocity`` is the rectified-flow velocity
``v = x0 − ε`` of MONAI's ``RFlowScheduler`` where ``x_t = (1−σ) x0 + σ ε`` with ``σ = t / T``:
then ``x0 = x_t + σ v``, so the x0 error is ``σ`` times the velocity error, and
``SNR = ((1−σ)/σ)²`` gives ``σ = 1 / (1 + √SNR)``. Equivalently the flow weight is
``min((1−σ)², γ σ²)``; it is ≤ 1, i.e. it never up-weights a timestep relative to the plain
flow-matching loss. The VP ``v_prediction`` formula is *not* correct for rectified flow because the
flow velocity is not the VP velocity.
"""

from __future__ import annotations

import torch

from medgen.diffusion.enums import PredictionType


def snr_from_alphas_cumprod(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR(t) = ᾱ_t / (1 − ᾱ_t) for a variance-preserving (DDPM) schedule."""
    alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps.long()]
    return alpha_bar / (1.0 - alpha_bar)


def snr_from_flow_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """SNR(σ) = ((1 − σ) / σ)² for the rectified-flow path ``x_t = (1−σ) x0 + σ ε`` (inf at σ=0)."""
    return ((1.0 - sigma) / sigma) ** 2


def min_snr_weight(snr: torch.Tensor, gamma: float, target: PredictionType | str) -> torch.Tensor:
    """Per-sample Min-SNR-γ weight on the squared error of ``target`` (see the module table).

    Limits are taken where the formula is 0/0 or ∞/∞: ``epsilon`` at SNR = 0 gives 1 and every
    weight at SNR = ∞ follows from ``min(SNR, γ) = γ``.
    """
    if gamma <= 0:
        raise ValueError(f"min_snr_gamma must be > 0, got {gamma}")
    target = PredictionType(target)
    snr = snr.float()
    clamped = torch.clamp(snr, max=gamma)
    if target == PredictionType.SAMPLE:
        return clamped
    if target == PredictionType.EPSILON:
        # min(SNR, γ)/SNR == min(1, γ/SNR), finite at SNR = 0.
        return torch.clamp(gamma / snr, max=1.0)
    if target == PredictionType.V_PREDICTION:
        return clamped / (snr + 1.0)
    if target == PredictionType.FLOW_VELOCITY:
        return clamped / (1.0 + snr.sqrt()) ** 2
    raise ValueError(f"no Min-SNR weight for target {target!r}")  # pragma: no cover

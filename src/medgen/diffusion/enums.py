"""String enums for diffusion options (MONAI style: config values are plain strings)."""

from __future__ import annotations

from enum import StrEnum


class PredictionType(StrEnum):
    """What the network predicts.

    ``epsilon``: the noise (Ho et al. 2020); ``sample``: x0; ``v_prediction``: the
    variance-preserving velocity √ᾱ ε − √(1−ᾱ) x0 (Salimans & Ho 2022); ``flow_velocity``: the
    rectified-flow velocity x0 − ε (Liu et al. 2022, MONAI ``RFlowScheduler`` convention).
    """

    EPSILON = "epsilon"
    SAMPLE = "sample"
    V_PREDICTION = "v_prediction"
    FLOW_VELOCITY = "flow_velocity"


class DDPMSampler(StrEnum):
    """Reverse process used by :class:`~medgen.diffusion.ddpm.DDPMStrategy`."""

    DDPM = "ddpm"  # ancestral sampling over all training timesteps (Ho et al. 2020)
    DDIM = "ddim"  # deterministic (eta=0) strided sampling (Song et al. 2021)


class TimestepSampling(StrEnum):
    """Training-time timestep distribution for rectified flow (Esser et al. 2024, SD3)."""

    UNIFORM = "uniform"
    LOGIT_NORMAL = "logit-normal"


class ConditionResize(StrEnum):
    """How a pixel-grid condition is brought onto a latent grid."""

    AREA = "area"  # average: a lesion smaller than a latent cell still leaves a trace
    NEAREST = "nearest"  # keeps values exactly in {-1, +1}, may drop small lesions

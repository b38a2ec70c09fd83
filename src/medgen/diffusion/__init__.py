"""Diffusion strategies (HOW: ``ddpm``, ``rflow``), modes (WHAT: ``seg``, ``bravo``, ``dual``,
``t1_pre``, ``t1_gd``) and spaces (WHERE: ``pixel``, ``latent``), bundled by ``DiffusionTask``.

A new strategy, mode or space is one small class registered in ``STRATEGIES``, ``MODES`` or
``SPACES`` plus a config entry naming it.
"""

from medgen.diffusion.base import STRATEGIES, DiffusionStrategy, build_strategy
from medgen.diffusion.ddpm import DDPMStrategy
from medgen.diffusion.enums import ConditionResize, DDPMSampler, PredictionType, TimestepSampling
from medgen.diffusion.guidance import combine_guidance, drop_condition, null_condition
from medgen.diffusion.loss_weighting import (
    min_snr_weight,
    snr_from_alphas_cumprod,
    snr_from_flow_sigma,
)
from medgen.diffusion.modes import (
    MODES,
    ConditionalBravoMode,
    ConditionalDualMode,
    ConditionalT1GdMode,
    ConditionalT1PreMode,
    DiffusionMode,
    SegMode,
    binarize_mask,
    build_mode,
    lesion_condition,
)
from medgen.diffusion.rflow import RectifiedFlowStrategy
from medgen.diffusion.spaces import SPACES, DiffusionSpace, LatentSpace, PixelSpace, build_space
from medgen.diffusion.task import DiffusionTask, build_task

__all__ = [
    "MODES",
    "SPACES",
    "STRATEGIES",
    "ConditionResize",
    "ConditionalBravoMode",
    "ConditionalDualMode",
    "ConditionalT1GdMode",
    "ConditionalT1PreMode",
    "DDPMSampler",
    "DDPMStrategy",
    "DiffusionMode",
    "DiffusionSpace",
    "DiffusionStrategy",
    "DiffusionTask",
    "LatentSpace",
    "PixelSpace",
    "PredictionType",
    "RectifiedFlowStrategy",
    "SegMode",
    "TimestepSampling",
    "binarize_mask",
    "build_mode",
    "build_space",
    "build_strategy",
    "build_task",
    "combine_guidance",
    "drop_condition",
    "lesion_condition",
    "min_snr_weight",
    "null_condition",
    "snr_from_alphas_cumprod",
    "snr_from_flow_sigma",
]

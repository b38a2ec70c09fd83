"""Diffusion strategies (HOW: ``ddpm``, ``rflow``, ``edm``), modes (WHAT: ``seg``, ``bravo``, ``dual``,
``t1_pre``, ``t1_gd``, ``class``, ``inpaint``, ``text``) and spaces (WHERE: ``pixel``, ``latent``,
``precomputed_latent``), bundled by ``DiffusionTask``.

The 3D class-conditional generator job (train on pre-encoded latents, sample per class) is
:mod:`medgen.generation.class_conditional_3d` (a job over the engine, like the 2D training job).

A new strategy, mode or space is one small class registered in ``STRATEGIES``, ``MODES`` or
``SPACES`` plus a config entry naming it.
"""

from medgen.diffusion.base import STRATEGIES, DiffusionStrategy, build_strategy
from medgen.diffusion.ddpm import DDPMStrategy
from medgen.diffusion.edm import EDMPreconditioner, EDMStrategy, karras_sigmas
from medgen.diffusion.enums import ConditionResize, DDPMSampler, PredictionType, TimestepSampling
from medgen.diffusion.guidance import (
    combine_guidance,
    drop_condition,
    is_class_labels,
    is_token_ids,
    null_condition,
)
from medgen.diffusion.inpainting_mode import InpaintingMode
from medgen.diffusion.known_region import KnownRegion, Resampling
from medgen.diffusion.loss_weighting import (
    min_snr_weight,
    snr_from_alphas_cumprod,
    snr_from_flow_sigma,
)
from medgen.diffusion.modes import (
    MODES,
    ClassConditionalMode,
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
from medgen.diffusion.spaces import (
    SPACES,
    DiffusionSpace,
    LatentSpace,
    PixelSpace,
    PrecomputedLatentSpace,
    build_space,
)
from medgen.diffusion.task import DiffusionTask, build_task
from medgen.diffusion.text_mode import TextMode

__all__ = [
    "MODES",
    "SPACES",
    "STRATEGIES",
    "ClassConditionalMode",
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
    "EDMPreconditioner",
    "EDMStrategy",
    "InpaintingMode",
    "KnownRegion",
    "LatentSpace",
    "PixelSpace",
    "PrecomputedLatentSpace",
    "PredictionType",
    "RectifiedFlowStrategy",
    "Resampling",
    "SegMode",
    "TextMode",
    "TimestepSampling",
    "binarize_mask",
    "build_mode",
    "build_space",
    "build_strategy",
    "build_task",
    "combine_guidance",
    "drop_condition",
    "is_class_labels",
    "is_token_ids",
    "karras_sigmas",
    "lesion_condition",
    "min_snr_weight",
    "null_condition",
    "snr_from_alphas_cumprod",
    "snr_from_flow_sigma",
]

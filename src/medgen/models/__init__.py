"""Network factories over MONAI (plus, later, the few networks MONAI lacks).

A new backbone is one function registered in :data:`BACKBONES` and a config entry naming it.
"""

from medgen.models.diffusion_unet import (
    BACKBONES,
    DIFFUSION_UNET_DEFAULTS,
    build_backbone,
    build_diffusion_unet,
    min_input_multiple,
    validate_diffusion_unet_config,
)
from medgen.models.registry import Registry

__all__ = [
    "BACKBONES",
    "DIFFUSION_UNET_DEFAULTS",
    "Registry",
    "build_backbone",
    "build_diffusion_unet",
    "min_input_multiple",
    "validate_diffusion_unet_config",
]

"""Network factories over MONAI, plus the few networks MONAI lacks (a DiT, the patch-volume
autoencoder).

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
from medgen.models.dit import DiT, build_dit
from medgen.models.patch_volume_autoencoder import (
    PatchVolumeAutoencoder,
    PatchVolumeAutoencoderConfig,
    build_patch_volume_autoencoder,
)
from medgen.models.registry import Registry

__all__ = [
    "BACKBONES",
    "DIFFUSION_UNET_DEFAULTS",
    "DiT",
    "PatchVolumeAutoencoder",
    "PatchVolumeAutoencoderConfig",
    "Registry",
    "build_backbone",
    "build_diffusion_unet",
    "build_dit",
    "build_patch_volume_autoencoder",
    "min_input_multiple",
    "validate_diffusion_unet_config",
]

"""What every medgen autoencoder offers, 2D or 3D, KL or VQ.

The GAN training module (`medgen.autoencoder.gan`), the latent encoding node and the
latent diffusion `LatentSpace` only rely on this interface, so a new autoencoder is one
class that implements it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class LatentAutoencoder(Protocol):
    """An autoencoder over ``[B, C, *spatial]`` images in [-1, 1].

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: image channels it encodes.
        latent_channels: channels of the latent.
        downsample_factor: image spatial size / latent spatial size, per axis.
    """

    spatial_dims: int
    in_channels: int
    latent_channels: int
    downsample_factor: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent: the posterior mean (KL) or the quantised code (VQ)."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image from a latent (unscaled: no latent scale factor applied)."""

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: ``(reconstruction, regularisation)``, the regularisation being the
        scalar KL term (a posterior sample is decoded) or the VQ codebook/commitment loss."""

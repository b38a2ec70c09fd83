"""`KLAutoencoder`: MONAI's ``AutoencoderKL`` behind the `LatentAutoencoder` interface.

The network is the KL-regularised autoencoder of Rombach et al. 2022 ("High-Resolution Image
Synthesis with Latent Diffusion Models", https://arxiv.org/abs/2112.10752) as packaged in
MONAI by Pinaya et al. 2022 (https://arxiv.org/abs/2209.07162). Options are validated up
front (`KLAutoencoderConfig`), because a bad Kedro parameter otherwise surfaces as a shape
error deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.nets import AutoencoderKL
from torch import nn

from medgen.autoencoder.losses import kl_divergence
from medgen.config import config_from_params, config_to_dict


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class KLAutoencoderConfig:
    """Options of the AutoencoderKL (the ``autoencoder`` parameters). Defaults train on a CPU.

    channels ((32, 64, 64)): feature channels per level; the image is downsampled by 2
        between levels, so ``downsample_factor = 2 ** (len(channels) - 1)``.
    latent_channels (3): channels of the latent.
    num_res_blocks (1): residual blocks per level (an int or one per level).
    attention_levels (None = no attention at any level): one bool per level.
    norm_num_groups (32): GroupNorm groups; every entry of channels must be divisible by it.
    norm_eps (1e-6).
    with_encoder_nonlocal_attn / with_decoder_nonlocal_attn (False, False): self-attention
        in the middle blocks (MONAI's default is True; off here because it is slow on a CPU).
    use_checkpoint (False): activation checkpointing; use_convtranspose (False);
    use_flash_attention (False).
    """

    channels: tuple[int, ...] = (32, 64, 64)
    latent_channels: int = 3
    num_res_blocks: int | tuple[int, ...] = 1
    attention_levels: tuple[bool, ...] | None = None
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    with_encoder_nonlocal_attn: bool = False
    with_decoder_nonlocal_attn: bool = False
    use_checkpoint: bool = False
    use_convtranspose: bool = False
    use_flash_attention: bool = False

    def __post_init__(self) -> None:
        def fail(key: str, why: str) -> None:
            raise ValueError(f"autoencoder parameter {key}={getattr(self, key)!r}: {why}")

        channels = self.channels
        if (
            isinstance(channels, int)
            or not channels
            or not all(_is_int(c) and c > 0 for c in channels)
        ):
            fail("channels", "must be a non-empty list of positive integers")
        if not _is_int(self.latent_channels) or self.latent_channels < 1:
            fail("latent_channels", "must be an integer >= 1")
        groups = self.norm_num_groups
        if not _is_int(groups) or groups < 1:
            fail("norm_num_groups", "must be an integer >= 1")
        if any(c % groups for c in channels):
            fail(
                "channels", f"every entry must be divisible by norm_num_groups={groups} (GroupNorm)"
            )
        blocks = self.num_res_blocks
        blocks = (blocks,) * len(channels) if _is_int(blocks) else blocks
        if len(blocks) != len(channels) or not all(_is_int(b) and b >= 1 for b in blocks):
            fail("num_res_blocks", f"must be an integer >= 1 or one per level ({len(channels)})")
        attention = self.attention_levels
        if attention is not None and (
            len(attention) != len(channels) or not all(isinstance(a, bool) for a in attention)
        ):
            fail("attention_levels", f"must be None or one true/false per level ({len(channels)})")
        if not isinstance(self.norm_eps, float | int) or not self.norm_eps > 0:
            fail("norm_eps", "must be a number > 0")
        for key in (
            "with_encoder_nonlocal_attn",
            "with_decoder_nonlocal_attn",
            "use_checkpoint",
            "use_convtranspose",
            "use_flash_attention",
        ):
            if not isinstance(getattr(self, key), bool):
                fail(key, "must be true or false")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists, not tuples) that `build_kl_autoencoder` accepts."""
        return config_to_dict(self)

    def network_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of MONAI's ``AutoencoderKL`` (besides dims and channels)."""
        kwargs = dataclasses.asdict(self)
        if self.attention_levels is None:
            kwargs["attention_levels"] = (False,) * len(self.channels)
        return kwargs


class KLAutoencoder(nn.Module):
    """AutoencoderKL implementing `medgen.autoencoder.protocol.LatentAutoencoder`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (output channels are the same).
        config: a `KLAutoencoderConfig` (default: its defaults).

    ``encode`` gives the posterior mean; ``reconstruct`` decodes a posterior sample and
    returns the KL term (`kl_divergence`) as regularisation; ``forward`` is ``reconstruct``.
    Image sizes must be multiples of ``downsample_factor``.
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, config: KLAutoencoderConfig | None = None
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"autoencoder spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if not _is_int(in_channels) or in_channels < 1:
            raise ValueError(
                f"autoencoder in_channels must be an integer >= 1, got {in_channels!r}"
            )
        self.config = config or KLAutoencoderConfig()
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.latent_channels = self.config.latent_channels
        self.downsample_factor = self.config.downsample_factor
        self.net = AutoencoderKL(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=in_channels,
            **self.config.network_kwargs(),
        )

    def _check_images(self, x: torch.Tensor) -> None:
        expected = self.spatial_dims + 2
        if x.ndim != expected or x.shape[1] != self.in_channels:
            raise ValueError(
                f"autoencoder expects [B, {self.in_channels}, *{self.spatial_dims} spatial dims], "
                f"got {tuple(x.shape)}"
            )
        if any(s % self.downsample_factor for s in x.shape[2:]):
            raise ValueError(
                f"image size {tuple(x.shape[2:])} is not a multiple of the autoencoder's "
                f"downsample factor {self.downsample_factor}"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean ``[B, latent_channels, *spatial / downsample_factor]``."""
        self._check_images(x)
        z_mu, _ = self.net.encode(x)
        return z_mu

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image from a latent (unscaled)."""
        if z.ndim != self.spatial_dims + 2 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"decode expects [B, {self.latent_channels}, *{self.spatial_dims} spatial dims], "
                f"got {tuple(z.shape)}"
            )
        return self.net.decode(z)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(decode(z ~ posterior), KL)``; the sample uses torch's global RNG."""
        self._check_images(x)
        z_mu, z_sigma = self.net.encode(x)
        z = self.net.sampling(z_mu, z_sigma)
        return self.net.decode(z), kl_divergence(z_mu, z_sigma)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.reconstruct(x)


def kl_autoencoder_config(
    config: Mapping[str, Any] | KLAutoencoderConfig | None,
) -> KLAutoencoderConfig:
    """Validated `KLAutoencoderConfig` from the ``autoencoder`` parameters (unknown keys refused)."""
    if isinstance(config, KLAutoencoderConfig):
        return config
    return config_from_params(KLAutoencoderConfig, config, "autoencoder")


def build_kl_autoencoder(
    config: Mapping[str, Any] | KLAutoencoderConfig | None, in_channels: int, spatial_dims: int = 2
) -> KLAutoencoder:
    """`KLAutoencoder` from a (JSON/YAML) config dict; see `KLAutoencoderConfig` for keys.

    Args:
        config: the options (all optional); unknown keys raise ValueError with a hint.
        in_channels: image channels (1 for medgen's per-channel 2D autoencoder).
        spatial_dims: 2 (default) or 3.
    """
    return KLAutoencoder(spatial_dims, in_channels, kl_autoencoder_config(config))

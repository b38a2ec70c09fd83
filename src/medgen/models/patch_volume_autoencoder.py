"""Patch-Volume autoencoder: patch-wise encoding, volume-wise decoding.

After the Patch-Volume Autoencoder of 3D MedDiffusion (Wang et al. 2024, "3D MedDiffusion: A 3D
Medical Diffusion Model for Controllable and High-quality Medical Image Generation",
https://arxiv.org/abs/2412.13059). A volume is cut into non-overlapping patches that are encoded
independently (encoder memory is bounded by one patch) and the patch latents are stitched into one
latent volume; the decoder reconstructs the whole latent volume at once, so there are no seams.
Training is two-staged (`medgen.autoencoder.training_3d`): stage 1 on random patches, stage 2 on
whole volumes with the encoder and codebook frozen and the decoder fine-tuned.

The latent is either continuous with a KL regulariser (a diagonal Gaussian posterior, as in
Rombach et al. 2022 / MONAI's AutoencoderKL) or vector-quantised with MONAI's EMA codebook
(``vq.enabled``). KL was chosen over a plain autoencoder for the continuous case because a small KL
keeps the latent scale bounded and smooth, which the latent diffusion downstream relies on (a
plain autoencoder's latent can drift to any scale and the decoder can become sensitive to small
latent perturbations, i.e. to diffusion sampling errors).

Why the decoder has no GroupNorm and no attention by default (``decoder_norm="none"``): both pool
statistics over the whole volume, so decoding a tile would differ from decoding the volume. A
decoder made only of local convolutions has a finite receptive field (`decoder_halo`), and
`medgen.autoencoder.tiled.decode_tiled` then reproduces the full decode exactly by decoding each
latent tile with that halo. The encoder sees single patches only, so a patch-wise norm there costs
nothing (``encoder_norm="group"``).

Generic over ``spatial_dims`` (2 or 3) like MONAI's networks, built from MONAI blocks.

Size: the config, the encoder/decoder and the patch bookkeeping (cutting, stitching, the
decoder halo) are one network's parts that only make sense read together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.layers.vector_quantizer import EMAQuantizer, VectorQuantizer
from torch import nn

from medgen.config import config_to_dict, refuse_unknown_keys

NORMS = ("group", "batch", "instance", "none")
ACTIVATION = "SWISH"  # SiLU, as in the MedDiffusion / LDM autoencoders


@dataclass(frozen=True)
class VQConfig:
    """Vector quantisation of the latent (MONAI ``EMAQuantizer``, van den Oord et al. 2017).

    Args:
        enabled: quantise the latent (default False: continuous latent with a KL regulariser).
        num_embeddings: codebook size (default 256).
        commitment_cost: weight of the commitment loss ``||z - sg[q]||^2`` (default 0.25).
        decay: EMA decay of the codebook updates (default 0.99).
    """

    enabled: bool = False
    num_embeddings: int = 256
    commitment_cost: float = 0.25
    decay: float = 0.99


@dataclass(frozen=True)
class PatchVolumeAutoencoderConfig:
    """Options of `PatchVolumeAutoencoder` (all have CPU-demo defaults).

    Args:
        channels: width of each stride-2 stage, one entry per stage (default (16, 32));
            ``len(channels) == log2(downsample_factor)``.
        downsample_factor: image size / latent size per axis, a power of two (default 4; 4 and 8
            are the compression factors of the paper).
        latent_channels: channels of the latent (default 4).
        patch_size: side of the encoder's patches, an int or one per axis (default 16); a multiple
            of ``downsample_factor``. Volumes that are not a multiple are padded (replicating the
            border) and the padding is cut from the latent.
        num_res_units: MONAI ``ResidualUnit`` blocks per stage in encoder and decoder (default 1).
        encoder_norm / decoder_norm: one of ``group``, ``batch``, ``instance``, ``none``
            (defaults ``group`` / ``none``; see the module docstring for why).
        norm_num_groups: groups of GroupNorm (default 8); every channel count must divide by it.
        patch_batch_size: patches per encoder call (default None: all patches of the batch at
            once); set it to bound encoder memory on large volumes.
        vq: a `VQConfig` or its dict.
    """

    channels: tuple[int, ...] = (16, 32)
    downsample_factor: int = 4
    latent_channels: int = 4
    patch_size: int | tuple[int, ...] = 16
    num_res_units: int = 1
    encoder_norm: str = "group"
    decoder_norm: str = "none"
    norm_num_groups: int = 8
    patch_batch_size: int | None = None
    vq: VQConfig = field(default_factory=VQConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists, nested vq dict) that `from_dict` accepts."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> PatchVolumeAutoencoderConfig:
        """Build from Kedro parameters; unknown keys (also inside ``vq``) raise ValueError."""
        params = dict(params or {})
        refuse_unknown_keys(cls, params, "patch_volume_autoencoder")
        vq = params.pop("vq", None) or {}
        if isinstance(vq, Mapping):
            refuse_unknown_keys(VQConfig, vq, "patch_volume_autoencoder.vq")
            vq = VQConfig(**vq)
        if isinstance(params.get("channels"), list):
            params["channels"] = tuple(params["channels"])
        if isinstance(params.get("patch_size"), list):
            params["patch_size"] = tuple(params["patch_size"])
        return cls(**params, vq=vq)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_config(config: PatchVolumeAutoencoderConfig, spatial_dims: int) -> tuple[int, ...]:
    """Check every option; return the patch size per axis. Errors name the bad key and value."""

    def fail(key: str, why: str) -> None:
        raise ValueError(f"patch_volume_autoencoder: {key}={getattr(config, key, None)!r} {why}")

    if spatial_dims not in (2, 3):
        raise ValueError(
            f"patch_volume_autoencoder: spatial_dims must be 2 or 3, got {spatial_dims!r}"
        )
    factor = config.downsample_factor
    if not _is_int(factor) or factor < 2 or factor & (factor - 1):
        fail("downsample_factor", "must be a power of two >= 2 (4 or 8 in the paper)")
    stages = int(math.log2(factor))
    channels = config.channels
    if not isinstance(channels, tuple) or not all(_is_int(c) and c > 0 for c in channels):
        fail("channels", "must be a list of positive integers")
    if len(channels) != stages:
        fail(
            "channels",
            f"needs one width per stride-2 stage: downsample_factor={factor} has {stages} stages, "
            f"got {len(channels)} widths",
        )
    for key in ("latent_channels", "num_res_units", "norm_num_groups"):
        value = getattr(config, key)
        if not _is_int(value) or value < (0 if key == "num_res_units" else 1):
            fail(key, "must be a positive integer" if key != "num_res_units" else "must be >= 0")
    for key in ("encoder_norm", "decoder_norm"):
        if getattr(config, key) not in NORMS:
            fail(key, f"must be one of {NORMS}")
    if "group" in (config.encoder_norm, config.decoder_norm):
        bad = [c for c in channels if c % config.norm_num_groups]
        if bad:
            fail("norm_num_groups", f"must divide every channel count (GroupNorm); {bad} do not")
    size = config.patch_size
    patch = (
        (size,) * spatial_dims if _is_int(size) else tuple(size) if isinstance(size, tuple) else ()
    )
    if len(patch) != spatial_dims or not all(_is_int(p) and p > 0 for p in patch):
        fail("patch_size", f"must be a positive int or {spatial_dims} positive ints")
    if any(p % factor for p in patch):
        fail("patch_size", f"must be a multiple of downsample_factor={factor} on every axis")
    pbs = config.patch_batch_size
    if pbs is not None and (not _is_int(pbs) or pbs < 1):
        fail("patch_batch_size", "must be None or a positive integer")
    vq = config.vq
    if not isinstance(vq, VQConfig):
        fail("vq", "must be a mapping of VQ options")
    if not isinstance(vq.enabled, bool):
        raise ValueError(
            f"patch_volume_autoencoder: vq.enabled={vq.enabled!r} must be true or false"
        )
    if not _is_int(vq.num_embeddings) or vq.num_embeddings < 2:
        raise ValueError(
            f"patch_volume_autoencoder: vq.num_embeddings={vq.num_embeddings!r} must be an integer >= 2"
        )
    if not isinstance(vq.commitment_cost, int | float) or vq.commitment_cost < 0:
        raise ValueError(
            f"patch_volume_autoencoder: vq.commitment_cost={vq.commitment_cost!r} must be >= 0"
        )
    if not isinstance(vq.decay, int | float) or not 0 < vq.decay < 1:
        raise ValueError(f"patch_volume_autoencoder: vq.decay={vq.decay!r} must be in (0, 1)")
    return patch


def to_patches(x: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """``[B, C, *S]`` -> ``([B * prod(S / patch), C, *patch], grid)``; S must divide by patch.

    Patches are ordered batch-major, then by grid position in C order (last axis fastest).
    """
    b, c, *size = x.shape
    n = len(size)
    if any(s % p for s, p in zip(size, patch, strict=True)):
        raise ValueError(
            f"spatial size {tuple(size)} is not a multiple of the patch {tuple(patch)}"
        )
    grid = [s // p for s, p in zip(size, patch, strict=True)]
    split = [b, c] + [v for g, p in zip(grid, patch, strict=True) for v in (g, p)]
    # [B, C, g0, p0, g1, p1, ...] -> [B, g0, g1, ..., C, p0, p1, ...]
    order = [0, *(2 + 2 * i for i in range(n)), 1, *(3 + 2 * i for i in range(n))]
    patches = x.reshape(split).permute(order).reshape(b * math.prod(grid), c, *patch)
    return patches, grid


def from_patches(patches: torch.Tensor, batch: int, grid: Sequence[int]) -> torch.Tensor:
    """Inverse of `to_patches` (works for any patch size, e.g. on encoded patches)."""
    n = len(grid)
    _, c, *patch = patches.shape
    x = patches.reshape(batch, *grid, c, *patch)
    # [B, g0, g1, ..., C, p0, p1, ...] -> [B, C, g0, p0, g1, p1, ...]
    order = [0, n + 1, *(v for i in range(n) for v in (1 + i, n + 2 + i))]
    return x.permute(order).reshape(batch, c, *(g * p for g, p in zip(grid, patch, strict=True)))


def _norm(name: str, groups: int) -> tuple | str | None:
    if name == "none":
        return None
    if name == "group":
        return ("GROUP", {"num_groups": groups})
    return name.upper()


class PatchVolumeAutoencoder(nn.Module):
    """Patch-wise encoder, volume-wise decoder; implements `medgen.autoencoder.protocol.LatentAutoencoder`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (e.g. 4 modalities).
        config: a `PatchVolumeAutoencoderConfig`.

    Images are ``[B, in_channels, *S]`` in [-1, 1] with every side of S a multiple of
    ``downsample_factor``; latents are ``[B, latent_channels, *(S / downsample_factor)]``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, config: PatchVolumeAutoencoderConfig):
        super().__init__()
        if not _is_int(in_channels) or in_channels < 1:
            raise ValueError(
                f"patch_volume_autoencoder: in_channels must be >= 1, got {in_channels!r}"
            )
        self.patch_size = validate_config(config, spatial_dims)
        self.config = config
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.latent_channels = config.latent_channels
        self.downsample_factor = config.downsample_factor
        self.use_vq = config.vq.enabled
        self.encoder_frozen = False

        enc_norm = _norm(config.encoder_norm, config.norm_num_groups)
        dec_norm = _norm(config.decoder_norm, config.norm_num_groups)
        channels = config.channels

        def conv(cin: int, cout: int, norm, **kw) -> Convolution:
            return Convolution(spatial_dims, cin, cout, act=ACTIVATION, norm=norm, **kw)

        def res_units(c: int, norm) -> list[nn.Module]:
            return [
                ResidualUnit(spatial_dims, c, c, subunits=2, act=ACTIVATION, norm=norm)
                for _ in range(config.num_res_units)
            ]

        encoder: list[nn.Module] = [conv(in_channels, channels[0], enc_norm)]
        previous = channels[0]
        for width in channels:
            encoder.append(conv(previous, width, enc_norm, strides=2))
            encoder.extend(res_units(width, enc_norm))
            previous = width
        # KL: mean and log-variance; VQ: the vectors to quantise.
        out = config.latent_channels * (1 if self.use_vq else 2)
        encoder.append(Convolution(spatial_dims, previous, out, kernel_size=1, conv_only=True))
        self.encoder = nn.Sequential(*encoder)

        self.quantizer: VectorQuantizer | None = None
        if self.use_vq:
            self.quantizer = VectorQuantizer(
                EMAQuantizer(
                    spatial_dims=spatial_dims,
                    num_embeddings=config.vq.num_embeddings,
                    embedding_dim=config.latent_channels,
                    commitment_cost=float(config.vq.commitment_cost),
                    decay=float(config.vq.decay),
                )
            )

        # The decoder mirrors the encoder. `_decoder_ops` lists its local operations in order so
        # that `decoder_halo` can compute the exact receptive field.
        ops: list[str] = ["conv"]
        decoder: list[nn.Module] = [conv(config.latent_channels, channels[-1], dec_norm)]
        for level in reversed(range(len(channels))):
            decoder.extend(res_units(channels[level], dec_norm))
            ops += ["conv", "conv"] * config.num_res_units
            target = channels[level - 1] if level > 0 else channels[0]
            decoder.append(nn.Upsample(scale_factor=2, mode="nearest"))
            decoder.append(conv(channels[level], target, dec_norm))
            ops += ["up", "conv"]
        decoder.append(Convolution(spatial_dims, channels[0], in_channels, conv_only=True))
        ops.append("conv")
        self.decoder = nn.Sequential(*decoder)
        self._decoder_ops = tuple(ops)

    # ------------------------------------------------------------------ geometry
    @property
    def decoder_halo(self) -> int | None:
        """Latent voxels on each side that influence a decoded voxel (the decoder's receptive
        radius), or None when the decoder normalises over the whole volume and no finite halo
        makes tiled decoding exact (``decoder_norm`` ``group`` / ``instance``)."""
        if self.config.decoder_norm in ("group", "instance"):
            return None
        radius = 0
        # Walk from the output back to the latent: a 3-wide conv widens the window by one voxel
        # on each side; a nearest 2x upsampling maps a radius r to ceil(r / 2) coarse voxels.
        for op in reversed(self._decoder_ops):
            radius = radius + 1 if op == "conv" else math.ceil(radius / 2)
        return radius

    def check_images(self, x: torch.Tensor) -> None:
        """ValueError unless ``x`` is ``[B, in_channels, *S]`` with S a multiple of the factor."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"patch_volume_autoencoder expects [B, {self.in_channels}, "
                f"{', '.join('S' * self.spatial_dims)}] images, got shape {tuple(x.shape)}"
            )
        bad = [s for s in x.shape[2:] if s % self.downsample_factor]
        if bad:
            raise ValueError(
                f"image spatial shape {tuple(x.shape[2:])} must be a multiple of "
                f"downsample_factor={self.downsample_factor} on every axis ({bad} are not)"
            )

    # ------------------------------------------------------------------ encoding
    def encode_patchwise(self, x: torch.Tensor) -> torch.Tensor:
        """Raw encoder output for the whole image, computed patch by patch.

        Returns ``[B, 2 * latent_channels (KL: mean, log-variance) or latent_channels (VQ),
        *(S / downsample_factor)]``.
        """
        self.check_images(x)
        batch, size = x.shape[0], x.shape[2:]
        padded = [math.ceil(s / p) * p for s, p in zip(size, self.patch_size, strict=True)]
        # F.pad lists (low, high) pairs from the last axis backwards; pad at the high end only,
        # so the latent crop below starts at 0.
        pad = [v for s, t in zip(reversed(size), reversed(padded), strict=True) for v in (0, t - s)]
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        patches, grid = to_patches(x, self.patch_size)
        chunk = self.config.patch_batch_size or patches.shape[0]
        encoded = torch.cat([self.encoder(part) for part in patches.split(chunk)])
        h = from_patches(encoded, batch, grid)
        f = self.downsample_factor
        return h[(slice(None), slice(None), *(slice(0, s // f) for s in size))]

    def _quantize(self, h: torch.Tensor) -> torch.Tensor:
        """Nearest codebook vectors, without the EMA codebook update of a training forward."""
        indices = self.quantizer.quantizer.quantize(h)[2]
        return self.quantizer.embed(indices)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent: the posterior mean (KL) or the quantised code (VQ)."""
        h = self.encode_patchwise(x)
        if self.use_vq:
            return self._quantize(h)
        return h[:, : self.latent_channels]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image from a latent, decoded volume-wise (the whole latent at once: no seams)."""
        if z.ndim != self.spatial_dims + 2 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"patch_volume_autoencoder decodes [B, {self.latent_channels}, ...] latents with "
                f"{self.spatial_dims} spatial axes, got shape {tuple(z.shape)}"
            )
        return self.decoder(z)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: ``(decode(z), regularisation)``.

        KL: z is a posterior sample and the regularisation the KL divergence to N(0, I), summed
        over latent elements and averaged over the batch (the MONAI tutorials' convention).
        VQ: z is the straight-through quantised code and the regularisation MONAI's commitment
        loss (the codebook itself learns by EMA in training mode).
        """
        h = self.encode_patchwise(x)
        if self.use_vq:
            loss, z = self.quantizer(h)
            return self.decode(z), loss
        mean, logvar = h.chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)  # exp() stays finite in fp32 and bf16
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        # = medgen.autoencoder.losses.kl_divergence, written out so that medgen.models does not
        # import the autoencoder package (whose __init__ may import this module).
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
        return self.decode(z), kl.flatten(1).sum(1).mean()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as `reconstruct` (so DDP sees the trainable computation in ``forward``)."""
        return self.reconstruct(x)

    # ------------------------------------------------------------------ stage 2
    def freeze_encoder(self) -> None:
        """Freeze encoder and codebook (stage 2 of the paper trains the decoder only).

        Their parameters stop requiring gradients (the engine's optimiser skips them) and they
        stay in eval mode even when the module is put in training mode, so the EMA codebook does
        not keep moving under a decoder that is being fitted to it.
        """
        self.encoder_frozen = True
        for module in (self.encoder, self.quantizer):
            if module is not None:
                module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> PatchVolumeAutoencoder:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
            if self.quantizer is not None:
                self.quantizer.eval()
        return self


def build_patch_volume_autoencoder(
    config: Mapping[str, Any] | PatchVolumeAutoencoderConfig | None,
    in_channels: int,
    spatial_dims: int = 3,
) -> PatchVolumeAutoencoder:
    """Build a `PatchVolumeAutoencoder` from a (YAML/JSON) config dict.

    Args:
        config: options of `PatchVolumeAutoencoderConfig` (all optional); unknown keys raise
            ValueError with the closest known key.
        in_channels: image channels.
        spatial_dims: 3 (default) or 2.
    """
    if not isinstance(config, PatchVolumeAutoencoderConfig):
        config = PatchVolumeAutoencoderConfig.from_dict(config)
    return PatchVolumeAutoencoder(spatial_dims, in_channels, config)

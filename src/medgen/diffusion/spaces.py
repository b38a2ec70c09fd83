"""Spaces: the coordinates a strategy trains and samples in.

``PixelSpace`` is the identity. ``LatentSpace`` wraps any autoencoder with ``encode(x) -> z`` and
``decode(z) -> x`` (latent diffusion, Rombach et al. 2022, https://arxiv.org/abs/2112.10752),
multiplies latents by ``scale_factor`` so they have roughly unit variance, and resizes conditions
to the latent grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medgen.diffusion.enums import ConditionResize
from medgen.models.registry import Registry

SPACES: Registry = Registry("diffusion space")


class DiffusionSpace:
    """Base class of spaces. ``bounded`` says whether coordinates lie in [-1, 1] (so that clipping
    the predicted x0 at sampling is valid)."""

    name: ClassVar[str]
    bounded: ClassVar[bool]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def channels(self, data_channels: int) -> int:
        """Channels in this space for data with ``data_channels`` channels."""
        raise NotImplementedError

    def spatial_shape(self, data_spatial: Sequence[int]) -> tuple[int, ...]:
        """Spatial size in this space for data of spatial size ``data_spatial``."""
        raise NotImplementedError

    def resize_condition(self, cond: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
        """Bring a pixel-grid condition onto this space's grid of size ``spatial``."""
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name}


@SPACES.register("pixel")
class PixelSpace(DiffusionSpace):
    """Diffusion directly on pixels/voxels (identity encode/decode)."""

    name = "pixel"
    bounded = True

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def channels(self, data_channels: int) -> int:
        return data_channels

    def spatial_shape(self, data_spatial: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(s) for s in data_spatial)

    def resize_condition(self, cond: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
        if tuple(cond.shape[2:]) != tuple(spatial):
            raise ValueError(
                f"pixel space: condition {tuple(cond.shape)} does not match spatial size {tuple(spatial)}"
            )
        return cond


@SPACES.register("latent")
class LatentSpace(DiffusionSpace):
    """Diffusion on an autoencoder's latents.

    Args:
        autoencoder: object with ``encode(x)`` and ``decode(z)``; when ``encode`` returns a tuple
            (MONAI ``AutoencoderKL`` returns ``(z_mu, z_sigma)``) the first element, the mean, is
            the latent. It is used frozen: encoding runs without gradients.
        latent_channels: channels of the latent.
        downsample_factor: data spatial size / latent spatial size per axis (e.g. 4 or 8).
        scale_factor: multiplier applied after encoding and divided out before decoding
            (default 1.0; LDM uses 1 / std of the training latents).
        condition_resize: ``area`` (default: averages the {-1, +1} mask so a lesion smaller than
            a latent cell still moves the value above -1) or ``nearest`` (keeps exact {-1, +1}).
    """

    name = "latent"
    bounded = False

    def __init__(
        self,
        autoencoder: Any,
        latent_channels: int,
        downsample_factor: int,
        scale_factor: float = 1.0,
        condition_resize: str = ConditionResize.AREA,
    ) -> None:
        for attr in ("encode", "decode"):
            if not callable(getattr(autoencoder, attr, None)):
                raise TypeError(
                    f"latent space: autoencoder {type(autoencoder).__name__} has no {attr}()"
                )
        if latent_channels < 1 or downsample_factor < 1:
            raise ValueError("latent space: latent_channels and downsample_factor must be >= 1")
        if scale_factor == 0:
            raise ValueError("latent space: scale_factor must be non-zero")
        self.autoencoder = autoencoder
        self.latent_channels = int(latent_channels)
        self.downsample_factor = int(downsample_factor)
        self.scale_factor = float(scale_factor)
        self.condition_resize = ConditionResize(condition_resize)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.autoencoder.encode(x)
        if isinstance(z, tuple | list):
            z = z[0]
        expected = (x.shape[0], self.latent_channels, *self.spatial_shape(x.shape[2:]))
        if tuple(z.shape) != expected:
            raise ValueError(
                f"latent space: autoencoder encoded {tuple(x.shape)} to {tuple(z.shape)}, expected "
                f"{expected} from latent_channels={self.latent_channels}, "
                f"downsample_factor={self.downsample_factor}"
            )
        return z * self.scale_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z / self.scale_factor)

    def channels(self, data_channels: int) -> int:
        return self.latent_channels

    def spatial_shape(self, data_spatial: Sequence[int]) -> tuple[int, ...]:
        bad = [s for s in data_spatial if s % self.downsample_factor]
        if bad:
            raise ValueError(
                f"latent space: spatial size {tuple(data_spatial)} is not divisible by "
                f"downsample_factor={self.downsample_factor}"
            )
        return tuple(int(s) // self.downsample_factor for s in data_spatial)

    def resize_condition(self, cond: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
        spatial = tuple(int(s) for s in spatial)
        if tuple(cond.shape[2:]) == spatial:
            return cond
        if self.condition_resize == ConditionResize.AREA:
            return (
                F.adaptive_avg_pool2d(cond, spatial)
                if cond.ndim == 4
                else F.adaptive_avg_pool3d(cond, spatial)
            )
        return F.interpolate(cond, size=spatial, mode="nearest-exact")

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "latent_channels": self.latent_channels,
            "downsample_factor": self.downsample_factor,
            "scale_factor": self.scale_factor,
            "condition_resize": str(self.condition_resize),
        }


def build_space(
    name: str = "pixel", config: dict[str, Any] | None = None, autoencoder: nn.Module | Any = None
):
    """Build a space: ``build_space("pixel")`` or ``build_space("latent", {...}, autoencoder)``."""
    options = {k: v for k, v in (config or {}).items() if k != "name"}
    cls = SPACES.get(name)
    if cls is LatentSpace:
        if autoencoder is None:
            raise ValueError("latent space needs an autoencoder (encode/decode)")
        return LatentSpace(autoencoder, **options)
    if autoencoder is not None or options:
        raise ValueError(f"space {name!r} takes no autoencoder or options, got {sorted(options)}")
    return cls()

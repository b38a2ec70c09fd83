"""Spaces: the coordinates a strategy trains and samples in.

``PixelSpace`` is the identity. ``LatentSpace`` wraps any autoencoder with ``encode(x) -> z`` and
``decode(z) -> x`` (latent diffusion, Rombach et al. 2022, https://arxiv.org/abs/2112.10752),
multiplies latents by ``scale_factor`` so they have roughly unit variance, and resizes conditions
to the latent grid; with ``per_channel`` a single-channel autoencoder encodes each target channel
separately. ``PrecomputedLatentSpace`` trains on latents the autoencoder pipeline stored, without
running the encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medgen.diffusion.enums import ConditionResize
from medgen.models.registry import Registry

if TYPE_CHECKING:
    from medgen.diffusion.modes import DiffusionMode

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

    def prepare_target(
        self, mode: DiffusionMode, batch: Mapping[str, Any], device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """The clean sample ``x0`` in this space from a data batch: the mode's target, encoded."""
        return self.encode(mode.target(batch).to(device))

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
            the latent. It is used frozen: encoding runs without gradients. When it has an
            ``in_channels`` attribute (the ``LatentAutoencoder`` protocol), inputs are checked
            against it.
        latent_channels: channels of the autoencoder's latent.
        downsample_factor: data spatial size / latent spatial size per axis (e.g. 4 or 8).
        scale_factor: multiplier applied after encoding and divided out before decoding
            (default 1.0; LDM uses 1 / std of the training latents).
        condition_resize: ``area`` (default: averages the {-1, +1} mask so a lesion smaller than
            a latent cell still moves the value above -1) or ``nearest`` (keeps exact {-1, +1}).
        per_channel: encode each target channel on its own with a single-channel autoencoder
            and concatenate the latents channel by channel (``data_channels * latent_channels``
            channels: those of data channel 0 first); decode splits them back (default False:
            all target channels go through the autoencoder together).
    """

    name = "latent"
    bounded = False
    requires_autoencoder: ClassVar[bool] = True

    def __init__(
        self,
        autoencoder: Any,
        latent_channels: int,
        downsample_factor: int,
        scale_factor: float = 1.0,
        condition_resize: str = ConditionResize.AREA,
        per_channel: bool = False,
    ) -> None:
        if autoencoder is not None or self.requires_autoencoder:
            for attr in ("encode", "decode"):
                if not callable(getattr(autoencoder, attr, None)):
                    raise TypeError(
                        f"{self.name} space: autoencoder {type(autoencoder).__name__} has no "
                        f"{attr}()"
                    )
        if latent_channels < 1 or downsample_factor < 1:
            raise ValueError(
                f"{self.name} space: latent_channels and downsample_factor must be >= 1, got "
                f"{latent_channels} and {downsample_factor}"
            )
        if scale_factor == 0:
            raise ValueError(f"{self.name} space: scale_factor must be non-zero")
        self.autoencoder = autoencoder
        self.latent_channels = int(latent_channels)
        self.downsample_factor = int(downsample_factor)
        self.scale_factor = float(scale_factor)
        self.condition_resize = ConditionResize(condition_resize)
        self.per_channel = bool(per_channel)

    def _encode_unscaled(self, x: torch.Tensor) -> torch.Tensor:
        ae_channels = getattr(self.autoencoder, "in_channels", None)
        if isinstance(ae_channels, int) and ae_channels != x.shape[1]:
            hint = "" if self.per_channel else "; per_channel: true encodes each channel alone"
            raise ValueError(
                f"{self.name} space: the autoencoder encodes {ae_channels}-channel images, got "
                f"{x.shape[1]} channel(s){hint}"
            )
        z = self.autoencoder.encode(x)
        if isinstance(z, tuple | list):
            z = z[0]
        expected = (x.shape[0], self.latent_channels, *self.spatial_shape(x.shape[2:]))
        if tuple(z.shape) != expected:
            raise ValueError(
                f"{self.name} space: autoencoder encoded {tuple(x.shape)} to {tuple(z.shape)}, "
                f"expected {expected} from latent_channels={self.latent_channels}, "
                f"downsample_factor={self.downsample_factor}"
            )
        return z

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if not self.per_channel:
            return self._encode_unscaled(x) * self.scale_factor
        # One batch of B * C single-channel images; row b * C + c is channel c of sample b, so
        # the reshape puts each sample's channel latents next to each other, channel 0 first.
        b, c = x.shape[:2]
        z = self._encode_unscaled(x.reshape(b * c, 1, *x.shape[2:]))
        return z.reshape(b, c * self.latent_channels, *z.shape[2:]) * self.scale_factor

    def unscale(self, z: torch.Tensor) -> torch.Tensor:
        """Space coordinates → the autoencoder's own latents (``z / scale_factor``)."""
        return z / self.scale_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        z = self.unscale(z)
        if not self.per_channel:
            return self.autoencoder.decode(z)
        b, c = z.shape[:2]
        if c % self.latent_channels:
            raise ValueError(
                f"{self.name} space: {c} latent channels are not a multiple of "
                f"latent_channels={self.latent_channels} (per_channel)"
            )
        n = c // self.latent_channels
        x = self.autoencoder.decode(z.reshape(b * n, self.latent_channels, *z.shape[2:]))
        if x.shape[1] != 1:
            raise ValueError(
                f"{self.name} space: per_channel needs a single-channel autoencoder, its decode "
                f"returned {x.shape[1]} channels"
            )
        return x.reshape(b, n, *x.shape[2:])

    def channels(self, data_channels: int) -> int:
        return data_channels * self.latent_channels if self.per_channel else self.latent_channels

    def spatial_shape(self, data_spatial: Sequence[int]) -> tuple[int, ...]:
        bad = [s for s in data_spatial if s % self.downsample_factor]
        if bad:
            raise ValueError(
                f"{self.name} space: spatial size {tuple(data_spatial)} is not divisible by "
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
            "per_channel": self.per_channel,
        }


@SPACES.register("precomputed_latent")
class PrecomputedLatentSpace(LatentSpace):
    """Latent diffusion on latents encoded beforehand (the autoencoder pipeline's ``latents``
    bundle: unscaled posterior means ``[N, C, *latent_spatial]``), so training never runs the
    encoder.

    A batch carries the latents under ``latent_key``; :meth:`encode` only multiplies by
    ``scale_factor``. :meth:`decode` needs the ``autoencoder``; without one, generate with
    ``decode=False`` and hand :meth:`unscale`'s output to the autoencoder elsewhere (e.g. a tiled
    decoder). A spatial condition from the batch is resized to the latent grid as in
    :class:`LatentSpace`. Unbounded, so DDPM's ``clip_sample`` is refused.

    Args:
        autoencoder: optional object with ``encode``/``decode`` (only ``decode`` is used).
        latent_channels, downsample_factor, scale_factor, condition_resize, per_channel: as in
            :class:`LatentSpace` (from the bundle's metadata); ``C`` must equal
            ``channels(target channels)``.
        latent_key: batch key of the latents (default ``"latents"``).
    """

    name = "precomputed_latent"
    requires_autoencoder = False

    def __init__(
        self,
        autoencoder: Any = None,
        *,
        latent_channels: int,
        downsample_factor: int,
        scale_factor: float = 1.0,
        condition_resize: str = ConditionResize.AREA,
        per_channel: bool = False,
        latent_key: str = "latents",
    ) -> None:
        super().__init__(
            autoencoder,
            latent_channels,
            downsample_factor,
            scale_factor,
            condition_resize,
            per_channel,
        )
        self.latent_key = str(latent_key)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` is already a latent: only scaled."""
        return x * self.scale_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.autoencoder is None:
            raise ValueError(
                "precomputed_latent space has no autoencoder to decode with: pass one to "
                "build_space/build_task, or generate with decode=False and decode unscale(z) "
                "with the autoencoder"
            )
        return super().decode(z)

    def prepare_target(
        self, mode: DiffusionMode, batch: Mapping[str, Any], device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """``batch[latent_key]`` scaled, checked against the mode's channel count."""
        if self.latent_key not in batch:
            raise KeyError(
                f"precomputed_latent space needs batch[{self.latent_key!r}]; batch has "
                f"{sorted(batch)}"
            )
        z = batch[self.latent_key]
        expected = self.channels(mode.target_channels)
        if not isinstance(z, torch.Tensor) or z.ndim not in (4, 5) or z.shape[1] != expected:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(
                f"precomputed_latent space: batch[{self.latent_key!r}] must be [B, {expected}, "
                f"*spatial] ({mode.target_channels} target channel(s), latent_channels="
                f"{self.latent_channels}, per_channel={self.per_channel}), got {shape}"
            )
        return self.encode(z.to(device=device, dtype=torch.float32))

    def to_config(self) -> dict[str, Any]:
        return {**super().to_config(), "latent_key": self.latent_key}


def build_space(
    name: str = "pixel", config: dict[str, Any] | None = None, autoencoder: nn.Module | Any = None
):
    """Build a space: ``build_space("pixel")``, ``build_space("latent", {...}, autoencoder)`` or
    ``build_space("precomputed_latent", {...}[, autoencoder])``."""
    options = {k: v for k, v in (config or {}).items() if k != "name"}
    cls = SPACES.get(name)
    if issubclass(cls, LatentSpace):
        if autoencoder is None and cls.requires_autoencoder:
            raise ValueError(f"{cls.name} space needs an autoencoder (encode/decode)")
        return cls(autoencoder, **options)
    if autoencoder is not None or options:
        raise ValueError(f"space {name!r} takes no autoencoder or options, got {sorted(options)}")
    return cls()

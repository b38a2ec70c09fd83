"""Inpainting as a mode of the diffusion core: generate the masked part of an image from the rest.

The network input concatenates, along channels, the noisy target (holding the known values
outside the region, see :class:`~medgen.diffusion.known_region.KnownRegion`), the known image in
space coordinates (the voided image, or its latent), the region as {-1, +1} and any extra
conditioning maps (e.g. tumour-growth and tissue maps). In a latent space the region is max-pooled
to the latent grid, so a latent cell that overlaps the mask at all is generated; the extra maps are
area-averaged. The loss counts the ``loss_region`` (default: the region) only: for BraTS real data
that is ``mask-healthy``, the part of the voided region that has ground truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from medgen.diffusion.modes import MODES, DiffusionMode


def _spatial(batch: Mapping[str, Any], key: str, mode: str) -> torch.Tensor:
    if key not in batch:
        raise KeyError(f"mode {mode!r} needs batch[{key!r}]; batch has {sorted(batch)}")
    value = batch[key]
    if not isinstance(value, torch.Tensor) or value.ndim not in (4, 5):
        raise ValueError(f"mode {mode!r}: batch[{key!r}] must be [B, C, *spatial] (2D/3D)")
    return value


@MODES.register("inpaint")
class InpaintingMode(DiffusionMode):
    """Known image + region (+ conditioning maps) → the image inside the region.

    Args:
        modalities: channel order of ``batch["images"]`` (the ground truth), e.g. ``["t1n"]``.
        target: the modality to inpaint (default ``"t1n"``).
        known_key: batch key of the known (voided) image in data form, or of its latent in a
            ``precomputed_latent`` space (default ``"voided"``).
        region_key: batch key of the region to generate, ``[B, 1, *spatial]`` in {0, 1}
            (default ``"mask"``).
        loss_region_key: batch key of the part of the region the loss counts (default null: the
            region; ``"score_mask"`` for BraTS ``mask-healthy``).
        conditioning_key: batch key of the extra maps ``[B, conditioning_channels, *spatial]``
            (default ``"conditioning"``).
        conditioning_channels: number of extra maps (default 0: none).
        region_dilation: cells by which the region is grown on the space's grid after pooling
            (default 0). In a latent space the known image's latent is contaminated by the void
            wherever the encoder saw it, and the decoder reads neighbouring cells: growing the
            generated region by a cell or two regenerates those cells too. The loss covers the
            grown region except cells that overlap the region's part without ground truth
            (``region`` minus ``loss_region``: the BraTS tumour part).
    """

    name = "inpaint"

    def __init__(
        self,
        modalities: Sequence[str],
        target: str = "t1n",
        known_key: str = "voided",
        region_key: str = "mask",
        loss_region_key: str | None = None,
        conditioning_key: str = "conditioning",
        conditioning_channels: int = 0,
        region_dilation: int = 0,
    ) -> None:
        if not isinstance(conditioning_channels, int) or conditioning_channels < 0:
            raise ValueError(
                f"mode 'inpaint': conditioning_channels must be an int >= 0, got "
                f"{conditioning_channels!r}"
            )
        if not isinstance(region_dilation, int) or region_dilation < 0:
            raise ValueError(
                f"mode 'inpaint': region_dilation must be an int >= 0, got {region_dilation!r}"
            )
        self.region_dilation = region_dilation
        self.target_names = (str(target),)
        self.known_key = str(known_key)
        self.region_key = str(region_key)
        self.loss_region_key = None if loss_region_key is None else str(loss_region_key)
        self.conditioning_key = str(conditioning_key)
        self.conditioning_channels = conditioning_channels
        super().__init__(modalities)

    @property
    def known_channels(self) -> int:
        """Data channels of the known image (the space turns them into its own channels)."""
        return self.target_channels

    @property
    def condition_names(self) -> tuple[str, ...]:
        maps = tuple(f"{self.conditioning_key}_{i}" for i in range(self.conditioning_channels))
        return ("region", *maps)

    def options(self) -> dict[str, Any]:
        return {
            "target": self.target_names[0],
            "known_key": self.known_key,
            "region_key": self.region_key,
            "loss_region_key": self.loss_region_key,
            "conditioning_key": self.conditioning_key,
            "conditioning_channels": self.conditioning_channels,
            "region_dilation": self.region_dilation,
        }

    def known(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The known image (or latent) from ``batch[known_key]``."""
        return _spatial(batch, self.known_key, self.name).to(torch.float32)

    def region(self, batch: Mapping[str, Any], key: str | None = None) -> torch.Tensor:
        """``batch[key or region_key]`` as float {0, 1}; raises ``ValueError`` if not binary."""
        key = key or self.region_key
        region = _spatial(batch, key, self.name)
        if region.shape[1] != 1 or not bool(((region == 0) | (region == 1)).all()):
            raise ValueError(f"mode 'inpaint': batch[{key!r}] must be [B, 1, *spatial] in {{0, 1}}")
        return region.to(torch.float32)

    def loss_region(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.region(batch, self.loss_region_key)

    def condition(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        """The extra conditioning maps (None without any). The region channel that precedes
        them in the network input is added by the task on the space's grid (max-pooled), and
        the known image's space coordinates before that."""
        if not self.conditioning_channels:
            return None
        maps = _spatial(batch, self.conditioning_key, self.name).to(torch.float32)
        if maps.shape[1] != self.conditioning_channels:
            raise ValueError(
                f"mode 'inpaint': batch[{self.conditioning_key!r}] has {maps.shape[1]} "
                f"channels, conditioning_channels={self.conditioning_channels}"
            )
        return maps

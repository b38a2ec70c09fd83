"""Modes: WHAT is generated from what.

A mode maps a data batch (``images`` ``[B, M, *spatial]`` in [-1, 1] with a modality list,
``seg`` ``[B, 1, *spatial]`` lesion labels) to the diffusion target ``x0`` and an optional
condition, declares their channel counts and names, and turns generated tensors back into data.
The lesion mask, as target and as condition, is ``seg > 0`` mapped to {-1, +1}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from medgen.models.registry import Registry

MODES: Registry = Registry("diffusion mode")

LESION_MASK = "lesion_mask"


def lesion_condition(seg: torch.Tensor) -> torch.Tensor:
    """Binary lesion mask ``seg > 0`` as float {-1, +1} (any label map or 0/1 mask works)."""
    return torch.where(seg > 0, 1.0, -1.0).to(torch.float32)


def binarize_mask(mask: torch.Tensor) -> torch.Tensor:
    """Generated mask in [-1, 1] → binary ``uint8`` {0, 1} by threshold 0."""
    return (mask > 0).to(torch.uint8)


def _require(batch: Mapping[str, Any], key: str, mode: str) -> torch.Tensor:
    if key not in batch:
        raise KeyError(f"mode {mode!r} needs batch[{key!r}]; batch has {sorted(batch)}")
    value = batch[key]
    if not isinstance(value, torch.Tensor) or value.ndim not in (4, 5):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"mode {mode!r}: batch[{key!r}] must be [B, C, *spatial] (2D/3D), got {shape}"
        )
    return value


class DiffusionMode:
    """Base class: declares target and condition channels and extracts them from a batch.

    Subclasses set ``name``, ``target_names`` (modality names or ``"lesion_mask"``) and
    ``conditional``, and register with ``@MODES.register(name)``.

    Args:
        modalities: order of the channels of ``batch["images"]``, e.g.
            ``["t1_pre", "t1_gd", "flair", "bravo"]``.

    Raises:
        ValueError: if a modality the mode needs is not in ``modalities`` (message names it).
    """

    name: ClassVar[str]
    target_names: ClassVar[tuple[str, ...]]
    conditional: ClassVar[bool] = True

    def __init__(self, modalities: Sequence[str]) -> None:
        self.modalities = [str(m) for m in modalities]
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"mode {self.name!r}: duplicate modality names in {self.modalities}")
        missing = [n for n in self.target_names if n != LESION_MASK and n not in self.modalities]
        if missing:
            raise ValueError(
                f"mode {self.name!r} needs modality {missing} but the data has {self.modalities}"
            )
        self.target_indices = [
            self.modalities.index(n) for n in self.target_names if n != LESION_MASK
        ]

    @property
    def target_channels(self) -> int:
        return len(self.target_names)

    @property
    def condition_names(self) -> tuple[str, ...]:
        return (LESION_MASK,) if self.conditional else ()

    @property
    def condition_channels(self) -> int:
        return len(self.condition_names)

    def condition(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        """The {-1, +1} lesion condition from ``batch["seg"]``, or None for unconditional modes."""
        if not self.conditional:
            return None
        return lesion_condition(_require(batch, "seg", self.name))

    def target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The clean target ``x0`` ``[B, target_channels, *spatial]``."""
        images = _require(batch, "images", self.name)
        if images.shape[1] != len(self.modalities):
            raise ValueError(
                f"mode {self.name!r}: batch['images'] has {images.shape[1]} channels but the "
                f"modality list has {len(self.modalities)}: {self.modalities}"
            )
        return images[:, self.target_indices].to(torch.float32)

    def prepare(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x0, condition or None)`` from a data batch."""
        return self.target(batch), self.condition(batch)

    def to_data(self, generated: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generated ``[B, target_channels, *spatial]`` → ``{name: [B, 1, *spatial]}``, images
        clamped to [-1, 1]."""
        self._check_generated(generated)
        return {
            name: generated[:, i : i + 1].clamp(-1.0, 1.0)
            for i, name in enumerate(self.target_names)
        }

    def _check_generated(self, generated: torch.Tensor) -> None:
        if generated.ndim not in (4, 5) or generated.shape[1] != self.target_channels:
            raise ValueError(
                f"mode {self.name!r} expects generated [B, {self.target_channels}, *spatial], "
                f"got {tuple(generated.shape)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(modalities={self.modalities})"


@MODES.register("seg")
class SegMode(DiffusionMode):
    """Unconditional generation of the binary lesion mask (1 channel in {-1, +1})."""

    name = "seg"
    target_names = (LESION_MASK,)
    conditional = False

    def target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return lesion_condition(_require(batch, "seg", self.name))

    def to_data(self, generated: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"seg": uint8 [B, 1, *spatial]}``, binary by threshold 0."""
        self._check_generated(generated)
        return {"seg": binarize_mask(generated)}


@MODES.register("bravo")
class ConditionalBravoMode(DiffusionMode):
    """Lesion mask → BRAVO image."""

    name = "bravo"
    target_names = ("bravo",)


@MODES.register("dual")
class ConditionalDualMode(DiffusionMode):
    """Lesion mask → T1 pre- and post-contrast images generated jointly (2 channels)."""

    name = "dual"
    target_names = ("t1_pre", "t1_gd")


@MODES.register("t1_pre")
class ConditionalT1PreMode(DiffusionMode):
    """Lesion mask → T1 pre-contrast image."""

    name = "t1_pre"
    target_names = ("t1_pre",)


@MODES.register("t1_gd")
class ConditionalT1GdMode(DiffusionMode):
    """Lesion mask → T1 post-contrast (gadolinium) image."""

    name = "t1_gd"
    target_names = ("t1_gd",)


def build_mode(name: str, modalities: Sequence[str]) -> DiffusionMode:
    """Build the mode registered as ``name`` for data with channel order ``modalities``."""
    return MODES.get(name)(modalities)

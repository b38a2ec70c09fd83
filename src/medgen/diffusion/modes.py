"""Modes: WHAT is generated from what.

A mode maps a data batch (``images`` ``[B, M, *spatial]`` in [-1, 1] with a modality list,
``seg`` ``[B, 1, *spatial]`` lesion labels, per-sample class labels such as ``lesion_present``)
to the diffusion target ``x0`` and an optional condition, declares their channel counts and names,
and turns generated tensors back into data. The lesion mask, as target and as spatial condition,
is ``seg > 0`` mapped to {-1, +1}; a class condition is an int64 label ``[B]``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from medgen.models.dit import NULL_CLASS
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
    ``conditional``, and register with ``@MODES.register(name)``. A subclass with options takes
    them as keyword arguments after ``modalities`` and returns them from :meth:`options` (JSON
    values), so a task config rebuilds it.

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
    def num_classes(self) -> int:
        """Number of classes of a class condition; 0 for modes without one."""
        return 0

    @property
    def condition_channels(self) -> int:
        """Channels a spatial condition adds to the network input (class labels add none)."""
        return 0 if self.num_classes else len(self.condition_names)

    @property
    def spatial_condition(self) -> bool:
        """Whether the condition is a map resized to the space's grid (not labels or tokens)."""
        return self.conditional and not self.num_classes

    @property
    def known_channels(self) -> int:
        """Data channels of a known image the network also sees (inpainting); 0 otherwise."""
        return 0

    def options(self) -> dict[str, Any]:
        """Constructor options besides ``modalities`` (JSON values); none for the base modes."""
        return {}

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
        options = "".join(f", {k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}(modalities={self.modalities}{options})"


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


@MODES.register("class")
class ClassConditionalMode(DiffusionMode):
    """Class label → images, e.g. lesion present / absent → a multi-modal volume.

    The condition is ``batch[label_key]`` (int64 ``[B]`` or ``[B, 1]``, integer or bool), passed
    to the network as ``class_labels`` (see :class:`~medgen.models.dit.DiT`); it adds no input
    channels. The null class -1 of classifier-free guidance is never a data label.

    Args:
        modalities: order of the channels of ``batch["images"]``.
        targets: modalities to generate (default null: all of ``modalities``, in that order).
        label_key: batch key of the labels (default ``"class_label"``; ``"lesion_present"`` for
            the volumes bundle).
        num_classes: number of classes, labels in ``[0, num_classes)`` (default 2).
        class_names: a name per class for reports (default ``class_0``, ``class_1``, ...).
    """

    name = "class"

    def __init__(
        self,
        modalities: Sequence[str],
        targets: Sequence[str] | None = None,
        label_key: str = "class_label",
        num_classes: int = 2,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"mode 'class': num_classes must be an int >= 1, got {num_classes!r}")
        names = [str(m) for m in (modalities if targets is None else targets)]
        if not names or len(set(names)) != len(names) or LESION_MASK in names:
            raise ValueError(
                f"mode 'class': targets must be distinct image modalities, got {names}"
            )
        if class_names is None:
            class_names = [f"class_{i}" for i in range(num_classes)]
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise ValueError(
                f"mode 'class': {len(class_names)} class_names {class_names} for "
                f"num_classes={num_classes}"
            )
        self.target_names = tuple(names)
        self.label_key = str(label_key)
        self._num_classes = num_classes
        self.class_names = class_names
        super().__init__(modalities)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def condition_names(self) -> tuple[str, ...]:
        return (self.label_key,)

    def options(self) -> dict[str, Any]:
        return {
            "targets": list(self.target_names),
            "label_key": self.label_key,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
        }

    def check_labels(self, labels: Any, allow_null: bool = False) -> torch.Tensor:
        """``labels`` as int64 ``[B]``; raises ``ValueError`` naming a wrong shape, dtype or value
        (``allow_null``: -1, the unconditional class, is accepted too)."""
        where = f"mode 'class': labels {self.label_key!r}"
        if not isinstance(labels, torch.Tensor):
            raise ValueError(f"{where} must be a tensor, got {type(labels).__name__}")
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
            raise ValueError(
                f"{where} must be integers of shape [B], got {tuple(labels.shape)} {labels.dtype}"
            )
        labels = labels.long()
        low = NULL_CLASS if allow_null else 0
        bad = (labels < low) | (labels >= self.num_classes)
        if bad.any():
            raise ValueError(
                f"{where} must lie in [{low}, {self.num_classes}), got "
                f"{sorted(set(labels[bad].tolist()))}"
            )
        return labels

    def condition(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The int64 class labels ``[B]`` from ``batch[label_key]``."""
        if self.label_key not in batch:
            raise KeyError(
                f"mode {self.name!r} needs batch[{self.label_key!r}]; batch has {sorted(batch)}"
            )
        return self.check_labels(batch[self.label_key])


def build_mode(
    name: str, modalities: Sequence[str], options: Mapping[str, Any] | None = None
) -> DiffusionMode:
    """Build the mode registered as ``name`` for data with channel order ``modalities`` and the
    mode's ``options`` (see :meth:`DiffusionMode.options`)."""
    cls = MODES.get(name)
    options = dict(options or {})
    parameters = inspect.signature(cls.__init__).parameters
    allowed = [p for p in parameters if p not in ("self", "modalities")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"mode {name!r}: unknown option(s) {unknown}; allowed: {allowed}")
    return cls(modalities, **options)

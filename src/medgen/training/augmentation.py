"""Two training aids of the seed codebases: on-the-fly augmentation and ``overfit_batches``.

`AugmentationConfig` (``training.augmentation``) builds one MONAI dictionary transform that the
engine applies to every training item (a dict of tensors ``[C, *spatial]``): random flips and
small rotations of all ``keys`` together, so an image, its mask and its conditioning maps stay
aligned (MONAI draws one set of random parameters per call for all keys), with nearest-neighbour
interpolation for ``mask_keys``; intensity jitter (a random gamma, which keeps the intensity
range, and a small shift, clipped back to ``clip_range``) of ``intensity_keys`` only; and
Gaussian noise of ``noise_keys`` (latent models: noise augmentation in latent space, as the
inpainting design does). Keys of different grids (a data-space mask next to its latent) are
flipped along the same axes and rotated by the same angle, which keeps them aligned.

Randomness: each item's transform is seeded from the global torch RNG, which the engine
checkpoints, so a resumed run draws the same augmentations (exactly so with ``num_workers: 0``).

``training.overfit_batches: N`` (`training_data`) trains on N fixed batches per rank, the first
N·batch_size·world_size items in order, every epoch the same: a model and loss that cannot fit
them has a bug. It excludes augmentation (the batches would not be fixed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset, Subset

from medgen.config import config_to_dict, refuse_unknown_keys
from medgen.training.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from medgen.training.config import TrainingConfig

SECTION = "training.augmentation"


@dataclass(frozen=True)
class AugmentationConfig:
    """``training.augmentation``; off by default.

    keys: item keys transformed spatially together (default ``["images"]``).
    mask_keys: those of ``keys`` interpolated nearest-neighbour (masks, label maps).
    flip_prob (0.5) / flip_axes ([0]): each spatial axis in ``flip_axes`` (0 = the first axis
        after channels) is flipped with probability ``flip_prob``.
    rotate_prob (0.0) / rotate_degrees (10.0): a rotation by up to ± ``rotate_degrees`` about
        every axis (3D) or the plane (2D), with probability ``rotate_prob``.
    intensity_keys (``["images"]``), intensity_prob (0.0), gamma_range ([0.8, 1.25]),
        shift (0.05), clip_range ([-1, 1], null: no clipping): intensity jitter.
    noise_keys ([]), noise_prob (0.0), noise_std (0.1): additive Gaussian noise.
    """

    enabled: bool = False
    keys: tuple[str, ...] = ("images",)
    mask_keys: tuple[str, ...] = ()
    flip_prob: float = 0.5
    flip_axes: tuple[int, ...] = (0,)
    rotate_prob: float = 0.0
    rotate_degrees: float = 10.0
    intensity_keys: tuple[str, ...] = ("images",)
    intensity_prob: float = 0.0
    gamma_range: tuple[float, float] = (0.8, 1.25)
    shift: float = 0.05
    clip_range: tuple[float, float] | None = (-1.0, 1.0)
    noise_keys: tuple[str, ...] = ()
    noise_prob: float = 0.0
    noise_std: float = 0.1

    def __post_init__(self) -> None:
        for key in ("keys", "mask_keys", "flip_axes", "intensity_keys", "noise_keys"):
            value = getattr(self, key)
            if isinstance(value, list | tuple):
                object.__setattr__(self, key, tuple(value))
        for key in ("gamma_range", "clip_range"):
            value = getattr(self, key)
            if isinstance(value, list):
                object.__setattr__(self, key, tuple(value))

        def fail(key: str, why: str) -> None:
            raise ConfigError(f"{SECTION}.{key}={getattr(self, key)!r}: {why}")

        if not isinstance(self.enabled, bool):
            fail("enabled", "must be true or false")
        for key in ("keys", "mask_keys", "intensity_keys", "noise_keys"):
            value = getattr(self, key)
            if not isinstance(value, tuple) or not all(isinstance(k, str) for k in value):
                fail(key, "must be a list of item keys")
        if not set(self.mask_keys) <= set(self.keys):
            fail("mask_keys", f"must be among keys {list(self.keys)}")
        if not all(
            isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in self.flip_axes
        ):
            fail("flip_axes", "must be spatial axis indices >= 0")
        for key in ("flip_prob", "rotate_prob", "intensity_prob", "noise_prob"):
            if not _number(getattr(self, key)) or not 0 <= getattr(self, key) <= 1:
                fail(key, "must be a probability in [0, 1]")
        for key in ("rotate_degrees", "shift", "noise_std"):
            if not _number(getattr(self, key)) or getattr(self, key) < 0:
                fail(key, "must be a finite number >= 0")
        low, high = _pair(self.gamma_range) or (0, -1)
        if not 0 < low <= high:
            fail("gamma_range", "must be two numbers 0 < low <= high")
        if self.clip_range is not None:
            low, high = _pair(self.clip_range) or (0, -1)
            if not low < high:
                fail("clip_range", "must be null or two numbers low < high")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> AugmentationConfig:
        params = dict(params or {})
        refuse_unknown_keys(cls, params, SECTION, ConfigError)
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def transform(self, spatial_dims: int):
        """The MONAI ``Compose`` of the configured transforms for items of ``spatial_dims``."""
        from monai.transforms import (
            Compose,
            RandAdjustContrastd,
            RandFlipd,
            RandGaussianNoised,
            RandRotated,
            RandShiftIntensityd,
            ScaleIntensityRanged,
        )

        keys = list(self.keys)
        steps: list[Any] = []
        if self.flip_prob > 0:
            for axis in self.flip_axes:
                if axis >= spatial_dims:
                    raise ConfigError(
                        f"{SECTION}.flip_axes: axis {axis} does not exist in {spatial_dims}D items"
                    )
                steps.append(RandFlipd(keys, prob=self.flip_prob, spatial_axis=axis))
        if self.rotate_prob > 0 and self.rotate_degrees > 0:
            angle = math.radians(self.rotate_degrees)
            ranges = {"range_x": angle} if spatial_dims == 2 else dict.fromkeys(_AXES, angle)
            modes = ["nearest" if k in self.mask_keys else "bilinear" for k in keys]
            steps.append(
                RandRotated(
                    keys, prob=self.rotate_prob, mode=modes, padding_mode="border", **ranges
                )
            )
        if self.intensity_prob > 0 and self.intensity_keys:
            ikeys = list(self.intensity_keys)
            steps.append(
                RandAdjustContrastd(ikeys, prob=self.intensity_prob, gamma=self.gamma_range)
            )
            steps.append(RandShiftIntensityd(ikeys, offsets=self.shift, prob=self.intensity_prob))
            if self.clip_range is not None:
                low, high = self.clip_range
                steps.append(ScaleIntensityRanged(ikeys, low, high, low, high, clip=True))
        if self.noise_prob > 0 and self.noise_std > 0 and self.noise_keys:
            steps.append(
                RandGaussianNoised(list(self.noise_keys), prob=self.noise_prob, std=self.noise_std)
            )
        return Compose(steps)


_AXES = ("range_x", "range_y", "range_z")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, tuple) and len(value) == 2 and all(_number(v) for v in value):
        return float(value[0]), float(value[1])
    return None


class AugmentedDataset(Dataset):
    """``dataset``'s dict items through ``config``'s transform (see the module docstring)."""

    def __init__(self, dataset: Dataset, config: AugmentationConfig) -> None:
        self.dataset = dataset
        self.config = config
        self._transforms: dict[int, Any] = {}  # one Compose per spatial dimensionality

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        if not isinstance(item, Mapping):
            raise ConfigError(
                f"{SECTION} needs dict items, but the training data yields {type(item).__name__}"
            )
        missing = sorted(
            {*self.config.keys, *self.config.intensity_keys, *self.config.noise_keys} - set(item)
        )
        if missing:
            raise ConfigError(
                f"{SECTION}: the training items have no key(s) {missing}; they have {sorted(item)}"
            )
        dims = item[self.config.keys[0]].ndim - 1
        if dims not in self._transforms:
            self._transforms[dims] = self.config.transform(dims)
        transform = self._transforms[dims]
        # From the global RNG, which the engine checkpoints: a resumed run draws the same.
        transform.set_random_state(seed=int(torch.randint(0, 2**31 - 1, ()).item()))
        out = transform(dict(item))
        # Plain tensors of the original dtypes (MONAI returns float MetaTensors).
        return {k: _plain(out[k], item[k]) for k in item}


def _plain(value: Any, original: Any) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    tensor = value.as_tensor() if hasattr(value, "as_tensor") else value
    if isinstance(original, torch.Tensor) and tensor.dtype != original.dtype:
        tensor = tensor.round() if not original.is_floating_point() else tensor
        tensor = tensor.to(original.dtype)
    return tensor


def training_data(dataset: Dataset, config: TrainingConfig, world_size: int) -> Dataset:
    """The dataset the engine iterates: ``overfit_batches`` fixed items, or augmented items."""
    if config.overfit_batches is not None:
        n = config.overfit_batches * config.batch_size * world_size
        if n > len(dataset):
            raise ConfigError(
                f"training.overfit_batches={config.overfit_batches} needs {n} items "
                f"(x batch_size {config.batch_size} x {world_size} rank(s)); the data has "
                f"{len(dataset)}"
            )
        return Subset(dataset, list(range(n)))
    if config.augmentation.enabled:
        return AugmentedDataset(dataset, config.augmentation)
    return dataset

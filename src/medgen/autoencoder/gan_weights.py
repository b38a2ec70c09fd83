"""The VAE-GAN loss's weights (`GANLossWeights`, the ``loss`` parameter block) and the
channel-difference term (`channel_difference_l1`); `medgen.autoencoder.gan` combines them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class GANLossWeights:
    """The ``loss`` parameters: term weights and the adversarial schedule.

    l1 (1.0), kl (1e-6; the regularisation term), perceptual (0.3), adversarial (0.01,
    MONAI's tutorial value; weighs the generator and the discriminator term alike),
    adversarial_start_step (0): optimizer steps without any adversarial term,
    discriminator_lr_scale (5.0): discriminator lr / autoencoder lr (MONAI's 2D tutorial
    uses 5e-4 vs 1e-4); channel_difference (0.0): weight of the L1 between the reconstructed
    and the real difference of each channel pair in difference_pairs (()), pairs of input
    channel indices ``[a, b]`` for ``x_a − x_b``.
    """

    l1: float = 1.0
    kl: float = 1e-6
    perceptual: float = 0.3
    adversarial: float = 0.01
    adversarial_start_step: int = 0
    discriminator_lr_scale: float = 5.0
    channel_difference: float = 0.0
    difference_pairs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        pairs = tuple(tuple(p) for p in self.difference_pairs)
        if any(len(p) != 2 or not all(is_int(i) and i >= 0 for i in p) or p[0] == p[1]
               for p in pairs):  # fmt: skip
            raise ValueError(
                f"loss parameter difference_pairs={self.difference_pairs!r}: must be pairs "
                "[a, b] of two different channel indices >= 0"
            )
        object.__setattr__(self, "difference_pairs", pairs)
        if self.channel_difference and not pairs:
            raise ValueError("loss parameter channel_difference > 0 needs difference_pairs")
        for key in ("l1", "kl", "perceptual", "adversarial", "channel_difference"):
            value = getattr(self, key)
            if not is_number(value) or value < 0:
                raise ValueError(f"loss parameter {key}={value!r}: must be a number >= 0")
        if not is_int(self.adversarial_start_step) or self.adversarial_start_step < 0:
            raise ValueError(
                f"loss parameter adversarial_start_step={self.adversarial_start_step!r}: "
                "must be an integer >= 0"
            )
        if not is_number(self.discriminator_lr_scale) or self.discriminator_lr_scale <= 0:
            raise ValueError(
                f"loss parameter discriminator_lr_scale={self.discriminator_lr_scale!r}: "
                "must be a number > 0"
            )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["difference_pairs"] = [list(p) for p in self.difference_pairs]
        return out


def channel_difference_l1(
    reconstruction: torch.Tensor, images: torch.Tensor, pairs: tuple[tuple[int, int], ...]
) -> torch.Tensor:
    """Sum over ``pairs`` (a, b) of L1(x'_a − x'_b, x_a − x_b); 0 without pairs."""
    total = reconstruction.new_zeros((), dtype=torch.float32)
    for a, b in pairs:
        total = total + F.l1_loss(
            (reconstruction[:, a] - reconstruction[:, b]).float(),
            (images[:, a] - images[:, b]).float(),
        )
    return total

"""Losses of autoencoder training: KL, LPIPS perceptual loss, patch adversarial loss.

* `kl_divergence`: KL of a diagonal Gaussian posterior from N(0, I), in the convention of
  MONAI's AutoencoderKL tutorials (which is also Rombach et al.'s): sum over the latent
  dimensions, mean over the batch.
* `PerceptualLoss`: LPIPS (Zhang et al., CVPR 2018, https://arxiv.org/abs/1801.03924) from
  the ``lpips`` package as a frozen, differentiable loss; 3D inputs use a "2.5D" loss on
  slices of the three orthogonal planes (what MONAI's ``PerceptualLoss`` calls fake_3d).
* `adversarial_loss`: MONAI's ``PatchAdversarialLoss`` with the least-squares criterion
  (LSGAN, Mao et al. 2017), for the generator and the discriminator alike.

Pretrained weights are never downloaded here: the trunk file is checked first (the same
checks as the LPIPS metric, `medgen.metrics.lpips_metric`) and a missing file raises
`MissingWeightsError` naming it and where it goes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from monai.losses import PatchAdversarialLoss
from torch import nn

from medgen.config import config_from_params
from medgen.metrics.errors import require_weights_file
from medgen.metrics.images import to_three_channels
from medgen.metrics.lpips_metric import (
    RANDOM_INIT_SUFFIX,
    lpips_linear_weights_file,
    torchvision_trunk_weights_file,
)

LPIPS_NETS = ("alex", "vgg", "squeeze")
SLICES_3D = ("central", "random")
# Smallest 2D side the LPIPS trunks accept: their strided convolutions and pools shrink a
# smaller image to nothing before the last feature layer (measured with lpips 0.1.4).
MIN_LPIPS_SIZE = {"alex": 31, "vgg": 16, "squeeze": 20}


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(z_mu, z_sigma^2) || N(0, I)): summed over all latent dims, averaged over the batch.

    Args:
        z_mu: posterior means ``[B, C, *spatial]``.
        z_sigma: posterior standard deviations, same shape, > 0.

    ``0.5 * sum(mu^2 + sigma^2 - log(sigma^2) - 1)`` per item, as in MONAI's AutoencoderKL
    tutorials; multiply by a small weight (1e-6 there) in the total loss.
    """
    if z_mu.shape != z_sigma.shape:
        raise ValueError(
            f"z_mu and z_sigma must have equal shapes, got {tuple(z_mu.shape)} and "
            f"{tuple(z_sigma.shape)}"
        )
    per_item = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - 2.0 * torch.log(z_sigma) - 1.0)
    return per_item.flatten(1).sum(dim=1).mean()


def adversarial_loss() -> PatchAdversarialLoss:
    """MONAI's least-squares patch adversarial loss (mean over patches)."""
    return PatchAdversarialLoss(criterion="least_squares")


@dataclass(frozen=True)
class PerceptualConfig:
    """The ``perceptual`` parameters.

    enabled (True): False turns the perceptual loss off (no weights needed).
    net ("alex"): LPIPS trunk, one of "alex", "vgg", "squeeze".
    pretrained_backbone (True): ImageNet trunk weights from the torch hub cache (or
        ``weights_path``); False: a seeded random trunk (runs offline, not published LPIPS).
    weights_path (None): a torchvision trunk file to load instead of the hub cache file.
    seed (0): seed of the random trunk.
    slices_3d ("random"): for 3D inputs, "central" (the middle slice of each orthogonal
        plane) or "random" (``slices_per_plane`` random slices per plane, new each call).
    slices_per_plane (1): slices per plane in "random" mode.
    """

    enabled: bool = True
    net: str = "alex"
    pretrained_backbone: bool = True
    weights_path: str | None = None
    seed: int = 0
    slices_3d: str = "random"
    slices_per_plane: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool) or not isinstance(self.pretrained_backbone, bool):
            raise ValueError(
                f"perceptual enabled={self.enabled!r} and pretrained_backbone="
                f"{self.pretrained_backbone!r} must be true or false"
            )
        if self.net not in LPIPS_NETS:
            raise ValueError(f"perceptual net={self.net!r}: must be one of {LPIPS_NETS}")
        if self.slices_3d not in SLICES_3D:
            raise ValueError(f"perceptual slices_3d={self.slices_3d!r}: must be one of {SLICES_3D}")
        n = self.slices_per_plane
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"perceptual slices_per_plane={n!r}: must be an integer >= 1")
        if self.weights_path is not None and not self.pretrained_backbone:
            raise ValueError(
                f"perceptual weights_path={self.weights_path!r} needs pretrained_backbone: true "
                "(a random trunk loads no weights)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PerceptualLoss(nn.Module):
    """Frozen LPIPS distance as a differentiable loss, for 2D or 3D images in [-1, 1].

    Args:
        net: "alex" (default), "vgg" or "squeeze".
        pretrained_backbone: True (default): the torchvision ImageNet trunk, read from
            ``weights_path`` or else from the torch hub cache
            (``torch.hub.get_dir()/checkpoints/<file>``); a missing file raises
            `MissingWeightsError` naming it. False: a random trunk seeded with ``seed``.
        weights_path: explicit trunk file (a torchvision state dict of the same net).
        seed: seed of the random trunk (default 0); the caller's RNG is left untouched.
        slices_3d / slices_per_plane: 3D inputs, see `PerceptualConfig` (default "random", 1).

    Every input channel is scored as its own grayscale image (repeated to RGB) and the
    channels are averaged: MRI channels are different sequences, not colours. The learned
    LPIPS linear layers ship inside the lpips package. All parameters are frozen and the
    module stays in eval mode even when its parent trains (LPIPS has dropout layers).
    """

    def __init__(
        self,
        net: str = "alex",
        pretrained_backbone: bool = True,
        weights_path: str | Path | None = None,
        seed: int = 0,
        slices_3d: str = "random",
        slices_per_plane: int = 1,
    ) -> None:
        super().__init__()
        import lpips

        config = PerceptualConfig(
            net=net,
            pretrained_backbone=pretrained_backbone,
            weights_path=None if weights_path is None else str(weights_path),
            seed=seed,
            slices_3d=slices_3d,
            slices_per_plane=slices_per_plane,
        )
        self.net_name, self.slices_3d, self.slices_per_plane = net, slices_3d, slices_per_plane
        require_weights_file(
            lpips_linear_weights_file(net),
            f"lpips-{net}",
            source="the lpips package (reinstall lpips)",
        )
        trunk_file = None
        if pretrained_backbone:
            trunk_file = _trunk_file(net, config.weights_path)
        # The trunk is always built random and then filled from the checked file, so
        # torchvision never gets the chance to download anything.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="torchvision")
            torch.manual_seed(seed)
            self.lpips = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        if trunk_file is not None:
            _load_trunk(self.lpips.net, trunk_file)
        self.lpips.requires_grad_(False)
        self.lpips.eval()
        if trunk_file is None:
            self.backbone_name = f"lpips-{net}{RANDOM_INIT_SUFFIX}"
        elif config.weights_path is not None:
            self.backbone_name = f"lpips-{net} (trunk from {trunk_file})"
        else:
            self.backbone_name = f"lpips-{net}"

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Stay in eval mode: the loss network is fixed, its dropout must stay off."""
        return super().train(False)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS between ``prediction`` and ``target`` ``[B, C, H, W]`` or ``[B, C, D, H, W]``."""
        if prediction.shape != target.shape:
            raise ValueError(
                f"perceptual loss needs equal shapes, got {tuple(prediction.shape)} and "
                f"{tuple(target.shape)}"
            )
        if prediction.ndim == 4:
            return self._loss_2d(prediction, target)
        if prediction.ndim == 5:
            return self._loss_25d(prediction, target)
        raise ValueError(
            f"perceptual loss needs [B, C, H, W] or [B, C, D, H, W], got {tuple(prediction.shape)}"
        )

    def _loss_2d(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        minimum = MIN_LPIPS_SIZE[self.net_name]
        if min(prediction.shape[2:]) < minimum:
            raise ValueError(
                f"LPIPS-{self.net_name} needs images of at least {minimum}x{minimum} pixels, got "
                f"{tuple(prediction.shape[2:])}"
            )
        # Channels folded into the batch: every channel is its own grayscale image, and the
        # mean over the batch is then the mean over channels too.
        b, c, h, w = prediction.shape
        x = to_three_channels(prediction.reshape(b * c, 1, h, w))
        y = to_three_channels(target.reshape(b * c, 1, h, w))
        return self.lpips(x, y).mean()

    def _loss_25d(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses = []
        for axis in (2, 3, 4):
            size = prediction.shape[axis]
            if self.slices_3d == "central":
                index = torch.tensor([size // 2])
            else:  # global RNG: the engine checkpoints it, so resumed runs draw the same slices
                index = torch.randperm(size)[: self.slices_per_plane]
            index = index.to(prediction.device)
            losses.append(
                self._loss_2d(_slices(prediction, axis, index), _slices(target, axis, index))
            )
        return torch.stack(losses).mean()


def _slices(volume: torch.Tensor, axis: int, index: torch.Tensor) -> torch.Tensor:
    """Slices ``index`` along ``axis`` of ``[B, C, D, H, W]`` as a batch of 2D images."""
    picked = volume.index_select(axis, index).movedim(axis, 1)  # [B, k, C, a, b]
    b, k, c = picked.shape[:3]
    return picked.reshape(b * k, c, *picked.shape[3:])


def _trunk_file(net: str, weights_path: str | None) -> Path:
    hint = (
        "Or set perceptual enabled: false, or pretrained_backbone: false for an explicitly "
        "named random-init trunk."
    )
    if weights_path is not None:
        return require_weights_file(
            Path(weights_path),
            f"lpips-{net}",
            source="the perceptual weights_path parameter",
            hint=hint,
        )
    return require_weights_file(
        torchvision_trunk_weights_file(net),
        f"lpips-{net}",
        source="torchvision's ImageNet weights (the torch hub cache)",
        hint=hint,
    )


def _load_trunk(trunk: nn.Module, path: Path) -> None:
    """Fill lpips' trunk (``sliceK.<i>.*``) from a torchvision state dict (``features.<i>.*``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    wanted = {}
    for name in trunk.state_dict():
        _, rest = name.split(".", 1)  # drop "sliceK": lpips keeps torchvision's layer index
        key = f"features.{rest}"
        if key not in state:
            raise ValueError(
                f"{path} is not a torchvision state dict of this LPIPS trunk: it has no {key!r}"
            )
        wanted[name] = state[key]
    trunk.load_state_dict(wanted)


def build_perceptual_loss(
    config: Mapping[str, Any] | PerceptualConfig | None,
) -> PerceptualLoss | None:
    """`PerceptualLoss` from the ``perceptual`` parameters (`PerceptualConfig`); None when off."""
    if not isinstance(config, PerceptualConfig):
        config = config_from_params(PerceptualConfig, config, "perceptual")
    if not config.enabled:
        return None
    return PerceptualLoss(
        net=config.net,
        pretrained_backbone=config.pretrained_backbone,
        weights_path=config.weights_path,
        seed=config.seed,
        slices_3d=config.slices_3d,
        slices_per_plane=config.slices_per_plane,
    )

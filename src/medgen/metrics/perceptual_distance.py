"""Differentiable perceptual distances over the metrics' feature networks, for a loss term.

`build_perceptual_distance(config)` reads a ``training.perceptual`` dict
(`medgen.training.perceptual_config`) and returns a frozen `PerceptualDistance`:
``distance(x, y) -> [B]`` for images ``[B, C, H, W]`` or volumes ``[B, C, D, H, W]`` in [-1, 1]
whose gradient flows to ``x``. Every channel is compared as its own grayscale image and the
channels averaged (MRI channels are sequences, not colours); a volume is compared on its three
central orthogonal slices (a 2.5D distance, deterministic so it draws nothing from the RNG).

Networks, loaded the way the metrics load them (and refused the same way: a missing file raises
`MissingWeightsError` naming it, nothing is downloaded):

* ``lpips``: the LPIPS model of `LPIPSScorer` (AlexNet/VGG/SqueezeNet trunk from the torch hub
  cache, linear layers from the lpips package; ``pretrained_backbone: false`` = a seeded random
  trunk, named as such);
* ``radimagenet_resnet50``: RadImageNet's ResNet-50 (``weights_path``, default
  `backbones.DEFAULT_RADIMAGENET_PATH`), pooled features;
* ``in_domain``: the encoder the evaluation pipeline trains on the real training split
  (``weights_path``, default :data:`DEFAULT_IN_DOMAIN_PATH`), named by its provenance.

For the two feature extractors the distance is the squared difference of the L2-normalised
pooled features (LPIPS normalises its features the same way before comparing them).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medgen.metrics.backbones import DEFAULT_RADIMAGENET_PATH, _RadImageNetResNet50
from medgen.metrics.errors import require_weights_file
from medgen.metrics.images import to_three_channels
from medgen.metrics.in_domain import load_in_domain_backbone
from medgen.metrics.lpips_metric import LPIPSScorer

DEFAULT_IN_DOMAIN_PATH = Path("data/06_models/evaluation/in_domain_backbone.safetensors")


class _LpipsImages(nn.Module):
    """LPIPS ``[N, 1, H, W]`` pairs → ``[N]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(to_three_channels(x), to_three_channels(y)).flatten()


class _FeatureImages(nn.Module):
    """``‖f(x)/‖f(x)‖ − f(y)/‖f(y)‖‖²`` of a pooled-feature network on ``[N, 1, H, W]``."""

    def __init__(self, network: nn.Module, rgb_unit_range: bool) -> None:
        super().__init__()
        self.network = network
        self.rgb_unit_range = rgb_unit_range  # RadImageNet reads RGB in [0, 1]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.rgb_unit_range:
            images = to_three_channels((images + 1.0) / 2.0)
        features = self.network(images).flatten(1)
        return features / features.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.features(x) - self.features(y)).pow(2).sum(dim=1)


class PerceptualDistance(nn.Module):
    """Per-sample distance of a frozen 2D network on 2D images or 2.5D volumes (module
    docstring); ``name`` says which network, as the metrics name it."""

    def __init__(self, images: nn.Module, name: str) -> None:
        super().__init__()
        self.images = images
        self.name = name
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualDistance:
        """Stay in eval mode: the network is fixed (LPIPS has dropout)."""
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim not in (4, 5):
            raise ValueError(
                f"perceptual distance needs two equal [B, C, H, W] or [B, C, D, H, W] shapes, "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if x.ndim == 5:
            planes = [self._planar(x, y, axis) for axis in (2, 3, 4)]
            return torch.stack(planes).mean(dim=0)
        b, c = x.shape[:2]
        flat = self.images(x.reshape(b * c, 1, *x.shape[2:]), y.reshape(b * c, 1, *y.shape[2:]))
        return flat.reshape(b, c).mean(dim=1)

    def _planar(self, x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
        middle = x.shape[axis] // 2
        return self.forward(x.select(axis, middle), y.select(axis, middle))


def build_perceptual_distance(config: Mapping[str, Any]) -> PerceptualDistance:
    """The frozen distance of a ``training.perceptual`` dict (module docstring)."""
    network = str(config.get("network", "lpips"))
    weights_path = config.get("weights_path")
    if network == "lpips":
        if weights_path is not None:
            raise ValueError(
                "training.perceptual.weights_path is for radimagenet_resnet50 and in_domain; "
                "LPIPS reads its trunk from the torch hub cache"
            )
        with warnings.catch_warnings():  # torchvision's note on lpips' random trunk
            warnings.filterwarnings("ignore", module="torchvision")
            scorer = LPIPSScorer(
                net=str(config.get("lpips_net", "alex")),
                pretrained_backbone=bool(config.get("pretrained_backbone", True)),
                seed=int(config.get("seed", 0)),
            )
        return PerceptualDistance(_LpipsImages(scorer.model), scorer.name)
    if network == "radimagenet_resnet50":
        path = require_weights_file(
            Path(weights_path or DEFAULT_RADIMAGENET_PATH),
            "radimagenet_resnet50",
            source="RadImageNet (RadImageNet-ResNet50_notop, converted to a torchvision resnet50 "
            "state_dict without the fc layer); set training.perceptual.weights_path",
        )
        model = _RadImageNetResNet50()
        state = torch.load(path, map_location="cpu", weights_only=True)
        result = model.net.load_state_dict(state.get("state_dict", state), strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("fc.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{path} is not a torchvision resnet50 state_dict: missing {missing[:5]}"
            )
        return PerceptualDistance(
            _FeatureImages(model, rgb_unit_range=True), "radimagenet_resnet50"
        )
    if network == "in_domain":
        path = require_weights_file(
            Path(weights_path or DEFAULT_IN_DOMAIN_PATH),
            "in_domain",
            source="the evaluation pipeline, which trains it on the real training split "
            "(kedro run --pipelines evaluation)",
        )
        from medgen.datasets import TensorDataset

        bundle = TensorDataset(filepath=str(path)).load()
        encoder = load_in_domain_backbone(
            {"config": bundle.metadata["config"], "state_dict": bundle.tensors}
        )
        provenance = getattr(encoder, "provenance", "trained on the real training split")
        name = f"in_domain ({provenance})"
        return PerceptualDistance(_FeatureImages(encoder, rgb_unit_range=False), name)
    raise ValueError(
        f"training.perceptual.network={network!r}: one of lpips, radimagenet_resnet50, in_domain"
    )

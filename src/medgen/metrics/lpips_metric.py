"""LPIPS (Zhang et al., CVPR 2018) through the ``lpips`` package: quality and diversity.

``lpips.LPIPS(net="alex")`` has two sets of weights:

- the AlexNet ImageNet trunk, which torchvision fetches into the torch hub cache
  (``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``); we check for it
  first and raise :class:`MissingWeightsError` instead of downloading;
- the learned linear layers, which ship inside the lpips package
  (``lpips/weights/v0.1/alex.pth``).

``pretrained_backbone=False`` builds ``lpips.LPIPS(pnet_rand=True)``: a randomly
initialised trunk with the shipped linear layers. It runs offline but is *not*
LPIPS as published, and every result says so in its backbone name.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from medgen.metrics.errors import require_weights_file
from medgen.metrics.floors import one_sample_with_floor, pairwise_indices
from medgen.metrics.images import ArrayLike, as_tensor, grayscale_channel_groups, to_three_channels
from medgen.metrics.results import MetricResult

RANDOM_INIT_SUFFIX = "-random-init (not comparable to published LPIPS)"
_TORCHVISION_WEIGHTS = {
    "alex": "AlexNet_Weights",
    "vgg": "VGG16_Weights",
    "squeeze": "SqueezeNet1_1_Weights",
}


def torchvision_trunk_weights_file(net: str = "alex") -> Path:
    """The torch hub cache file torchvision loads for the LPIPS trunk ``net``."""
    import torchvision.models as tvm

    url = getattr(tvm, _TORCHVISION_WEIGHTS[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def lpips_linear_weights_file(net: str = "alex", version: str = "0.1") -> Path:
    import lpips

    return Path(lpips.__file__).parent / "weights" / f"v{version}" / f"{net}.pth"


class LPIPSScorer:
    """LPIPS distances for [N, C, H, W] images in [-1, 1] (LPIPS's own input range).

    Channels other than RGB are scored one grayscale channel at a time (repeated
    to 3 channels) and averaged, like FID.
    """

    def __init__(
        self,
        net: str = "alex",
        pretrained_backbone: bool = True,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        import lpips

        if net not in _TORCHVISION_WEIGHTS:
            raise ValueError(f"LPIPS net must be one of {tuple(_TORCHVISION_WEIGHTS)}, got '{net}'")
        require_weights_file(
            lpips_linear_weights_file(net),
            f"lpips-{net}",
            source="the lpips package (reinstall lpips)",
        )
        if pretrained_backbone:
            require_weights_file(
                torchvision_trunk_weights_file(net),
                f"lpips-{net}",
                source="torchvision's ImageNet weights",
                hint="Or set pretrained_backbone: false for an explicitly named random-init trunk.",
            )
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.name = f"lpips-{net}" if pretrained_backbone else f"lpips-{net}{RANDOM_INIT_SUFFIX}"
        # A random trunk must be the same random trunk every run: seed it without
        # disturbing the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = lpips.LPIPS(net=net, pnet_rand=not pretrained_backbone, verbose=False)
        self.model = model.to(self.device).eval()

    def distance(self, images_a: ArrayLike, images_b: ArrayLike) -> torch.Tensor:
        """Per-pair LPIPS [N] between images_a[k] and images_b[k]."""
        a, b = as_tensor(images_a), as_tensor(images_b)
        if a.shape != b.shape:
            raise ValueError(
                f"paired images must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        per_group = []
        for ga, gb in zip(grayscale_channel_groups(a), grayscale_channel_groups(b), strict=True):
            out = []
            with torch.no_grad():
                for s in range(0, len(ga), self.batch_size):
                    xa = to_three_channels(ga[s : s + self.batch_size]).to(self.device)
                    xb = to_three_channels(gb[s : s + self.batch_size]).to(self.device)
                    out.append(self.model(xa, xb).flatten().cpu())
            per_group.append(torch.cat(out))
        return torch.stack(per_group).mean(dim=0)

    def quality(self, real: ArrayLike, generated: ArrayLike) -> float:
        """Mean LPIPS over (real[k], generated[k]) pairs, e.g. reconstructions."""
        return float(self.distance(real, generated).mean())

    def diversity(self, images: ArrayLike, *, max_pairs: int | None = 2000, seed: int = 0) -> float:
        """Mean LPIPS over distinct pairs of one set (all pairs, or a seeded subset)."""
        x = as_tensor(images)
        i, j = pairwise_indices(len(x), max_pairs, seed)
        return float(self.distance(x[torch.as_tensor(i)], x[torch.as_tensor(j)]).mean())


def lpips_diversity_with_floor(
    scorer: LPIPSScorer,
    real: ArrayLike,
    generated: ArrayLike,
    *,
    max_pairs: int | None = 2000,
    seed: int = 0,
) -> MetricResult:
    """Generated-set LPIPS diversity next to the real set's diversity at the same n."""
    return one_sample_with_floor(
        lambda images: scorer.diversity(images, max_pairs=max_pairs, seed=seed),
        as_tensor(real),
        as_tensor(generated),
        name="lpips_diversity",
        backbone=scorer.name,
        seed=seed,
    )

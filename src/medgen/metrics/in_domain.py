"""An in-domain feature network for FID when no pretrained weights are available.

Offline, Inception/CLIP/RadImageNet weights may be absent. The honest default is a
small CNN trained on the *real training split* of the data being evaluated and
reported under the backbone name ``in_domain``: its FIDs are comparable between
runs that use the same trained network, never to published Inception FIDs.

Training objective (documented choice): rotation prediction (Gidaris et al.,
"Unsupervised representation learning by predicting image rotations", ICLR 2018),
plus one classification head per optional label (e.g. lesion present, modality).
Predicting whether a slice was rotated by 0/90/180/270 degrees needs no labels and
forces the network to encode global anatomy (skull outline, ventricles, midline),
which is what a "does this look like a brain slice" distance should weigh; the
label heads add the clinically relevant factors when labels exist. The heads are
thrown away: features are the global-average-pooled output of the last conv block.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medgen.metrics.images import ArrayLike, as_tensor

NUM_ROTATIONS = 4


class InDomainEncoder(nn.Module):
    """Compact 2D CNN encoder: [B, 1, H, W] in [-1, 1] -> [B, feature_dim].

    Four stride-2 conv blocks with GroupNorm (features must not depend on the
    batch they are computed in) and a global average pool, so any input size
    works; inputs are resized to ``input_size`` first so features are always
    computed at the resolution the network was trained on.
    """

    def __init__(self, feature_dim: int = 128, width: int = 32, input_size: int = 64) -> None:
        super().__init__()
        self.config = {"feature_dim": feature_dim, "width": width, "input_size": input_size}
        channels = [1, width, width * 2, width * 4, feature_dim]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1),
                nn.GroupNorm(num_groups=min(8, c_out), num_channels=c_out),
                nn.SiLU(),
                nn.Conv2d(c_out, c_out, kernel_size=3, padding=1),
                nn.GroupNorm(num_groups=min(8, c_out), num_channels=c_out),
                nn.SiLU(),
            ]
        self.trunk = nn.Sequential(*layers)

    @property
    def feature_dim(self) -> int:
        return int(self.config["feature_dim"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = int(self.config["input_size"])
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        return self.trunk(images).mean(dim=(2, 3))


def _flatten_channels(images: torch.Tensor) -> torch.Tensor:
    # Each MRI channel (sequence) is a grayscale image of its own: [N, C, H, W] -> [N*C, 1, H, W].
    return images.reshape(-1, 1, *images.shape[-2:])


def train_in_domain_backbone(
    images: ArrayLike,
    labels: Mapping[str, ArrayLike] | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    feature_dim: int = 128,
    width: int = 32,
    seed: int = 0,
) -> tuple[InDomainEncoder, dict[str, list[float]]]:
    """Train the in-domain encoder on real training images; return it and the loss history.

    Args:
        images: real training slices [N, C, H, W] in [-1, 1] (square); each channel is
            used as a separate grayscale image.
        labels: optional integer class labels per image, e.g. ``{"lesion": [0, 1, ...],
            "modality": [2, 0, ...]}``; one linear head and cross-entropy term each.
        epochs, batch_size, learning_rate: AdamW schedule (defaults 10, 64, 1e-3).
        feature_dim: size of the feature vector (default 128; kept small so the
            covariance in FID is well estimated from a few thousand images).
        width: channels of the first block (default 32).
        seed: seeds initialisation, rotations and batch order.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = as_tensor(images)
    n_images, n_channels = x.shape[0], x.shape[1]
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"in-domain backbone trains on square slices, got {tuple(x.shape[-2:])}")
    x = _flatten_channels(x)
    targets: dict[str, torch.Tensor] = {}
    for name, values in (labels or {}).items():
        y = torch.as_tensor(np.asarray(values), dtype=torch.long).reshape(-1)
        if y.shape[0] != n_images:
            raise ValueError(f"label '{name}' has {y.shape[0]} entries for {n_images} images")
        if y.min() < 0:
            raise ValueError(f"label '{name}' must hold class indices >= 0")
        targets[name] = y.repeat_interleave(n_channels)

    encoder = InDomainEncoder(feature_dim=feature_dim, width=width, input_size=int(x.shape[-1]))
    heads = nn.ModuleDict({"rotation": nn.Linear(feature_dim, NUM_ROTATIONS)})
    for name, y in targets.items():
        heads[name] = nn.Linear(feature_dim, int(y.max()) + 1)
    params = list(encoder.parameters()) + list(heads.parameters())
    optimiser = torch.optim.AdamW(params, lr=learning_rate, weight_decay=1e-4)
    history: dict[str, list[float]] = {name: [] for name in heads}

    encoder.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        sums = dict.fromkeys(heads, 0.0)
        for start in range(0, x.shape[0], batch_size):
            idx = order[start : start + batch_size]
            batch = x[idx]
            rotation = torch.randint(0, NUM_ROTATIONS, (batch.shape[0],), generator=generator)
            rotated = torch.stack(
                [
                    torch.rot90(img, int(k), dims=(-2, -1))
                    for img, k in zip(batch, rotation, strict=True)
                ]
            )
            features = encoder(rotated)
            losses = {"rotation": F.cross_entropy(heads["rotation"](features), rotation)}
            for name, y in targets.items():
                losses[name] = F.cross_entropy(heads[name](features), y[idx])
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError("in-domain backbone training produced a non-finite loss")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            for name, value in losses.items():
                sums[name] += float(value.detach()) * batch.shape[0]
        for name in heads:
            history[name].append(sums[name] / x.shape[0])
    encoder.eval()
    return encoder, history


def in_domain_checkpoint(encoder: InDomainEncoder) -> dict[str, Any]:
    """What to save: architecture config + weights (loadable with weights_only=True)."""
    return {"config": dict(encoder.config), "state_dict": encoder.state_dict()}


def load_in_domain_backbone(source: str | Path | Mapping[str, Any]) -> InDomainEncoder:
    """Rebuild the encoder from :func:`in_domain_checkpoint` output or a file holding it."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(
                f"in-domain backbone checkpoint not found: {path}. It is produced by training "
                "the in-domain backbone on the real training split (train_in_domain_backbone)."
            )
        source = torch.load(path, map_location="cpu", weights_only=True)
    if "config" not in source or "state_dict" not in source:
        raise ValueError("in-domain checkpoint must hold 'config' and 'state_dict'")
    encoder = InDomainEncoder(**source["config"])
    encoder.load_state_dict(source["state_dict"])
    return encoder.eval()

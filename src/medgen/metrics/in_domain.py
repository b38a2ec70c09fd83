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

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medgen.datasets import TensorBundle
from medgen.metrics.images import ArrayLike, as_tensor
from medgen.training import TrainingConfig, TrainingJob, TrainingTask, run_job
from medgen.training.callbacks import LossComponentsLogger
from medgen.training.results import sub_state_dict

NUM_ROTATIONS = 4
UNTRAINED = "UNTRAINED: random initial weights, its distances measure nothing"


class InDomainEncoder(nn.Module):
    """Compact 2D CNN encoder: [B, 1, H, W] in [-1, 1] -> [B, feature_dim].

    Four stride-2 conv blocks with GroupNorm (features must not depend on the
    batch they are computed in) and a global average pool, so any input size
    works; inputs are resized to ``input_size`` first so features are always
    computed at the resolution the network was trained on.

    ``provenance`` says what the weights were trained on. Only the code that trains
    them sets it (:func:`train_in_domain_backbone`); it travels in ``config``, so a
    checkpoint keeps it, and an encoder built any other way reports :data:`UNTRAINED`.
    """

    def __init__(
        self,
        feature_dim: int = 128,
        width: int = 32,
        input_size: int = 64,
        provenance: str | None = None,
    ) -> None:
        super().__init__()
        self.config = {
            "feature_dim": feature_dim,
            "width": width,
            "input_size": input_size,
            "provenance": provenance,
        }
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

    @property
    def provenance(self) -> str:
        """What the weights were trained on, as the training code recorded it, or UNTRAINED."""
        return self.config.get("provenance") or UNTRAINED

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


class InDomainObjective(nn.Module):
    """The encoder with its training heads: rotation (always) and one head per label.

    ``forward(batch)`` rotates each image by a random multiple of 90 degrees (torch's global
    RNG, which the training engine seeds and checkpoints) and returns the summed cross-entropy
    of the heads; each head's running mean is kept for the step records
    (`medgen.training.callbacks.LossComponentsLogger`).
    """

    def __init__(self, encoder: InDomainEncoder, label_classes: Mapping[str, int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict({"rotation": nn.Linear(encoder.feature_dim, NUM_ROTATIONS)})
        for name, classes in label_classes.items():
            self.heads[name] = nn.Linear(encoder.feature_dim, classes)
        self._sums: dict[str, float] = {}
        self._count = 0

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        images = batch["image"]
        rotation = torch.randint(0, NUM_ROTATIONS, (images.shape[0],), device=images.device)
        rotated = torch.stack(
            [
                torch.rot90(img, int(k), dims=(-2, -1))
                for img, k in zip(images, rotation, strict=True)
            ]
        )
        features = self.encoder(rotated)
        targets = {"rotation": rotation, **{k: v for k, v in batch.items() if k != "image"}}
        losses = {
            name: F.cross_entropy(head(features), targets[name])
            for name, head in self.heads.items()
        }
        for name, value in losses.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value.detach())
        self._count += 1
        return sum(losses.values())

    def pop_component_means(self) -> dict[str, float]:
        means = {name: total / self._count for name, total in self._sums.items()}
        self._sums, self._count = {}, 0
        return means


class LabelledImages(Dataset):
    """``{"image": [1, H, W], <label>: int64}`` items of single-channel images and labels."""

    def __init__(self, images: torch.Tensor, labels: Mapping[str, torch.Tensor]) -> None:
        self.images, self.labels = images, dict(labels)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], **{k: v[index] for k, v in self.labels.items()}}


def build_in_domain_task(
    data: Mapping[str, Any],
    *,
    feature_dim: int,
    width: int,
    label_classes: dict[str, int],
    seed: int,
) -> TrainingTask:
    """The in-domain network's job factory: single-channel images, labels, a seeded encoder."""
    tensors = data["images"].tensors
    images = tensors["images"]
    labels = {name: tensors[f"label.{name}"] for name in label_classes}
    torch.manual_seed(seed)
    encoder = InDomainEncoder(
        feature_dim=feature_dim, width=width, input_size=int(images.shape[-1])
    )
    model = InDomainObjective(encoder, label_classes)
    return TrainingTask(
        model=model,
        loss_fn=lambda net, batch: net(batch),
        train_data=LabelledImages(images, labels),
        callbacks=[LossComponentsLogger(prefix="in_domain_backbone")],
    )


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
    checkpoint_dir: str | Path | None = None,
    data_name: str = "real training images",
) -> tuple[InDomainEncoder, dict[str, list[float]]]:
    """Train the in-domain encoder on real training images; return it and each head's loss
    per epoch.

    Args:
        images: real training slices [N, C, H, W] in [-1, 1] (square); each channel is
            used as a separate grayscale image.
        labels: optional integer class labels per image, e.g. ``{"lesion": [0, 1, ...],
            "modality": [2, 0, ...]}``; one linear head and cross-entropy term each.
        epochs, batch_size, learning_rate: constant-lr AdamW (weight decay 1e-4), defaults 10,
            64, 1e-3.
        feature_dim: size of the feature vector (default 128; kept small so the
            covariance in FID is well estimated from a few thousand images).
        width: channels of the first block (default 32).
        seed: seeds initialisation, rotations and batch order.
        checkpoint_dir: the training job's folder (None: a temporary one); a re-run with the
            same images and settings reads the finished job back instead of training again.
        data_name: what ``images`` are, for the encoder's ``provenance`` (default "real
            training images"; the caller names its data, e.g. the catalog entry).

    Trained as one `medgen.training.TrainingJob` on the CPU.
    """
    x = as_tensor(images)
    n_images, n_channels = x.shape[0], x.shape[1]
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"in-domain backbone trains on square slices, got {tuple(x.shape[-2:])}")
    x = _flatten_channels(x)
    tensors = {"images": x.float().contiguous()}
    label_classes: dict[str, int] = {}
    for name, values in (labels or {}).items():
        y = torch.as_tensor(np.asarray(values), dtype=torch.long).reshape(-1)
        if y.shape[0] != n_images:
            raise ValueError(f"label '{name}' has {y.shape[0]} entries for {n_images} images")
        if y.min() < 0:
            raise ValueError(f"label '{name}' must hold class indices >= 0")
        tensors[f"label.{name}"] = y.repeat_interleave(n_channels)
        label_classes[name] = int(y.max()) + 1
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    config = TrainingConfig(
        max_steps=epochs * steps_per_epoch,
        batch_size=batch_size,
        drop_last=False,
        lr=learning_rate,
        weight_decay=1e-4,
        min_lr_ratio=1.0,  # constant lr: the cosine decays from lr to lr
        max_grad_norm=None,
        log_every=steps_per_epoch,  # one step record per epoch, with each head's mean loss
        seed=seed,
        progress=False,
        device="cpu",
    )
    job = TrainingJob(
        name="in_domain_backbone",
        factory=build_in_domain_task,
        config=config,
        checkpoint_dir=checkpoint_dir,
        data={"images": TensorBundle(tensors)},
        options={
            "feature_dim": feature_dim,
            "width": width,
            "label_classes": label_classes,
            "seed": seed,
        },
        artifact_path="evaluation/in_domain_backbone",
    )
    result = run_job(job).result
    encoder = InDomainEncoder(
        feature_dim=feature_dim,
        width=width,
        input_size=int(x.shape[-1]),
        provenance=f"trained on {data_name}, {x.shape[0]} images, {config.max_steps} steps",
    )
    encoder.load_state_dict(sub_state_dict(result.model_state, "encoder."))
    records = [r for r in result.history if r["kind"] == "step"]
    history = {name: [r[name] for r in records] for name in ("rotation", *label_classes)}
    return encoder.eval(), history


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
    config = {"provenance": "not recorded in this checkpoint", **source["config"]}
    encoder = InDomainEncoder(**config)
    encoder.load_state_dict(source["state_dict"])
    return encoder.eval()

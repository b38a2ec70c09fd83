"""Conditioning fidelity: does a generated image contain the lesion it was asked for?

A segmentation network trained on *real* images with their masks segments the
generated images; Dice against the masks they were conditioned on measures how
faithfully the generator followed the condition. The same Dice on real held-out
images (with their own masks) is the reference next to it: a generator cannot be
expected to beat the segmenter's accuracy on real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch.utils.data import Dataset

from medgen.datasets import TensorBundle
from medgen.metrics.images import ArrayLike, as_tensor
from medgen.metrics.results import MetricResult
from medgen.training import TrainingConfig, TrainingJob, TrainingTask, run_job


def dice_score(prediction: ArrayLike, target: ArrayLike) -> torch.Tensor:
    """Per-image binary Dice [N] = 2|P∩T| / (|P| + |T|) over all channels and voxels.

    Images whose target is empty get NaN (undefined), matching MONAI's DiceMetric
    with ``ignore_empty=True``; aggregate with nanmean and report how many were empty.
    """
    p = as_tensor(prediction, ndim=None) > 0.5
    t = as_tensor(target, ndim=None) > 0.5
    if p.shape != t.shape or p.ndim < 3:
        raise ValueError(
            f"prediction and target must be equal [N, C, ...] masks, got {tuple(p.shape)}, "
            f"{tuple(t.shape)}"
        )
    p, t = p.flatten(1).double(), t.flatten(1).double()
    intersection = (p * t).sum(dim=1)
    denominator = p.sum(dim=1) + t.sum(dim=1)
    dice = 2.0 * intersection / denominator.clamp(min=1e-12)
    return torch.where(t.sum(dim=1) > 0, dice, torch.full_like(dice, float("nan")))


def build_segmenter(
    in_channels: int = 1,
    spatial_dims: int = 2,
    channels: tuple[int, ...] = (8, 16, 32),
    strides: tuple[int, ...] = (2, 2),
) -> UNet:
    """A tiny MONAI UNet (default 3 levels, 8-32 channels) with one sigmoid output.

    Batch norm rather than MONAI's default instance norm: with a tiny bottleneck (8x8
    for 32x32 inputs) instance norm erases the absolute intensity that tells a bright
    lesion from bright normal tissue, and training converged far more slowly in our tests.
    """
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=1,
        channels=channels,
        strides=strides,
        num_res_units=1,
        norm="BATCH",
    )


class LesionBalancedSlices(Dataset):
    """``{"image", "mask"}`` training pairs in which lesion slices make up ~``lesion_fraction``.

    Lesion-bearing slices are listed ``repeats`` times per epoch (every lesion-free slice
    once), with ``repeats`` the integer >= 1 that brings their share closest to
    ``lesion_fraction`` (default 0.5). With ``flip`` (default True) each item is mirrored
    left-right with probability 1/2 (torch's global RNG, which the training engine seeds):
    brains are roughly symmetric, lesions are not tied to a side.
    """

    def __init__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        lesion_fraction: float = 0.5,
        flip: bool = True,
    ):
        if not 0.0 < lesion_fraction < 1.0:
            raise ValueError(f"lesion_fraction must be in (0, 1), got {lesion_fraction}")
        lesion = masks.flatten(1).any(dim=1)
        n_lesion, n_empty = int(lesion.sum()), int((~lesion).sum())
        if n_lesion == 0:
            raise ValueError(
                f"none of the {len(masks)} training masks contains a lesion: the segmenter cannot learn one"
            )
        ideal = lesion_fraction * n_empty / ((1.0 - lesion_fraction) * n_lesion)
        self.repeats = max(1, round(ideal))
        extra = torch.nonzero(lesion).flatten().repeat(self.repeats - 1)
        self.index = torch.cat([torch.arange(len(masks)), extra])
        self.images, self.masks, self.flip = images, masks, flip

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = self.index[i]
        image, mask = self.images[j], self.masks[j]
        if self.flip and bool(torch.rand(()) < 0.5):
            image, mask = image.flip(-1), mask.flip(-1)
        return {"image": image, "mask": mask}


def build_segmenter_task(
    data: dict,
    *,
    channels: list[int],
    strides: list[int],
    lesion_fraction: float,
    flip: bool,
    seed: int,
) -> TrainingTask:
    """The segmenter's job factory: the lesion-balanced pairs and a UNet seeded with ``seed``."""
    x, y = data["pairs"]["images"], data["pairs"]["masks"]
    train_data = LesionBalancedSlices(x, y, lesion_fraction, flip)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_segmenter(x.shape[1], x.ndim - 2, tuple(channels), tuple(strides))
    # batch=True: one Dice over the whole batch, so slices without lesions do not make
    # the per-image Dice term undefined-and-noisy; the CE term keeps every pixel's
    # gradient alive while the Dice term is still ~0 (tiny lesions at 32x32).
    loss = DiceCELoss(sigmoid=True, batch=True)
    return TrainingTask(
        model=model,
        loss_fn=lambda net, batch: loss(net(batch["image"]), batch["mask"]),
        train_data=train_data,
    )


def train_segmenter(
    images: ArrayLike,
    masks: ArrayLike,
    *,
    epochs: int = 20,
    batch_size: int = 16,
    learning_rate: float = 1e-2,
    channels: tuple[int, ...] = (8, 16, 32),
    strides: tuple[int, ...] = (2, 2),
    lesion_fraction: float = 0.5,
    flip: bool = True,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
) -> tuple[UNet, list[float]]:
    """Train the segmenter on real images [N, C, ...] and binary masks [N, 1, ...].

    Args:
        images, masks: training data at the size it will segment (masks > 0.5 = lesion).
        epochs: passes over the lesion-balanced set (default 20), see
            :class:`LesionBalancedSlices`; steps = epochs * (its length // batch_size).
        batch_size: default 16. learning_rate: AdamW peak lr, cosine decay (default 1e-2).
        channels, strides: the UNet (default (8, 16, 32), (2, 2)).
        lesion_fraction: share of lesion slices per epoch (default 0.5); flip: left-right
            mirroring (default True). seed: init, data order, flips (default 0).
        checkpoint_dir: the training job's folder (None: a temporary one); a re-run with the
            same data and settings reads the finished job back instead of training again.

    DiceCE loss on the sigmoid output, trained as one `medgen.training.TrainingJob` (on CPU:
    evaluation runs there). Returns the model (eval mode) and the mean loss of each epoch.
    """
    x = as_tensor(images, ndim=None)
    y = (as_tensor(masks, ndim=None) > 0.5).float()
    if x.shape[0] != y.shape[0] or y.shape[1] != 1 or x.shape[2:] != y.shape[2:]:
        raise ValueError(
            f"images {tuple(x.shape)} and masks {tuple(y.shape)} do not match (masks need 1 channel)"
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    n_items = len(LesionBalancedSlices(x, y, lesion_fraction, flip))
    steps_per_epoch = max(1, n_items // batch_size)
    max_steps = epochs * steps_per_epoch
    config = TrainingConfig(
        max_steps=max_steps,
        batch_size=min(batch_size, n_items),
        lr=learning_rate,
        warmup_steps=min(20, max_steps // 10),
        log_every=steps_per_epoch,
        seed=seed,
        progress=False,
        device="cpu",
    )
    job = TrainingJob(
        name="fidelity_segmenter",
        factory=build_segmenter_task,
        config=config,
        checkpoint_dir=checkpoint_dir,
        data={"pairs": TensorBundle({"images": x.float(), "masks": y})},
        options={
            "channels": list(channels),
            "strides": list(strides),
            "lesion_fraction": lesion_fraction,
            "flip": flip,
            "seed": seed,
        },
        artifact_path="evaluation/fidelity_segmenter",
    )
    result = run_job(job).result
    model = build_segmenter(x.shape[1], x.ndim - 2, tuple(channels), tuple(strides))
    model.load_state_dict(result.model_state)
    history = [record["loss"] for record in result.history if record["kind"] == "epoch"]
    return model.eval(), history


def segment(
    model: torch.nn.Module, images: ArrayLike, *, threshold: float = 0.5, batch_size: int = 64
) -> torch.Tensor:
    """Binary masks [N, 1, ...] (float 0/1) from the segmenter's sigmoid output."""
    x = as_tensor(images, ndim=None)
    model.eval()
    with torch.no_grad():
        probs = torch.cat(
            [torch.sigmoid(model(x[s : s + batch_size])) for s in range(0, len(x), batch_size)]
        )
    return (probs > threshold).float()


def other_group_partners(groups: ArrayLike, seed: int = 0) -> torch.Tensor:
    """For each item i, a seeded random index j whose group (e.g. patient) differs from i's.

    Raises ValueError when there are fewer than 2 groups (no such partner exists).
    """
    labels = torch.as_tensor(np.asarray(groups)).reshape(-1)
    if labels.unique().numel() < 2:
        raise ValueError(
            f"need at least 2 groups to pair items across groups, got {labels.unique().numel()}"
        )
    generator = torch.Generator().manual_seed(seed)
    partners = []
    for label in labels:
        others = torch.nonzero(labels != label).flatten()
        partners.append(others[torch.randint(len(others), (1,), generator=generator)])
    return torch.cat(partners)


def conditioning_fidelity(
    model: torch.nn.Module,
    generated: ArrayLike,
    conditioning_masks: ArrayLike,
    real: ArrayLike,
    real_masks: ArrayLike,
    *,
    real_groups: ArrayLike | None = None,
    segmenter_name: str = "unet-segmenter (trained on the real training split)",
    seed: int = 0,
) -> MetricResult:
    """Mean Dice(segment(generated), conditioning masks), with the same Dice on real images
    as ``floor`` (here the reference level the generator is measured against).

    With ``real_groups`` (patient of each real image; default None) the details also give
    the chance level: Dice of the real segmentations against the mask of a real slice of
    *another* patient (seeded by ``seed``, default 0). A floor near that level means the
    segmenter cannot see the lesions in these channels, and the value says nothing.
    """
    real_predicted = segment(model, real)
    real_masks = as_tensor(real_masks, ndim=None)
    gen_dice = dice_score(segment(model, generated), conditioning_masks).numpy()
    real_dice = dice_score(real_predicted, real_masks).numpy()
    if np.isnan(gen_dice).all() or np.isnan(real_dice).all():
        raise ValueError("every conditioning/real mask is empty: Dice is undefined")
    details: dict = {
        "n_generated_empty_masks": int(np.isnan(gen_dice).sum()),
        "n_real_empty_masks": int(np.isnan(real_dice).sum()),
        "floor_meaning": "Dice of the same segmenter on real images with their own masks",
    }
    if real_groups is not None and len(np.unique(np.asarray(real_groups))) < 2:
        details["chance_dice"] = None
        details["chance_meaning"] = "undefined: the real images come from a single patient"
    elif real_groups is not None:
        partner = real_masks[other_group_partners(real_groups, seed)]
        details["chance_dice"] = float(np.nanmean(dice_score(real_predicted, partner).numpy()))
        details["chance_meaning"] = "Dice of the real segmentations against another patient's mask"
    return MetricResult(
        name="conditioning_dice",
        value=float(np.nanmean(gen_dice)),
        floor=float(np.nanmean(real_dice)),
        backbone=segmenter_name,
        n_real=len(real_dice),
        n_generated=len(gen_dice),
        details=details,
    )

"""The deterministic 3D U-Net inpainting baseline, trained through the one training job.

The family behind the strongest BraTS 2023-2025 "local synthesis" entries: a 3D U-Net maps
the voided T1, the mask and (optionally) conditioning maps straight to the image, trained
with an L1 loss on the voxels whose ground truth exists; no sampling, one forward pass.

* input channels: ``voided`` [1], the mask as ±1 (+1 = fill) [1] and, with
  ``use_conditioning``, the bundle's ``conditioning`` channels (growth > threshold, CSF, GM,
  WM: `medgen.inpainting.cases.conditioning_maps`). Which variant fills that tensor is the
  caller's choice: ``honest`` (a population prior inside the mask) is a result, ``oracle``
  (the subject's own tissue inside the mask, which leaks the answer) an ablation row only;
* network: MONAI ``UNet`` (spatial_dims=3, one output channel, no output activation) in
  `InpaintingUNet`, which pads inputs (replicate) to a multiple of the strides' product and
  crops the output back, so any volume size works; options: `UNetBaselineNetwork`;
* loss: `masked_l1` over the ``score_mask`` voxels (where ground truth exists), mean over
  all such voxels of the batch;
* output: `composite` ``voided * (1 - m) + pred * m``, prediction clamped to [-1, 1]:
  known voxels are the voided input, bit-exact.

`train_unet_baseline` trains one `medgen.training.TrainingJob` (factory
`build_unet_baseline_task`: checkpoints, exact resume, EMA, 1..N workers);
`predict_unet_baseline` fills every case with the trained weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn
from torch.utils.data import Dataset

from medgen.config import config_to_dict, config_tree_from_params
from medgen.datasets import TensorBundle
from medgen.training import TrainingConfig, TrainingJob, TrainingTask, run_job

SECTION = "inpainting.unet_baseline.network"
JOB_NAME = "unet_baseline"
NORMS = ("instance", "batch")
#: Tensors of a cases bundle that training needs (plus ``conditioning`` when used).
TRAIN_KEYS = ("t1n", "voided", "mask", "score_mask")
PREDICT_KEYS = ("voided", "mask")
CONDITIONING_KEY = "conditioning"


@dataclass(frozen=True)
class UNetBaselineNetwork:
    """``network`` options of the U-Net baseline (every key required; unknown keys fail).

    channels: features per level, e.g. ``[16, 32, 64, 128]``; strides: the downsampling
    between levels (one fewer, e.g. ``[2, 2, 2]``); num_res_units: residual units per block
    (MONAI's, 0: plain convolutions); norm: ``instance`` (per-case statistics, what nnU-Net
    and the BraTS entries use) or ``batch``; dropout: probability in every block (0.0: none).
    """

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    num_res_units: int
    norm: str
    dropout: float

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"{SECTION}: needs two or more channels and one stride fewer, got channels "
                f"{list(self.channels)}, strides {list(self.strides)}"
            )
        for key, values in (("channels", self.channels), ("strides", self.strides)):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
                raise ValueError(f"{SECTION}.{key} must be integers >= 1, got {list(values)}")
        if not isinstance(self.num_res_units, int) or self.num_res_units < 0:
            raise ValueError(f"{SECTION}.num_res_units must be an integer >= 0")
        if self.norm not in NORMS:
            raise ValueError(f"{SECTION}.norm must be one of {NORMS}, got {self.norm!r}")
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{SECTION}.dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | UNetBaselineNetwork, section: str = SECTION
    ) -> UNetBaselineNetwork:
        """Validate a ``network`` block (a config passes through unchanged)."""
        if isinstance(params, cls):
            return params
        return config_tree_from_params(cls, params, section)


class InpaintingUNet(nn.Module):
    """MONAI's 3D ``UNet`` for any volume size: the input is padded at the far end of each
    spatial axis (replicate) to a multiple of the strides' product and the output cropped
    back (MONAI's UNet needs sizes its strides divide at every level)."""

    def __init__(self, in_channels: int, config: UNetBaselineNetwork) -> None:
        super().__init__()
        self.multiple = math.prod(config.strides)
        self.unet = UNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=1,
            channels=config.channels,
            strides=config.strides,
            num_res_units=config.num_res_units,
            norm=config.norm,
            dropout=config.dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad = [(-s) % self.multiple for s in size]
        if any(pad):
            # F.pad lists (before, after) pairs from the last axis backwards.
            x = F.pad(x, [v for p in reversed(pad) for v in (0, p)], mode="replicate")
        return self.unet(x)[..., : size[0], : size[1], : size[2]]


def network_input(
    voided: torch.Tensor, mask: torch.Tensor, conditioning: torch.Tensor | None = None
) -> torch.Tensor:
    """The network's input [N, 2 (+C), D, H, W]: voided, mask as ±1 (+1: to fill), then the
    conditioning channels when given."""
    parts = [voided.float(), (mask > 0).float() * 2.0 - 1.0]
    if conditioning is not None:
        parts.append(conditioning.float())
    return torch.cat(parts, dim=1)


def composite(voided: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``voided * (1 - m) + prediction * m`` for a binary mask, as a selection: the known
    voxels are ``voided``'s, bit-exact."""
    return torch.where(mask > 0, prediction.to(voided.dtype), voided)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the voxels where ``mask > 0`` (all of the batch's such voxels
    weigh alike); voxels outside the mask get exactly zero gradient, and a batch without mask
    voxels gives a zero loss."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    selected = (mask > 0).expand_as(pred)
    error = torch.where(selected, (pred - target).abs(), torch.zeros_like(pred))
    return error.sum() / selected.sum().clamp(min=1)


def unet_baseline_loss(net: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The job's loss: `masked_l1` of ``net(input)`` against the T1 on ``score_mask``."""
    return masked_l1(net(batch["input"]), batch["target"], batch["score_mask"])


class InpaintingCases(Dataset):
    """``{"input": [C, D, H, W], "target": [1, ...], "score_mask": [1, ...]}`` per case.

    ``flip_axes``: spatial axes (0, 1, 2 = D, H, W) each mirrored with probability 1/2 per
    item (torch's global RNG, which the engine seeds and checkpoints), the same way for every
    tensor of the item. Axis 0 is left-right for RAS-oriented volumes, the only mirror that
    keeps a brain a plausible brain.
    """

    def __init__(
        self, cases: TensorBundle, use_conditioning: bool, flip_axes: Sequence[int] = ()
    ) -> None:
        self.cases, self.use_conditioning = cases, use_conditioning
        self.flip_axes = checked_flip_axes(flip_axes)

    def __len__(self) -> int:
        return self.cases["voided"].shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tensors = self.cases.tensors
        conditioning = (
            tensors[CONDITIONING_KEY][index : index + 1] if self.use_conditioning else None
        )
        item = {
            "input": network_input(
                tensors["voided"][index : index + 1],
                tensors["mask"][index : index + 1],
                conditioning,
            )[0],
            "target": tensors["t1n"][index].float(),
            "score_mask": tensors["score_mask"][index].float(),
        }
        for axis in self.flip_axes:
            if bool(torch.rand(()) < 0.5):
                item = {k: v.flip(axis + 1) for k, v in item.items()}
        return item


def checked_flip_axes(flip_axes: Sequence[int]) -> tuple[int, ...]:
    """``flip_axes`` as a tuple; ValueError unless each is a spatial axis 0, 1 or 2."""
    if any(axis not in (0, 1, 2) or isinstance(axis, bool) for axis in flip_axes):
        raise ValueError(f"flip_axes must be spatial axes 0, 1 or 2, got {list(flip_axes)}")
    return tuple(int(axis) for axis in flip_axes)


def check_cases(cases: TensorBundle, use_conditioning: bool, keys: Sequence[str]) -> int:
    """The network's input channel count for ``cases``; KeyError / ValueError naming a missing
    tensor, a shape that is not [N, C, D, H, W] shared by all, or a non-finite image."""
    needed = [*keys, *([CONDITIONING_KEY] if use_conditioning else [])]
    for key in needed:
        if key not in cases.tensors:
            hint = " (or use_conditioning: false)" if key == CONDITIONING_KEY else ""
            raise KeyError(
                f"cases bundle needs tensor {key!r}{hint}; it has {sorted(cases.tensors)}"
            )
    reference = cases["voided"].shape
    if len(reference) != 5 or reference[1] != 1:
        raise ValueError(f"cases bundle: 'voided' must be [N, 1, D, H, W], got {tuple(reference)}")
    for key in needed:
        shape = cases[key].shape
        channels = shape[1] if key == CONDITIONING_KEY else 1
        if (
            len(shape) != 5
            or shape[1] != channels
            or shape[0] != reference[0]
            or shape[2:] != reference[2:]
        ):
            raise ValueError(
                f"cases bundle: {key!r} is {tuple(shape)}, expected [{reference[0]}, "
                f"{'C' if key == CONDITIONING_KEY else 1}, {', '.join(map(str, reference[2:]))}]"
            )
        if cases[key].is_floating_point() and not torch.isfinite(cases[key]).all():
            raise ValueError(f"cases bundle: {key!r} holds NaN or Inf")
    return 2 + (cases[CONDITIONING_KEY].shape[1] if use_conditioning else 0)


def build_unet_baseline_task(
    data: Mapping[str, TensorBundle],
    *,
    network: dict[str, Any],
    use_conditioning: bool,
    seed: int,
    flip_axes: Sequence[int] = (),
) -> TrainingTask:
    """The job's factory, run in every worker: the cases of ``data["cases"]`` and a U-Net
    seeded with ``seed`` (the same initial weights on every rank and re-run)."""
    cases = data["cases"]
    config = UNetBaselineNetwork.from_params(network)
    in_channels = check_cases(cases, use_conditioning, TRAIN_KEYS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InpaintingUNet(in_channels, config)
    return TrainingTask(
        model=model,
        loss_fn=unet_baseline_loss,
        train_data=InpaintingCases(cases, use_conditioning, tuple(flip_axes)),
    )


def train_unet_baseline(
    cases: TensorBundle,
    *,
    network: Mapping[str, Any],
    training: Mapping[str, Any],
    use_conditioning: bool,
    checkpoint_dir: str | Path | None,
    resources: Mapping[str, Any] | None = None,
    torch_threads: int | None = None,
    flip_axes: Sequence[int] = (),
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the U-Net baseline on ``cases``; its weights (the EMA's when ``training`` sets
    ``ema_decay``, else the model's) and a JSON-friendly report.

    Args:
        cases: a cases bundle with ``t1n``, ``voided``, ``mask``, ``score_mask`` (and
            ``conditioning`` with ``use_conditioning``), all [N, C, D, H, W].
        network: the `UNetBaselineNetwork` block. training: a `TrainingConfig` dict (its
            ``seed`` also seeds the initial weights).
        use_conditioning: append the ``conditioning`` channels to the input.
        checkpoint_dir: the job's folder (None: a temporary one); a finished job with the same
            data and options is read back, not trained again.
        resources, torch_threads: processes and threads (`TrainingJob`).
        flip_axes: spatial axes mirrored at random while training (default none; ``[0]`` is
            left-right: the cases bundle is in RAS voxel order).

    Only the tensors training uses are staged and fingerprinted (not ``brain`` or metadata).
    """
    config = TrainingConfig.from_dict(training)
    net_config = UNetBaselineNetwork.from_params(network)  # fail here, in the node
    in_channels = check_cases(cases, use_conditioning, TRAIN_KEYS)
    flip_axes = checked_flip_axes(flip_axes)
    keys = [*TRAIN_KEYS, *([CONDITIONING_KEY] if use_conditioning else [])]
    staged = TensorBundle({key: cases[key].contiguous() for key in keys})
    job = TrainingJob(
        name=JOB_NAME,
        factory=build_unet_baseline_task,
        config=config,
        checkpoint_dir=checkpoint_dir,
        data={"cases": staged},
        options={
            "network": config_to_dict(net_config),
            "use_conditioning": bool(use_conditioning),
            "seed": config.seed,
            "flip_axes": list(flip_axes),
        },
        resources=resources,
        torch_threads=torch_threads,
        artifact_path=f"inpainting/{JOB_NAME}",
    )
    outcome = run_job(job)
    result = outcome.result
    use_ema = result.ema_state is not None
    state = result.ema_state if use_ema else result.model_state
    steps = [record for record in result.history if record["kind"] == "step"]
    report = {
        "model": JOB_NAME,
        "weights": "ema" if use_ema else "model",
        "network": config_to_dict(net_config),
        "use_conditioning": bool(use_conditioning),
        "in_channels": in_channels,
        "parameters": sum(int(v.numel()) for v in result.model_state.values()),
        "cases": int(cases["voided"].shape[0]),
        "steps": int(result.steps),
        "epochs": float(result.epochs),
        "loss": [{"step": int(r["step"]), "loss": float(r["loss"])} for r in steps],
        "final_loss": float(steps[-1]["loss"]) if steps else None,
        "resumed_from_step": int(outcome.resumed_from_step),
        "skipped": bool(outcome.skipped),
        "seconds": round(float(outcome.seconds), 2),
    }
    return state, report


def load_unet_baseline(
    state: Mapping[str, torch.Tensor],
    *,
    network: Mapping[str, Any] | UNetBaselineNetwork,
    in_channels: int,
) -> InpaintingUNet:
    """The trained network (eval mode) from its state dict."""
    model = InpaintingUNet(in_channels, UNetBaselineNetwork.from_params(network))
    try:
        model.load_state_dict(dict(state))
    except RuntimeError as exc:
        raise ValueError(
            f"U-Net baseline weights do not fit a network with {in_channels} input channels and "
            f"these network options (were they trained with another use_conditioning or "
            f"network block?): {exc}"
        ) from exc
    return model.eval()


def predict_unet_baseline(
    state: Mapping[str, torch.Tensor],
    cases: TensorBundle,
    *,
    network: Mapping[str, Any],
    use_conditioning: bool,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Every case filled by the trained U-Net: float32 [N, 1, D, H, W], the prediction
    (clamped to [-1, 1]) inside ``mask`` and ``voided`` bit-exact outside it (`composite`).

    ``batch_size`` cases per forward pass (default 2); ``device`` (default cpu)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    in_channels = check_cases(cases, use_conditioning, PREDICT_KEYS)
    model = load_unet_baseline(state, network=network, in_channels=in_channels).to(device)
    voided, mask = cases["voided"].float(), cases["mask"]
    conditioning = cases[CONDITIONING_KEY] if use_conditioning else None
    filled = []
    with torch.no_grad():
        for start in range(0, voided.shape[0], batch_size):
            part = slice(start, start + batch_size)
            x = network_input(
                voided[part], mask[part], None if conditioning is None else conditioning[part]
            )
            prediction = model(x.to(device)).float().cpu().clamp(-1.0, 1.0)
            filled.append(composite(voided[part], prediction, mask[part]))
    return torch.cat(filled)

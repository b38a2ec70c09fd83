"""Progressive-resolution training: one fully convolutional model, phase after phase.

Phases such as ``[{resolution: 32, max_steps: 300}, {resolution: 64, max_steps: 200}]`` train
the *same* model on the images resized to each phase's resolution
(`medgen.data.resize.resize_images`: antialiased in 2D), each phase one
`medgen.training.TrainingJob` with its own warmup+cosine schedule, optimizer and EMA, in
``<root>/phase_<i>_<res>/``. Low resolutions are cheap and teach the coarse structure; later
phases refine it.

Each phase's job stages the full-resolution images and, from phase 1 on, the previous phase's
final raw (not EMA) weights as ``init_weights``; the factory resizes the images
(`phase_images`) and loads those weights (`load_init_weights`). So the job's identity covers
the previous phase too: a finished phase is not trained again (the job reads its outcome
back), a killed phase is continued exactly, and a changed phase retrains, as do the phases
after it. Multi-node runs need a shared filesystem for ``root``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from medgen.config import config_to_dict, refuse_unknown_keys
from medgen.data.resize import resize_images
from medgen.datasets import TensorBundle
from medgen.training import TrainingConfig, TrainingJob, run_job
from medgen.training.errors import ConfigError
from medgen.training.job import Factory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """One resolution phase.

    resolution: side length (int, used for every spatial axis) or one size per axis.
    max_steps: optimizer steps of this phase.
    batch_size / lr / warmup_steps (None): per-phase overrides of the training config.
    """

    resolution: int | tuple[int, ...]
    max_steps: int
    batch_size: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None

    def __post_init__(self) -> None:
        sizes = (self.resolution,) if isinstance(self.resolution, int) else tuple(self.resolution)
        if not sizes or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 4 for s in sizes
        ):
            raise ConfigError(f"phase resolution={self.resolution!r}: must be integers >= 4")
        if not isinstance(self.resolution, int):
            object.__setattr__(self, "resolution", sizes)

    def size(self, spatial_dims: int) -> tuple[int, ...]:
        """The image size of this phase for ``spatial_dims`` axes."""
        if isinstance(self.resolution, int):
            return (self.resolution,) * spatial_dims
        if len(self.resolution) != spatial_dims:
            raise ConfigError(
                f"phase resolution={list(self.resolution)} has {len(self.resolution)} sizes, the "
                f"images have {spatial_dims} spatial axes"
            )
        return self.resolution

    def name(self, index: int) -> str:
        """Directory name ``phase_<index>_<res>`` (e.g. phase_0_32, phase_1_32x48x32)."""
        res = self.resolution
        label = str(res) if isinstance(res, int) else "x".join(str(r) for r in res)
        return f"phase_{index}_{label}"

    def training_overrides(self) -> dict[str, Any]:
        keys = ("max_steps", "batch_size", "lr", "warmup_steps")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def parse_phases(phases: Sequence[Mapping[str, Any] | Phase]) -> list[Phase]:
    """`Phase` list from the ``phases`` parameters; unknown keys and empty lists refused."""
    if isinstance(phases, Mapping | str) or not phases:
        raise ConfigError(
            f"phases must be a non-empty list of {{resolution, max_steps}}, got {phases!r}"
        )
    parsed = []
    for index, phase in enumerate(phases):
        if isinstance(phase, Phase):
            parsed.append(phase)
            continue
        phase = dict(phase)
        refuse_unknown_keys(Phase, phase, f"phases[{index}]", ConfigError)
        missing = [k for k in ("resolution", "max_steps") if k not in phase]
        if missing:
            raise ConfigError(f"phases[{index}] needs {missing}")
        parsed.append(Phase(**phase))
    return parsed


def phase_training_config(training: Mapping[str, Any], phase: Phase) -> TrainingConfig:
    """The engine config of ``phase``: the shared ``training`` dict plus the phase's overrides."""
    training = dict(training or {})
    if "max_steps" in training:
        raise ConfigError(
            f"training max_steps={training['max_steps']!r}: with phases, each phase sets max_steps"
        )
    return TrainingConfig.from_dict({**training, **phase.training_overrides()})


class ImageDataset(Dataset):
    """Items of an image tensor ``[N, C, *spatial]`` (a batch is a tensor ``[B, C, ...]``)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def phase_images(images: torch.Tensor, resolution: Sequence[int]) -> torch.Tensor:
    """The training images at ``resolution`` (antialiased resize, clamped to [-1, 1])."""
    images = images.float()
    if tuple(images.shape[2:]) == tuple(resolution):
        return images
    # Antialiased bilinear filters overshoot slightly at sharp edges.
    return resize_images(images, resolution).clamp(-1.0, 1.0)


def load_init_weights(model: nn.Module, data: Mapping[str, TensorBundle]) -> nn.Module:
    """Load the previous phase's raw weights (``data["init_weights"]``) into ``model``; a first
    phase has none and keeps its seeded initialisation."""
    if "init_weights" in data:
        model.load_state_dict(data["init_weights"].tensors)
    return model


@dataclass
class PhaseOutcome:
    """What one phase did. ``seconds``: this invocation's time (0 when skipped)."""

    index: int
    name: str
    resolution: list[int]
    steps: int
    seconds: float
    resumed_from_step: int
    skipped: bool
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProgressiveResult:
    """All phases, and the final phase's raw and EMA weights (CPU state dicts)."""

    phases: list[PhaseOutcome]
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None


def train_progressive(
    images: torch.Tensor,
    phases: Sequence[Mapping[str, Any] | Phase],
    training: Mapping[str, Any],
    root: str | Path,
    *,
    name: str,
    factory: Factory,
    options: Mapping[str, Any] | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    resources: Mapping[str, Any] | None = None,
    torch_threads: int | None = None,
) -> ProgressiveResult:
    """Train through ``phases`` in ``root``; see the module docstring.

    Args:
        images: full-resolution training images ``[N, C, *spatial]``.
        phases: `Phase` objects or their dicts, in order.
        training: `TrainingConfig` dict shared by the phases (no ``max_steps``: phases set it).
        root: checkpoint root; phase ``i`` lives in ``root/phase_<i>_<res>``.
        name: the model's name; phase jobs are named ``<name>/phase_<i>_<res>`` (MLflow).
        factory: the phases' job factory, called in every worker as
            ``factory(data, resolution=[...], phase_name=..., **options, **runtime_options)``
            with ``data["images"]`` (full resolution) and, after the first phase,
            ``data["init_weights"]``.
        options: JSON-friendly factory arguments (part of each phase's identity).
        runtime_options: factory arguments that do not change what is learned.
        resources: `medgen.training.Resources` dict (None: one process).
        torch_threads: intra-op threads per worker (see `TrainingJob`).
    """
    phases = parse_phases(phases)
    spatial_dims = images.ndim - 2
    configs = [phase_training_config(training, p) for p in phases]  # all errors before training
    sizes = [p.size(spatial_dims) for p in phases]
    root = Path(root)
    data = {"images": TensorBundle({"images": images})}
    outcomes: list[PhaseOutcome] = []
    result = None
    for index, (phase, config, size) in enumerate(zip(phases, configs, sizes, strict=True)):
        phase_name = phase.name(index)
        job = TrainingJob(
            name=f"{name}/{phase_name}",
            factory=factory,
            config=config,
            checkpoint_dir=root / phase_name,
            data=data,
            options={**(options or {}), "resolution": list(size)},
            runtime_options={**(runtime_options or {}), "phase_name": phase_name},
            resources=resources,
            torch_threads=torch_threads,
            artifact_path=f"autoencoder/{name}",
        )
        outcome = run_job(job)
        if outcome.skipped:
            log.info("%s is finished: skipped", phase_name)
        result = outcome.result
        outcomes.append(
            PhaseOutcome(
                index=index,
                name=phase_name,
                resolution=list(size),
                steps=result.steps,
                seconds=0.0 if outcome.skipped else outcome.seconds,
                resumed_from_step=outcome.resumed_from_step,
                skipped=outcome.skipped,
                stopped_early=result.stopped_early,
                history=result.history,
            )
        )
        data = {**data, "init_weights": TensorBundle(result.model_state)}
    return ProgressiveResult(outcomes, result.model_state, result.ema_state)

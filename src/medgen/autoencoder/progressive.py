"""Progressive-resolution training: one fully convolutional model, phase after phase.

Phases such as ``[{resolution: 32, max_steps: 300}, {resolution: 64, max_steps: 200}]`` train
the *same* model on the images resized to each phase's resolution
(`medgen.data.resize.resize_images`: antialiased in 2D), each phase a complete engine run
with its own warmup+cosine schedule, optimizer and EMA, in ``<root>/phase_<i>_<res>/``.
Low resolutions are cheap and teach the coarse structure; later phases refine it.

Resume:
* a finished phase has ``phase_done.json`` (steps, seconds, history) next to the engine's
  final ``latest.pt``; a re-run skips it;
* a killed phase is continued exactly from its ``latest.pt`` by the engine;
* phase ``i + 1`` starts from phase ``i``'s final raw (not EMA) weights, read from its
  ``latest.pt``, so a resumed run trains exactly like an uninterrupted one;
* each phase directory has a ``job.json`` (its phase, training config, factory arguments,
  data fingerprint and the previous phase's identity); when it differs the directory is moved
  to ``<dir>.stale`` and the phase retrains, as do the phases after it.

Workers: each phase goes through `medgen.training.launch` (1..N processes, DDP). Workers get
a `JobSpec`: the ``factory`` (``"package.module:function"``) is called as
``factory(data_path=..., resolution=[...], init_weights_path=..., phase_name=..., **factory_kwargs)``
and returns a `TrainingTask`; `load_phase_images` and `load_phase_weights` do its I/O.
Multi-node runs need a shared filesystem for ``root``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from medgen.atomic_io import atomic_write_local
from medgen.config import config_to_dict, refuse_unknown_keys
from medgen.data.resize import resize_images
from medgen.datasets import TensorBundle, TensorDataset
from medgen.training import JobSpec, TrainingConfig, launch, load_checkpoint, run_training_job
from medgen.training.checkpoint import LATEST, prepare_checkpoint_dir
from medgen.training.errors import ConfigError

log = logging.getLogger(__name__)

DATA_FILE = "train_images.safetensors"
PHASE_DONE = "phase_done.json"
# Training options that do not change what is learned: changing them keeps checkpoints valid.
BOOKKEEPING_KEYS = (
    "progress",
    "log_every",
    "checkpoint_every",
    "keep_every",
    "device",
    "num_workers",
)


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


def load_phase_images(data_path: str | Path, resolution: Sequence[int]) -> torch.Tensor:
    """The training images at ``resolution`` (antialiased resize, clamped to [-1, 1])."""
    images = TensorDataset(filepath=str(data_path)).load()["images"].float()
    if tuple(images.shape[2:]) == tuple(resolution):
        return images
    # Antialiased bilinear filters overshoot slightly at sharp edges.
    return resize_images(images, resolution).clamp(-1.0, 1.0)


def load_phase_weights(model: nn.Module, init_weights_path: str | Path | None) -> nn.Module:
    """Load the raw weights of a previous phase's checkpoint into ``model`` (None: no-op)."""
    if init_weights_path is not None:
        model.load_state_dict(load_checkpoint(init_weights_path, map_location="cpu")["model"])
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


def _checkpoint_states(
    path: Path,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Raw and EMA model states of an engine checkpoint (EMA keys without AveragedModel's prefix)."""
    state = load_checkpoint(path, map_location="cpu")
    ema = state["ema"]
    if ema is not None:
        ema = {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}
    return state["model"], ema


def train_progressive(
    images: torch.Tensor,
    phases: Sequence[Mapping[str, Any] | Phase],
    training: Mapping[str, Any],
    root: str | Path,
    *,
    factory: str,
    factory_kwargs: Mapping[str, Any] | None = None,
    runtime_kwargs: Mapping[str, Any] | None = None,
    resources: Mapping[str, Any] | None = None,
) -> ProgressiveResult | None:
    """Train through ``phases`` in ``root``; see the module docstring.

    Args:
        images: full-resolution training images ``[N, C, *spatial]``.
        phases: `Phase` objects or their dicts, in order.
        training: `TrainingConfig` dict shared by the phases (no ``max_steps``: phases set it).
        root: checkpoint root; phase ``i`` lives in ``root/phase_<i>_<res>``.
        factory: ``"package.module:function"`` returning a `TrainingTask` (module docstring).
        factory_kwargs: JSON-friendly extra arguments of the factory (part of each phase's
            identity: changing them retrains).
        runtime_kwargs: factory arguments that do not change what is learned (e.g. thread
            counts); not part of the identity.
        resources: `medgen.training.Resources` dict (None: one process).

    Returns:
        The `ProgressiveResult`, or None on nodes other than the first of a multi-node run.
    """
    phases = parse_phases(phases)
    spatial_dims = images.ndim - 2
    configs = [phase_training_config(training, p) for p in phases]  # all errors before training
    sizes = [p.size(spatial_dims) for p in phases]
    kwargs = json.loads(json.dumps(dict(factory_kwargs or {})))
    runtime = json.loads(json.dumps(dict(runtime_kwargs or {})))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    data_path = root / DATA_FILE
    data = TensorBundle({"images": images})
    TensorDataset(filepath=str(data_path)).save(data)

    previous = data.fingerprint()
    init_weights: Path | None = None
    outcomes: list[PhaseOutcome] = []
    for index, (phase, config, size) in enumerate(zip(phases, configs, sizes, strict=True)):
        name = phase.name(index)
        directory = root / name
        learned = {k: v for k, v in config.to_dict().items() if k not in BOOKKEEPING_KEYS}
        job = {
            "phase": phase.to_dict(),
            "training": learned,
            "factory": factory,
            "factory_kwargs": kwargs,
            "previous": previous,
        }
        job = json.loads(json.dumps(job))
        resumable = prepare_checkpoint_dir(directory, job)
        done_file = directory / PHASE_DONE
        if resumable and done_file.is_file() and (directory / LATEST).is_file():
            record = json.loads(done_file.read_text())
            outcomes.append(PhaseOutcome(**{**record, "seconds": 0.0, "skipped": True}))
            log.info("%s is finished: skipped", name)
        else:
            outcome = _run_phase(
                index,
                name,
                directory,
                size,
                config,
                resumable,
                init_weights,
                factory=factory,
                kwargs={**kwargs, **runtime},
                data_path=data_path,
                resources=resources,
            )
            if outcome is None:
                return None
            outcomes.append(outcome)
        init_weights = directory / LATEST
        previous = hashlib.sha1(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
    model_state, ema_state = _checkpoint_states(init_weights)
    return ProgressiveResult(outcomes, model_state, ema_state)


def _run_phase(
    index: int,
    name: str,
    directory: Path,
    size: tuple[int, ...],
    config: TrainingConfig,
    resumable: bool,
    init_weights: Path | None,
    *,
    factory: str,
    kwargs: dict[str, Any],
    data_path: Path,
    resources: Mapping[str, Any] | None,
) -> PhaseOutcome | None:
    latest = directory / LATEST
    resumed_from = int(load_checkpoint(latest)["step"]) if resumable and latest.is_file() else 0
    spec = JobSpec(
        factory=factory,
        config=config.to_dict(),
        factory_kwargs={
            **kwargs,
            "data_path": str(data_path),
            "resolution": list(size),
            "init_weights_path": None if init_weights is None else str(init_weights),
            "phase_name": name,
        },
        checkpoint_dir=str(directory),
        resume=resumable,
    )
    start = time.perf_counter()
    result = launch(run_training_job, spec, resources, log_dir=directory.parent / "worker_logs")
    if result is None:
        return None
    outcome = PhaseOutcome(
        index=index,
        name=name,
        resolution=list(size),
        steps=result.steps,
        seconds=time.perf_counter() - start,
        resumed_from_step=resumed_from,
        skipped=False,
        stopped_early=result.stopped_early,
        history=result.history,
    )
    record = {k: v for k, v in outcome.to_dict().items() if k != "skipped"}
    atomic_write_local(directory / PHASE_DONE, json.dumps(record, indent=1).encode())
    return outcome

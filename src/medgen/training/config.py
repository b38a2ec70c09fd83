"""`TrainingConfig`: the engine's options, built from a plain dict of Kedro parameters.

Every training node passes its `params:<pipeline>.training` dict through
`TrainingConfig.from_dict`, so a misspelt key in `conf/` fails loudly (with a
suggestion) instead of silently falling back to a default. `to_dict()` round-trips
to JSON-friendly values; the dict is stored in every checkpoint and logged to MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medgen.config import config_to_dict, refuse_unknown_keys
from medgen.training.augmentation import AugmentationConfig
from medgen.training.diagnostics_config import LoggingConfig
from medgen.training.errors import ConfigError
from medgen.training.perceptual_config import PerceptualTermConfig

PRECISIONS = ("fp32", "bf16", "fp16")
MODES = ("min", "max")


@dataclass(frozen=True)
class TrainingConfig:
    """Options of `medgen.training.train`. Defaults are CPU-demo friendly.

    Length and batching:
        max_steps: optimizer steps to run (default 1000). Epochs are derived from it.
        batch_size: micro-batch size *per rank* (default 8). The global batch of one
            optimizer step is ``batch_size * accum_steps * world_size``.
        accum_steps: micro-batches accumulated per optimizer step (default 1).
        shuffle / drop_last / num_workers: DataLoader options (True / True / 0).
    Optimiser (AdamW) and schedule:
        lr (1e-4), betas ((0.9, 0.999)), weight_decay (0.0), eps (1e-8).
        warmup_steps (0): linear warmup; then cosine decay to ``lr * min_lr_ratio``
            (min_lr_ratio default 0.0) at the last step. See `schedule.py`.
        max_grad_norm (1.0): global L2 gradient clipping; None disables it.
    Weights:
        ema_decay (None): exponential moving average of the weights; None disables.
        precision ("fp32"): "bf16" / "fp16" autocast; applied on CUDA, and on CPU only
            when allow_cpu_autocast is true (CPU bf16 is slow on most machines).
        compile (False): wrap the model in `torch.compile`.
    Validation and early stopping:
        val_every (None): run ``val_fn`` every N optimizer steps (and at the end).
        early_stopping_metric (None): val metric that defines "best" (best checkpoint,
            best_metric) and, with early_stopping_patience, stops training.
        early_stopping_mode ("min"), early_stopping_patience (None = never stop),
        early_stopping_min_delta (0.0): improvement needed to reset the patience.
    Bookkeeping:
        log_every (10): steps between logged loss/lr records.
        checkpoint_every (None): steps between `latest` checkpoints (one is always
            written at the end when a checkpoint directory is given).
        keep_every (None): additionally keep `step_XXXXXXXX.pt` every N steps.
        seed (0), progress (True), device ("auto": cuda:<local rank> if available).
        logging: the training diagnostics (`diagnostics_config.LoggingConfig`).
    Loss and data aids:
        perceptual: the perceptual term of a diffusion loss (`perceptual_config`; off).
        augmentation: on-the-fly MONAI augmentation (`augmentation.AugmentationConfig`; off).
        overfit_batches (None): train on this many fixed batches (debugging a model and loss).
    """

    max_steps: int = 1000
    batch_size: int = 8
    accum_steps: int = 1
    shuffle: bool = True
    drop_last: bool = True
    num_workers: int = 0

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0

    ema_decay: float | None = None
    precision: str = "fp32"
    allow_cpu_autocast: bool = False
    compile: bool = False

    val_every: int | None = None
    early_stopping_metric: str | None = None
    early_stopping_mode: str = "min"
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0

    log_every: int = 10
    checkpoint_every: int | None = None
    keep_every: int | None = None
    seed: int = 0
    progress: bool = True
    device: str = "auto"
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    perceptual: PerceptualTermConfig = field(default_factory=PerceptualTermConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    overfit_batches: int | None = None

    def __post_init__(self) -> None:
        # YAML gives lists; store a tuple so the config stays hashable-ish and equal
        # to itself after a to_dict()/from_dict() round trip.
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        for key, block in _BLOCKS.items():  # nested blocks arrive as dicts from YAML
            value = getattr(self, key)
            if value is None or isinstance(value, Mapping):
                object.__setattr__(self, key, block.from_params(value))
            elif not isinstance(value, block):
                raise ConfigError(f"training parameter {key} must be a mapping, got {value!r}")
        _validate(self)

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> TrainingConfig:
        """Build from Kedro parameters; unknown keys raise `ConfigError` with a hint."""
        params = dict(params or {})
        refuse_unknown_keys(cls, params, "training", ConfigError)
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (lists, not tuples) that `from_dict` accepts."""
        return config_to_dict(self)


_BLOCKS = {
    "logging": LoggingConfig,
    "perceptual": PerceptualTermConfig,
    "augmentation": AugmentationConfig,
}


def _validate(c: TrainingConfig) -> None:
    def fail(key: str, why: str) -> None:
        raise ConfigError(f"training parameter {key}={getattr(c, key)!r}: {why}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    for key in ("max_steps", "batch_size", "accum_steps", "log_every"):
        if not is_int(getattr(c, key)) or getattr(c, key) < 1:
            fail(key, "must be an integer >= 1")
    for key in (
        "val_every",
        "checkpoint_every",
        "keep_every",
        "early_stopping_patience",
        "overfit_batches",
    ):
        v = getattr(c, key)
        if v is not None and (not is_int(v) or v < 1):
            fail(key, "must be None or an integer >= 1")
    for key in ("warmup_steps", "num_workers", "seed"):
        if not is_int(getattr(c, key)) or getattr(c, key) < 0:
            fail(key, "must be an integer >= 0")
    if c.warmup_steps >= c.max_steps and c.warmup_steps > 0:
        fail("warmup_steps", f"must be smaller than max_steps ({c.max_steps})")
    for key in ("shuffle", "drop_last", "allow_cpu_autocast", "compile", "progress"):
        if not isinstance(getattr(c, key), bool):
            fail(key, "must be true or false")

    if not is_number(c.lr) or c.lr <= 0:
        fail("lr", "must be a finite number > 0")
    if not is_number(c.eps) or c.eps <= 0:
        fail("eps", "must be a finite number > 0")
    if not is_number(c.weight_decay) or c.weight_decay < 0:
        fail("weight_decay", "must be a finite number >= 0")
    if not is_number(c.min_lr_ratio) or not 0 <= c.min_lr_ratio <= 1:
        fail("min_lr_ratio", "must be in [0, 1]")
    if (
        not isinstance(c.betas, tuple)
        or len(c.betas) != 2
        or not all(is_number(b) and 0 <= b < 1 for b in c.betas)
    ):
        fail("betas", "must be two numbers in [0, 1)")
    if c.max_grad_norm is not None and (not is_number(c.max_grad_norm) or c.max_grad_norm <= 0):
        fail("max_grad_norm", "must be None or a finite number > 0")
    if c.ema_decay is not None and (not is_number(c.ema_decay) or not 0 < c.ema_decay < 1):
        fail("ema_decay", "must be None or a number in (0, 1)")
    if c.precision not in PRECISIONS:
        fail("precision", f"must be one of {PRECISIONS}")
    if c.early_stopping_mode not in MODES:
        fail("early_stopping_mode", f"must be one of {MODES}")
    if not is_number(c.early_stopping_min_delta) or c.early_stopping_min_delta < 0:
        fail("early_stopping_min_delta", "must be a finite number >= 0")
    if c.early_stopping_metric is not None and not isinstance(c.early_stopping_metric, str):
        fail("early_stopping_metric", "must be None or a metric name")
    if c.early_stopping_metric is not None and c.val_every is None:
        fail("early_stopping_metric", "needs val_every (validation never runs otherwise)")
    if c.early_stopping_patience is not None and c.early_stopping_metric is None:
        fail("early_stopping_patience", "needs early_stopping_metric")
    if c.overfit_batches is not None and c.augmentation.enabled:
        fail("overfit_batches", "trains on fixed batches: switch augmentation off")
    if not isinstance(c.device, str) or not (
        c.device in ("auto", "cpu", "cuda") or c.device.startswith("cuda:")
    ):
        fail("device", "must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'")

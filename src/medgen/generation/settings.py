"""Resolving the ``latent_diffusion`` parameters into what one model of the 2D chain needs.

``latent_diffusion.shared`` (:class:`SharedModelParams`) holds what both roles of the chain
use (strategy, resolution, backbone, training, ...); one block per role (``masks``,
``images``; :class:`RoleParams`) names its mode and training slices and may override single
keys of them. The merge happens here rather than with YAML anchors, so an environment
(``conf/cluster``) or ``--params`` that changes a shared key reaches both models. Every value
lives in conf/base/parameters_latent_diffusion.yml; the code has no defaults of its own.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medgen.config import config_tree_from_params
from medgen.generation.model_bundle import combination_name
from medgen.generation.slices import SLICE_SELECTIONS

ROLES = ("masks", "images")
OVERRIDABLE = ("backbone", "training", "strategies")
SPACE_NAMES = ("pixel", "latent")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``override``'s keys replaced recursively (neither is modified)."""
    out = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _one_of(section: str, key: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{section}.{key} must be one of {tuple(allowed)}, got {value!r}")


@dataclass(frozen=True)
class SharedModelParams:
    """``latent_diffusion.shared``: what both models of the chain use unless a role overrides.

    strategy: ``rflow`` | ``ddpm`` | ``edm``. space: ``pixel`` | ``latent`` (the autoencoder
    pipeline's 2D model). resolution: training and generation size. strategies: options per
    strategy (`medgen.diffusion.rflow` / `ddpm` / `edm`). backbone: `medgen.models.build_diffusion_unet`
    options. training: a `medgen.training.TrainingConfig` dict. resources: a
    `medgen.training.Resources` dict. torch_threads: threads per worker (null: cores /
    workers). checkpoint_root: checkpoints go to ``<root>/<combination>/checkpoints``.
    resume: continue ``latest.pt`` when it belongs to the same job.
    """

    strategy: str
    space: str
    resolution: int
    strategies: dict[str, dict[str, Any]]
    backbone: dict[str, Any]
    training: dict[str, Any]
    resources: dict[str, Any]
    torch_threads: int | None
    checkpoint_root: str
    resume: bool

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SharedModelParams:
        config = config_tree_from_params(cls, params, "latent_diffusion.shared")
        _one_of("latent_diffusion.shared", "space", config.space, SPACE_NAMES)
        return config


@dataclass(frozen=True)
class RoleParams:
    """``latent_diffusion.<role>``: one model of the chain.

    mode: the role's mode (``seg`` for masks; ``bravo`` | ``dual`` | ``t1_pre`` | ``t1_gd``
    for images). train_slices: ``all`` | ``with_lesions``. The other keys override the shared
    ones: ``strategy``, ``space``, ``resolution`` (null: the shared value) and, key by key,
    ``backbone``, ``training``, ``strategies`` (empty: nothing overridden).
    """

    mode: str
    train_slices: str
    strategy: str | None = None
    space: str | None = None
    resolution: int | None = None
    backbone: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    strategies: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], role: str) -> RoleParams:
        section = f"latent_diffusion.{role}"
        config = config_tree_from_params(cls, params, section)
        _one_of(section, "train_slices", config.train_slices, SLICE_SELECTIONS)
        if config.space is not None:
            _one_of(section, "space", config.space, SPACE_NAMES)
        return config


@dataclass(frozen=True)
class LrFinderParams:
    """``latent_diffusion.lr_finder``: the LR range test (`medgen.training.lr_range_test`) of
    each role, run only when ``enabled``; ``min_lr`` / ``max_lr`` bound the exponential sweep
    of ``num_steps`` steps."""

    enabled: bool
    min_lr: float
    max_lr: float
    num_steps: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> LrFinderParams:
        return config_tree_from_params(cls, params, "latent_diffusion.lr_finder")

    def sweep(self) -> dict[str, Any]:
        """The keyword arguments of `lr_range_test`."""
        return {"min_lr": self.min_lr, "max_lr": self.max_lr, "num_steps": self.num_steps}


@dataclass(frozen=True)
class ModelSettings:
    """Everything one training node needs, resolved from shared + role parameters."""

    role: str
    strategy: str
    mode: str
    space: str
    task_config: dict[str, Any]
    backbone: dict[str, Any]
    training: dict[str, Any]
    resolution: int
    train_slices: str
    resources: dict[str, Any]
    torch_threads: int | None
    checkpoint_dir: Path
    resume: bool

    @property
    def combination(self) -> str:
        return combination_name(self.task_config)


def model_settings(
    role: str,
    role_params: RoleParams | Mapping[str, Any],
    shared: SharedModelParams | Mapping[str, Any],
    modalities: Sequence[str],
) -> ModelSettings:
    """The ``role`` block merged over the shared parameters (mappings are validated first)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not isinstance(role_params, RoleParams):
        role_params = RoleParams.from_params(role_params, role)
    if not isinstance(shared, SharedModelParams):
        shared = SharedModelParams.from_params(shared)
    merged = {k: deep_merge(getattr(shared, k), getattr(role_params, k)) for k in OVERRIDABLE}
    strategy = str(role_params.strategy or shared.strategy)
    space = str(role_params.space or shared.space)
    task_config = {
        "strategy": {"name": strategy, **(merged["strategies"].get(strategy) or {})},
        "mode": str(role_params.mode),
        "modalities": [str(m) for m in modalities],
        # a latent space is completed by `with_latent_space` from the autoencoder's record
        "space": {"name": space},
    }
    return ModelSettings(
        role=role,
        strategy=strategy,
        mode=str(role_params.mode),
        space=space,
        task_config=task_config,
        backbone=merged["backbone"],
        training=merged["training"],
        resolution=int(role_params.resolution or shared.resolution),
        train_slices=role_params.train_slices,
        resources=copy.deepcopy(shared.resources),
        torch_threads=shared.torch_threads,
        checkpoint_dir=Path(shared.checkpoint_root, combination_name(task_config), "checkpoints"),
        resume=bool(shared.resume),
    )


def with_latent_space(s: ModelSettings, latent_space: Mapping[str, Any] | None) -> ModelSettings:
    """``s`` with its latent space filled in from the autoencoder pipeline's record
    (``autoencoder.latent_space_2d``: latent_channels, downsample_factor, scale_factor,
    per_channel); pixel-space settings come back unchanged."""
    if s.space == "pixel":
        return s
    if not latent_space:
        raise ValueError(
            f"latent_diffusion.{s.role}.space is 'latent' but there is no trained 2D autoencoder: "
            "run `kedro run --pipelines autoencoder` first (it writes "
            "data/06_models/autoencoder/latent_space_2d.json)"
        )
    keys = ("latent_channels", "downsample_factor", "scale_factor", "per_channel")
    missing = [k for k in keys if k not in latent_space]
    if missing:
        raise ValueError(f"the autoencoder's latent space record lacks {missing}")
    if s.resolution % int(latent_space["downsample_factor"]):
        raise ValueError(
            f"latent_diffusion.{s.role}.resolution {s.resolution} is not a multiple of the "
            f"autoencoder's downsample factor {latent_space['downsample_factor']}"
        )
    task_config = copy.deepcopy(s.task_config)
    task_config["space"] = {"name": "latent", **{k: latent_space[k] for k in keys}}
    return replace(s, task_config=task_config)

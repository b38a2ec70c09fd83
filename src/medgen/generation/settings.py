"""Resolving the ``latent_diffusion`` parameters into what one model of the chain needs.

The parameters hold shared defaults (strategy, resolution, backbone, training, ...) and one
block per role of the chain (``masks``, ``images``) naming its mode and overriding single
keys. The merge happens here rather than with YAML anchors, so an environment
(``conf/cluster``) or ``--params`` that changes a shared default reaches both models.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medgen.generation.model_bundle import combination_name

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
    settings: Mapping[str, Any], role: str, modalities: Sequence[str]
) -> ModelSettings:
    """Merge the ``role`` block over the shared ``latent_diffusion`` parameters."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    role_params = dict(settings.get(role) or {})
    allowed = {"mode", "strategy", "train_slices", "space", "resolution", *OVERRIDABLE}
    unknown = sorted(set(role_params) - allowed)
    if unknown:
        raise ValueError(f"latent_diffusion.{role}: unknown key(s) {unknown}")
    if "mode" not in role_params:
        raise ValueError(f"latent_diffusion.{role}.mode is required")
    merged = {k: deep_merge(settings.get(k) or {}, role_params.get(k)) for k in OVERRIDABLE}
    strategy = str(role_params.get("strategy") or settings["strategy"])
    mode = str(role_params["mode"])
    space = str(role_params.get("space") or settings.get("space") or "pixel")
    if space not in SPACE_NAMES:
        raise ValueError(f"latent_diffusion.{role}.space must be one of {SPACE_NAMES}, got {space!r}")
    task_config = {
        "strategy": {"name": strategy, **(merged["strategies"].get(strategy) or {})},
        "mode": mode,
        "modalities": [str(m) for m in modalities],
        # a latent space is completed by `with_latent_space` from the autoencoder's record
        "space": {"name": space},
    }
    return ModelSettings(
        role=role,
        strategy=strategy,
        mode=mode,
        space=space,
        task_config=task_config,
        backbone=merged["backbone"],
        training=merged["training"],
        resolution=int(role_params.get("resolution") or settings["resolution"]),
        train_slices=str(role_params.get("train_slices", "all")),
        resources=dict(settings.get("resources") or {}),
        torch_threads=settings.get("torch_threads"),
        checkpoint_dir=Path(
            settings["checkpoint_root"], combination_name(task_config), "checkpoints"
        ),
        resume=bool(settings.get("resume", True)),
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
            "run `kedro run --pipeline autoencoder` first (it writes "
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

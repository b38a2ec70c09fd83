"""Trained diffusion models as weights-only `TensorBundle`s (safetensors, no pickle).

One bundle holds the raw and the EMA weights (``model.<key>`` / ``ema.<key>``) and, in its
JSON metadata, everything needed to rebuild the network: the `DiffusionTask` config, the
backbone config, the training resolution and a short training record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medgen.datasets import TensorBundle
from medgen.diffusion import DiffusionTask, build_task
from medgen.training.results import sub_state_dict

MODEL_PREFIX = "model."
EMA_PREFIX = "ema."


def combination_name(task_config: Mapping[str, Any]) -> str:
    """``<strategy>_<mode>``, the name of a trained combination (e.g. ``rflow_bravo``), with
    ``_latent`` appended in latent space (``rflow_bravo_latent``) so both can coexist."""
    space = (task_config.get("space") or {}).get("name", "pixel")
    suffix = "" if space == "pixel" else f"_{space}"
    return f"{task_config['strategy']['name']}_{task_config['mode']}{suffix}"


def to_model_bundle(
    model_state: Mapping[str, torch.Tensor],
    ema_state: Mapping[str, torch.Tensor] | None,
    *,
    task_config: Mapping[str, Any],
    backbone: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
) -> TensorBundle:
    """Pack weights and the configs that rebuild the network into one bundle."""
    tensors = {MODEL_PREFIX + k: v for k, v in model_state.items()}
    if ema_state is not None:
        tensors.update({EMA_PREFIX + k: v for k, v in ema_state.items()})
    metadata = {
        "combination": combination_name(task_config),
        "task": dict(task_config),
        "backbone": dict(backbone),
        "has_ema": ema_state is not None,
        **dict(info or {}),
    }
    return TensorBundle(tensors, metadata)


def state_from_bundle(bundle: TensorBundle, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The EMA weights (or the raw ones when ``use_ema`` is false or there is no EMA)."""
    prefix = EMA_PREFIX if use_ema and bundle.metadata.get("has_ema") else MODEL_PREFIX
    return sub_state_dict(bundle.tensors, prefix)


def load_diffusion_model(
    bundle: TensorBundle,
    use_ema: bool = True,
    device: str | torch.device = "cpu",
    autoencoder: nn.Module | None = None,
) -> tuple[DiffusionTask, nn.Module]:
    """Rebuild ``(task, network)`` from a bundle; the network is in eval mode. A latent-space
    model needs the ``autoencoder`` it was trained with."""
    space = bundle.metadata["task"].get("space", {}).get("name", "pixel")
    if space != "pixel" and autoencoder is None:
        raise ValueError(
            f"{bundle.metadata.get('combination')} was trained in {space} space: pass the "
            "autoencoder it was trained with (autoencoder.model_2d)"
        )
    if autoencoder is not None:
        autoencoder = autoencoder.to(device).eval()
    task = build_task(bundle.metadata["task"], autoencoder if space != "pixel" else None)
    model = task.build_model(bundle.metadata["backbone"])
    model.load_state_dict(state_from_bundle(bundle, use_ema))
    return task, model.to(device).eval()

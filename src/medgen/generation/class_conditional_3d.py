"""3D class-conditional generation on pre-encoded latents (lesion present / absent → a volume).

The job behind the ``latent_diffusion`` (3D) nodes, after BiFlowNet / 3D MedDiffusion (Wang et al.
2024): a DiT (:mod:`medgen.models.dit`) learns the autoencoder pipeline's latents conditioned on a
per-subject class (``lesion_present`` in the volumes bundle), with classifier-free guidance.

* :func:`train_class_conditional_generator` trains through the engine (``medgen.training.train``,
  with EMA, checkpoints and exact resume) on the ``latents`` bundle: no encoder runs, the
  ``precomputed_latent`` space only multiplies by the bundle's ``scale_factor``.
* :func:`generate_class_conditional` samples ``n`` latents per class, unscaled, ready for the
  autoencoder's (tiled) decoder; decoding and NIfTI writing are the caller's.

Parameters (the node's ``params:`` dict, every key optional; dict values merge key by key over
:data:`DEFAULTS`): ``label_key``, ``class_names``, ``modalities``, ``torch_threads``,
``strategy``, ``backbone``, ``training`` (a ``TrainingConfig`` dict) and ``sampling``
(``guidance_scale``, ``num_steps``, ``batch_size``, ``use_ema``, ``device``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from medgen.data.cohort import IMAGE_MODALITIES
from medgen.datasets import TensorBundle
from medgen.diffusion.task import DiffusionTask, build_task
from medgen.generation.model_bundle import combination_name, state_from_bundle, to_model_bundle
from medgen.generation.settings import deep_merge
from medgen.training.checkpoint import latest_step, prepare_checkpoint_dir
from medgen.training import MlflowCallback, TrainingConfig, train
from medgen.runtime import torch_threads
from medgen.training.engine import resolve_device

#: Defaults of the job's parameters (a CPU demo size: 16 latents of [C, 12, 14, 12]).
DEFAULTS: dict[str, Any] = {
    "label_key": "lesion_present",
    "class_names": ["lesion_absent", "lesion_present"],
    "modalities": None,  # null: the bundle's metadata["modalities"], else the cohort's four
    # null: torch's default (one per core); 1 is faster where other processes share the cores
    "torch_threads": None,
    "strategy": {"name": "rflow", "num_inference_steps": 30, "cond_drop_prob": 0.1},
    "backbone": {"name": "dit", "patch_size": 2, "hidden_size": 96, "depth": 4, "num_heads": 4},
    "training": {
        "max_steps": 120,
        "batch_size": 8,
        "lr": 3e-4,
        "warmup_steps": 10,
        "ema_decay": 0.99,
        "log_every": 10,
    },
    "sampling": {
        "guidance_scale": 2.0,
        "num_steps": None,  # null: the strategy's num_inference_steps
        "batch_size": 8,
        "use_ema": True,
        "device": "auto",
    },
}
#: Per-strategy defaults under the configured ones: DDPM must not clip latents to [-1, 1].
STRATEGY_DEFAULTS: dict[str, dict[str, Any]] = {"ddpm": {"clip_sample": False}}
LATENT_KEY = "latents"


def resolve_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` merged over :data:`DEFAULTS`; unknown keys raise ``ValueError`` naming them."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"class-conditional generator: unknown parameter(s) {unknown}; known: {sorted(DEFAULTS)}"
        )
    merged = deep_merge(DEFAULTS, params)
    if "strategy" in params and "name" in params["strategy"]:
        # The default options (num_inference_steps, cond_drop_prob) exist in every strategy;
        # the named strategy's own defaults go under them and the user's options over all.
        name = str(params["strategy"]["name"])
        merged["strategy"] = {
            **STRATEGY_DEFAULTS.get(name, {}),
            **{k: v for k, v in DEFAULTS["strategy"].items() if k != "name"},
            **params["strategy"],
        }
    unknown = sorted(set(merged["sampling"]) - set(DEFAULTS["sampling"]))
    if unknown:
        raise ValueError(f"class-conditional generator: unknown sampling parameter(s) {unknown}")
    return merged


def check_latents_bundle(
    bundle: TensorBundle, label_key: str, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(latents float32 [N, C, *s], labels int64 [N], scale_factor)`` of a latents bundle.

    Raises:
        ValueError / KeyError: naming a missing key, a wrong shape or dtype, a label outside
            ``[0, num_classes)``, or a missing or zero ``metadata["scale_factor"]``.
    """
    for key in (LATENT_KEY, label_key):
        if key not in bundle.tensors:
            raise KeyError(f"latents bundle needs tensor {key!r}; it has {sorted(bundle.tensors)}")
    latents, labels = bundle[LATENT_KEY], bundle[label_key]
    if latents.ndim not in (4, 5) or not latents.is_floating_point():
        raise ValueError(
            f"latents bundle: {LATENT_KEY!r} must be float [N, C, *spatial] (2D/3D), got "
            f"{tuple(latents.shape)} {latents.dtype}"
        )
    if labels.shape != (latents.shape[0],) or labels.is_floating_point():
        raise ValueError(
            f"latents bundle: {label_key!r} must be integer labels [{latents.shape[0]}], got "
            f"{tuple(labels.shape)} {labels.dtype}"
        )
    labels = labels.long()
    bad = sorted(set(labels[(labels < 0) | (labels >= num_classes)].tolist()))
    if bad:
        raise ValueError(f"latents bundle: {label_key!r} values {bad} not in [0, {num_classes})")
    if not torch.isfinite(latents).all():
        raise ValueError(f"latents bundle: {LATENT_KEY!r} holds NaN or Inf")
    scale = bundle.metadata.get("scale_factor")
    if not isinstance(scale, int | float) or isinstance(scale, bool) or scale == 0:
        raise ValueError(
            f"latents bundle: metadata['scale_factor'] must be a non-zero number, got {scale!r}"
        )
    return latents.float(), labels, float(scale)


class LatentLabelDataset(Dataset):
    """``{"latents": [C, *s], label_key: int64 []}`` items, the batch format of the task."""

    def __init__(self, latents: torch.Tensor, labels: torch.Tensor, label_key: str) -> None:
        self.latents, self.labels, self.label_key = latents, labels, label_key

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {LATENT_KEY: self.latents[index], self.label_key: self.labels[index]}


def build_class_task(
    params: Mapping[str, Any], metadata: Mapping[str, Any], latent_channels: int
) -> DiffusionTask:
    """The task (strategy, ``class`` mode, ``precomputed_latent`` space) for a latents bundle
    with ``metadata`` and ``latent_channels`` channels; ``params`` are resolved parameters."""
    modalities = params["modalities"] or metadata.get("modalities") or list(IMAGE_MODALITIES)
    class_names = [str(c) for c in params["class_names"]]
    per_channel = bool(metadata.get("per_channel", False))
    channels_per_latent = metadata.get("latent_channels", latent_channels)
    task = build_task(
        {
            "strategy": dict(params["strategy"]),
            "mode": "class",
            "modalities": [str(m) for m in modalities],
            "mode_options": {
                "label_key": params["label_key"],
                "num_classes": len(class_names),
                "class_names": class_names,
            },
            "space": {
                "name": "precomputed_latent",
                "latent_channels": int(channels_per_latent),
                "downsample_factor": int(metadata.get("downsample_factor", 1)),
                "scale_factor": float(metadata["scale_factor"]),
                "per_channel": per_channel,
                "latent_key": LATENT_KEY,
            },
        }
    )
    if task.out_channels != latent_channels:
        raise ValueError(
            f"latents have {latent_channels} channels but metadata latent_channels="
            f"{channels_per_latent}, per_channel={per_channel} and {len(modalities)} "
            f"modalities {list(modalities)} give {task.out_channels}"
        )
    return task


def backbone_for(backbone: Mapping[str, Any], latent_spatial: Sequence[int]) -> dict[str, Any]:
    """``backbone`` with ``spatial_dims`` and ``input_size`` set from the latent grid (values
    set in the config must agree)."""
    config = dict(backbone)
    derived = {"spatial_dims": len(latent_spatial), "input_size": [int(s) for s in latent_spatial]}
    for key, value in derived.items():
        given = config.get(key)
        if given is not None and (list(given) if isinstance(given, Sequence) else given) != value:
            raise ValueError(f"backbone {key}={given!r} but the latents give {value}")
    return {**config, **derived}


def _fingerprint(latents: torch.Tensor, labels: torch.Tensor) -> str:
    return TensorBundle({"latents": latents, "labels": labels}).fingerprint(("latents", "labels"))


def train_class_conditional_generator(
    latents_train: TensorBundle,
    params: Mapping[str, Any] | None,
    checkpoint_dir: str | Path,
    *,
    resume: bool = True,
    callbacks: Sequence[Any] | None = None,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Train a class-conditional DiT on a ``latents`` bundle; return ``(weights, report)``.

    Args:
        latents_train: ``latents`` float32 ``[N, C, *s]`` (unscaled posterior means),
            ``params["label_key"]`` int64 ``[N]`` (default ``lesion_present``), metadata with
            ``scale_factor`` (required), ``downsample_factor``, ``latent_channels``,
            ``per_channel``, ``modalities`` (optional).
        params: the job parameters (see the module docstring; defaults in :data:`DEFAULTS`).
        checkpoint_dir: the engine's checkpoints; a run with the same configuration and data
            resumes from ``latest.pt`` (when ``resume``), another one moves them aside.
        callbacks: engine callbacks (default: an MLflow logger, a no-op without an active run).

    Returns:
        The weights as a safetensors-ready `TensorBundle` (raw + EMA; metadata: task config,
        backbone config, ``latent_shape``, ``scale_factor``, ``classes``, ``label_key``,
        training config) and a report with ``steps``, ``final_loss``, ``seconds``,
        ``history``, ``parameters``, ``class_counts`` and ``resumed_from_step``.
    """
    start = time.perf_counter()
    params = resolve_params(params)
    num_classes = len(params["class_names"])
    latents, labels, scale = check_latents_bundle(latents_train, params["label_key"], num_classes)
    task = build_class_task(params, latents_train.metadata, latents.shape[1])
    backbone = task.backbone_config(backbone_for(params["backbone"], latents.shape[2:]))
    config = TrainingConfig.from_dict(params["training"])
    task_config = task.to_config()
    checkpoint_dir = Path(checkpoint_dir)
    job = {
        "task": task_config,
        "backbone": backbone,
        "latent_shape": list(latents.shape[1:]),
        "data": _fingerprint(latents, labels),
    }
    resumable = prepare_checkpoint_dir(checkpoint_dir, job) and resume
    resumed_from = latest_step(checkpoint_dir) if resumable else 0
    torch.manual_seed(config.seed)  # the same initial weights on every (re-)run
    model = task.build_model(backbone)
    if callbacks is None:
        prefix = combination_name(task_config)
        callbacks = [MlflowCallback(prefix=prefix, artifact_path=f"latent_diffusion_3d/{prefix}")]
    with torch_threads(params["torch_threads"]):
        result = train(
            model,
            task.loss,
            LatentLabelDataset(latents, labels, params["label_key"]),
            config,
            checkpoint_dir=checkpoint_dir,
            resume=resumable,
            callbacks=callbacks,
        )
    steps = [r for r in result.history if r["kind"] == "step"]
    class_counts = torch.bincount(labels, minlength=num_classes).tolist()
    info = {
        "latent_shape": list(latents.shape[1:]),
        "scale_factor": scale,
        "classes": list(params["class_names"]),
        "label_key": params["label_key"],
        "class_counts": class_counts,
        "training": result.config,
    }
    weights = to_model_bundle(
        result.model_state, result.ema_state, task_config=task_config, backbone=backbone, info=info
    )
    report = {
        "steps": result.steps,
        "epochs": result.epochs,
        "final_loss": steps[-1]["loss"] if steps else None,
        "seconds": time.perf_counter() - start,
        "history": result.history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "class_counts": class_counts,
        "resumed_from_step": resumed_from,
    }
    return weights, json.loads(json.dumps(report))


def load_class_conditional_model(
    weights: TensorBundle, use_ema: bool = True, device: str | torch.device = "cpu"
) -> tuple[DiffusionTask, torch.nn.Module]:
    """``(task, network in eval mode)`` from a weights bundle; the task's space has no
    autoencoder (latents come out unscaled by ``task.space.unscale``)."""
    task = build_task(weights.metadata["task"])
    if not task.mode.num_classes:
        raise ValueError(f"weights of mode {task.mode.name!r} are not class-conditional")
    model = task.build_model(weights.metadata["backbone"])
    model.load_state_dict(state_from_bundle(weights, use_ema))
    return task, model.to(device).eval()


@torch.no_grad()
def generate_class_conditional(
    weights: TensorBundle,
    n_per_class: int,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n_per_class`` latents of every class with classifier-free guidance.

    Args:
        weights: the bundle from :func:`train_class_conditional_generator`.
        n_per_class: samples per class (>= 1).
        params: job parameters; ``torch_threads`` and ``sampling`` are read: ``guidance_scale`` (default 2.0; 1.0
            = no guidance), ``num_steps`` (default null: the strategy's, 30 Euler steps for
            rflow), ``batch_size`` (samples per network batch, default 8; a guided batch runs
            ``2 * batch_size``), ``use_ema`` (default true), ``device`` (``auto``/``cpu``/``cuda``).
        seed: seeds the initial noise (results depend on ``batch_size`` too).

    Returns:
        ``(latents, labels)``: float32 ``[N, C, *s]`` on the CPU, *unscaled* (divided by the
        scale factor, ready for the autoencoder's decode), and int64 ``[N]`` labels, class
        by class (``n_per_class`` of class 0 first).
    """
    if not isinstance(n_per_class, int) or isinstance(n_per_class, bool) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an int >= 1, got {n_per_class!r}")
    params = resolve_params(params)
    sampling = params["sampling"]
    batch_size = int(sampling["batch_size"])
    if batch_size < 1:
        raise ValueError(f"sampling.batch_size must be >= 1, got {batch_size}")
    device = resolve_device(str(sampling["device"]))
    task, model = load_class_conditional_model(weights, bool(sampling["use_ema"]), device)
    latent_spatial = [int(s) for s in weights.metadata["latent_shape"][1:]]
    data_spatial = [s * task.space.downsample_factor for s in latent_spatial]
    labels = torch.arange(task.mode.num_classes).repeat_interleave(n_per_class)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    chunks = []
    with torch_threads(params["torch_threads"]):
        for start in range(0, labels.shape[0], batch_size):
            z = task.generate(
                model,
                cond=labels[start : start + batch_size],
                spatial_shape=data_spatial,
                num_steps=sampling["num_steps"],
                guidance_scale=float(sampling["guidance_scale"]),
                generator=generator,
                decode=False,
            )
            chunks.append(task.space.unscale(z).float().cpu())
    latents = torch.cat(chunks)
    if not torch.isfinite(latents).all():
        raise ValueError("generated latents hold NaN or Inf: the model diverged")
    return latents, labels


__all__ = [
    "DEFAULTS",
    "LatentLabelDataset",
    "backbone_for",
    "build_class_task",
    "check_latents_bundle",
    "generate_class_conditional",
    "load_class_conditional_model",
    "resolve_params",
    "train_class_conditional_generator",
]

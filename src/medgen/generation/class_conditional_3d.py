"""3D class-conditional generation on pre-encoded latents (lesion present / absent → a volume).

The job behind the ``latent_diffusion`` (3D) nodes, after BiFlowNet / 3D MedDiffusion (Wang et al.
2024): a DiT (:mod:`medgen.models.dit`) learns the autoencoder pipeline's latents conditioned on a
per-subject class (``lesion_present`` in the volumes bundle), with classifier-free guidance.

* :func:`train_class_conditional_generator` trains one `medgen.training.TrainingJob` (factory
  :func:`build_generator_task`; EMA, checkpoints, exact resume, 1..N workers) on the ``latents``
  bundle: no encoder runs, the ``precomputed_latent`` space only multiplies by a scale factor.
  With ``latent_centering: mean`` the network learns the latents minus their training mean
  (scaled to unit variance), a data-dependent prior mean as in PriorGrad (Lee et al. 2022,
  https://arxiv.org/abs/2106.06406): every volume shares the brain's layout, which a DiT must
  otherwise learn through its position embeddings. In the CPU demo (16 latents) 200 centred
  steps gave smoother volumes, closer to real ones (2.5D Fréchet distance), than 600
  uncentred steps (docs/latent_diffusion.md).
* :func:`generate_class_conditional` samples ``n`` latents per class, unscaled and with the
  mean added back, ready for the autoencoder's (tiled) decoder; decoding and NIfTI writing
  are the caller's.

Parameters: :class:`ClassConditionalParams`, read from the node's
``params:latent_diffusion.volumes.generator`` block, whose values live in
conf/base/parameters_latent_diffusion.yml (no defaults in code).

Size: one model end to end (its parameter block, the latent dataset and its checks, the
centring that training and sampling must undo identically, the task factory, training and
sampling); splitting it would put the centring's two halves in different files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from medgen.config import config_tree_from_params, require_positive_ints
from medgen.data.cohort import IMAGE_MODALITIES
from medgen.datasets import TensorBundle
from medgen.diffusion.diagnostics import DiffusionDiagnostics
from medgen.diffusion.task import DiffusionTask, build_task
from medgen.generation.model_bundle import combination_name, state_from_bundle, to_model_bundle
from medgen.runtime import torch_threads
from medgen.training import TrainingConfig, TrainingJob, TrainingTask, run_job
from medgen.training.diagnostics import diffusion_diagnostics
from medgen.training.setup import resolve_device

SECTION = "latent_diffusion.volumes.generator"
#: Strategy options a precomputed latent space needs, under the configured ones: latents are
#: not confined to [-1, 1], so DDPM must not clip its samples (the rule applies whenever the
#: strategy is ddpm and its options leave clip_sample unset).
STRATEGY_DEFAULTS: dict[str, dict[str, Any]] = {"ddpm": {"clip_sample": False}}
LATENT_KEY = "latents"
#: ``latent_centering`` values: ``mean`` subtracts the training latents' mean (a tensor of
#: the latent's shape, kept in the weights as :data:`OFFSET_KEY`), ``none`` nothing.
CENTERINGS = ("mean", "none")
OFFSET_KEY = "latent_offset"


@dataclass(frozen=True)
class ClassSamplingParams:
    """``sampling``: how :func:`generate_class_conditional` samples.

    guidance_scale: classifier-free guidance (1.0: none). num_steps: solver steps (null:
    the strategy's ``num_inference_steps``). batch_size: samples per network batch (a guided
    batch runs twice as many). use_ema: sample with the EMA weights. device: ``auto`` / ``cpu``
    / ``cuda``.
    """

    guidance_scale: float
    num_steps: int | None
    batch_size: int
    use_ema: bool
    device: str


@dataclass(frozen=True)
class ClassConditionalParams:
    """The generator's parameters (``latent_diffusion.volumes.generator``).

    label_key: the latents bundle's per-item class tensor (``lesion_present``).
    class_names: one name per class, in label order.
    modalities: the latents' modalities (null: the bundle's ``metadata["modalities"]``, else
        the cohort's four).
    torch_threads: intra-op threads while training and sampling (null: torch's default, one
        per core; 1 is faster where other processes share the cores).
    latent_centering: ``mean`` (learn the latents minus their training mean, scaled by
        1 / std of that difference) or ``none`` (the bundle's ``scale_factor`` alone).
    strategy: ``{"name": rflow | ddpm, ...}`` and the strategy's options
        (`medgen.diffusion.rflow` / `ddpm`); see :data:`STRATEGY_DEFAULTS` for ddpm.
    backbone: `medgen.models.dit` options (``spatial_dims`` and ``input_size`` come from the
        latents).
    training: a `medgen.training.TrainingConfig` dict.
    sampling: :class:`ClassSamplingParams`.
    """

    label_key: str
    class_names: tuple[str, ...]
    modalities: tuple[str, ...] | None
    torch_threads: int | None
    latent_centering: str
    strategy: dict[str, Any]
    backbone: dict[str, Any]
    training: dict[str, Any]
    sampling: ClassSamplingParams

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ClassConditionalParams:
        """Validate the block: unknown keys (with the closest known one) and missing keys
        raise ``ValueError``; ``strategy`` gets :data:`STRATEGY_DEFAULTS` under its options."""
        config = config_tree_from_params(cls, params, SECTION)
        if "name" not in config.strategy:
            raise ValueError(f"{SECTION}.strategy needs a name (rflow, ddpm or edm)")
        name = str(config.strategy["name"])
        strategy = {**STRATEGY_DEFAULTS.get(name, {}), **config.strategy}
        if len(config.class_names) < 2:
            raise ValueError(f"{SECTION}.class_names needs two or more classes")
        if config.latent_centering not in CENTERINGS:
            raise ValueError(
                f"{SECTION}.latent_centering must be one of {CENTERINGS}, "
                f"got {config.latent_centering!r}"
            )
        require_positive_ints(config.sampling, f"{SECTION}.sampling", "batch_size")
        TrainingConfig.from_dict(config.training)  # a misspelt training key fails here
        return cls(**{**vars(config), "strategy": strategy})


def generator_params(
    params: ClassConditionalParams | Mapping[str, Any] | None,
) -> ClassConditionalParams:
    """``params`` as :class:`ClassConditionalParams` (a mapping is validated)."""
    if isinstance(params, ClassConditionalParams):
        return params
    if params is None:
        raise ValueError(
            f"the class-conditional generator needs its parameters ({SECTION} in "
            "conf/base/parameters_latent_diffusion.yml)"
        )
    return ClassConditionalParams.from_params(params)


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
    params: ClassConditionalParams, metadata: Mapping[str, Any], latent_channels: int
) -> DiffusionTask:
    """The task (strategy, ``class`` mode, ``precomputed_latent`` space) for a latents bundle
    with ``metadata`` and ``latent_channels`` channels."""
    modalities = params.modalities or metadata.get("modalities") or list(IMAGE_MODALITIES)
    class_names = [str(c) for c in params.class_names]
    per_channel = bool(metadata.get("per_channel", False))
    channels_per_latent = metadata.get("latent_channels", latent_channels)
    task = build_task(
        {
            "strategy": dict(params.strategy),
            "mode": "class",
            "modalities": [str(m) for m in modalities],
            "mode_options": {
                "label_key": params.label_key,
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


def centred_latents(
    latents: torch.Tensor, scale: float, centering: str
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(latents - offset, offset [1, C, *s], scale factor)`` for ``centering``: ``mean``
    takes the mean over the items and ``1 / std`` of the difference, ``none`` a zero offset
    and ``scale`` (the bundle's)."""
    if centering == "none":
        return latents, torch.zeros_like(latents[:1]), scale
    offset = latents.mean(dim=0, keepdim=True)
    centred = latents - offset
    std = float(centred.std())
    if not std > 0:
        raise ValueError("latents are all equal: centred latents have no spread to scale")
    return centred, offset, 1.0 / std


def _fingerprint(latents: torch.Tensor, labels: torch.Tensor) -> str:
    return TensorBundle({"latents": latents, "labels": labels}).fingerprint(("latents", "labels"))


def build_generator_task(
    data: Mapping[str, TensorBundle],
    *,
    task_config: dict[str, Any],
    backbone: dict[str, Any],
    label_key: str,
    seed: int,
) -> TrainingTask:
    """The job's factory, run in every worker: the latents and labels, a fresh DiT seeded with
    ``seed`` (the same weights on every rank and re-run), the diagnostics (latents undecoded)."""
    latents = data["latents"]
    task = build_task(task_config)
    torch.manual_seed(seed)
    model = task.build_model(backbone)
    train_data = LatentLabelDataset(latents[LATENT_KEY], latents[label_key], label_key)
    callbacks = diffusion_diagnostics(DiffusionDiagnostics(task, train_data))
    return TrainingTask(model=model, loss_fn=task.loss, train_data=train_data, callbacks=callbacks)


def train_class_conditional_generator(
    latents_train: TensorBundle,
    params: Mapping[str, Any] | ClassConditionalParams,
    checkpoint_dir: str | Path,
    *,
    resume: bool = True,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Train a class-conditional DiT on a ``latents`` bundle; return ``(weights, report)``.

    Args:
        latents_train: ``latents`` float32 ``[N, C, *s]`` (unscaled posterior means),
            the ``label_key`` tensor int64 ``[N]`` (``lesion_present`` in the demo), metadata
            with ``scale_factor`` (required), ``downsample_factor``, ``latent_channels``,
            ``per_channel``, ``modalities`` (optional).
        params: :class:`ClassConditionalParams`, or the mapping it is read from.
        checkpoint_dir: the training job's folder (`medgen.training.TrainingJob`): the same
            configuration and data continue ``latest.pt`` (when ``resume``) or read a finished
            run back; another one moves the folder aside and trains afresh.

    Returns:
        The weights as a safetensors-ready `TensorBundle` (raw + EMA; metadata: task config,
        backbone config, ``latent_shape``, ``scale_factor``, ``classes``, ``label_key``,
        training config) and a report with ``steps``, ``final_loss``, ``seconds``,
        ``history``, ``parameters``, ``class_counts`` and ``resumed_from_step``.
    """
    settings = generator_params(params)
    num_classes = len(settings.class_names)
    latents, labels, bundle_scale = check_latents_bundle(
        latents_train, settings.label_key, num_classes
    )
    latents, offset, scale = centred_latents(latents, bundle_scale, settings.latent_centering)
    metadata = {**latents_train.metadata, "scale_factor": scale}
    task = build_class_task(settings, metadata, latents.shape[1])
    backbone = task.backbone_config(backbone_for(settings.backbone, latents.shape[2:]))
    config = TrainingConfig.from_dict(settings.training)
    task_config = task.to_config()
    name = combination_name(task_config)
    job = TrainingJob(
        name=name,
        factory=build_generator_task,
        config=config,
        checkpoint_dir=checkpoint_dir,
        data={"latents": TensorBundle({LATENT_KEY: latents, settings.label_key: labels})},
        options={
            "task_config": task_config,
            "backbone": backbone,
            "label_key": settings.label_key,
            "seed": config.seed,
        },
        torch_threads=settings.torch_threads,
        resume=resume,
        artifact_path=f"latent_diffusion_3d/{name}",
    )
    outcome = run_job(job)
    result = outcome.result
    steps = [r for r in result.history if r["kind"] == "step"]
    class_counts = torch.bincount(labels, minlength=num_classes).tolist()
    info = {
        "latent_shape": list(latents.shape[1:]),
        "scale_factor": scale,
        "latent_centering": settings.latent_centering,
        "classes": list(settings.class_names),
        "label_key": settings.label_key,
        "class_counts": class_counts,
        "training": result.config,
    }
    weights = to_model_bundle(
        result.model_state, result.ema_state, task_config=task_config, backbone=backbone, info=info
    )
    if settings.latent_centering != "none":
        weights.tensors[OFFSET_KEY] = offset.contiguous()
    report = {
        "steps": result.steps,
        "epochs": result.epochs,
        "final_loss": steps[-1]["loss"] if steps else None,
        "seconds": outcome.seconds,
        "history": result.history,
        "parameters": sum(v.numel() for v in result.model_state.values()),
        "class_counts": class_counts,
        "resumed_from_step": outcome.resumed_from_step,
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
    params: ClassConditionalParams | Mapping[str, Any] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n_per_class`` latents of every class with classifier-free guidance.

    Args:
        weights: the bundle from :func:`train_class_conditional_generator`.
        n_per_class: samples per class (>= 1).
        params: :class:`ClassConditionalParams` (or its mapping; required, None raises
            ``ValueError``); ``torch_threads`` and ``sampling`` (:class:`ClassSamplingParams`)
            are read.
        seed: seeds the initial noise (results depend on ``sampling.batch_size`` too).

    Returns:
        ``(latents, labels)``: float32 ``[N, C, *s]`` on the CPU, *unscaled* (divided by the
        scale factor, plus the weights' :data:`OFFSET_KEY` when they were trained centred:
        ready for the autoencoder's decode), and int64 ``[N]`` labels, class by class
        (``n_per_class`` of class 0 first).
    """
    if not isinstance(n_per_class, int) or isinstance(n_per_class, bool) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an int >= 1, got {n_per_class!r}")
    settings = generator_params(params)
    sampling = settings.sampling
    batch_size = int(sampling.batch_size)
    device = resolve_device(str(sampling.device))
    task, model = load_class_conditional_model(weights, bool(sampling.use_ema), device)
    latent_spatial = [int(s) for s in weights.metadata["latent_shape"][1:]]
    data_spatial = [s * task.space.downsample_factor for s in latent_spatial]
    labels = torch.arange(task.mode.num_classes).repeat_interleave(n_per_class)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    chunks = []
    with torch_threads(settings.torch_threads):
        for start in range(0, labels.shape[0], batch_size):
            z = task.generate(
                model,
                cond=labels[start : start + batch_size],
                spatial_shape=data_spatial,
                num_steps=sampling.num_steps,
                guidance_scale=float(sampling.guidance_scale),
                generator=generator,
                decode=False,
            )
            chunks.append(task.space.unscale(z).float().cpu())
    latents = torch.cat(chunks)
    if OFFSET_KEY in weights.tensors:
        latents = latents + weights[OFFSET_KEY].float()
    if not torch.isfinite(latents).all():
        raise ValueError("generated latents hold NaN or Inf: the model diverged")
    return latents, labels


__all__ = [
    "STRATEGY_DEFAULTS",
    "ClassConditionalParams",
    "ClassSamplingParams",
    "LatentLabelDataset",
    "centred_latents",
    "backbone_for",
    "build_class_task",
    "check_latents_bundle",
    "generate_class_conditional",
    "generator_params",
    "load_class_conditional_model",
    "train_class_conditional_generator",
]

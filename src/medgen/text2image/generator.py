"""The offline text + modality → image generator, trained through the one training job.

The network is `TextConditionedUNet` (a CLIP-style text encoder and a diffusers
``UNet2DConditionModel``, trained jointly from scratch); the task is the core's ``text`` mode
with one of medgen's strategies, in pixel space at the demo size. Caption dropout
(``cond_drop_prob`` of the strategy) replaces whole prompts by all padding, which the network
reads as the empty prompt, so classifier-free guidance works at sampling. The modality is part of
the prompt ("Brain MRI, FLAIR: ..."): one text path carries it, as it does for Stable Diffusion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from medgen.autoencoder.loading import load_autoencoder
from medgen.datasets import TensorBundle
from medgen.diffusion import DiffusionTask, build_task
from medgen.diffusion.diagnostics import DiffusionDiagnostics
from medgen.diffusion.perceptual import attach_perceptual
from medgen.metrics.perceptual_distance import build_perceptual_distance
from medgen.metrics.sample_scores import SampleScorer
from medgen.text2image.network import TextConditionedUNet, build_text_conditioned_unet
from medgen.training import JobOutcome, TrainingConfig, TrainingJob, TrainingTask, run_job
from medgen.training.diagnostics import diffusion_diagnostics


class PromptedImages(Dataset):
    """Items ``{images [C, S, S], tokens [L]}`` of a staged bundle."""

    def __init__(self, bundle: TensorBundle) -> None:
        self.images = bundle["images"].float()
        self.tokens = bundle["tokens"].long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"images": self.images[index], "tokens": self.tokens[index]}


def task_config(strategy: Mapping[str, Any], channels: Sequence[str]) -> dict[str, Any]:
    return {"strategy": dict(strategy), "mode": "text", "modalities": list(channels)}


def build_network(
    task: DiffusionTask, network: Mapping[str, Any], tokenizer_info: Mapping[str, int]
) -> TextConditionedUNet:
    return build_text_conditioned_unet(network, tokenizer_info, task.in_channels, task.out_channels)


def build_text2image_task(
    data: Mapping[str, TensorBundle],
    *,
    task_config: dict[str, Any],
    network: dict[str, Any],
    tokenizer_info: dict[str, int],
    seed: int,
    perceptual_term: dict[str, Any] | None = None,
) -> TrainingTask:
    """The job's factory, run in every worker: the prompted images, a fresh seeded network (or
    the weights ``data["init"]`` to fine-tune) and, for a latent space, the frozen 2D
    autoencoder ``data["autoencoder"]``."""
    autoencoder = load_autoencoder(data["autoencoder"]) if "autoencoder" in data else None
    task = build_task(task_config, autoencoder)
    torch.manual_seed(seed)
    model = build_network(task, network, tokenizer_info)
    if "init" in data:
        model.load_state_dict(data["init"].tensors)
    attach_perceptual(task, perceptual_term, build_perceptual_distance)  # training.perceptual
    train_data = PromptedImages(data["train"])
    diagnostics = diffusion_diagnostics(DiffusionDiagnostics(task, train_data), SampleScorer())
    return TrainingTask(
        model=model, loss_fn=task.loss, train_data=train_data, callbacks=diagnostics
    )


def train_text2image(
    images: torch.Tensor,
    tokens: torch.Tensor,
    *,
    strategy: Mapping[str, Any],
    channels: Sequence[str],
    network: Mapping[str, Any],
    tokenizer_info: Mapping[str, int],
    training: Mapping[str, Any],
    checkpoint_dir: str | Path,
    resources: Mapping[str, Any] | None = None,
    torch_threads: int | None = None,
    latent_space: Mapping[str, Any] | None = None,
    autoencoder: TensorBundle | None = None,
    init: TensorBundle | None = None,
    name: str = "text2image",
) -> tuple[JobOutcome, dict[str, Any]]:
    """Train the generator on ``images`` [N, C, S, S] and their prompts' ``tokens`` [N, L];
    ``latent_space`` (the autoencoder pipeline's record) and ``autoencoder`` (its weights) put
    the diffusion in the 2D autoencoder's latent space; ``init``: a generator's weights to
    fine-tune instead of a fresh network; ``name``: the job's MLflow prefix."""
    config = TrainingConfig.from_dict(training)
    tc = task_config(strategy, channels)
    data = {"train": TensorBundle({"images": images, "tokens": tokens})}
    if init is not None:
        data["init"] = TensorBundle(init.tensors, {})
    if latent_space is not None:
        keys = ("latent_channels", "downsample_factor", "scale_factor", "per_channel")
        tc["space"] = {"name": "latent", **{k: latent_space[k] for k in keys}}
        data["autoencoder"] = autoencoder
    # fail here, in the node, on a bad strategy or space
    build_task(tc, load_autoencoder(autoencoder) if latent_space is not None else None)
    job = TrainingJob(
        name=name,
        factory=build_text2image_task,
        config=config,
        checkpoint_dir=checkpoint_dir,
        data=data,
        options={
            "task_config": tc,
            "network": dict(network),
            "tokenizer_info": dict(tokenizer_info),
            "seed": config.seed,
        },
        resources=resources,
        torch_threads=torch_threads,
        artifact_path=f"{name}/generator",
    )
    return run_job(job), tc


def generator_weights(outcome: JobOutcome) -> dict[str, torch.Tensor]:
    """EMA weights when the job kept an average, else the last weights (the result holds the
    averaged network's own state, not the `AveragedModel` wrapper's)."""
    result = outcome.result
    return result.ema_state if result.ema_state is not None else result.model_state


def load_generator(
    bundle: TensorBundle, autoencoder: TensorBundle | None = None
) -> tuple[DiffusionTask, TextConditionedUNet]:
    """``(task, network)`` from the generator bundle the training node wrote (``autoencoder``:
    the 2D autoencoder of a latent-space generator)."""
    meta = bundle.metadata
    latent = meta["task_config"].get("space", {}).get("name", "pixel") != "pixel"
    if latent and autoencoder is None:
        raise ValueError("a latent-space generator needs the autoencoder pipeline's 2D model")
    task = build_task(meta["task_config"], load_autoencoder(autoencoder) if latent else None)
    network = build_network(task, meta["network"], meta["tokenizer_info"])
    network.load_state_dict(bundle.tensors)
    return task, network.eval()


@torch.no_grad()
def generate_images(
    task: DiffusionTask,
    network: torch.nn.Module,
    tokens: torch.Tensor,
    *,
    resolution: int,
    images_per_prompt: int,
    guidance_scale: float,
    num_steps: int | None,
    seed: int,
) -> torch.Tensor:
    """``[P * K, C, S, S]`` images in [-1, 1], prompt-major: ``images_per_prompt`` K per prompt.

    Image ``k`` of every prompt starts from the same noise (drawn from ``seed`` and ``k``), so a
    grid column compares prompts at fixed noise; one batch of P prompts per ``k``."""
    prompts = tokens.shape[0]
    shape = (task.mode.target_channels, resolution, resolution)
    # the noise lives in the space's coordinates (latents for a latent-space generator)
    noise_shape = (task.out_channels, *task.space.spatial_shape((resolution, resolution)))
    out = torch.empty((prompts, images_per_prompt, *shape))
    for k in range(images_per_prompt):
        generator = torch.Generator().manual_seed(seed * 10_007 + k)
        noise = torch.randn((1, *noise_shape), generator=generator).expand(prompts, *noise_shape)
        out[:, k] = task.generate(
            network,
            cond=tokens,
            spatial_shape=(resolution, resolution),
            num_steps=num_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            noise=noise.contiguous(),
        ).cpu()
    return out.clamp(-1, 1).reshape(prompts * images_per_prompt, *shape)

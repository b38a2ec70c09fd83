"""Part 2 on Stable Diffusion: the Selector-filtered fine-tune and DDPO, both through LoRA, measured
on held-out prompts exactly as the offline generator's stages are (``text2image.pretrained.part2``,
enabled by conf/cluster; docs/text2image.md, "Part 2 on Stable Diffusion").

Three stages, each a diffusers pipeline loaded offline:

* ``pretrained``: Stable Diffusion as shipped;
* ``selector_filtered``: LoRA adapters trained with the SD objective
  (`medgen.text2image.pretrained.finetune_stable_diffusion`) on the rated training images the
  Selector scores at or above ``text2image.reward.selector_threshold`` (the offline Stage 2a's pool,
  `medgen.text2image.filtered_finetune.selector_kept_pool`);
* ``ddpo``: the filtered adapters merged into the UNet's weights, then a second set of LoRA
  adapters trained by DDPO (`medgen.text2image.reinforce.DDPOLoss`, the offline stage's loss: PPO
  clipping, per-prompt advantages, KL to the start) on the Selector + Policy reward. The KL
  reference is the merged model itself with the DDPO adapters switched off, so no second copy of
  the 860 M UNet weights is held. Latents are decoded by the frozen VAE, averaged over RGB
  (medgen feeds SD grayscale repeated to RGB) and resized to the scorers' side before scoring.

Every stage goes through the one training job (checkpoints, resume, MLflow); stage measurement
and best-of-N use `medgen.text2image.samplers.StableDiffusionSampler` with the pipeline's own
scheduler at ``pretrained.num_inference_steps`` / ``guidance_scale``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medgen.datasets import TensorBundle
from medgen.diffusion import DDPMStrategy
from medgen.text2image.filtered_finetune import kept_pool_report, selector_kept_pool
from medgen.text2image.params import PretrainedPart2Params
from medgen.text2image.pretrained import (
    StableDiffusionDenoiser,
    add_lora,
    clip_tokens,
    load_finetuned_unet,
    load_stable_diffusion,
    resolve_pretrained_folder,
    strategy_for_scheduler,
    to_best_device,
)
from medgen.text2image.reinforce import (
    DDPOLoss,
    PolicyNetwork,
    ReinforceParams,
    RoundSteps,
    ddpo_training_config,
    rounds_report,
)
from medgen.text2image.rewards import RewardModel, RewardParams
from medgen.text2image.samplers import rgb_to_gray
from medgen.text2image.workflow import select
from medgen.training import TrainingJob, TrainingTask, run_job
from medgen.training.callbacks import LossComponentsLogger
from medgen.training.results import sub_state_dict


def merge_lora(unet: nn.Module, state: Mapping[str, torch.Tensor], rank: int, alpha) -> nn.Module:
    """``unet`` with the LoRA ``state`` (keys ``unet.…``, `finetune_stable_diffusion`'s) merged
    into its weights and the adapter layers removed: the plain UNet the adapters describe."""
    load_finetuned_unet(unet, state, lora_rank=rank, lora_alpha=alpha)
    unet.fuse_lora()
    unet.unload_lora()
    return unet


class StableDiffusionLatents:
    """The DDPO loss's view of SD's latent space: shapes of the latents and decoding to what the
    scorers read (gray, ``output_size``², in [-1, 1])."""

    def __init__(self, denoiser: StableDiffusionDenoiser, output_size: int) -> None:
        self.denoiser, self.output_size = denoiser, int(output_size)
        vae = denoiser.vae
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)

    def spatial_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(s) // self.factor for s in image_shape)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.denoiser.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        z = latents / vae.config.scaling_factor + shift
        dtype = next(vae.parameters()).dtype
        images = torch.cat([vae.decode(c.to(dtype)).sample for c in z.split(8)])
        return rgb_to_gray(images.float().clamp(-1, 1), self.output_size)


@dataclass(frozen=True)
class LatentPolicyTask:
    """What `DDPOLoss` reads of a diffusion task: the strategy, the space, the channels."""

    strategy: DDPMStrategy
    space: StableDiffusionLatents
    out_channels: int


class AdaptersOff(nn.Module):
    """The KL reference: the same denoiser with its LoRA adapters switched off (the model DDPO
    started from). Holds the denoiser without registering it, so it adds no parameters."""

    def __init__(self, denoiser: StableDiffusionDenoiser) -> None:
        super().__init__()
        object.__setattr__(self, "_denoiser", denoiser)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        unet = self._denoiser.unet
        unet.disable_lora()
        try:
            return self._denoiser(*args, **kwargs)
        finally:
            unet.enable_lora()


def sd_policy(
    pretrained: str,
    start: Mapping[str, torch.Tensor],
    *,
    lora_rank: int,
    lora_alpha: float | None,
    gradient_checkpointing: bool,
    resolution: int,
    output_size: int,
    seed: int,
    cache_dir: str | None = None,
) -> tuple[StableDiffusionDenoiser, LatentPolicyTask, Any]:
    """SD loaded offline with the ``start`` adapters (may be empty) merged and fresh LoRA
    adapters seeded with ``seed``: ``(denoiser, the task DDPOLoss reads, CLIP tokenizer)``."""
    pipe = load_stable_diffusion(pretrained, local_files_only=True, cache_dir=cache_dir)
    unet = pipe.unet
    if len(start):
        merge_lora(unet, start, lora_rank, lora_alpha)
    torch.manual_seed(seed)
    add_lora(unet, lora_rank, lora_alpha)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    denoiser = StableDiffusionDenoiser(
        pipe.vae, pipe.text_encoder, unet, clip_tokens(pipe.tokenizer, [""])[0], resolution
    )
    task = LatentPolicyTask(
        strategy_for_scheduler(pipe.scheduler.config),
        StableDiffusionLatents(denoiser, output_size),
        int(unet.config.in_channels),
    )
    return denoiser, task, pipe.tokenizer


def build_sd_reinforce_task(
    data: Mapping[str, TensorBundle],
    *,
    pretrained: str,
    lora_rank: int,
    lora_alpha: float | None,
    gradient_checkpointing: bool,
    reinforce: dict[str, Any],
    reward: dict[str, Any],
    tokenizer_json: dict[str, Any],
    resolution: int,
    output_size: int,
    seed: int,
    cache_dir: str | None = None,
) -> TrainingTask:
    """The job's factory, run in every worker: `sd_policy` from the filtered adapters
    (``data["start"]``), the DDPO loss on the frozen scorers' reward."""
    denoiser, task, _ = sd_policy(
        pretrained, data["start"].tensors, lora_rank=lora_rank, lora_alpha=lora_alpha,
        gradient_checkpointing=gradient_checkpointing, resolution=resolution,
        output_size=output_size, seed=seed, cache_dir=cache_dir,
    )  # fmt: skip
    params = ReinforceParams.from_params(reinforce)
    reward_model = RewardModel(
        data["selector"], data["alignment"], tokenizer_json, RewardParams.from_params(reward)
    )
    prompts = data["prompts"]
    loss = DDPOLoss(
        task, AdaptersOff(denoiser), reward_model, prompts["tokens"], prompts.metadata["texts"],
        params, resolution, seed,
    )  # fmt: skip
    return TrainingTask(
        model=PolicyNetwork(denoiser),
        loss_fn=loss,
        train_data=RoundSteps(params.rounds * loss.per_round),
        callbacks=[LossComponentsLogger(prefix="text2image_sd_reinforce")],
    )


def sd_reinforce(
    start: Mapping[str, torch.Tensor],
    selector: TensorBundle,
    alignment: TensorBundle,
    tokenizer_json: Mapping[str, Any],
    prompts: Sequence[str],
    *,
    pretrained: str,
    part2: PretrainedPart2Params,
    reward: Mapping[str, Any],
    resolution: int,
    output_size: int,
    checkpoint_dir: str | Path | None,
    cache_dir: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """DDPO with LoRA from SD + the ``start`` adapters on ``prompts``; the DDPO adapters' state
    (keys ``unet.…``) and a report of the rounds."""
    from transformers import CLIPTokenizer

    folder = resolve_pretrained_folder(pretrained, cache_dir)
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    params = ReinforceParams.from_params(part2.reinforce)
    config = ddpo_training_config(
        strategy_for_scheduler(scheduler_config), params, "text2image.pretrained.part2.reinforce"
    )
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    outcome = run_job(
        TrainingJob(
            name="stable_diffusion_ddpo",
            factory=build_sd_reinforce_task,
            config=config,
            checkpoint_dir=checkpoint_dir,
            data={
                "start": TensorBundle(dict(start), {}),
                "selector": selector,
                "alignment": alignment,
                "prompts": TensorBundle(
                    {"tokens": clip_tokens(tokenizer, prompts)}, {"texts": list(prompts)}
                ),
            },
            options={
                "pretrained": str(pretrained),
                "lora_rank": part2.lora_rank,
                "lora_alpha": part2.lora_alpha,
                "gradient_checkpointing": part2.gradient_checkpointing,
                "reinforce": dict(part2.reinforce),
                "reward": dict(reward),
                "tokenizer_json": dict(tokenizer_json),
                "resolution": int(resolution),
                "output_size": int(output_size),
                "seed": config.seed,
            },
            runtime_options={"cache_dir": cache_dir},
            resources=params.resources,
            torch_threads=params.torch_threads,
            artifact_path="text2image/stable_diffusion_ddpo",
        )
    )
    state = sub_state_dict(outcome.result.model_state, "network.")
    report = rounds_report(
        outcome,
        "DDPO (PPO-clipped policy gradient on SD's denoising chain, LoRA) + KL to the filtered "
        "model",
        len(prompts),
    )
    report["trained_parameters"] = int(sum(t.numel() for t in state.values()))
    return state, report


def stage_pipeline(
    pretrained: str,
    adapters: Sequence[Mapping[str, torch.Tensor]],
    *,
    lora_rank: int,
    lora_alpha: float | None,
    cache_dir: str | None = None,
):
    """SD loaded offline with each LoRA state of ``adapters`` merged in turn (empty: as shipped)."""
    pipe = load_stable_diffusion(pretrained, local_files_only=True, cache_dir=cache_dir)
    for state in adapters:
        merge_lora(pipe.unet, state, lora_rank, lora_alpha)
    return to_best_device(pipe)


def kept_training_images(
    rated: TensorBundle, selector: TensorBundle, threshold: float, min_kept: int
) -> tuple[TensorBundle, dict[str, Any]]:
    """The Selector-filtered training pool as `finetune_stable_diffusion` reads it."""
    pool, kept = selector_kept_pool(rated, selector, threshold, min_kept)
    train = select(pool, kept)
    bundle = TensorBundle({"images": train["images"]}, {"texts": train.metadata["texts"]})
    return bundle, kept_pool_report(pool, kept, threshold)

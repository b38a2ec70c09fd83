"""Part 2 on Stable Diffusion as one pipeline step: filtered LoRA fine-tune, DDPO with LoRA, the
stage measurements and best-of-N, where ``text2image.pretrained`` and its ``part2`` are enabled
(conf/cluster). Offline (the default) it is disabled and its report says how to enable it;
enabled without the weights, the loading names the missing folder and where to put it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from medgen.datasets import TensorBundle
from medgen.text2image import rlhf
from medgen.text2image.best_of_n import BestOfNParams
from medgen.text2image.params import PretrainedParams
from medgen.text2image.pretrained import finetune_stable_diffusion
from medgen.text2image.pretrained_report import HOW_TO_ENABLE
from medgen.text2image.pretrained_rlhf import kept_training_images, sd_reinforce, stage_pipeline
from medgen.text2image.reinforce import ReinforceParams
from medgen.text2image.rewards import RewardModel, RewardParams
from medgen.text2image.samplers import StableDiffusionSampler
from medgen.text2image.stages import StageEvalParams
from medgen.training import TrainingConfig

HOW_TO_ENABLE_PART2 = (
    f"{HOW_TO_ENABLE}; and text2image.pretrained.part2.enabled: true (conf/cluster sets both)"
)


def _sampler(pretrained: PretrainedParams, adapters: Sequence[Mapping[str, torch.Tensor]], size):
    part2 = pretrained.part2
    pipe = stage_pipeline(
        pretrained.model, adapters, lora_rank=part2.lora_rank, lora_alpha=part2.lora_alpha,
        cache_dir=pretrained.cache_dir,
    )  # fmt: skip
    return StableDiffusionSampler(
        pipe, resolution=pretrained.resolution, output_size=size,
        num_inference_steps=pretrained.num_inference_steps,
    )  # fmt: skip


class _LoadWhenCalled:
    """A stage's sampler that loads its pipeline when first called, so the stage measurement
    holds one Stable Diffusion at a time; ``keep``: hold it after the call (the last stage, which
    best-of-N samples again), else load it afresh for each call."""

    def __init__(self, pretrained: PretrainedParams, adapters, size: int, keep: bool = False):
        self.pretrained, self.adapters, self.size, self.keep = (
            pretrained,
            list(adapters),
            size,
            keep,
        )
        self._loaded: StableDiffusionSampler | None = None

    def __call__(self, prompts: Sequence[str], **options: Any) -> torch.Tensor:
        sampler = self._loaded or _sampler(self.pretrained, self.adapters, self.size)
        if self.keep:
            self._loaded = sampler
        return sampler(prompts, **options)


def pretrained_part2(
    pretrained: PretrainedParams,
    rated: TensorBundle,
    selector: TensorBundle,
    alignment: TensorBundle,
    tokenizer_json: Mapping[str, Any],
    captioned: TensorBundle,
    reward_options: Mapping[str, Any],
    oracle_reference: Mapping[str, Any],
    attribute_state: TensorBundle,
    stage_params: StageEvalParams,
    best_params: BestOfNParams,
    checkpoint_dir: str | Path,
) -> tuple[dict[str, Any], dict[str, Image.Image]]:
    """``(report, PNGs)``: the three SD stages measured like the offline ones (PNG keys
    ``stages_grid`` and ``best_of_n/<name>``); disabled: a report saying so and no PNGs."""
    part2 = pretrained.part2
    if not (pretrained.enabled and part2.enabled):
        return {"status": "disabled", "how_to_enable": HOW_TO_ENABLE_PART2}, {}
    ReinforceParams.from_params(part2.reinforce)  # a bad key fails before any training
    reward = RewardParams.from_params(reward_options)
    size = int(oracle_reference["size"])
    root = Path(checkpoint_dir)
    batch_size = TrainingConfig.from_dict(part2.filtered_training).batch_size
    pool, pool_report = kept_training_images(rated, selector, reward.selector_threshold, batch_size)
    filtered, filtered_report = finetune_stable_diffusion(
        pool, pretrained=pretrained.model, training=part2.filtered_training,
        lora_rank=part2.lora_rank, lora_alpha=part2.lora_alpha,
        checkpoint_dir=root / "filtered", resolution=pretrained.resolution,
        cache_dir=pretrained.cache_dir,
    )  # fmt: skip
    prompts = rlhf.distinct_prompts(captioned, "train")
    if not prompts:
        raise ValueError("text2image.pretrained.part2: no training captions to use as prompts")
    ddpo, ddpo_report = sd_reinforce(
        filtered, selector, alignment, tokenizer_json, prompts,
        pretrained=pretrained.model, part2=part2, reward=reward_options,
        resolution=pretrained.resolution, output_size=size, checkpoint_dir=root / "ddpo",
        cache_dir=pretrained.cache_dir,
    )  # fmt: skip
    scorer = RewardModel(selector, alignment, tokenizer_json, reward)
    # SD samples with its own scheduler, steps and guidance (text2image.pretrained's)
    sd_stage_params = replace(
        stage_params, num_steps=None, guidance_scale=pretrained.guidance_scale
    )
    final = _LoadWhenCalled(pretrained, [filtered, ddpo], size, keep=True)
    stages, grid = rlhf.measure_stages(
        {
            "pretrained": _LoadWhenCalled(pretrained, [], size),
            "selector_filtered": _LoadWhenCalled(pretrained, [filtered], size),
            "ddpo": final,
        },
        captioned, scorer, oracle_reference, attribute_state, sd_stage_params,
    )  # fmt: skip
    best_files, _, best_report = rlhf.quality_filtered_generation(
        final, captioned, scorer, oracle_reference,
        replace(best_params, num_steps=None, guidance_scale=pretrained.guidance_scale),
    )  # fmt: skip
    report = {
        "status": "ran",
        "model": pretrained.model,
        "resolution": pretrained.resolution,
        "lora_rank": part2.lora_rank,
        "filtered_finetune": {
            **pool_report,
            **{k: v for k, v in filtered_report.items() if k != "loss_history"},
        },
        "reinforce": ddpo_report,
        "stages": stages,
        "best_of_n": best_report,
    }
    pngs = {"stages_grid": grid, **{f"best_of_n/{k}": v for k, v in best_files.items()}}
    return report, pngs

"""The Stable Diffusion path as a pipeline step: baseline generation without training and,
optionally, fine-tuning through the one training job, where the weights are present.

Offline (the default) it is disabled and its report says so, naming how to enable it; enabled
without the weights, `medgen.text2image.pretrained.load_stable_diffusion` raises an error naming
the missing folder and where to put it: a configured path is never silently skipped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medgen.datasets import TensorBundle
from medgen.text2image.params import PretrainedParams
from medgen.text2image.pretrained import (
    apply_finetuned_weights,
    baseline_generation,
    finetune_stable_diffusion,
    load_stable_diffusion,
    to_best_device,
)

HOW_TO_ENABLE = (
    "set text2image.pretrained.enabled: true (conf/cluster does) with model = a HuggingFace id "
    "in the local cache or a local diffusers folder (model_index.json, unet/, vae/, "
    "text_encoder/, tokenizer/, scheduler/); nothing is downloaded at run time"
)


def pretrained_baseline_report(
    params: PretrainedParams,
    prompts: Sequence[str],
    train: TensorBundle | None = None,
    checkpoint_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run the enabled pretrained path on ``prompts``; what it did, or why it did not run."""
    if not params.enabled:
        return {"status": "disabled", "model": params.model, "how_to_enable": HOW_TO_ENABLE}
    pipe = to_best_device(
        load_stable_diffusion(params.model, local_files_only=True, cache_dir=params.cache_dir)
    )

    def generate() -> dict[str, Any]:
        start = time.perf_counter()
        images = baseline_generation(
            pipe,
            list(prompts),
            num_images_per_prompt=params.images_per_prompt,
            num_inference_steps=params.num_inference_steps,
            guidance_scale=params.guidance_scale,
            height=params.resolution,
            width=params.resolution,
            seed=0,
        )
        return {"images": int(images.shape[0]), "seconds": round(time.perf_counter() - start, 1)}

    report: dict[str, Any] = {"status": "ran", "model": params.model, "baseline": generate()}
    if params.finetune:
        if train is None:
            raise ValueError("text2image.pretrained.finetune needs the training images")
        state, finetune_report = finetune_stable_diffusion(
            train,
            pretrained=params.model,
            training=params.training,
            lora_rank=params.lora_rank,
            checkpoint_dir=checkpoint_dir,
            resolution=params.resolution,
            cache_dir=params.cache_dir,
        )
        apply_finetuned_weights(pipe, state, lora_rank=params.lora_rank)
        report["finetuned"] = {
            **{k: v for k, v in finetune_report.items() if k != "history"},
            "generation": generate(),
        }
    return report

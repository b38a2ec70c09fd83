"""text2image_rlhf's training jobs (part 1): the offline text-conditioned generator.

Options as `medgen.text2image.workflow.train_generator` derives them: the grayscale captioned
slices at ``generator.resolution``², prompts of ``tokenizer.max_length`` token ids from a
vocabulary of at most ``tokenizer.vocab_size``; the model from the job factory
`medgen.text2image.generator.build_text2image_task`. Stable Diffusion is not built: its
architecture comes with its weights folder (``text2image.pretrained.model``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from medgen.check_config.jobs import JobProbe, zeros
from medgen.datasets import TensorBundle
from medgen.text2image import generator, params
from medgen.training import TrainingConfig

PIPELINE = "text2image_rlhf"
CHANNELS = ["gray"]  # the captioned slices are grayscale PNGs (text2image.captions_2d@images)


def tokenizer_info(block: Mapping[str, Any]) -> dict[str, int]:
    """The largest tokenizer the configured one can become (``vocab_size`` is its cap); ids of
    BOS and EOS as `medgen.text2image.tokenizer` assigns them does not change any size."""
    tokenizer = params.TokenizerParams.from_params(block["tokenizer"])
    return {
        "vocab_size": tokenizer.vocab_size,
        "bos_id": 1,
        "eos_id": 2,
        "max_length": tokenizer.max_length,
    }


def generator_job(all_params: Mapping[str, Any]) -> JobProbe:
    """The text-conditioned UNet (``text2image.network``) trained by ``text2image.generator``."""
    block = all_params["text2image"]
    options = params.GeneratorParams.from_params(block["generator"])
    info = tokenizer_info(block)
    size, length = options.resolution, info["max_length"]
    config = TrainingConfig.from_dict(options.training)
    notes = ()
    if options.space != "pixel":
        notes = ("latent space: the check measures the network at the pixel grid",)

    def data() -> dict[str, TensorBundle]:
        images = zeros((1, len(CHANNELS), size, size))
        return {"train": TensorBundle({"images": images, "tokens": zeros((1, length), torch.long)})}

    return JobProbe(
        pipeline=PIPELINE,
        model=f"text-conditioned UNet + text encoder ({size}²)",
        factory=generator.build_text2image_task,
        data=data,
        options={
            "task_config": generator.task_config(options.strategy_config(), CHANNELS),
            "network": dict(block["network"]),
            "tokenizer_info": info,
            "seed": config.seed,
        },
        training=config,
        resources=options.resources,
        notes=notes,
    )


def text2image_jobs(all_params: Mapping[str, Any]) -> list[JobProbe]:
    """The text2image training jobs the check builds."""
    return [generator_job(all_params)]

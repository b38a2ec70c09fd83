"""The ``text2image`` parameters as frozen dataclasses (values in conf/base).

text2image:
  checkpoint_root   <root>/<model>/checkpoints
  export            medgen.text2image.export.ExportConfig: which slices become captioned PNGs
  tokenizer         TokenizerParams
  network           medgen.text2image.network.TextConditionedUNetConfig
  generator         GeneratorParams: strategy, resolution, lesion oversampling, training
  generation        GenerationParams: prompts, K images per prompt, guidance
  attributes        medgen.text2image.attributes: the offline prompt-agreement classifiers
  pretrained        PretrainedParams: the Stable Diffusion path (off offline)
  part 2 (medgen.text2image.rlhf): undertrained (UndertrainedParams), ratings, selector,
  alignment, reward, filtered_finetune, reinforce, stage_evaluation, best_of_n: each read by
  the dataclass its module defines
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medgen.config import config_tree_from_params, require_positive_ints


@dataclass(frozen=True)
class TokenizerParams:
    """``text2image.tokenizer``: WordLevel ``vocab_size`` cap, ``min_frequency`` of a word in the
    training captions, ``max_length`` tokens per prompt (BOS and EOS included)."""

    vocab_size: int
    min_frequency: int
    max_length: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TokenizerParams:
        config = config_tree_from_params(cls, params, "text2image.tokenizer")
        require_positive_ints(config, "text2image.tokenizer", "vocab_size", "max_length")
        return config


@dataclass(frozen=True)
class GeneratorParams:
    """``text2image.generator``: ``strategy`` (options in ``strategies``; ``cond_drop_prob`` is the
    caption dropout of classifier-free guidance), ``space`` (``pixel``, or ``latent``: the
    autoencoder pipeline's 2D model, which must have run), ``resolution`` trained and generated,
    ``lesion_repeat`` (a training slice with a visible metastasis is listed that many times: most
    slices have none), ``training`` (the engine's `TrainingConfig`), ``resources``,
    ``torch_threads``."""

    strategy: str
    strategies: dict[str, Any]
    space: str
    resolution: int
    lesion_repeat: int
    training: dict[str, Any]
    resources: dict[str, Any] | None
    torch_threads: int | None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GeneratorParams:
        config = config_tree_from_params(cls, params, "text2image.generator")
        require_positive_ints(config, "text2image.generator", "resolution", "lesion_repeat")
        if config.space not in ("pixel", "latent"):
            raise ValueError(
                f"text2image.generator.space must be 'pixel' or 'latent', got {config.space!r}"
            )
        if config.strategy not in config.strategies:
            raise ValueError(
                f"text2image.generator.strategy {config.strategy!r} is not among strategies "
                f"{sorted(config.strategies)}"
            )
        return config

    def strategy_config(self) -> dict[str, Any]:
        return {"name": self.strategy, **dict(self.strategies[self.strategy])}


@dataclass(frozen=True)
class GenerationParams:
    """``text2image.generation``: ``prompts`` (a list; null: distinct captions of the test split,
    ``max_prompts`` of them spread over the caption kinds), ``images_per_prompt`` K,
    ``guidance_scale`` (1.0: none), ``num_steps`` (null: the strategy's), ``seed``."""

    prompts: tuple[str, ...] | None
    max_prompts: int
    images_per_prompt: int
    guidance_scale: float
    num_steps: int | None
    seed: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GenerationParams:
        config = config_tree_from_params(cls, params, "text2image.generation")
        require_positive_ints(config, "text2image.generation", "max_prompts", "images_per_prompt")
        return config


@dataclass(frozen=True)
class PretrainedPart2Params:
    """``text2image.pretrained.part2``: part 2's generator stages on Stable Diffusion
    (`medgen.text2image.pretrained_stages`). ``enabled``; LoRA ``lora_rank`` / ``lora_alpha``
    (null: the rank) of both stages; ``gradient_checkpointing`` of the UNet during DDPO
    (recompute instead of storing activations); ``filtered_training`` the engine's options of the
    Selector-filtered fine-tune; ``reinforce`` a full ``text2image.reinforce``-style block
    (`medgen.text2image.reinforce.ReinforceParams`) with SD's own sizes."""

    enabled: bool
    lora_rank: int
    lora_alpha: float | None
    gradient_checkpointing: bool
    filtered_training: dict[str, Any]
    reinforce: dict[str, Any]


@dataclass(frozen=True)
class PretrainedParams:
    """``text2image.pretrained``: the Stable Diffusion path. ``enabled`` (false offline: the
    report says so and how to enable it), ``model`` (HF id or local diffusers folder),
    ``cache_dir`` (null: the HF default), baseline generation settings (``num_inference_steps``,
    ``guidance_scale``, ``resolution``, ``images_per_prompt``), and fine-tuning (``finetune``,
    ``lora_rank`` null: the whole UNet, ``training``); ``part2``: the part-2 stages on it."""

    enabled: bool
    model: str
    cache_dir: str | None
    num_inference_steps: int
    guidance_scale: float
    resolution: int
    images_per_prompt: int
    finetune: bool
    lora_rank: int | None
    training: dict[str, Any]
    part2: PretrainedPart2Params

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PretrainedParams:
        config = config_tree_from_params(cls, params, "text2image.pretrained")
        require_positive_ints(config.part2, "text2image.pretrained.part2", "lora_rank")
        return config


@dataclass(frozen=True)
class UndertrainedParams:
    """``text2image.undertrained``: the deliberately under-trained generator of the rated pool:
    part 1's job stopped at ``max_steps``; ``images_per_split`` of its images per split (prompts
    of that split's rows) sampled with ``num_steps`` at ``guidance_scale`` from ``seed``."""

    max_steps: int
    images_per_split: int
    num_steps: int | None
    guidance_scale: float
    seed: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> UndertrainedParams:
        config = config_tree_from_params(cls, params, "text2image.undertrained")
        require_positive_ints(config, "text2image.undertrained", "max_steps")
        return config

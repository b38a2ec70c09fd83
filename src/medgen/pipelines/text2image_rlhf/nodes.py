"""Nodes of text2image_rlhf. Part 1: data, tokenizer, generator, generation, prompt agreement,
the pretrained path. Part 2: the rated pool, the Selector and the Policy, Selector-filtered and
DDPO fine-tuning, proxy-vs-oracle measurement, best-of-N. Each calls `medgen.text2image`
(docs/text2image.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medgen.datasets import TensorBundle
from medgen.text2image import attributes as attribute_checks
from medgen.text2image import rlhf, workflow
from medgen.text2image.best_of_n import BestOfNParams
from medgen.text2image.export import ExportConfig, export_captioned_slices
from medgen.text2image.filtered_finetune import FilteredFinetuneParams, selector_filtered_finetune
from medgen.text2image.params import (
    GenerationParams,
    GeneratorParams,
    PretrainedParams,
    TokenizerParams,
    UndertrainedParams,
)
from medgen.text2image.pretrained_report import pretrained_baseline_report
from medgen.text2image.pretrained_stages import pretrained_part2 as run_pretrained_part2
from medgen.text2image.reports import PART2_REPORTS, log_summary, text2image_summary
from medgen.text2image.rewards import RewardParams
from medgen.text2image.samplers import OfflineSampler
from medgen.text2image.stages import StageEvalParams


def export_slices(
    train: TensorBundle, val: TensorBundle, test: TensorBundle, params: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The cohort's axial slices as PNGs with a caption per slice (captions_2d.csv)."""
    return export_captioned_slices(
        {"train": train, "val": val, "test": test}, ExportConfig.from_params(params)
    )


def fit_tokenizer(captioned: TensorBundle, params: dict[str, Any]) -> dict[str, Any]:
    """A WordLevel tokenizer of the training captions."""
    return workflow.fit_tokenizer(captioned, TokenizerParams.from_params(params))


def train_generator(
    captioned: TensorBundle,
    tokenizer: dict[str, Any],
    params: dict[str, Any],
    network: dict[str, Any],
    checkpoint_root: str,
    autoencoder: TensorBundle | None = None,
    latent_space: dict[str, Any] | None = None,
) -> tuple[TensorBundle, dict[str, Any]]:
    """The text-conditioned generator through the one training job (pixel space, or the
    autoencoder pipeline's 2D latent space)."""
    return workflow.train_generator(
        captioned,
        tokenizer,
        GeneratorParams.from_params(params),
        network,
        Path(checkpoint_root, "generator"),
        autoencoder,
        latent_space,
    )


def generate(
    generator: TensorBundle,
    tokenizer: dict[str, Any],
    captioned: TensorBundle,
    source_slices: TensorBundle,
    params: dict[str, Any],
    autoencoder: TensorBundle | None = None,
) -> tuple[TensorBundle, dict[str, Any], dict[str, Any], dict[str, Any], Any]:
    """K images per prompt: samples bundle, PNG and NIfTI files, the captioned grid."""
    samples, report = workflow.generate(
        generator, tokenizer, captioned, GenerationParams.from_params(params), autoencoder
    )
    # the exported slices' field of view over the generated size
    meta = source_slices.metadata
    spacing = float(meta["pixel_spacing_mm"]) * int(meta["size"]) / generator.metadata["resolution"]
    pngs, niftis = workflow.image_files(samples, spacing)
    return samples, report, pngs, niftis, workflow.prompt_grid(samples)


def check_prompt_agreement(
    captioned: TensorBundle, samples: TensorBundle, params: dict[str, Any]
) -> tuple[TensorBundle, dict[str, Any]]:
    """Attribute classifiers trained on real training slices, applied to held-out real slices
    and to the generated images (agreement with each prompt)."""
    train = workflow.select(captioned, workflow.split_rows(captioned, "train"))
    heldout = workflow.select(captioned, workflow.split_rows(captioned, "test"))
    state, training_report = attribute_checks.train_attribute_classifiers(train, params=params)
    agreement = attribute_checks.attribute_agreement(state, heldout, samples)
    return state, {"training": training_report, "agreement": agreement}


def pretrained_baseline(
    params: dict[str, Any], samples: TensorBundle, captioned: TensorBundle, checkpoint_root: str
) -> dict[str, Any]:
    """Stable Diffusion baseline generation (and fine-tuning) where its weights are present."""
    train = workflow.select(captioned, workflow.split_rows(captioned, "train"))
    return pretrained_baseline_report(
        PretrainedParams.from_params(params),
        samples.metadata["distinct_prompts"],
        train,
        Path(checkpoint_root, "stable_diffusion"),
    )


def summarise(
    generator_report: dict[str, Any],
    generation_report: dict[str, Any],
    agreement: dict[str, Any],
    pretrained: dict[str, Any],
    captioned: TensorBundle,
    *part2: dict[str, Any],
) -> dict[str, Any]:
    """``summary.json``; also logged to MLflow. ``part2``: the ratings, selector, alignment,
    filtered fine-tune, DDPO, stage and best-of-N reports, in that order."""
    summary = text2image_summary(
        generator_report, generation_report, agreement, pretrained, captioned,
        dict(zip(PART2_REPORTS, part2, strict=True)),
    )  # fmt: skip
    log_summary(summary)
    return summary


# ---------------------------------------------------------------- part 2: rewards and RLHF
def train_undertrained_generator(
    captioned: TensorBundle,
    tokenizer: dict[str, Any],
    generator: dict[str, Any],
    network: dict[str, Any],
    undertrained: dict[str, Any],
    checkpoint_root: str,
) -> tuple[TensorBundle, dict[str, Any]]:
    """The same generator job stopped early: the poor images of the rated pool."""
    return rlhf.train_undertrained_generator(
        captioned,
        tokenizer,
        GeneratorParams.from_params(generator),
        network,
        UndertrainedParams.from_params(undertrained).max_steps,
        Path(checkpoint_root, "undertrained_generator"),
    )


def simulate_ratings(
    captioned: TensorBundle,
    undertrained_generator: TensorBundle,
    tokenizer: dict[str, Any],
    ratings: dict[str, Any],
    undertrained: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Rated images with a known truth: PNGs, ratings.csv, the oracle's reference, a report."""
    return rlhf.simulated_rating_pool(
        captioned,
        undertrained_generator,
        tokenizer,
        ratings,
        UndertrainedParams.from_params(undertrained),
    )


def train_selector(
    rated: TensorBundle, params: dict[str, Any], ratings: dict[str, Any], checkpoint_root: str
) -> tuple[TensorBundle, dict[str, Any], Any]:
    """The Selector (quality reward model) from the ratings; AUROC, calibration, a plot."""
    return rlhf.train_selector(rated, params, ratings, Path(checkpoint_root, "selector"))


def train_alignment(
    captioned: TensorBundle, tokenizer: dict[str, Any], params: dict[str, Any], checkpoint_root: str
) -> tuple[TensorBundle, dict[str, Any]]:
    """The Policy (prompt-image alignment scorer) from captions; held-out AUROC."""
    return rlhf.train_alignment(captioned, tokenizer, params, Path(checkpoint_root, "alignment"))


def finetune_filtered(
    generator: TensorBundle,
    rated: TensorBundle,
    selector: TensorBundle,
    tokenizer: dict[str, Any],
    reward: dict[str, Any],
    params: dict[str, Any],
    checkpoint_root: str,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Stage 2a: the generator fine-tuned on the Selector-filtered rated pool."""
    return selector_filtered_finetune(
        generator,
        rated,
        selector,
        tokenizer,
        RewardParams.from_params(reward).selector_threshold,
        FilteredFinetuneParams.from_params(params),
        Path(checkpoint_root, "generator_filtered"),
    )


def reinforce(
    generator: TensorBundle,
    selector: TensorBundle,
    alignment: TensorBundle,
    tokenizer: dict[str, Any],
    captioned: TensorBundle,
    params: dict[str, Any],
    reward: dict[str, Any],
    checkpoint_root: str,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Stage 2b: DDPO on the combined reward, with a KL penalty to the Stage-2a model."""
    return rlhf.reinforce(
        generator, selector, alignment, tokenizer, captioned, params, reward,
        Path(checkpoint_root, "generator_reinforced"),
    )  # fmt: skip


def measure_stages(
    generator: TensorBundle,
    filtered: TensorBundle,
    reinforced: TensorBundle,
    tokenizer: dict[str, Any],
    captioned: TensorBundle,
    selector: TensorBundle,
    alignment: TensorBundle,
    reward: dict[str, Any],
    oracle_reference: dict[str, Any],
    attribute_classifiers: TensorBundle,
    params: dict[str, Any],
) -> tuple[dict[str, Any], Any]:
    """Proxy vs oracle rewards and Fréchet distance of every stage on held-out prompts."""
    return rlhf.measure_stages(
        {
            name: OfflineSampler(bundle, tokenizer)
            for name, bundle in (
                ("part1", generator),
                ("selector_filtered", filtered),
                ("ddpo", reinforced),
            )
        },
        captioned,
        rlhf.reward_model(selector, alignment, tokenizer, reward),
        oracle_reference,
        attribute_classifiers,
        StageEvalParams.from_params(params),
    )


def quality_filtered_generation(
    generator: TensorBundle,
    tokenizer: dict[str, Any],
    captioned: TensorBundle,
    selector: TensorBundle,
    alignment: TensorBundle,
    reward: dict[str, Any],
    oracle_reference: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], TensorBundle, dict[str, Any]]:
    """Best-of-N: kept PNGs named by their scores, the kept bundle, acceptance report."""
    return rlhf.quality_filtered_generation(
        OfflineSampler(generator, tokenizer),
        captioned,
        rlhf.reward_model(selector, alignment, tokenizer, reward),
        oracle_reference,
        BestOfNParams.from_params(params),
    )


def pretrained_part2(
    pretrained: dict[str, Any],
    rated: TensorBundle,
    selector: TensorBundle,
    alignment: TensorBundle,
    tokenizer: dict[str, Any],
    captioned: TensorBundle,
    reward: dict[str, Any],
    oracle_reference: dict[str, Any],
    attribute_classifiers: TensorBundle,
    stage_evaluation: dict[str, Any],
    best_of_n: dict[str, Any],
    checkpoint_root: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Part 2's generator stages on Stable Diffusion with LoRA, where enabled (conf/cluster)."""
    return run_pretrained_part2(
        PretrainedParams.from_params(pretrained), rated, selector, alignment, tokenizer,
        captioned, reward, oracle_reference, attribute_classifiers,
        StageEvalParams.from_params(stage_evaluation), BestOfNParams.from_params(best_of_n),
        Path(checkpoint_root, "stable_diffusion_part2"),
    )  # fmt: skip

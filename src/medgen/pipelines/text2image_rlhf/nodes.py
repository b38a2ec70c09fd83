"""Nodes of text2image_rlhf (part 1: data, tokenizer, generator, generation, prompt agreement,
the pretrained path). Each calls `medgen.text2image` (docs/text2image.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medgen.datasets import TensorBundle
from medgen.text2image import attributes as attribute_checks
from medgen.text2image import workflow
from medgen.text2image.export import ExportConfig, export_captioned_slices
from medgen.text2image.params import (
    GenerationParams,
    GeneratorParams,
    PretrainedParams,
    TokenizerParams,
)
from medgen.text2image.pretrained_report import pretrained_baseline_report
from medgen.text2image.reports import log_summary, text2image_summary


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
) -> dict[str, Any]:
    """``summary.json``; also logged to MLflow."""
    summary = text2image_summary(
        generator_report, generation_report, agreement, pretrained, captioned
    )
    log_summary(summary)
    return summary

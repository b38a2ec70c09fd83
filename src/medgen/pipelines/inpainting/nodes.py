"""Nodes of the inpainting pipeline: each calls `medgen.inpainting` (docs/inpainting.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from medgen.autoencoder import training_3d
from medgen.autoencoder.loading import load_autoencoder
from medgen.datasets import SubjectRecord, TensorBundle
from medgen.inpainting.cases import (
    REJECTED_CASE_COLUMNS,
    CaseConfig,
    build_inpainting_cases,
    conditioning_maps,
    population_tissue_prior,
)
from medgen.inpainting.diffusion_training import best_weights, train_inpainting_diffusion
from medgen.inpainting.evaluate import run_baselines, sample_diffusion, score_methods
from medgen.inpainting.model_input import encode_model_input, subject_volumes
from medgen.inpainting.outputs import inpainted_niftis, triplanar_figures
from medgen.inpainting.params import (
    ClassicalParams,
    DiffusionParams,
    SamplingParams,
    ScoringParams,
)
from medgen.inpainting.reports import log_summary, summary_report
from medgen.inpainting.unet_baseline import train_unet_baseline
from medgen.runtime import seconds_since_run_start

SPLITS = ("train", "val", "test")


def build_cases(
    preprocessed_cohort: dict[str, SubjectRecord],
    subject_splits: dict[str, list[str]],
    params: dict[str, Any],
) -> tuple[TensorBundle, TensorBundle, TensorBundle, pd.DataFrame]:
    """One case per (subject, mask) and split, and the rejected cases."""
    config = CaseConfig.from_params(params)
    bundles, rejected = {}, []
    for split in SPLITS:
        bundles[split], bad = build_inpainting_cases(
            preprocessed_cohort, subject_splits[split], config, split
        )
        rejected.extend(bad)
    frame = pd.DataFrame(rejected, columns=list(REJECTED_CASE_COLUMNS))
    return bundles["train"], bundles["val"], bundles["test"], frame


def train_autoencoder(
    train: TensorBundle, val: TensorBundle, params: dict[str, Any], checkpoint_root: str
) -> tuple[TensorBundle, dict[str, Any]]:
    """The library's 3D patch-volume autoencoder (stage 1) trained on t1n, one volume per subject."""
    return training_3d.train_patch_volume_stage1(
        subject_volumes(train),
        subject_volumes(val),
        params,
        Path(checkpoint_root, "autoencoder_t1n"),
    )


def prepare_model_input(
    autoencoder: TensorBundle,
    train: TensorBundle,
    val: TensorBundle,
    test: TensorBundle,
    batch_size: int,
) -> tuple[TensorBundle, TensorBundle, TensorBundle, TensorBundle]:
    """Latents and conditioning of every split; the tissue prior from the train split."""
    prior = population_tissue_prior(train)
    network = load_autoencoder(autoencoder)
    fingerprint = autoencoder.fingerprint()
    inputs = {
        "train": encode_model_input(
            network, train, prior, batch_size=batch_size, weights_fingerprint=fingerprint
        )
    }
    scale = inputs["train"].metadata["scale_factor"]
    for split, cases in (("val", val), ("test", test)):
        inputs[split] = encode_model_input(
            network,
            cases,
            prior,
            batch_size=batch_size,
            scale_factor=scale,
            weights_fingerprint=fingerprint,
        )
    prior_bundle = TensorBundle(
        {"prior": prior},
        {"channels": ["CSF", "GM", "WM"], "source": "mean one-hot tissue of the train subjects"},
    )
    return inputs["train"], inputs["val"], inputs["test"], prior_bundle


def train_diffusion(
    train: TensorBundle,
    val: TensorBundle,
    val_cases: TensorBundle,
    autoencoder: TensorBundle,
    params: dict[str, Any],
    checkpoint_root: str,
) -> tuple[TensorBundle, dict[str, Any]]:
    """The latent diffusion model through the one training job; the best weights by val SSIM."""
    options = DiffusionParams.from_params(params)
    outcome, task_config = train_inpainting_diffusion(
        train, val, val_cases, autoencoder, options, Path(checkpoint_root, "diffusion")
    )
    weights, which = best_weights(outcome.result)
    result = outcome.result
    report = {
        "weights": which,
        "best_val_ssim": result.best_metric,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "seconds": round(outcome.seconds, 1),
        "resumed_from_step": outcome.resumed_from_step,
        "skipped": outcome.skipped,
        "history": result.history,
    }
    bundle = TensorBundle(
        weights,
        {"task_config": task_config, "backbone": dict(options.backbone), "weights": which},
    )
    return bundle, report


def train_unet(
    train: TensorBundle, prior: TensorBundle, params: dict[str, Any], checkpoint_root: str
) -> tuple[TensorBundle, dict[str, Any]]:
    """The deterministic 3D U-Net baseline (masked L1), honest conditioning."""
    cases = TensorBundle(
        {**train.tensors, "conditioning": conditioning_maps(train, "honest", prior["prior"])},
        train.metadata,
    )
    state, report = train_unet_baseline(
        cases,
        network=params["network"],
        training=params["training"],
        use_conditioning=params["use_conditioning"],
        checkpoint_dir=Path(checkpoint_root, "unet_baseline"),
        resources=params.get("resources"),
        torch_threads=params.get("torch_threads"),
    )
    meta = {"network": dict(params["network"]), "use_conditioning": params["use_conditioning"]}
    return TensorBundle(state, meta), report


def inpaint_test_cases(
    model: TensorBundle,
    autoencoder: TensorBundle,
    model_input: TensorBundle,
    cases: TensorBundle,
    params: dict[str, Any],
) -> tuple[TensorBundle, dict[str, Any]]:
    """Mean and SD maps of every test case under each conditioning variant."""
    torch.manual_seed(0)
    return sample_diffusion(
        model, autoencoder, model_input, cases, SamplingParams.from_params(params)
    )


def fill_baselines(
    cases: TensorBundle, unet: TensorBundle, prior: TensorBundle, params: dict[str, Any]
) -> tuple[TensorBundle, dict[str, float]]:
    """The classical fills and the U-Net on the test cases."""
    return run_baselines(cases, unet, prior, ClassicalParams.from_params(params).methods)


def score_inpainting(
    cases: TensorBundle,
    samples: TensorBundle,
    baselines: TensorBundle,
    sampling_report: dict[str, Any],
    baseline_seconds: dict[str, float],
    diffusion_report: dict[str, Any],
    params: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """``summary.json`` (method x metric table, ablation rows) and the per-case table; MLflow."""
    scores = score_methods(cases, samples, baselines, ScoringParams.from_params(params))
    summary, per_case = summary_report(
        scores,
        cases,
        sampling_report,
        baseline_seconds,
        diffusion_report,
        seconds_since_run_start(),
    )
    log_summary(summary)
    return summary, per_case


def write_outputs(
    cases: TensorBundle, samples: TensorBundle, params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """NIfTI volumes of every test case and triplanar figures of the first few."""
    n = ScoringParams.from_params(params).triplanar_cases
    return inpainted_niftis(cases, samples), triplanar_figures(cases, samples, n)

"""Training one 2D diffusion model of the latent_diffusion chain through the one training job.

`train_diffusion_model` is what the Kedro node calls: it checks the task configuration in the
node, then hands `medgen.training.run_job` a `TrainingJob` whose factory,
`build_diffusion_task`, runs in every worker (1..N processes, docs/cluster.md) on the staged
slices (and, for a latent space, the staged autoencoder weights). The job's identity is the
task and backbone configuration, the learned training options and the data (and autoencoder)
fingerprints: checkpoints of another identity are moved to ``checkpoints.stale/`` and training
starts afresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medgen.autoencoder.loading import load_autoencoder
from medgen.datasets import TensorBundle
from medgen.diffusion import build_task
from medgen.diffusion.diagnostics import DiffusionDiagnostics
from medgen.diffusion.perceptual import attach_perceptual
from medgen.generation.model_bundle import combination_name
from medgen.generation.slices import SliceDataset
from medgen.metrics.perceptual_distance import build_perceptual_distance
from medgen.metrics.sample_scores import SampleScorer
from medgen.training import JobOutcome, TrainingConfig, TrainingJob, TrainingTask, run_job
from medgen.training.diagnostics import diffusion_diagnostics
from medgen.training.ranks import get_local_rank
from medgen.training.setup import resolve_device


def build_diffusion_task(
    data: Mapping[str, TensorBundle],
    task_config: dict[str, Any],
    backbone: dict[str, Any],
    seed: int,
    device: str = "auto",
    perceptual_term: dict[str, Any] | None = None,
) -> TrainingTask:
    """The job's factory, run in every worker: the slices, a fresh network seeded with ``seed``
    (the same initial weights on every rank and re-run) and, for a latent space, the frozen
    autoencoder from ``data["autoencoder"]`` on this rank's device; ``perceptual_term``: the
    ``training.perceptual`` block (the loss's perceptual term), and the training diagnostics."""
    autoencoder = None
    if "autoencoder" in data:
        autoencoder = load_autoencoder(
            data["autoencoder"], resolve_device(device, get_local_rank())
        )
    task = build_task(task_config, autoencoder)
    torch.manual_seed(seed)
    model = task.build_model(backbone)
    attach_perceptual(task, perceptual_term, build_perceptual_distance)
    slices = SliceDataset(data["slices"])
    diagnostics = diffusion_diagnostics(DiffusionDiagnostics(task, slices), SampleScorer())
    return TrainingTask(model=model, loss_fn=task.loss, train_data=slices, callbacks=diagnostics)


def train_diffusion_model(
    slices: TensorBundle,
    *,
    task_config: Mapping[str, Any],
    backbone: Mapping[str, Any],
    training: Mapping[str, Any],
    resources: Mapping[str, Any] | None,
    checkpoint_dir: str | Path,
    resume: bool = True,
    torch_threads: int | None = None,
    autoencoder: TensorBundle | None = None,
) -> JobOutcome:
    """Train a network for ``task_config`` on ``slices``; the job's outcome (every node).

    ``autoencoder``: the weights bundle of the autoencoder a latent-space task encodes with.
    Metrics go to the active MLflow run as ``<strategy>_<mode>/loss`` etc.
    """
    config = TrainingConfig.from_dict(training)
    latent = (task_config.get("space") or {}).get("name", "pixel") != "pixel"
    if latent and autoencoder is None:
        raise ValueError(f"{combination_name(task_config)}: a latent space needs the autoencoder")
    # fail here, in the node, on a bad strategy/mode/space config
    build_task(task_config, load_autoencoder(autoencoder) if latent else None)
    data = {"slices": slices}
    if latent:
        data["autoencoder"] = autoencoder
    name = combination_name(task_config)
    job = TrainingJob(
        name=name,
        factory=build_diffusion_task,
        config=config,
        checkpoint_dir=checkpoint_dir,
        data=data,
        options={
            "task_config": dict(task_config),
            "backbone": dict(backbone),
            "seed": config.seed,
        },
        runtime_options={"device": config.device},
        resources=resources,
        torch_threads=torch_threads,
        resume=resume,
        artifact_path=f"latent_diffusion/{name}",
    )
    return run_job(job)

"""Training one diffusion model through the medgen engine, with 1..N workers.

`train_diffusion_model` is what the Kedro node calls. It writes the prepared slices next
to the checkpoints and hands the workers a `JobSpec` naming `build_training_task` and that
file: workers load data themselves, tensors never travel through the launcher
(docs/cluster.md). Only rank 0's result comes back.

Resuming: the engine continues ``checkpoints/latest.pt`` when one exists. That is only
right for the same network and data, so a ``job.json`` records what the checkpoints were
trained on; when it differs (another resolution, backbone, strategy, data) the old
checkpoints are moved to ``checkpoints.stale/`` and training starts afresh.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medgen.autoencoder.loading import load_autoencoder
from medgen.datasets import TensorBundle, TensorDataset
from medgen.diffusion import build_task
from medgen.generation.model_bundle import combination_name
from medgen.generation.slices import SliceDataset
from medgen.training import (
    JobSpec,
    MlflowCallback,
    Resources,
    TrainingConfig,
    TrainingResult,
    TrainingTask,
    launch,
    run_training_job,
)
from medgen.training.distributed import get_local_rank
from medgen.training.engine import resolve_device
from medgen.training.checkpoint import latest_step, prepare_checkpoint_dir

log = logging.getLogger(__name__)

FACTORY = "medgen.generation.training_job:build_training_task"
DATA_FILE = "train_slices.safetensors"
AUTOENCODER_FILE = "autoencoder.safetensors"


@dataclass
class DiffusionTrainingRun:
    """Rank 0's `TrainingResult`, the step it resumed from (0: fresh) and the wall time."""

    result: TrainingResult
    resumed_from_step: int
    seconds: float


def build_training_task(
    data_path: str,
    task_config: dict[str, Any],
    backbone: dict[str, Any],
    seed: int,
    mlflow_prefix: str,
    torch_threads: int | None = None,
    autoencoder_path: str | None = None,
    device: str = "auto",
) -> TrainingTask:
    """`JobSpec` factory, run in every worker: data from ``data_path``, a fresh network, and
    for a latent space the frozen autoencoder from ``autoencoder_path`` on this rank's device."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    bundle = TensorDataset(filepath=data_path).load()
    autoencoder = None
    if autoencoder_path is not None:
        autoencoder = load_autoencoder(
            TensorDataset(filepath=autoencoder_path).load(),
            resolve_device(device, get_local_rank()),
        )
    task = build_task(task_config, autoencoder)
    torch.manual_seed(seed)  # the same initial weights on every rank and every re-run
    model = task.build_model(backbone)
    callback = MlflowCallback(
        prefix=mlflow_prefix, artifact_path=f"latent_diffusion/{mlflow_prefix}"
    )
    return TrainingTask(
        model=model, loss_fn=task.loss, train_data=SliceDataset(bundle), callbacks=[callback]
    )


def threads_per_worker(resources: Resources, requested: int | None) -> int | None:
    """Explicit ``torch_threads``, or the node's cores split between its workers (None: one
    worker keeps torch's default, which is already one thread per core)."""
    if requested:
        return int(requested)
    if resources.nproc_per_node == 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // resources.nproc_per_node)


def data_fingerprint(bundle: TensorBundle) -> str:
    """Short hash of the training tensors (what a checkpoint's data position refers to)."""
    return bundle.fingerprint(("images", "seg"))


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
) -> DiffusionTrainingRun | None:
    """Train a network for ``task_config`` on ``slices``; rank 0's run (None on other nodes).

    ``autoencoder``: the weights bundle of the autoencoder a latent-space task encodes with.
    Metrics go to the active MLflow run as ``<strategy>_<mode>/loss`` etc.
    """
    config = TrainingConfig.from_dict(training)
    latent = (task_config.get("space") or {}).get("name", "pixel") != "pixel"
    if latent and autoencoder is None:
        raise ValueError(f"{combination_name(task_config)}: a latent space needs the autoencoder")
    # fail here, in the node, on a bad strategy/mode/space config
    build_task(task_config, load_autoencoder(autoencoder) if latent else None)
    res = Resources.from_dict(resources)
    checkpoint_dir = Path(checkpoint_dir)
    job = {
        "task": dict(task_config),
        "backbone": dict(backbone),
        "spatial_shape": list(slices["images"].shape[1:]),
        "data": data_fingerprint(slices),
    }
    if latent:
        job["autoencoder"] = autoencoder.fingerprint(with_metadata=True)
    start = time.perf_counter()
    resumable = prepare_checkpoint_dir(checkpoint_dir, job) and resume
    resumed_from = latest_step(checkpoint_dir) if resumable else 0
    data_path = checkpoint_dir / DATA_FILE
    TensorDataset(filepath=str(data_path)).save(slices)
    autoencoder_path = None
    if latent:
        autoencoder_path = str(checkpoint_dir / AUTOENCODER_FILE)
        TensorDataset(filepath=autoencoder_path).save(autoencoder)
    prefix = combination_name(task_config)
    spec = JobSpec(
        factory=FACTORY,
        config=config.to_dict(),
        factory_kwargs={
            "data_path": str(data_path),
            "task_config": json.loads(json.dumps(task_config)),
            "backbone": json.loads(json.dumps(backbone)),
            "seed": config.seed,
            "mlflow_prefix": prefix,
            "torch_threads": threads_per_worker(res, torch_threads),
            "autoencoder_path": autoencoder_path,
            "device": config.device,
        },
        checkpoint_dir=str(checkpoint_dir),
        resume=resumable,
    )
    result = launch(run_training_job, spec, res, log_dir=checkpoint_dir.parent / "worker_logs")
    if result is None:
        return None
    return DiffusionTrainingRun(result, resumed_from, time.perf_counter() - start)

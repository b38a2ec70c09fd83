"""Launching training workers and the rank helpers the engine uses.

A Kedro training node calls `launch(worker_fn, job_spec, resources)`. With one
process in total the worker runs in the node's own process; otherwise
`torch.distributed` elastic launch starts ``nproc_per_node`` workers on this node
(one per GPU, or CPU processes with gloo), they rendezvous with the other nodes
through ``rdzv_endpoint``, train with DistributedDataParallel, and only rank 0's
return value comes back to the node, so the catalog and kedro-mlflow save and log
exactly once.

Workers receive a small picklable `JobSpec` (a ``"package.module:function"``
factory reference, its keyword arguments, the training config dict, paths, the
MLflow run to re-attach to) and build their own model and data: tensors never
travel through the launcher.

Global batch: every rank draws its own ``batch_size`` samples per micro-batch from
a disjoint shard (DistributedSampler), so one optimizer step sees
``batch_size * accum_steps * world_size`` samples. Keep that product fixed when
changing the number of GPUs to keep the optimisation the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from medgen.config import refuse_unknown_keys
from medgen.training.callbacks import MlflowCallback, active_mlflow
from medgen.training.errors import ConfigError

# ---------------------------------------------------------------- rank helpers


def is_distributed() -> bool:
    """True inside a worker whose process group is initialised with world size > 1."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main_process() -> bool:
    """Rank 0 alone saves checkpoints, prints and logs (EDM-style rank-0 discipline)."""
    return get_rank() == 0


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a small picklable object from ``src`` to every rank (identity when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def resolve_backend(backend: str) -> str:
    """``auto`` means nccl when CUDA is available, gloo otherwise."""
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return backend


# ---------------------------------------------------------------- resources


@dataclass(frozen=True)
class Resources:
    """The ``resources`` parameters of a training node.

    nproc_per_node (1): worker processes on each node (GPUs per node on a cluster).
    nnodes (1): nodes taking part; every node runs the same `kedro run`.
    backend ("auto"): "auto" (nccl with CUDA, gloo without), "gloo" or "nccl".
    rdzv_endpoint ("localhost:0"): host:port of the rendezvous; port 0 picks a free
        port (single node only). Multi-node: the first node's hostname and a fixed port.
    rdzv_backend ("c10d"), rdzv_id (None: a random id; must be equal on all nodes for
        multi-node runs, e.g. the SLURM job id), max_restarts (0),
    rdzv_timeout (900 s): how long nodes wait for each other.
    start_method ("spawn"): how workers start. "spawn" is the safe choice with CUDA;
        "forkserver" / "fork" skip re-importing torch per worker (CPU jobs, tests).
    """

    nproc_per_node: int = 1
    nnodes: int = 1
    backend: str = "auto"
    rdzv_endpoint: str = "localhost:0"
    rdzv_backend: str = "c10d"
    rdzv_id: str | None = None
    max_restarts: int = 0
    rdzv_timeout: int = 900
    start_method: str = "spawn"

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None) -> Resources:
        params = dict(params or {})
        refuse_unknown_keys(cls, params, "resources", ConfigError)
        if params.get("rdzv_id") is not None:
            params["rdzv_id"] = str(params["rdzv_id"])
        return cls(**params)

    def __post_init__(self) -> None:
        for key in ("nproc_per_node", "nnodes", "rdzv_timeout"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"resources {key}={value!r}: must be an integer >= 1")
        if not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ConfigError(f"resources max_restarts={self.max_restarts!r}: must be >= 0")
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ConfigError(f"resources backend={self.backend!r}: must be auto, gloo or nccl")
        if self.start_method not in ("spawn", "forkserver", "fork"):
            raise ConfigError(
                f"resources start_method={self.start_method!r}: must be spawn, forkserver or fork"
            )
        if ":" not in str(self.rdzv_endpoint):
            raise ConfigError(f"resources rdzv_endpoint={self.rdzv_endpoint!r}: must be host:port")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


# ---------------------------------------------------------------- job spec


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs, small and picklable.

    factory: ``"package.module:function"``; called as ``factory(**factory_kwargs)``
        it returns a `TrainingTask` (model, loss_fn, train_data, val_fn, callbacks).
    config: a `TrainingConfig.to_dict()` dict.
    checkpoint_dir / resume: passed to `train`.
    mlflow_run_id / mlflow_tracking_uri: filled in by `launch` when an MLflow run is
        active, so rank 0 logs into the node's run.
    """

    factory: str
    config: dict[str, Any]
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint_dir: str | None = None
    resume: bool = True
    mlflow_run_id: str | None = None
    mlflow_tracking_uri: str | None = None


def resolve_factory(reference: str) -> Callable[..., Any]:
    """Import ``"package.module:function"``."""
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"factory reference {reference!r} must look like 'package.module:function'"
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import factory {reference!r}: {exc}") from exc
    return target


def run_training_job(spec: JobSpec):
    """Default worker: build the task from the factory and train it (every rank).

    Rank 0 re-attaches to the parent's MLflow run when the spec names one.
    """
    # Imported here: `engine` imports this module.
    from medgen.training.config import TrainingConfig
    from medgen.training.engine import train

    task = resolve_factory(spec.factory)(**spec.factory_kwargs)
    config = TrainingConfig.from_dict(spec.config)
    callbacks = list(task.callbacks)
    run = contextlib.nullcontext()
    if spec.mlflow_run_id is not None and is_main_process():
        run = _mlflow_run(spec)
        if not any(isinstance(cb, MlflowCallback) for cb in callbacks):
            callbacks.append(MlflowCallback())
    with run:
        return train(
            task.model,
            task.loss_fn,
            task.train_data,
            config,
            val_fn=task.val_fn,
            checkpoint_dir=spec.checkpoint_dir,
            resume=spec.resume,
            callbacks=callbacks,
        )


def _mlflow_run(spec: JobSpec) -> contextlib.AbstractContextManager:
    """Context in which the run ``spec`` names is the active MLflow run."""
    import mlflow

    if spec.mlflow_tracking_uri:
        mlflow.set_tracking_uri(spec.mlflow_tracking_uri)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == spec.mlflow_run_id:
        # In-process launch: the node's run is already active here (and stays open).
        return contextlib.nullcontext()
    return mlflow.start_run(run_id=spec.mlflow_run_id)


# ---------------------------------------------------------------- launch


def _worker_entry(worker_fn: Callable[[Any], Any], job_spec: Any, backend: str) -> Any:
    """What each elastic worker runs: join the process group, work, return on rank 0."""
    if torch.cuda.is_available() and backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend=backend)
    try:
        result = worker_fn(job_spec)
        # Nobody leaves before everyone is done (rank 0 may still be writing).
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return result if int(os.environ["RANK"]) == 0 else None


def _attach_mlflow_run(job_spec: Any) -> Any:
    """Fill in the active MLflow run (if any) so rank 0 can log into it."""
    mlflow = active_mlflow()
    if mlflow is None or not isinstance(job_spec, JobSpec) or job_spec.mlflow_run_id:
        return job_spec
    run = mlflow.active_run()
    return dataclasses.replace(
        job_spec, mlflow_run_id=run.info.run_id, mlflow_tracking_uri=mlflow.get_tracking_uri()
    )


def launch(
    worker_fn: Callable[[Any], Any],
    job_spec: Any,
    resources: Resources | Mapping[str, Any] | None = None,
    *,
    log_dir: str | Path | None = None,
) -> Any:
    """Run ``worker_fn(job_spec)`` on every rank; return rank 0's return value.

    ``worker_fn`` must be importable by name (a module-level function): with the
    default ``spawn`` start method it is pickled by reference. With a world size of 1 it is
    simply called here, without a process group.
    """
    res = resources if isinstance(resources, Resources) else Resources.from_dict(resources)
    job_spec = _attach_mlflow_run(job_spec)
    if res.world_size == 1:
        return worker_fn(job_spec)

    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    backend = resolve_backend(res.backend)
    config = LaunchConfig(
        min_nodes=res.nnodes,
        max_nodes=res.nnodes,
        nproc_per_node=res.nproc_per_node,
        run_id=res.rdzv_id or uuid.uuid4().hex,
        rdzv_endpoint=res.rdzv_endpoint,
        rdzv_backend=res.rdzv_backend,
        rdzv_configs={"timeout": res.rdzv_timeout},
        max_restarts=res.max_restarts,
        start_method=res.start_method,
        logs_specs=DefaultLogsSpecs(log_dir=str(log_dir) if log_dir else None),
    )
    results = elastic_launch(config, _worker_entry)(worker_fn, job_spec, backend)
    # Keyed by global rank; on nodes other than the first, rank 0 is not local.
    return results.get(0)

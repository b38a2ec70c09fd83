"""Starting training workers: one process, or torch elastic workers on 1..N nodes.

`medgen.training.job.run_job` is what training code calls; this module is its launcher.
`launch(worker_fn, job_spec, resources)` runs ``worker_fn(job_spec)`` on every rank. With
one process in total the worker runs in the caller's process; otherwise `torch.distributed`
elastic launch starts ``nproc_per_node`` workers on this node (one per GPU, or CPU processes
with gloo), they rendezvous with the other nodes through ``rdzv_endpoint`` and join one
process group, and rank 0's return value comes back (None on nodes without rank 0).

Workers receive a small picklable `JobSpec` (the factory's ``"package.module:function"``
reference, its keyword arguments, the training config dict, paths of the staged data, the
MLflow run to re-attach to) and build their own model and data: tensors never travel through
the launcher.

Global batch: every rank draws its own ``batch_size`` samples per micro-batch from a disjoint
shard (DistributedSampler), so one optimizer step sees ``batch_size * accum_steps *
world_size`` samples. Keep that product fixed when changing the number of GPUs to keep the
optimisation the same.
"""

from __future__ import annotations

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
from medgen.training.errors import ConfigError
from medgen.training.tracking import active_mlflow


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
    """Everything a worker needs, small and picklable (`medgen.training.job` builds it).

    factory: ``"package.module:function"`` of the job's factory, called in the worker as
        ``factory(data, **factory_kwargs)`` with the staged bundles; returns a `TrainingTask`.
    config: a `TrainingConfig.to_dict()` dict.
    data: name -> path of a staged `TensorBundle` file (loaded by each worker).
    name / artifact_path: MLflow metric prefix and artifact folder of the job.
    torch_threads: intra-op threads of each worker (None: torch's default).
    checkpoint_dir / resume: passed to `train`.
    mlflow_run_id / mlflow_tracking_uri: filled in by `launch` when an MLflow run is
        active, so rank 0 logs into the node's run.
    """

    factory: str
    config: dict[str, Any]
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    name: str = "train"
    artifact_path: str = "training"
    torch_threads: int | None = None
    checkpoint_dir: str | None = None
    resume: bool = True
    mlflow_run_id: str | None = None
    mlflow_tracking_uri: str | None = None


def factory_reference(factory: Callable[..., Any]) -> str:
    """``"package.module:function"`` of a module-level function, the name workers import it by.

    A lambda, a nested function or a function of ``__main__`` cannot be imported by a spawned
    worker: refused here, in the node, rather than failing inside every worker.
    """
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname or not callable(factory):
        raise ConfigError(
            f"a job factory must be a module-level function of an importable module, got "
            f"{factory!r}"
        )
    reference = f"{module}:{qualname}"
    if resolve_factory(reference) is not factory:
        raise ConfigError(f"{reference} does not import back to {factory!r}")
    return reference


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

"""One training job: how every medgen model is trained, on one process or many.

Training code describes WHAT to train as a `TrainingJob` and calls `run_job`::

    job = TrainingJob(
        name="rflow_bravo",                        # MLflow metric prefix
        factory=build_diffusion_task,              # module-level: (data, **options) -> TrainingTask
        config=TrainingConfig.from_dict(params["training"]),
        checkpoint_dir=Path("data/06_models/latent_diffusion/rflow_bravo/checkpoints"),
        data={"slices": slices},                   # the TensorBundles the workers need
        options={"task_config": ..., "backbone": ...},   # JSON values: the factory's kwargs
    )
    outcome = run_job(job)                         # JobOutcome: rank 0's TrainingResult

`run_job` owns, in this order:

1. **identity**: the factory's reference, its ``options``, the training options that change
   what is learned (all but `BOOKKEEPING_KEYS`), the fingerprint of every data bundle and any
   ``identity`` extras, recorded as ``job.json`` in the checkpoint folder;
2. **checkpoint folder**: the same identity continues ``latest.pt`` exactly; another identity
   moves the folder to ``<dir>.stale`` and trains afresh; a job whose final checkpoint is
   already there is not trained again (its outcome is read back, ``skipped=True``);
3. **staging**: each data bundle is written once to ``<dir>/inputs/<name>.safetensors``;
   workers get paths, never tensors through the launcher;
4. **launching**: one process (this one) or torch elastic workers (`Resources`); each worker
   loads the staged bundles and calls ``factory(data, **options, **runtime_options)``;
5. **result**: rank 0's `TrainingResult`, in a `JobOutcome`.

The contract for the other ranks and nodes: every rank trains; only rank 0 writes checkpoints,
logs and returns a result. On the node that hosts rank 0, `run_job` returns that result. On
every other node of a multi-node run it reads the same result back from the final checkpoint
rank 0 wrote (a multi-node run needs a checkpoint folder all nodes see, docs/cluster.md), so
`run_job` returns an equal `JobOutcome` on every node and training code has no case for ranks
or nodes.

Adding a model is writing its factory (docs/architecture.md, "Add a training job").
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen.runtime import torch_threads
from medgen.training.callbacks import MlflowCallback
from medgen.training.checkpoint import LATEST, load_checkpoint, prepare_checkpoint_dir
from medgen.training.config import TrainingConfig
from medgen.training.diagnostics import engine_diagnostics
from medgen.training.distributed import (
    JobSpec,
    Resources,
    factory_reference,
    launch,
    resolve_factory,
)
from medgen.training.engine import train
from medgen.training.errors import ConfigError, TrainingError
from medgen.training.ranks import is_main_process
from medgen.training.results import TrainingResult, TrainingTask

if TYPE_CHECKING:  # pragma: no cover
    from medgen.datasets import TensorBundle

log = logging.getLogger(__name__)

#: Training options that do not change what is learned: changing them keeps checkpoints valid.
BOOKKEEPING_KEYS = (
    "progress",
    "log_every",
    "checkpoint_every",
    "keep_every",
    "device",
    "num_workers",
    "logging",
)
#: Training options added after checkpoints existed: left out of the identity while at their
#: defaults (off), so a checkpoint written before they existed still belongs to its job.
OMITTED_AT_DEFAULT = ("perceptual", "augmentation", "overfit_batches")
#: The factory keyword through which a job's factory receives ``training.perceptual`` (not
#: ``perceptual``: the autoencoder factories already take their own loss's block by that name).
PERCEPTUAL_KWARG = "perceptual_term"
INPUTS_DIR = "inputs"
WORKER_LOGS_DIR = "worker_logs"

Factory = Callable[..., TrainingTask]


@dataclass(frozen=True)
class TrainingJob:
    """One model to train (see the module docstring).

    name: MLflow metric prefix and log name (e.g. ``rflow_bravo``).
    factory: module-level function ``factory(data, **options, **runtime_options)`` returning a
        `TrainingTask`; it runs in every worker and seeds its own initial weights.
    config: the engine's `TrainingConfig`.
    checkpoint_dir: where checkpoints, ``job.json`` and the staged data live; None: a
        temporary folder removed afterwards (nothing to resume; one node only).
    data: the `TensorBundle` s the factory needs, by name.
    options: JSON-friendly keyword arguments of the factory; part of the identity.
    runtime_options: factory arguments that do not change what is learned; not identity.
    identity: more of what the checkpoints depend on (JSON values), e.g. a model version.
    resources: processes and nodes (`Resources`; default: one process).
    torch_threads: intra-op threads per worker (None: torch's default for one process, the
        node's cores split between its workers for several).
    resume: continue a matching ``latest.pt`` (False: train afresh into the same folder).
    artifact_path: MLflow artifact folder of the job (default: ``training/<name>``).
    """

    name: str
    factory: Factory
    config: TrainingConfig
    checkpoint_dir: str | Path | None
    data: Mapping[str, TensorBundle] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    runtime_options: Mapping[str, Any] = field(default_factory=dict)
    identity: Mapping[str, Any] = field(default_factory=dict)
    resources: Resources | Mapping[str, Any] | None = None
    torch_threads: int | None = None
    resume: bool = True
    artifact_path: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.config, TrainingConfig):
            raise ConfigError(
                f"job {self.name!r}: config must be a TrainingConfig, got "
                f"{type(self.config).__name__} (use TrainingConfig.from_dict)"
            )
        resources = self.resources
        if not isinstance(resources, Resources):
            object.__setattr__(self, "resources", Resources.from_dict(resources))
        if self.checkpoint_dir is None and self.resources.nnodes > 1:
            raise ConfigError(
                f"job {self.name!r}: a multi-node run needs a checkpoint_dir all nodes see"
            )
        # Fail in the node, not in every worker, on options the workers cannot receive.
        for section in ("options", "runtime_options", "identity"):
            try:
                json.dumps(dict(getattr(self, section)))
            except TypeError as exc:
                raise ConfigError(
                    f"job {self.name!r}: {section} must be JSON values: {exc}"
                ) from exc
        if self.config.perceptual.enabled and not takes_perceptual(self.factory):
            raise ConfigError(
                f"job {self.name!r}: training.perceptual.weight is set but the factory "
                f"{self.factory_reference} has no perceptual term (diffusion jobs have one)"
            )

    @property
    def factory_reference(self) -> str:
        return factory_reference(self.factory)

    def fingerprint(self) -> dict[str, Any]:
        """What the checkpoints depend on, as written (JSON-normalised) to ``job.json``."""
        defaults = TrainingConfig().to_dict()
        learned = {
            k: v
            for k, v in self.config.to_dict().items()
            if k not in BOOKKEEPING_KEYS and not (k in OMITTED_AT_DEFAULT and v == defaults[k])
        }
        return {
            "factory": self.factory_reference,
            "options": dict(self.options),
            "training": learned,
            "data": {name: bundle.fingerprint() for name, bundle in sorted(self.data.items())},
            **({"identity": dict(self.identity)} if self.identity else {}),
        }


@dataclass
class JobOutcome:
    """What `run_job` returns on every node.

    result: rank 0's `TrainingResult` (state dicts on the CPU).
    resumed_from_step: the step this invocation continued from (0: a fresh start).
    seconds: wall time of this invocation.
    skipped: the job had already finished; nothing was trained.
    """

    result: TrainingResult
    resumed_from_step: int
    seconds: float
    skipped: bool = False


def run_job(job: TrainingJob) -> JobOutcome:
    """Train ``job`` (identity -> checkpoint folder -> staging -> launch -> rank-0 result)."""
    start = time.perf_counter()
    with _checkpoint_folder(job.checkpoint_dir) as directory:
        belongs = prepare_checkpoint_dir(directory, job.fingerprint())
        resumable = belongs and job.resume
        latest = directory / LATEST
        state = load_checkpoint(latest) if resumable and latest.is_file() else None
        resumed_from = int(state["step"]) if state is not None else 0
        if state is not None and (state["stopped_early"] or state["step"] >= job.config.max_steps):
            log.info(
                "%s: finished at step %d in %s: not trained again",
                job.name,
                resumed_from,
                directory,
            )
            result = TrainingResult.from_checkpoint(latest, state)
            return JobOutcome(result, resumed_from, time.perf_counter() - start, skipped=True)
        spec = JobSpec(
            factory=job.factory_reference,
            config=job.config.to_dict(),
            factory_kwargs=_json({**job.options, **job.runtime_options}),
            data=_stage(job.data, directory / INPUTS_DIR, reuse=belongs),
            name=job.name,
            artifact_path=job.artifact_path or f"training/{job.name}",
            torch_threads=threads_per_worker(job.resources, job.torch_threads),
            checkpoint_dir=str(directory),
            resume=resumable,
        )
        result = launch(train_worker, spec, job.resources, log_dir=directory / WORKER_LOGS_DIR)
        if result is None:  # this node does not host rank 0: read rank 0's result back
            if not latest.is_file():
                raise TrainingError(
                    f"job {job.name!r}: this node does not host rank 0 and cannot see the final "
                    f"checkpoint {latest} rank 0 wrote; a multi-node job needs its checkpoint "
                    "folder on a file system every node shares (docs/cluster.md)"
                )
            result = TrainingResult.from_checkpoint(latest)
        return JobOutcome(result, resumed_from, time.perf_counter() - start)


def train_worker(spec: JobSpec) -> TrainingResult:
    """What every rank runs: load the staged data, build the task with the factory, train.

    Rank 0 logs into the MLflow run the spec names (the node's kedro-mlflow run), with an
    `MlflowCallback` under the job's name unless the factory returned its own, and the
    diagnostics every job has (`medgen.training.diagnostics.engine_diagnostics`). A factory
    with a ``perceptual_term`` keyword receives the ``training.perceptual`` block through it.
    """
    from medgen.datasets import TensorDataset  # here: workers need it, the engine does not

    config = TrainingConfig.from_dict(spec.config)
    with torch_threads(spec.torch_threads):
        data = {name: TensorDataset(filepath=path).load() for name, path in spec.data.items()}
        factory = resolve_factory(spec.factory)
        kwargs = dict(spec.factory_kwargs)
        if takes_perceptual(factory):
            kwargs[PERCEPTUAL_KWARG] = config.perceptual.to_dict()
        task = factory(data, **kwargs)
        if not isinstance(task, TrainingTask):
            raise TypeError(f"{spec.factory} returned {type(task).__name__}, not a TrainingTask")
        callbacks = [*task.callbacks, *engine_diagnostics()]
        run = contextlib.nullcontext()
        if spec.mlflow_run_id is not None and is_main_process():
            run = _mlflow_run(spec)
            if not any(isinstance(cb, MlflowCallback) for cb in callbacks):
                callbacks.append(MlflowCallback(prefix=spec.name, artifact_path=spec.artifact_path))
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


def takes_perceptual(factory: Factory) -> bool:
    """Whether ``factory`` has a ``perceptual_term`` keyword (a loss with a perceptual term)."""
    return PERCEPTUAL_KWARG in inspect.signature(factory).parameters


def threads_per_worker(resources: Resources, requested: int | None) -> int | None:
    """Explicit ``torch_threads``, or the node's cores split between its workers (None: one
    worker keeps torch's default, which is already one thread per core)."""
    if requested:
        return int(requested)
    if resources.nproc_per_node == 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // resources.nproc_per_node)


@contextlib.contextmanager
def _checkpoint_folder(checkpoint_dir: str | Path | None) -> Iterator[Path]:
    if checkpoint_dir is not None:
        yield Path(checkpoint_dir)
        return
    with tempfile.TemporaryDirectory(prefix="medgen-job-") as tmp:
        yield Path(tmp) / "checkpoints"


def _stage(data: Mapping[str, TensorBundle], folder: Path, reuse: bool) -> dict[str, str]:
    """Write each bundle to ``folder/<name>.safetensors``; name -> path.

    ``reuse``: the folder belongs to this job (same data fingerprints), so a file already
    there holds the same tensors (it was written atomically) and is not written again.
    """
    from medgen.datasets import TensorDataset

    paths = {}
    for name, bundle in data.items():
        path = folder / f"{name}.safetensors"
        if not (reuse and path.is_file()):
            TensorDataset(filepath=str(path)).save(bundle)
        paths[name] = str(path)
    return paths


def _json(value: Any) -> Any:
    """``value`` as read back from JSON (tuples become lists), so identities compare equal."""
    return json.loads(json.dumps(value))


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

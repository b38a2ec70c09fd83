"""Training diagnostics: callbacks of the one engine that show why a run is good or bad.

Switched and timed by ``training.logging`` (`diagnostics_config.LoggingConfig`), read from the
trainer's config when training starts; the engine calls callbacks on rank 0 only, so nothing
here runs twice or synchronises ranks. What they produce goes to a `DiagnosticsSink`: the active
MLflow run (metric names ``<job>/<name>``, figures under ``<artifact path>/diagnostics/``, the
job's `MlflowCallback` gives both), else PNG files in ``<checkpoint dir>/diagnostics/``.

Every job (`train_worker`) gets the generic ones, `engine_diagnostics`:

* `StepScalars`: the gradient norm before clipping (``grad_norm``) and samples per second of
  wall time (``throughput``) every N steps (loss and lr: `MlflowCallback`, every ``log_every``);
* `ModelCost`: parameter count and forward FLOPs per sample, once (``flops``).

A diffusion job's factory adds `diffusion_diagnostics(source, scorer)`: loss by timestep, the
regional loss, the worst batch (`loss_diagnostics`), validation samples with their metrics and
the denoising trajectory (`validation_samples`). ``source`` is the model-specific side
(`medgen.diffusion.diagnostics.DiffusionDiagnostics`): it reports per-sample loss details and
samples a fixed batch; the training package knows it only by these attributes:

* ``add_loss_observer(fn)``: ``fn(details)`` after every loss computation, ``details`` having
  ``per_sample`` [B] (what the optimizer's scalar averages), ``time_fraction`` [B] in [0, 1],
  ``timesteps`` [B], ``region_sums`` / ``region_counts`` / ``outside_sums`` /
  ``outside_counts`` [B] (None without a mask) and ``x0`` (the clean batch);
* ``time_bin_labels(bins)``, ``validation_batch(n)``, ``sample(net, batch, ...)``,
  ``display(x0)`` and ``reference`` (what the validation samples are compared with).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from medgen.training.callbacks import Callback
from medgen.training.diagnostics_sink import DiagnosticCallback, DiagnosticsSink, due
from medgen.training.flops import FirstForwardFlops, parameter_count
from medgen.training.loss_diagnostics import LossByTimestep, RegionalLoss, WorstBatch
from medgen.training.validation_samples import ValidationSamples

if TYPE_CHECKING:  # pragma: no cover
    from medgen.training.engine import Trainer

log = logging.getLogger(__name__)

__all__ = [
    "DiagnosticsSink",
    "ModelCost",
    "SourceParams",
    "StepScalars",
    "diffusion_diagnostics",
    "due",
    "engine_diagnostics",
]


class StepScalars(DiagnosticCallback):
    """``grad_norm`` (before clipping) and ``samples_per_second`` every N steps each."""

    def on_train_start(self, trainer: Trainer) -> None:
        cfg = trainer.config.logging
        self.grad, self.speed = cfg.grad_norm, cfg.throughput
        self.active = self.grad.enabled or self.speed.enabled
        if not self.active:
            return
        self.start(trainer)
        # Without clipping the engine computes the norm only when asked to.
        trainer.track_grad_norm = self.grad.enabled
        config = trainer.config
        self.samples_per_step = config.batch_size * config.accum_steps * trainer.world_size
        self.window = (trainer.step, time.perf_counter())

    def on_step_end(self, trainer: Trainer) -> None:
        if not self.active:
            return
        step, metrics = trainer.step, {}
        last = step == trainer.config.max_steps
        if self.grad.enabled and due(step, self.grad.every, last) and trainer.grad_norm is not None:
            metrics["grad_norm"] = float(trainer.grad_norm)
        if self.speed.enabled and due(step, self.speed.every, last):
            start_step, start_time = self.window
            seconds = time.perf_counter() - start_time
            if step > start_step and seconds > 0:
                metrics["samples_per_second"] = (
                    (step - start_step) * self.samples_per_step / seconds
                )
            self.window = (step, time.perf_counter())
        self.sink.log_metrics(metrics, step)


class ModelCost(DiagnosticCallback):
    """``parameters`` and ``trainable_parameters`` at the start, ``flops_per_sample`` after the
    first step (counted around that step's first forward, `flops.FirstForwardFlops`; not under
    ``compile``, whose graphs the counter cannot see into)."""

    def __init__(self, sink: DiagnosticsSink | None = None) -> None:
        super().__init__(sink)
        self.values: dict[str, float] = {}
        self.counter: FirstForwardFlops | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        if not trainer.config.logging.flops.enabled:
            return
        self.start(trainer)
        self.values = dict(parameter_count(trainer.model))
        self.sink.log_metrics(self.values, trainer.step)
        if not trainer.config.compile:
            self.counter = FirstForwardFlops(trainer.model)
            self.counter.install()

    def on_step_end(self, trainer: Trainer) -> None:
        counter, self.counter = self.counter, None
        if counter is None:
            return
        counter.remove()
        if counter.per_sample is None:
            log.warning("FLOPs per sample not counted: the model's forward was not called")
            return
        self.values["flops_per_sample"] = counter.per_sample
        self.sink.log_metrics({"flops_per_sample": counter.per_sample}, trainer.step)

    def on_train_end(self, trainer: Trainer, result: Any) -> None:
        if self.counter is not None:  # training ended before a step (a finished run resumed)
            self.counter.remove()
            self.counter = None


class SourceParams(DiagnosticCallback):
    """The source's ``params`` (e.g. which perceptual network the loss uses), logged once."""

    def __init__(self, source: Any, sink: DiagnosticsSink | None = None) -> None:
        super().__init__(sink)
        self.source = source

    def on_train_start(self, trainer: Trainer) -> None:
        params = dict(getattr(self.source, "params", {}) or {})
        if params:
            self.start(trainer)
            self.sink.log_params(params)


def engine_diagnostics() -> list[Callback]:
    """The diagnostics every job gets (`train_worker` adds them)."""
    return [StepScalars(), ModelCost()]


def diffusion_diagnostics(source: Any, scorer: Any = None) -> list[Callback]:
    """A diffusion job's diagnostics over ``source`` (module docstring); ``scorer(samples,
    metrics) -> {name: value}`` scores validation samples (`medgen.metrics.sample_scores`)."""
    return [
        SourceParams(source),
        LossByTimestep(source),
        RegionalLoss(source),
        WorstBatch(source),
        ValidationSamples(source, scorer),
    ]

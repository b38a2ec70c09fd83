"""Build each training job's model from its factory on the meta device and measure its step."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medgen.check_config.jobs import JobProbe, parameters_on_meta
from medgen.check_config.memory import StepMemory, measure_step
from medgen.metrics.errors import MissingWeightsError


@dataclass(frozen=True)
class ModelRow:
    """One line of the table: a job's model and the memory of one of its training steps per
    GPU, or the error that stopped the check (``error``: what the pipeline would refuse)."""

    pipeline: str
    model: str
    batch_size: int
    precision: str
    world_size: int
    memory: StepMemory | None
    error: str | None = None
    notes: tuple[str, ...] = ()


def _offline_perceptual(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """``options`` with the perceptual trunk random-initialised, or None when that changes
    nothing (its pretrained weights are a file on disk; the architecture is the same)."""
    perceptual = options.get("perceptual")
    if not isinstance(perceptual, Mapping) or not perceptual.get("pretrained_backbone", True):
        return None
    return {**options, "perceptual": {**perceptual, "pretrained_backbone": False}}


def build_task(probe: JobProbe):
    """``probe.factory(data, **options)`` with its parameters on the meta device; a missing
    perceptual weights file is replaced by the same trunk with random weights (noted),
    anything else propagates."""
    data = probe.data()
    try:
        with parameters_on_meta():
            return probe.factory(data, **probe.options), ()
    except MissingWeightsError as error:
        offline = _offline_perceptual(probe.options)
        if offline is None:
            raise
        with parameters_on_meta():
            task = probe.factory(data, **offline)
        del error  # its message names the file; the note says what the check did instead
        return task, (
            "the perceptual trunk's pretrained weights are not on this machine: "
            "measured with the same trunk random-initialised",
        )


def check_job(probe: JobProbe) -> ModelRow:
    """The probe's row; an exception becomes the row's ``error`` (type and message)."""
    training = probe.training
    row = ModelRow(
        pipeline=probe.pipeline,
        model=probe.model,
        batch_size=training.batch_size,
        precision=training.precision,
        world_size=1,
        memory=None,
        notes=probe.notes,
    )
    try:
        row = dataclasses.replace(row, world_size=probe.world_size)
        task, notes = build_task(probe)
        memory = measure_step(
            task.model,
            task.loss_fn,
            task.train_data[0],
            batch_size=training.batch_size,
            precision=training.precision,
            ema=training.ema_decay is not None,
            world_size=row.world_size,
        )
    except Exception as error:  # noqa: BLE001 - every failure is reported, none is hidden
        return dataclasses.replace(row, error=f"{type(error).__name__}: {error}")
    return dataclasses.replace(row, memory=memory, notes=(*row.notes, *notes))

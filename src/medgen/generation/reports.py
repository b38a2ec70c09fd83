"""Small JSON reports: one per trained model, and the run summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medgen.training import TrainingResult


def _last(history: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    records = [r for r in history if r.get("kind") == kind]
    return records[-1] if records else None


def training_report(
    result: TrainingResult,
    *,
    combination: str,
    role: str,
    seconds: float,
    train_slices: int,
    resolution: int,
    steps_before: int = 0,
) -> dict[str, Any]:
    """Steps, final losses and speed of one training node run (JSON-friendly)."""
    last_step = _last(result.history, "step")
    last_epoch = _last(result.history, "epoch")
    config = result.config
    steps_run = result.steps - steps_before
    images = steps_run * config.get("batch_size", 0) * config.get("accum_steps", 1)
    return {
        "combination": combination,
        "role": role,
        "steps": result.steps,
        "steps_this_run": steps_run,
        "epochs": round(result.epochs, 3),
        "final_loss": None if last_step is None else last_step["loss"],
        "final_epoch_loss": None if last_epoch is None else last_epoch["loss"],
        "seconds": round(seconds, 2),
        "images_per_second": round(images / seconds, 2) if seconds > 0 and steps_run else None,
        "train_slices": train_slices,
        "resolution": resolution,
        "training": dict(config),
        "history": list(result.history),
    }


def run_summary(
    trainings: Sequence[Mapping[str, Any]],
    generation: Mapping[str, Any],
    run_seconds: float | None,
) -> dict[str, Any]:
    """``summary.json``: combinations trained, steps, final losses, sampler, images, timings."""
    seconds = {f"train_{t['combination']}": t["seconds"] for t in trainings}
    seconds["generate"] = generation["seconds"]
    return {
        "combinations": [t["combination"] for t in trainings],
        "training": {
            t["combination"]: {
                k: t[k]
                for k in (
                    "role",
                    "steps",
                    "steps_this_run",
                    "epochs",
                    "final_loss",
                    "final_epoch_loss",
                    "images_per_second",
                    "train_slices",
                    "resolution",
                )
            }
            for t in trainings
        },
        "generation": {k: v for k, v in generation.items() if k != "seconds"},
        "seconds": {**seconds, "run_so_far": run_seconds},
    }

"""``data/08_reporting/autoencoder/summary.json`` and the same numbers in MLflow."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from medgen.training.callbacks import active_mlflow

RECONSTRUCTION_METRICS = ("psnr", "ssim", "mae", "mse", "lpips")


def reconstruction_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """Validation PSNR / SSIM / MAE (/ MSE, LPIPS) of a training report: the 2D job reports
    them under ``validation.overall``, the 3D stages under ``validation``."""
    validation = dict(report.get("validation") or {})
    values = dict(validation.get("overall") or validation)
    if "lpips" in validation:
        values["lpips"] = validation["lpips"]
    return {
        k: float(values[k])
        for k in RECONSTRUCTION_METRICS
        if isinstance(values.get(k), int | float) and math.isfinite(values[k])
    }


def _steps(report: Mapping[str, Any]) -> int | None:
    if "phases" in report:  # progressive training: one engine run per phase
        return sum(int(p.get("steps") or 0) for p in report["phases"])
    return report.get("steps")


def autoencoder_summary(reports: Mapping[str, Mapping[str, Any]], seconds: float | None) -> dict:
    """One entry per trained model, plus the run's wall time."""
    models = {}
    for name, report in reports.items():
        entry: dict[str, Any] = {"seconds": round(float(report.get("seconds") or 0.0), 2)}
        steps = _steps(report)
        if steps is not None:
            entry["steps"] = steps
        metrics = reconstruction_metrics(report)
        if metrics:
            entry["validation_reconstruction"] = metrics
        for key in ("final_loss", "final_losses", "perceptual_backbone"):
            if key in report:
                entry[key] = report[key]
        models[name] = entry
    return {
        "models": models,
        "run_seconds": None if seconds is None else round(seconds, 1),
        "metrics_note": "PSNR/MAE/MSE on [-1, 1] intensities (data range 2), SSIM via MONAI; "
        "reconstructions decode the posterior mean",
    }


def log_summary_to_mlflow(summary: Mapping[str, Any]) -> bool:
    """Log ``autoencoder/<model>/<metric>`` and ``.../seconds`` when a run is active."""
    mlflow = active_mlflow()
    if mlflow is None:
        return False
    metrics = {}
    for name, entry in summary["models"].items():
        metrics[f"autoencoder/{name}/seconds"] = entry["seconds"]
        for metric, value in (entry.get("validation_reconstruction") or {}).items():
            metrics[f"autoencoder/{name}/val_{metric}"] = value
    mlflow.log_metrics(metrics)
    return True

"""``data/08_reporting/autoencoder/summary.json`` and the same numbers in MLflow."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from medgen.autoencoder.latents import select_channels
from medgen.datasets import TensorBundle
from medgen.metrics.demo_checks import check_metrics, overall_status, reconstruction_check
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


def reconstruction_demo_checks(
    report_3d: Mapping[str, Any], volumes: TensorBundle
) -> dict[str, Any]:
    """The 3D autoencoder's validation PSNR / SSIM (``report_3d``, a patch-volume stage
    report) next to trilinear down/up-sampling of the same validation ``volumes`` at the
    same factor (`medgen.metrics.demo_checks.reconstruction_check`)."""
    images, _ = select_channels(volumes, report_3d.get("modalities"))
    config = report_3d["config"]
    checks = {
        "reconstruction_vs_trilinear": reconstruction_check(
            report_3d["validation"],
            images,
            factor=int(config["downsample_factor"]),
            latent_channels=int(config["latent_channels"]),
        )
    }
    return {"status": overall_status(checks), "checks": checks}


def autoencoder_summary(
    reports: Mapping[str, Mapping[str, Any]],
    seconds: float | None,
    demo_checks: Mapping[str, Any] | None = None,
) -> dict:
    """One entry per trained model, the demo checks, plus the run's wall time."""
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
        **({"demo_checks": dict(demo_checks)} if demo_checks is not None else {}),
        "run_seconds": None if seconds is None else round(seconds, 1),
        "metrics_note": "PSNR/MAE/MSE on [-1, 1] intensities (data range 2), SSIM via MONAI; "
        "reconstructions decode the posterior mean",
    }


def log_summary_to_mlflow(summary: Mapping[str, Any]) -> bool:
    """Log ``autoencoder/<model>/<metric>``, ``.../seconds`` and the demo checks
    (``autoencoder/demo_checks/<check>/passed`` and values) when a run is active."""
    mlflow = active_mlflow()
    if mlflow is None:
        return False
    metrics = {}
    for name, entry in summary["models"].items():
        metrics[f"autoencoder/{name}/seconds"] = entry["seconds"]
        for metric, value in (entry.get("validation_reconstruction") or {}).items():
            metrics[f"autoencoder/{name}/val_{metric}"] = value
    metrics.update(check_metrics(summary.get("demo_checks") or {}, "autoencoder/demo_checks"))
    mlflow.log_metrics(metrics)
    return True

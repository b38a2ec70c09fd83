"""``summary.json`` of the inpainting pipeline and its MLflow metrics.

The table (leaderboard scorer, every method on the same test cases): per method the mean, SD,
median and quartiles of SSIM, PSNR and MSE with n cases and n patients; the ablation rows name
their conditioning; the other scorer variant and the per-case rows follow.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from medgen.datasets import TensorBundle
from medgen.training.tracking import active_mlflow

NOTE = (
    "Scored as the BraTS local-synthesis leaderboard scores (mask-healthy only; intensities "
    "(x+1)/2 normalised by the 0.5/99.5 percentiles of t1n*(1-mask-healthy); 3D SSIM, 11-voxel window, "
    "averaged over the mask; PSNR with data range 1). At the demo's voxel size the 11-voxel "
    "window spans several cm, and the masks are a few voxels across: the numbers are not "
    "comparable with the 1 mm leaderboard."
)


def _finite(value: float) -> float | None:
    return value if isinstance(value, float) and math.isfinite(value) else None


def summary_report(
    scores: dict[str, Any],
    cases: TensorBundle,
    sampling: dict[str, Any],
    baseline_seconds: dict[str, float],
    diffusion: dict[str, Any],
    run_seconds: float | None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """``(summary, per-case frame)``."""
    scorer = scores["headline"]["scorer"]
    rows = []
    for variant, block in scores["variants"].items():
        for method, cases_rows in block["cases"].items():
            rows.extend({"scorer": variant, "method": method, **r} for r in cases_rows)
    per_case = pd.DataFrame(rows)
    summary = {
        "note": NOTE,
        "scorer": scorer,
        "n_cases": len(cases.metadata["case_ids"]),
        "n_patients": len(cases.metadata["subjects"]),
        "voxel_spacing_mm": cases.metadata.get("voxel_spacing_mm"),
        "size": cases.metadata.get("size"),
        "table": scores["variants"][scorer]["table"],
        "other_scorers": {v: b["table"] for v, b in scores["variants"].items() if v != scorer},
        "headline": scores["headline"],
        "sampling": sampling,
        "baseline_seconds": baseline_seconds,
        "diffusion_training": {k: v for k, v in diffusion.items() if k != "history"},
        "run_seconds": run_seconds,
    }
    return summary, per_case


def _metric_name(method: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]+", "_", method).strip("_")


def log_summary(summary: dict[str, Any]) -> bool:
    """``inpainting/<method>/<metric>_mean`` (and ``_median``) for the table, when a run is active."""
    mlflow = active_mlflow()
    if mlflow is None:
        return False
    metrics = {}
    for method, entry in summary["table"].items():
        for metric in ("ssim", "psnr", "mse"):
            for stat in ("mean", "median", "sd"):
                value = _finite(entry[metric][stat])
                if value is not None:
                    metrics[f"inpainting/{_metric_name(method)}/{metric}_{stat}"] = value
    mlflow.log_metrics(metrics)
    return True

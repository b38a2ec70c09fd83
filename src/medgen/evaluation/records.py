"""metrics.json records and their MLflow form.

Each record: ``metric, status, value, floor, backbone, mode, n_real, n_generated,
details``. ``status`` is

- ``ok``: value (finite) and floor; ``floor`` is null when no floor could be measured
  honestly, and ``details.no_floor`` says why (e.g. too few patients per half);
- ``failed``: the metric received NaN/Inf, returned a non-finite number, or raised;
  ``details.message`` is the error (type and text);
- ``skipped``: the metric is undefined for this data (not applicable: fewer than two
  samples, no lesion in any mask, images too small); ``details.message`` says why;
- ``missing_weights``: the backbone's weights are not on this machine;
  ``details.message`` says which file to place where.

value and floor are null unless ``ok``. Non-finite numbers become strings (strict JSON).
A source holding a failed record is ``failed`` (`medgen.evaluation.evaluate`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from medgen.metrics import MetricResult
from medgen.training.callbacks import active_mlflow

logger = logging.getLogger(__name__)
SCHEMA_VERSION = 1
RECORD_KEYS = (
    "metric",
    "status",
    "value",
    "floor",
    "backbone",
    "mode",
    "n_real",
    "n_generated",
    "details",
)


def metric_record(result: MetricResult) -> dict[str, Any]:
    data = result.to_dict()
    return {
        "metric": data["name"],
        "status": "ok",
        **{k: data[k] for k in RECORD_KEYS[2:]},
    }


def skipped_record(
    metric: str, backbone: str, message: str, status: str = "skipped"
) -> dict[str, Any]:
    return {
        "metric": metric,
        "status": status,
        "value": None,
        "floor": None,
        "backbone": backbone,
        "mode": None,
        "n_real": 0,
        "n_generated": 0,
        "details": {"message": message},
    }


def failed_record(metric: str, backbone: str, error: BaseException) -> dict[str, Any]:
    """The record of a metric whose inputs or computation failed, naming the error."""
    return skipped_record(metric, backbone, f"{type(error).__name__}: {error}", status="failed")


def _key(text: str) -> str:
    # MLflow metric names allow alphanumerics, _ - . / and spaces.
    return re.sub(r"[^A-Za-z0-9_./-]+", "_", text).strip("_")


def mlflow_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """``evaluation/<source>/<metric>[<backbone>]`` and ``.../floor`` for every ok record."""
    metrics: dict[str, float] = {}
    for source in report["sources"]:
        for record in source.get("metrics", []):
            if record["status"] != "ok":
                continue
            base = f"evaluation/{source['source']}/{record['metric']}/{_key(record['backbone'].split(' ')[0])}"
            for suffix, value in (("", record["value"]), ("/floor", record["floor"])):
                if isinstance(value, int | float) and math.isfinite(value):
                    metrics[_key(base + suffix)] = float(value)
    return metrics


def log_to_mlflow(report: Mapping[str, Any]) -> int:
    """Log the report's numbers into the active MLflow run (kedro-mlflow's); 0 if none is active."""
    mlflow = active_mlflow()
    if mlflow is None:
        logger.info("evaluation: no active MLflow run, metrics are in metrics.json only")
        return 0
    metrics = mlflow_metrics(report)
    if metrics:
        mlflow.log_metrics(metrics)
    return len(metrics)


def numbers_are_finite(obj: Any) -> bool:
    """True when every float in a nested JSON-like structure is finite."""
    if isinstance(obj, Mapping):
        return all(numbers_are_finite(v) for v in obj.values())
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
        return all(numbers_are_finite(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)

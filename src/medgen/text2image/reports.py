"""``summary.json`` of text2image (part 1) and its MLflow metrics."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from medgen.datasets import TensorBundle
from medgen.training.tracking import active_mlflow


def text2image_summary(
    generator: dict[str, Any],
    generation: dict[str, Any],
    agreement: dict[str, Any],
    pretrained: dict[str, Any],
    captioned: TensorBundle,
) -> dict[str, Any]:
    splits = captioned.metadata.get("extra_columns", {}).get("split") or []
    return {
        "data": {
            "rows_per_split": dict(Counter(str(s) for s in splits)),
            "rejected_rows": len(captioned.metadata.get("rejected", [])),
            "source": captioned.metadata.get("source"),
        },
        "generator": generator,
        "generation": generation,
        "prompt_agreement": agreement.get("agreement", agreement),
        "attribute_classifiers": agreement.get("training"),
        "pretrained": pretrained,
    }


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}/{key}", inner, out)
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        out[prefix] = float(value)


def log_summary(summary: dict[str, Any]) -> bool:
    """Training loss, timings and the agreement numbers as ``text2image/...`` metrics."""
    mlflow = active_mlflow()
    if mlflow is None:
        return False
    metrics: dict[str, float] = {}
    for key in ("final_loss", "seconds", "steps"):
        _flatten(f"text2image/generator/{key}", summary["generator"].get(key), metrics)
    _flatten("text2image/generation/seconds", summary["generation"].get("seconds"), metrics)
    _flatten("text2image/agreement", summary["prompt_agreement"], metrics)
    safe = {k.replace(" ", "_").replace("(", "").replace(")", ""): v for k, v in metrics.items()}
    mlflow.log_metrics(dict(list(safe.items())[:200]))
    return True

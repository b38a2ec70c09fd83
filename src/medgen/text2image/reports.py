"""``summary.json`` of text2image (parts 1 and 2) and its MLflow metrics."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from medgen.datasets import TensorBundle
from medgen.text2image.stages import mean_agreement
from medgen.training.tracking import active_mlflow

#: Part 2's reports, in the order the summarise node receives them.
PART2_REPORTS = (
    "ratings",
    "selector",
    "alignment",
    "filtered_finetune",
    "reinforce",
    "stages",
    "best_of_n",
    "pretrained_part2",
)


def text2image_summary(
    generator: dict[str, Any],
    generation: dict[str, Any],
    agreement: dict[str, Any],
    pretrained: dict[str, Any],
    captioned: TensorBundle,
    part2: dict[str, Any] | None = None,
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
        # the stages' attribute agreement, computed the same way (evaluation reads this one)
        "prompt_agreement_mean": mean_agreement(agreement.get("agreement", agreement)),
        "attribute_classifiers": agreement.get("training"),
        "pretrained": pretrained,
        **({"rlhf": rlhf_headline(part2), **part2} if part2 else {}),
    }


def stage_means(stages: dict[str, Any]) -> dict[str, Any]:
    """Per stage: the proxy means, the oracle's and the Fréchet distance."""
    return {
        name: {
            "reward": stage["proxy"]["reward"],
            "selector": stage["proxy"]["selector"],
            "policy": stage["proxy"]["policy"],
            "oracle_quality": stage["oracle"]["quality"],
            "attribute_agreement": stage["oracle"]["attribute_agreement"],
            "frechet": stage["frechet_to_real_heldout"].get("value"),
        }
        for name, stage in stages["stages"].items()
    }


def rlhf_headline(part2: dict[str, Any]) -> dict[str, Any]:
    """The numbers a reader wants first: scorer AUROCs (with their controls), proxy vs oracle
    gains per stage, the best-of-N acceptance."""
    stages = part2["stages"]
    return {
        "selector_auroc": part2["selector"].get("headline"),
        "alignment_auroc": part2["alignment"].get("headline"),
        "stage_means": stage_means(stages),
        "proxy_vs_oracle_gaps": stages["gaps"],
        "best_of_n_acceptance_rate": part2["best_of_n"]["acceptance_rate"],
        **_stable_diffusion_headline(part2.get("pretrained_part2") or {}),
    }


def _stable_diffusion_headline(report: dict[str, Any]) -> dict[str, Any]:
    """The same stage means and gaps for the Stable Diffusion stages, where they ran."""
    if report.get("status") != "ran":
        return {}
    stages = report["stages"]
    return {
        "stable_diffusion": {
            "stage_means": stage_means(stages),
            "proxy_vs_oracle_gaps": stages["gaps"],
            "best_of_n_acceptance_rate": report["best_of_n"]["acceptance_rate"],
        }
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
    if "rlhf" in summary:
        _flatten("text2image/rlhf", summary["rlhf"], metrics)
    safe = {k.replace(" ", "_").replace("(", "").replace(")", ""): v for k, v in metrics.items()}
    mlflow.log_metrics(dict(list(safe.items())[:900]))  # MLflow takes 1000 per batch
    return True

"""Scoring inpainted volumes as the BraTS local-synthesis leaderboard does, method by method.

Volumes are medgen's [-1, 1] (background -1); the scorer expects scanner intensities with
background 0, so every volume is scored as ``(x + 1) / 2``
(`medgen.metrics.brats_inpainting.to_scanner_range`). Only ``score_mask`` (BraTS
``mask-healthy``, where ground truth exists) is scored, and, as the leaderboard's ``score.py``
does, only that mask is excluded from the normalisation percentiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from medgen.datasets import TensorBundle
from medgen.metrics.brats_inpainting import (
    brats_inpainting_metrics,
    summarise_cases,
    to_scanner_range,
)

METRICS = ("ssim", "psnr", "mse")


def score_case(
    prediction: torch.Tensor,
    cases: TensorBundle,
    index: int,
    variant: str,
) -> dict[str, float]:
    """The scorer's metrics of one composited prediction ``[1, D, H, W]`` or ``[D, H, W]``."""
    return brats_inpainting_metrics(
        to_scanner_range(prediction.squeeze().double()),
        to_scanner_range(cases["t1n"][index].squeeze().double()),
        cases["score_mask"][index].squeeze(),
        variant=variant,
    )


def score_predictions(
    predictions: torch.Tensor, cases: TensorBundle, variant: str
) -> list[dict[str, Any]]:
    """One row per case: ``case_id``, ``subject`` and the metrics."""
    ids = cases.metadata["case_ids"]
    subjects = cases.metadata["subjects"]
    rows = []
    for i in range(predictions.shape[0]):
        row = score_case(predictions[i], cases, i, variant)
        subject = subjects[int(cases["subject_index"][i])]
        rows.append({"case_id": ids[i], "subject": subject, **row})
    return rows


def method_table(
    rows_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    keys: Sequence[str] = METRICS,
) -> dict[str, dict[str, Any]]:
    """Per method: mean, SD, median, quartiles of each metric, n cases and n patients."""
    table = {}
    for method, rows in rows_by_method.items():
        summary = summarise_cases(list(rows), keys)
        table[method] = {
            **summary,
            "n_cases": len(rows),
            "n_patients": len({row["subject"] for row in rows}),
        }
    return table

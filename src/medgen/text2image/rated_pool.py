"""Expert ratings with a known truth: the simulated rated pool, and checks of a ratings table.

The pool (per split, so held-out patients stay held out) holds real slices, degraded copies of
known kind and severity (`medgen.text2image.true_quality`) and images from a deliberately
under-trained generator, all at the generator's resolution. Each image is rated 1-3 by
``raters_per_image`` simulated raters: a rater of expert level ``L`` observes the oracle quality
``q`` plus Gaussian noise of SD ``rater_noise[L]`` (juniors are noisier) and answers 1 below
``thresholds[0]``, 3 above ``thresholds[1]``, else 2. The table has the design's columns
``image_path,rating,modality,expert_level,prompt`` and, for evaluation only, ``oracle_quality``,
``source``, ``degradation``, ``severity``, ``subject``, ``split``: no learned model reads them.

Real ratings enter through the catalog with the same five columns; `check_ratings` names every
bad row (rating outside 1-3, unknown expert level, empty prompt; unknown or unreadable images
are the CSV reader's bad rows) and applies the ``skip|fail`` policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from PIL import Image

from medgen.config import config_tree_from_params, require_positive_ints
from medgen.datasets import TensorBundle
from medgen.metrics.images import to_uint8
from medgen.text2image.true_quality import DEGRADATIONS, at_size, degrade, oracle_quality

RATING_COLUMNS = ("image_path", "rating", "modality", "expert_level", "prompt")
ORACLE_COLUMNS = ("oracle_quality", "source", "degradation", "severity", "subject", "split")


@dataclass(frozen=True)
class RatingsParams:
    """``text2image.ratings``: ``real_per_split`` real slices and ``degraded_per_split``
    degraded copies per split (random rows; severity uniform in [0, 1], kinds in turn from
    ``degradations``), ``raters_per_image``, ``expert_levels`` (each rating's level drawn
    uniformly), ``rater_noise`` (SD per level), ``thresholds`` (q → rating 1 | 2 | 3),
    ``on_bad_row`` (``skip|fail``, for real ratings), ``seed``."""

    real_per_split: int
    degraded_per_split: int
    degradations: tuple[str, ...]
    raters_per_image: int
    expert_levels: tuple[int, ...]
    rater_noise: dict[int, float]
    thresholds: tuple[float, float]
    on_bad_row: str
    seed: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RatingsParams:
        config = config_tree_from_params(cls, params, "text2image.ratings")
        require_positive_ints(config, "text2image.ratings", "raters_per_image")
        unknown = sorted(set(config.degradations) - set(DEGRADATIONS))
        if unknown:
            raise ValueError(
                f"text2image.ratings.degradations {unknown} unknown; known: {sorted(DEGRADATIONS)}"
            )
        noise = {int(k): float(v) for k, v in config.rater_noise.items()}
        missing = sorted(set(config.expert_levels) - set(noise))
        if missing:
            raise ValueError(
                f"text2image.ratings.rater_noise has no SD for expert levels {missing}"
            )
        if not 0 < config.thresholds[0] < config.thresholds[1] < 1:
            raise ValueError("text2image.ratings.thresholds must satisfy 0 < low < high < 1")
        if config.on_bad_row not in ("skip", "fail"):
            raise ValueError("text2image.ratings.on_bad_row must be 'skip' or 'fail'")
        object.__setattr__(config, "rater_noise", noise)
        return config


def _rows(split_of: Sequence[str], split: str, count: int, g: torch.Generator) -> list[int]:
    rows = [i for i, s in enumerate(split_of) if s == split]
    order = torch.randperm(len(rows), generator=g)[:count].tolist()
    return [rows[i] for i in order]


def simulate_rated_pool(
    captioned: TensorBundle,
    generated: torch.Tensor,
    generated_rows: Sequence[int],
    reference: Mapping[str, Any],
    params: RatingsParams,
) -> tuple[dict[str, Image.Image], pd.DataFrame]:
    """``({name: PNG}, ratings table)``; ``generated`` [M, 1, S, S] are the under-trained
    generator's images for the captions of ``generated_rows`` (their patients' split)."""
    size = int(reference["size"])
    meta = captioned.metadata
    extra = meta.get("extra_columns", {})
    split_of = [str(s) for s in extra.get("split", ["train"] * len(captioned["images"]))]
    subjects = [str(s) for s in extra.get("subject", [""] * len(split_of))]
    g = torch.Generator().manual_seed(params.seed)
    items: list[dict[str, Any]] = []
    images: list[torch.Tensor] = []

    def add(image: torch.Tensor, row: int, source: str, kind: str = "", severity: float = 0.0):
        items.append(
            {"row": row, "source": source, "degradation": kind, "severity": round(severity, 4)}
        )
        images.append(image)

    for split in dict.fromkeys(split_of):
        for row in _rows(split_of, split, params.real_per_split, g):
            add(at_size(captioned["images"][row : row + 1], size)[0], row, "real")
        degraded_rows = _rows(split_of, split, params.degraded_per_split, g)
        for n, row in enumerate(degraded_rows):
            kind = params.degradations[n % len(params.degradations)]
            severity = float(torch.rand((), generator=g))
            clean = at_size(captioned["images"][row : row + 1], size)
            seed = params.seed * 100_003 + len(items)
            add(
                degrade(clean, kind, torch.tensor([severity]), seed)[0],
                row,
                "degraded",
                kind,
                severity,
            )
    for image, row in zip(at_size(generated, size), generated_rows, strict=True):
        add(image, int(row), "undertrained_generator")
    if not items:
        raise ValueError("text2image.ratings: the rated pool is empty")
    stacked = torch.stack(images)
    quality = oracle_quality(stacked, reference)
    files, records = {}, []
    for index, (item, image, q) in enumerate(zip(items, stacked, quality.tolist(), strict=True)):
        row = item["row"]
        name = f"{split_of[row]}/{index:05d}_{item['source']}"
        files[name] = Image.fromarray(to_uint8(image[0]), mode="L")
        for _ in range(params.raters_per_image):
            level = params.expert_levels[
                int(torch.randint(len(params.expert_levels), (), generator=g))
            ]
            observed = q + params.rater_noise[level] * float(torch.randn((), generator=g))
            rating = (
                1 + int(observed >= params.thresholds[0]) + int(observed >= params.thresholds[1])
            )
            records.append(
                {
                    "image_path": f"rated/{name}.png",
                    "rating": rating,
                    "modality": meta["modalities"][row],
                    "expert_level": level,
                    "prompt": meta["texts"][row],
                    "oracle_quality": round(q, 5),
                    "source": item["source"],
                    "degradation": item["degradation"],
                    "severity": item["severity"],
                    "subject": subjects[row],
                    "split": split_of[row],
                }
            )
    return files, pd.DataFrame(records, columns=[*RATING_COLUMNS, *ORACLE_COLUMNS])


class BadRating(ValueError):
    """A ratings row that cannot be used: names the row, its image and the reason."""


def check_ratings(
    rated: TensorBundle, expert_levels: Sequence[int], on_bad_row: str
) -> tuple[list[int], list[dict[str, Any]]]:
    """The usable rows of a ratings bundle (`CSVImageDataset` with ``path_column: image_path``,
    ``text_column: prompt``) and the rejected ones ``{row, path, reason}``; under ``fail``
    the first bad row raises `BadRating`. Numeric ``rating`` / ``expert_level`` come from the
    bundle's extra columns."""
    extra = rated.metadata.get("extra_columns", {})
    missing = [c for c in ("rating", "expert_level") if c not in extra]
    if missing:
        raise BadRating(
            f"ratings table: missing column(s) {missing}; expected {list(RATING_COLUMNS)}"
        )
    paths = rated.metadata.get("paths") or [""] * len(extra["rating"])
    texts = rated.metadata.get("texts") or [""] * len(extra["rating"])
    levels = {int(v) for v in expert_levels}
    kept, rejected = [], []
    for i, (rating, level, prompt) in enumerate(
        zip(extra["rating"], extra["expert_level"], texts, strict=True)
    ):
        reason = _bad_reason(rating, level, prompt, levels)
        if reason is None:
            kept.append(i)
            continue
        if on_bad_row == "fail":
            raise BadRating(f"ratings row {i + 1}, image {paths[i]!r}: {reason}")
        rejected.append({"row": i + 1, "path": paths[i], "reason": reason})
    return kept, rejected


def _bad_reason(rating: Any, level: Any, prompt: Any, levels: set[int]) -> str | None:
    try:
        value = float(rating)
    except (TypeError, ValueError):
        return f"rating {rating!r} is not a number"
    if value != value or value not in (1.0, 2.0, 3.0):
        return f"rating {rating!r} is outside 1-3 (integers 1, 2 or 3)"
    try:
        expert = int(float(level))
    except (TypeError, ValueError):
        return f"expert_level {level!r} is not a number"
    if expert not in levels:
        return f"expert_level {level!r} is not one of {sorted(levels)}"
    if not str(prompt or "").strip():
        return "empty prompt"
    return None

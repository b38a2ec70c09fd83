"""Stage 2a: fine-tune the generator on the images the Selector calls good (the design's Stage 2).

The pool is the rated images of the training patients (real slices, degraded copies, the
under-trained generator's images), each with its prompt. The learned Selector, never the ratings'
oracle column, decides what is kept: ``score >= reward.selector_threshold``. Training continues
from the part-1 generator's weights through the one training job (`train_text2image` with
``init``), so the stage changes the generator itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgen.config import config_tree_from_params
from medgen.data.resize import resize_images
from medgen.datasets import TensorBundle
from medgen.text2image.generator import generator_weights, train_text2image
from medgen.text2image.quality_selector import score_images
from medgen.text2image.tokenizer import tokenize, tokenizer_from_json
from medgen.text2image.workflow import select, split_rows
from medgen.training import TrainingConfig


@dataclass(frozen=True)
class FilteredFinetuneParams:
    """``text2image.filtered_finetune``: ``training`` (the engine's options for the continued
    training), ``resources``, ``torch_threads``."""

    training: dict[str, Any]
    resources: dict[str, Any] | None = None
    torch_threads: int | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FilteredFinetuneParams:
        return config_tree_from_params(cls, params, "text2image.filtered_finetune")


def selector_kept_pool(
    rated: TensorBundle, selector: TensorBundle, selector_threshold: float, min_kept: int
) -> tuple[TensorBundle, list[int]]:
    """The rated pool's training images, one row per image, and the indices of those the
    Selector scores at or above ``selector_threshold``; ValueError when fewer than ``min_kept``
    (one batch) pass."""
    # one row per image (a ratings table lists an image once per rating)
    paths = rated.metadata.get("paths")
    rows = split_rows(rated, "train")
    if paths is not None:
        first: dict[str, int] = {}
        for i in rows:
            first.setdefault(paths[i], i)
        rows = list(first.values())
    if not rows:
        raise ValueError("text2image.filtered_finetune: the rated pool has no training rows")
    pool = select(rated, rows)
    scores = score_images(selector, pool["images"])
    kept = [i for i, s in enumerate(scores.tolist()) if s >= selector_threshold]
    if len(kept) < min_kept:
        raise ValueError(
            f"text2image.filtered_finetune: the Selector keeps {len(kept)} of {len(rows)} "
            f"training images at threshold {selector_threshold}, fewer than one batch: lower "
            "text2image.reward.selector_threshold or check the Selector's report"
        )
    return pool, kept


def kept_pool_report(pool: TensorBundle, kept: list[int], selector_threshold: float) -> dict:
    """What the filter kept; the composition by source is for the reader only (the filter never
    sees these labels)."""
    sources = pool.metadata.get("extra_columns", {}).get("source")
    total = len(pool["images"])
    return {
        "pool_training_images": total,
        "kept": len(kept),
        "kept_fraction": round(len(kept) / total, 4),
        "selector_threshold": selector_threshold,
        "pool_by_source": dict(Counter(sources)) if sources else None,
        "kept_by_source": dict(Counter(sources[i] for i in kept)) if sources else None,
    }


def selector_filtered_finetune(
    generator: TensorBundle,
    rated: TensorBundle,
    selector: TensorBundle,
    tokenizer_json: Mapping[str, Any],
    selector_threshold: float,
    params: FilteredFinetuneParams,
    checkpoint_dir: str | Path,
) -> tuple[TensorBundle, dict[str, Any]]:
    """The fine-tuned generator bundle (same metadata) and a report of what was kept."""
    batch_size = TrainingConfig.from_dict(params.training).batch_size
    pool, kept = selector_kept_pool(rated, selector, selector_threshold, batch_size)
    train = select(pool, kept)
    meta = generator.metadata
    resolution = int(meta["resolution"])
    images = resize_images(train["images"], (resolution,) * 2).clamp(-1, 1)
    tokens = tokenize(tokenizer_from_json(tokenizer_json), train.metadata["texts"])
    task_config = meta["task_config"]
    outcome, _ = train_text2image(
        images,
        tokens,
        strategy=task_config["strategy"],
        channels=task_config["modalities"],
        network=meta["network"],
        tokenizer_info=meta["tokenizer_info"],
        training=params.training,
        checkpoint_dir=checkpoint_dir,
        resources=params.resources,
        torch_threads=params.torch_threads,
        init=generator,
        name="text2image_filtered",
    )
    losses = [r["loss"] for r in outcome.result.history if r.get("kind") == "step"]
    report = {
        **kept_pool_report(pool, kept, selector_threshold),
        "steps": outcome.result.steps,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "seconds": round(outcome.seconds, 1),
        "skipped": outcome.skipped,
    }
    return TensorBundle(generator_weights(outcome), dict(meta)), report

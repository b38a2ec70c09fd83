"""Per-kind evaluators and their registry.

A source kind is a predicate on the loaded source plus a function returning metric
records; adding one (3D volumes, inpainting, text->image) is one function and one
``SourceKind`` entry in :data:`SOURCE_KINDS`. Kinds are tried in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from medgen.evaluation.context import EvaluationContext
from medgen.evaluation.records import metric_record, skipped_record
from medgen.evaluation.sources import GeneratedSource
from medgen.metrics import (
    MetricResult,
    conditioning_fidelity,
    fid_with_floor,
    lpips_diversity_with_floor,
    ms_ssim_diversity_with_floor,
)

Records = list[dict[str, Any]]


@dataclass(frozen=True)
class SourceKind:
    name: str
    matches: Callable[[GeneratedSource], bool]
    evaluate: Callable[[GeneratedSource, EvaluationContext], Records]


def _generated(
    source: GeneratedSource, ctx: EvaluationContext
) -> tuple[torch.Tensor, torch.Tensor | None]:
    n = (
        len(source.images)
        if ctx.max_generated is None
        else min(len(source.images), ctx.max_generated)
    )
    masks = None if source.masks is None else source.masks[:n]
    return source.images[:n].clamp(-1, 1), masks


def _attempt(name: str, backbone: str, compute: Callable[[], MetricResult]) -> dict[str, Any]:
    # Too few samples or all-empty masks make a metric undefined: record why, go on.
    try:
        return metric_record(compute())
    except ValueError as error:
        return skipped_record(name, backbone, str(error))


def fid_records(real: torch.Tensor, generated: torch.Tensor, ctx: EvaluationContext) -> Records:
    """FID with its patient-disjoint real-vs-real floor for every requested backbone
    (or why it is missing). ``real`` is the reference in its stored order, so that the
    reference's ``subject_index`` labels it."""
    records = []
    batch_size = int(ctx.params.fid.batch_size)
    groups = ctx.reference_groups
    for name, backbone in ctx.backbones.items():
        if isinstance(backbone, str):
            records.append(skipped_record("fid", name, backbone, status="missing_weights"))
            continue
        records.append(
            _attempt(
                "fid",
                backbone.name,
                lambda b=backbone: fid_with_floor(
                    real, generated, b, groups=groups, seed=ctx.seed, batch_size=batch_size
                ),
            )
        )
    return records


def diversity_records(
    real: torch.Tensor, generated: torch.Tensor, ctx: EvaluationContext
) -> Records:
    """LPIPS and MS-SSIM pairwise diversity of the generated set, next to the real set's."""
    lpips_pairs = ctx.params.lpips.max_pairs
    ssim_pairs = ctx.params.ms_ssim.max_pairs
    return [
        _attempt(
            "lpips_diversity",
            ctx.lpips.name,
            lambda: lpips_diversity_with_floor(
                ctx.lpips, real, generated, max_pairs=lpips_pairs, seed=ctx.seed
            ),
        ),
        _attempt(
            "ms_ssim_diversity",
            "none (pixel space)",
            lambda: ms_ssim_diversity_with_floor(
                real, generated, max_pairs=ssim_pairs, seed=ctx.seed
            ),
        ),
    ]


def fidelity_record(
    source: GeneratedSource, generated: torch.Tensor, masks: torch.Tensor, ctx: EvaluationContext
) -> dict[str, Any]:
    """Dice of a real-trained segmenter on generated images vs their conditioning masks."""
    model, info = ctx.segmenter(source.target_names, source.size)
    real = ctx.real_images(source.target_names, source.size)
    real_masks = ctx.real_masks(source.size)
    record = _attempt(
        "conditioning_dice",
        "unet-segmenter",
        lambda: conditioning_fidelity(
            model,
            generated,
            masks,
            real,
            real_masks,
            real_groups=ctx.reference_groups,
            seed=ctx.seed,
        ),
    )
    record["details"]["segmenter"] = info
    return record


def evaluate_image_2d(source: GeneratedSource, ctx: EvaluationContext) -> Records:
    """2D images (optionally mask-conditioned): FID, diversity, conditioning fidelity."""
    generated, masks = _generated(source, ctx)
    real = ctx.real_images(source.target_names, source.size)
    records = fid_records(real, generated, ctx) + diversity_records(real, generated, ctx)
    if masks is not None and ctx.params.fidelity.enabled:
        records.append(fidelity_record(source, generated, masks, ctx))
    return records


def lesion_fraction(masks: torch.Tensor) -> torch.Tensor:
    """Per-mask fraction of pixels inside the lesion."""
    return (masks > 0).float().flatten(1).mean(dim=1)


def evaluate_mask_2d(source: GeneratedSource, ctx: EvaluationContext) -> Records:
    """Generated lesion masks: FID/diversity against real masks, lesion statistics."""
    generated, _ = _generated(source, ctx)
    real = ctx.real_masks(source.size) * 2 - 1  # same [-1, 1] encoding as the generated mask
    records = fid_records(real, generated, ctx) + diversity_records(real, generated, ctx)
    for record in records:
        record["details"]["note"] = "scored on lesion masks mapped to [-1, 1]"
    gen_area, real_area = lesion_fraction(generated), lesion_fraction(real)
    for name, statistic in (
        ("lesion_present_fraction", lambda a: float((a > 0).float().mean())),
        ("mean_lesion_area_fraction", lambda a: float(a.mean())),
    ):
        result = MetricResult(
            name=name,
            value=statistic(gen_area),
            floor=statistic(real_area),
            backbone="none (pixel count)",
            n_real=len(real_area),
            n_generated=len(gen_area),
            details={"floor_meaning": "the same statistic on the real reference masks"},
        )
        records.append(metric_record(result))
    return records


SOURCE_KINDS: list[SourceKind] = [
    SourceKind("mask_2d", lambda s: s.images.ndim == 4 and s.mode == "seg", evaluate_mask_2d),
    # slices that declare which real modalities they are (latent_diffusion's); text2image's
    # mixed-modality prompt images and 3D volumes have no evaluator here yet ("no evaluator")
    SourceKind(
        "image_2d",
        lambda s: s.images.ndim == 4 and bool(s.metadata.get("target_names")),
        evaluate_image_2d,
    ),
]


def kind_of(source: GeneratedSource) -> SourceKind | None:
    return next((kind for kind in SOURCE_KINDS if kind.matches(source)), None)

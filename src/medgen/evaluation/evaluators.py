"""Per-kind evaluators and their registry.

A source kind is a predicate on the loaded source plus a function returning metric
records; adding one (3D volumes, inpainting, text->image) is one function and one
``SourceKind`` entry in :data:`SOURCE_KINDS`. Kinds are tried in order.

Every metric goes through :func:`attempt`, which decides its status: ``skipped`` only
when the metric is undefined for this data (`medgen.metrics.errors.MetricNotApplicable`,
with the reason), ``failed`` for NaN/Inf inputs, a non-finite result or any other error
(with the reason), ``ok`` otherwise. A source with a failed metric is ``failed``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from medgen.evaluation.context import EvaluationContext
from medgen.evaluation.records import failed_record, metric_record, skipped_record
from medgen.evaluation.sources import GeneratedSource
from medgen.metrics import (
    MetricResult,
    choose_ms_ssim_config,
    conditioning_fidelity,
    fid_with_floor,
    lpips_diversity_with_floor,
    ms_ssim_diversity_with_floor,
)
from medgen.metrics.errors import MetricNotApplicable, require_finite

logger = logging.getLogger(__name__)
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
    # clamp keeps NaN (attempt() fails on it); it only pulls finite overshoot into range
    return source.images[:n].clamp(-1, 1), masks


def attempt(
    name: str,
    backbone: str,
    compute: Callable[[], MetricResult],
    inputs: Mapping[str, torch.Tensor | None] | None = None,
) -> dict[str, Any]:
    """One metric record: ``compute()`` after checking every named input is finite.

    The status follows the module docstring; the reason of a skip or a failure is the
    record's ``details.message``.
    """
    try:
        for what, values in (inputs or {}).items():
            if values is not None:
                require_finite(values, what)
        result = compute()
        numbers = {"value": result.value, "floor": result.floor}
        bad = {k: v for k, v in numbers.items() if v is not None and not math.isfinite(v)}
        if bad:
            raise FloatingPointError(f"{name} came out non-finite: {bad}")
        return metric_record(result)
    except MetricNotApplicable as reason:
        logger.info("evaluation: %s (%s) not applicable: %s", name, backbone, reason)
        return skipped_record(name, backbone, str(reason))
    except Exception as error:  # a failed metric is reported, never hidden or skipped
        logger.error("evaluation: %s (%s) failed: %s", name, backbone, error, exc_info=True)
        return failed_record(name, backbone, error)


def fid_records(real: torch.Tensor, generated: torch.Tensor, ctx: EvaluationContext) -> Records:
    """FID with its patient-disjoint real-vs-real floor for every requested backbone
    (or why it is missing). ``real`` is the reference in its stored order, so that the
    reference's ``subject_index`` labels it."""
    records = []
    fid = ctx.params.fid
    groups = ctx.reference_groups
    for name, backbone in ctx.backbones.items():
        if isinstance(backbone, str):
            records.append(skipped_record("fid", name, backbone, status="missing_weights"))
            continue
        records.append(
            attempt(
                "fid",
                backbone.name,
                lambda b=backbone: fid_with_floor(
                    real,
                    generated,
                    b,
                    groups=groups,
                    min_groups_per_half=ctx.min_patients_per_half,
                    covariance=fid.covariance,
                    seed=ctx.seed,
                    batch_size=int(fid.batch_size),
                ),
                {"generated images": generated, "real reference images": real},
            )
        )
    return records


def _ms_ssim_config(size: tuple[int, ...]):
    try:
        return choose_ms_ssim_config(size)
    except ValueError as error:  # images too small for any multi-scale filter
        raise MetricNotApplicable(str(error)) from error


def _lpips_accepts(ctx: EvaluationContext, size: tuple[int, ...]) -> None:
    """MetricNotApplicable when the LPIPS trunk cannot take images this small (AlexNet's
    pools leave nothing of 16x16); probed once per size with one blank pair."""
    blank = torch.zeros(1, 1, *size)
    try:
        ctx.lpips.distance(blank, blank)
    except RuntimeError as error:
        raise MetricNotApplicable(
            f"{ctx.lpips.name} cannot take {size[0]}x{size[1]} images ({error})"
        ) from error


def diversity_records(
    real: torch.Tensor, generated: torch.Tensor, ctx: EvaluationContext
) -> Records:
    """LPIPS and MS-SSIM pairwise diversity of the generated set, next to the real set's."""
    lpips_pairs = ctx.params.lpips.max_pairs
    ssim_pairs = ctx.params.ms_ssim.max_pairs
    inputs = {"generated images": generated, "real reference images": real}

    def lpips_diversity() -> MetricResult:
        _lpips_accepts(ctx, tuple(real.shape[2:]))
        return lpips_diversity_with_floor(
            ctx.lpips, real, generated, max_pairs=lpips_pairs, seed=ctx.seed
        )

    return [
        attempt(
            "lpips_diversity",
            ctx.lpips.name,
            lpips_diversity,
            inputs,
        ),
        attempt(
            "ms_ssim_diversity",
            "none (pixel space)",
            lambda: ms_ssim_diversity_with_floor(
                real,
                generated,
                config=_ms_ssim_config(tuple(real.shape[2:])),
                max_pairs=ssim_pairs,
                seed=ctx.seed,
            ),
            inputs,
        ),
    ]


def fidelity_record(
    source: GeneratedSource, generated: torch.Tensor, masks: torch.Tensor, ctx: EvaluationContext
) -> dict[str, Any]:
    """Dice of a real-trained segmenter on generated images vs their conditioning masks."""
    real = ctx.real_images(source.target_names, source.size)
    real_masks = ctx.real_masks(source.size)
    info: dict[str, Any] = {}

    def compute() -> MetricResult:
        for what, m in (("conditioning", masks), ("real reference", real_masks)):
            if not bool((m.flatten(1) > 0).any()):
                raise MetricNotApplicable(f"no {what} mask holds a lesion: Dice is undefined")
        model, trained = ctx.segmenter(source.target_names, source.size)
        info.update(trained)
        return conditioning_fidelity(
            model,
            generated,
            masks,
            real,
            real_masks,
            real_groups=ctx.reference_groups,
            seed=ctx.seed,
        )

    record = attempt(
        "conditioning_dice",
        "unet-segmenter",
        compute,
        {"generated images": generated, "conditioning masks": masks, "real images": real},
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
    for name, statistic in (
        ("lesion_present_fraction", lambda a: float((a > 0).float().mean())),
        ("mean_lesion_area_fraction", lambda a: float(a.mean())),
    ):

        def compute(statistic=statistic, name=name) -> MetricResult:
            gen_area, real_area = lesion_fraction(generated), lesion_fraction(real)
            return MetricResult(
                name=name,
                value=statistic(gen_area),
                floor=statistic(real_area),
                backbone="none (pixel count)",
                n_real=len(real_area),
                n_generated=len(gen_area),
                details={"floor_meaning": "the same statistic on the real reference masks"},
            )

        # a NaN mask pixel is not "no lesion" (nan > 0 is False): check before counting
        records.append(attempt(name, "none (pixel count)", compute, {"generated masks": generated}))
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

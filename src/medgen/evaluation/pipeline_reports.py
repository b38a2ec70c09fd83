"""metrics.json records for the sources their own pipeline scores: 3D volumes, inpainting,
text2image; and for the two pipelines that generate nothing, data_processing (the real
cohort every number is measured against) and autoencoder (reconstruction beside trilinear
resampling), so that the report covers all six.

These pipelines measure their outputs against references the evaluation pipeline does not
hold (real 3D volumes, the BraTS ground truth inside each mask, held-out prompts with an
oracle), so evaluation reads their ``summary.json`` instead of scoring a second time, and
turns the numbers into the same records as every other source: one ``metric`` with a value,
the comparison it must be read against (``floor``: the same number real-vs-real where one
exists; trivial baselines and controls under ``details``), its backbone and counts.

A summary that lacks a number it should hold gives a ``failed`` record naming the key, never
a silent gap; a number its pipeline could not measure keeps that pipeline's reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from medgen.evaluation.records import metric_record, skipped_record
from medgen.metrics import MetricResult

Records = list[dict[str, Any]]
Summary = Mapping[str, Any]

# the catalog summary each source's records come from (docs/evaluation.md)
SUMMARY_OF = {
    "data_processing": "data_summary",
    "autoencoder": "autoencoder.summary",
    "latent_diffusion_3d": "latent_diffusion.volumes.summary",
    "inpainting": "inpainting.summary",
    "text2image_rlhf": "text2image.summary",
}


def _record(name: str, value: Any, backbone: str, *, floor: Any = None, **details: Any):
    """An ``ok`` record, or ``failed`` naming why when ``value`` is missing."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        reason = details.pop("reason", None) or f"the pipeline's summary holds no {name}"
        return skipped_record(name, backbone, str(reason), status="failed")
    n_real, n_generated = details.pop("n_real", 0), details.pop("n_generated", 0)
    return metric_record(
        MetricResult(
            name=name,
            value=float(value),
            floor=None if floor is None else float(floor),
            backbone=backbone,
            n_real=int(n_real or 0),
            n_generated=int(n_generated or 0),
            details={k: v for k, v in details.items() if v is not None},
        )
    )


def lesion_effect_record(effect: Mapping[str, Any], n: Any) -> dict[str, Any]:
    """The 3D class-conditional lesion effect beside the real one and the autoencoder's
    ceiling (a check configured in ``latent_diffusion.volumes.demo_checks``)."""
    generated, real = effect.get("generated") or {}, effect.get("real") or {}
    return _record(
        "lesion_class_effect",
        generated.get("effect"),
        "none (enhancement map: post − pre contrast)",
        floor=real.get("effect"),
        floor_meaning="the same class effect on the real training volumes",
        ratio=effect.get("ratio"),
        # the real volumes through the autoencoder: what a latent generator can show
        autoencoder_ceiling=(effect.get("autoencoder_reconstructions") or {}).get("effect"),
        generated_auroc=generated.get("auroc"),
        real_auroc=real.get("auroc"),
        check=effect.get("status"),
        criterion=effect.get("criterion"),
        reason=effect.get("reason") or generated.get("reason"),
        n_generated=n,
        n_real=(real.get("n_present") or 0) + (real.get("n_absent") or 0),
    )


def data_records(summary: Summary) -> Records:
    """The real cohort: subjects kept of those generated or read (rejected ones are in
    ``rejected_subjects.csv``), patients and slices per split."""
    splits = summary.get("subjects_per_split") or {}
    held_out = {k: splits.get(k) for k in ("val", "test")}
    return [
        _record(
            "subjects_valid",
            summary.get("subjects_valid"),
            "none (counts)",
            headline=True,
            subjects_total=summary.get("subjects_total"),
            rejected=len(summary.get("rejected") or []),
            subjects_per_split=splits,
            slices_per_split=summary.get("slices_per_split"),
            n_real=summary.get("subjects_valid"),
        ),
        _record(
            "held_out_patients",
            None if None in held_out.values() else sum(held_out.values()),
            "none (counts)",
            per_split=held_out,
        ),
    ]


def autoencoder_records(summary: Summary) -> Records:
    """Validation reconstruction of each autoencoder; the 3D one beside trilinear down- and
    up-sampling at the same compression (its demo check), the trivial baseline."""
    models = summary.get("models") or {}
    check = ((summary.get("demo_checks") or {}).get("checks") or {}).get(
        "reconstruction_vs_trilinear", {}
    )
    records = []
    for name, model in models.items():
        numbers = model.get("validation_reconstruction") or {}
        final_3d = name == "patch_volume_stage2"
        baseline = (check.get("trilinear") or {}) if final_3d else {}
        for metric in ("psnr", "ssim"):
            records.append(
                _record(
                    f"{name}/reconstruction_{metric}",
                    numbers.get(metric),
                    "none (validation split, [-1, 1] intensities)",
                    baseline=None
                    if metric not in baseline
                    else {"name": "trilinear", "value": baseline[metric]},
                    compression=check.get("compression") if final_3d else None,
                    check=check.get("status") if final_3d else None,
                    headline=final_3d and metric == "psnr",
                    n_real=check.get("n") if final_3d else None,
                )
            )
    return records


def volume_records(summary: Summary) -> Records:
    """The 3D role's demo checks: 2.5D Fréchet distance beside its baselines and floor,
    brain-shape Dice against the mean real brain mask, diversity across volumes and, where
    configured, the class-conditional lesion effect beside the real one."""
    checks = summary.get("demo_checks", {})
    if checks.get("status") == "not run":
        return [skipped_record("frechet_2p5d", "-", checks.get("reason", "checks not run"))]
    found = checks.get("checks", {})
    fd = found.get("frechet_2p5d", {})
    shape = found.get("brain_shape", {})
    diversity = found.get("diversity", {})
    n = summary.get("generation", {}).get("n_volumes")
    return [
        _record(
            "frechet_2p5d",
            fd.get("generated"),
            str(fd.get("backbone", "in-domain 2D encoder")),
            floor=fd.get("real_floor"),
            floor_meaning="as many real training volumes scored the same way",
            baselines=fd.get("baselines"),
            check=fd.get("status"),
            criterion=fd.get("criterion"),
            reason=fd.get("reason"),
            headline=True,
            n_generated=fd.get("n_generated", n),
            n_real=fd.get("n_reference"),
        ),
        _record(
            "brain_shape_dice_min",
            shape.get("min_generated_dice"),
            "none (foreground mask)",
            floor=shape.get("real_dice_mean"),
            floor_meaning="mean Dice of the real volumes against the same mean mask",
            check=shape.get("status"),
            criterion=shape.get("criterion"),
            n_generated=n,
        ),
        _record(
            "diversity_ratio",
            diversity.get("ratio"),
            "none (voxel spread)",
            floor=1.0,
            floor_meaning="the real volumes' own spread (ratio 1 by definition)",
            check=diversity.get("status"),
            criterion=diversity.get("criterion"),
            n_generated=diversity.get("n_generated", n),
        ),
        *([lesion_effect_record(found["lesion_effect"], n)] if "lesion_effect" in found else []),
    ]


def inpainting_records(summary: Summary) -> Records:
    """The BraTS-scorer table: each metric of the conditioned diffusion model, with every
    other method (baselines, the unconditioned ablation, the leaking oracle) in details."""
    table = summary.get("table", {})
    headline = summary.get("headline", {})
    scorer = str(summary.get("scorer", "brats"))
    records = []
    for metric in ("ssim", "psnr", "mse"):
        means = {m: row.get(metric, {}).get("mean") for m, row in table.items()}
        learned = means.get("diffusion")
        best = headline.get("best_baseline_by_ssim")
        records.append(
            _record(
                f"masked_{metric}",
                learned,
                f"none (BraTS local-synthesis scorer, {scorer} variant)",
                methods=means,
                best_baseline_by_ssim=best,
                baseline=None if best is None else {"name": best, "value": means.get(best)},
                headline=metric == "ssim",
                higher_is_better=metric != "mse",
                n_generated=summary.get("n_cases"),
                n_real=summary.get("n_cases"),
                n_patients=summary.get("n_patients"),
            )
        )
    return records


def text2image_records(summary: Summary) -> Records:
    """Part 1's prompt agreement; part 2's scorer AUROCs beside their shuffled controls, and
    per stage the oracle quality, attribute agreement, proxy-minus-oracle gap and in-domain
    Fréchet distance (floor: real train vs real held-out at the same n)."""
    part1 = summary.get("prompt_agreement", {})
    records = [
        _record(
            "prompt_attribute_agreement",
            summary.get("prompt_agreement_mean"),
            "part 1 attribute classifiers (trained on the real training split)",
            per_attribute=part1,
        )
    ]
    if "rlhf" not in summary:
        return records
    head, stages = summary["rlhf"], summary.get("stages", {})
    selector, alignment = head.get("selector_auroc") or {}, head.get("alignment_auroc") or {}
    records += [
        _record(
            "selector_auroc_vs_oracle",
            selector.get("vs_oracle"),
            "Selector (ViT trained on the simulated ratings)",
            floor=0.5,
            floor_meaning="chance",
            vs_ratings=selector.get("vs_ratings"),
            shuffled_label_control=selector.get("shuffled_control_vs_ratings"),
            untrained_network=selector.get("untrained_vs_ratings"),
            ece=selector.get("ece"),
        ),
    ]
    for kind, numbers in alignment.items():
        numbers = numbers or {}
        balanced = numbers.get("balanced_auroc")
        records.append(
            _record(
                f"policy_auroc/{kind}",
                balanced if balanced is not None else numbers.get("auroc"),
                "Policy (image-text dual encoder)",
                floor=0.5,
                floor_meaning="chance (balanced over the swapped value where given)",
                pooled_auroc=numbers.get("auroc"),
                chance_sd=numbers.get("chance_sd"),
                n_negative=numbers.get("n_negative"),
            )
        )
    reference = stages.get("real_heldout_reference", {})
    real_fd = reference.get("frechet_real_train_vs_heldout", {})
    gaps = head.get("proxy_vs_oracle_gaps", {})
    for name, stage in stages.get("stages", {}).items():
        fd = stage.get("frechet_to_real_heldout", {})
        records.append(
            _record(
                f"{name}/frechet_in_domain",
                fd.get("value"),
                "text2image attribute trunk, PCA",
                floor=real_fd.get("value"),
                floor_meaning="real training vs real held-out images at the same n",
                reason=fd.get("reason"),
                n_generated=fd.get("n_a"),
                n_real=fd.get("n_b"),
                d=fd.get("d"),
            )
        )
        oracle = stage.get("oracle", {})
        records.append(
            _record(
                f"{name}/oracle_quality",
                oracle.get("quality"),
                "simulated-quality oracle (not trained)",
                floor=reference.get("oracle_quality"),
                floor_meaning="the oracle on real held-out images",
                headline=name == list(stages["stages"])[-1],  # the final generator
                proxy=stage.get("proxy"),
                attribute_agreement=oracle.get("attribute_agreement"),
                n_generated=stage.get("n_images"),
            )
        )
        if name in gaps:
            records.append(
                _record(
                    f"{name}/quality_gap",
                    gaps[name].get("quality_gap"),
                    "Selector gain minus oracle gain",
                    floor=0.0,
                    floor_meaning="no reward hacking: the proxy gains what the oracle gains",
                    gains=gaps[name],
                )
            )
    acceptance = (summary.get("best_of_n") or {}).get("acceptance_rate")
    records.append(_record("best_of_n_acceptance_rate", acceptance, "Selector threshold"))
    return records


RECORDS_OF: dict[str, Callable[[Summary], Records]] = {
    "data_processing": data_records,
    "autoencoder": autoencoder_records,
    "latent_diffusion_3d": volume_records,
    "inpainting": inpainting_records,
    "text2image_rlhf": text2image_records,
}


def pipeline_report_entry(pipeline: str, summary: Summary, entry: dict[str, Any]) -> dict:
    """``entry`` (a source's identity) completed with the records read from its summary."""
    try:
        records = RECORDS_OF[pipeline](summary)
    except Exception as error:  # a malformed summary fails this source, never the run
        reason = f"reading {SUMMARY_OF[pipeline]}: {type(error).__name__}: {error}"
        return {**entry, "status": "failed", "kind": "pipeline_report", "metrics": [], "failures": [reason]}  # fmt: skip
    failures = [
        f"{r['metric']}: {r['details'].get('message', '')}"
        for r in records
        if r["status"] == "failed"
    ]
    return {
        **entry,
        "status": "failed" if failures else "evaluated",
        "kind": "pipeline_report",
        "read_from": SUMMARY_OF[pipeline],
        "metrics": records,
        "failures": failures,
    }

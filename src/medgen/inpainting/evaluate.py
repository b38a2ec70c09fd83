"""The inpainting pipeline's test-time work: every method on the same test cases, scored alike.

Methods: the diffusion model under each conditioning variant (``diffusion`` = honest, the
default; ``diffusion (no conditioning)``; ``diffusion (oracle tissue, leaks ground truth: upper
bound)``), the deterministic 3D U-Net, and the classical fills. Every prediction is composited
so the known voxels are the input's, and scored by the leaderboard scorer and by the pip
``inpainting`` package's definition.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from medgen.autoencoder.loading import load_autoencoder
from medgen.datasets import TensorBundle
from medgen.diffusion import build_task
from medgen.inpainting.baselines import fill_cases
from medgen.inpainting.cases import conditioning_maps
from medgen.inpainting.inference import inpaint_cases
from medgen.inpainting.params import SamplingParams, ScoringParams
from medgen.inpainting.scoring import method_table, score_predictions
from medgen.inpainting.unet_baseline import composite, predict_unet_baseline
from medgen.models import build_backbone

#: decode(encode(t1n)) composited: what a perfect latent model could reach at best; it reads the
#: ground truth, so it is a reference row, not a method
AUTOENCODER_CEILING = (
    "autoencoder reconstruction (oracle, reads ground truth: ceiling of latent methods)"
)

METHOD_NAMES = {
    "honest": "diffusion",
    "none": "diffusion (no conditioning)",
    "oracle": "diffusion (oracle tissue, leaks ground truth: upper bound)",
}


def load_diffusion_model(bundle: TensorBundle, autoencoder: TensorBundle):
    """``(task, network)`` from the model bundle the training node wrote."""
    meta = bundle.metadata
    task = build_task(meta["task_config"], load_autoencoder(autoencoder))
    network = build_backbone(
        task.backbone_config(meta["backbone"]), task.in_channels, task.out_channels
    )
    network.load_state_dict(bundle.tensors)
    return task, network.eval()


def sample_diffusion(
    model: TensorBundle,
    autoencoder: TensorBundle,
    model_input: TensorBundle,
    cases: TensorBundle,
    params: SamplingParams,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Mean and SD maps of every test case under each configured conditioning variant."""
    task, network = load_diffusion_model(model, autoencoder)
    resampling = params.resampling
    tensors, timing = {}, {}
    for variant in params.conditionings:
        mean, sd, seconds = inpaint_cases(
            task,
            network,
            model_input,
            cases,
            variant=variant,
            samples_per_case=params.samples_per_case,
            num_steps=params.num_steps,
            resampling=resampling,
            batch_size=params.batch_size,
            seed=params.seed,
        )
        tensors[f"{variant}_mean"], tensors[f"{variant}_sd"] = mean, sd
        timing[variant] = round(seconds, 2)
    with torch.no_grad():
        latents = task.space.encode(model_input["latents"])
        decoded = torch.cat([task.space.decode(z[None]).cpu() for z in latents])
    tensors["autoencoder_reconstruction"] = composite(
        cases["voided"], decoded.clamp(-1, 1), cases["mask"]
    )
    # the default variant's prediction under the name every samples bundle uses
    tensors["images"] = tensors[f"{params.conditionings[0]}_mean"]
    solver_steps = resampling.network_steps(task.strategy.num_solver_steps(params.num_steps))
    report = {
        "strategy": task.strategy.name,
        "sampler": task.strategy.sampler,
        "num_steps": params.num_steps,
        "network_evaluations": task.strategy.network_evaluations(solver_steps),
        "resampling": {"repeats": resampling.repeats, "jump_length": resampling.jump_length},
        "samples_per_case": params.samples_per_case,
        "seconds": timing,
        "seconds_per_volume_sample": {
            v: round(s / (len(cases["t1n"]) * params.samples_per_case), 3)
            for v, s in timing.items()
        },
        "weights": model.metadata.get("weights"),
    }
    metadata = {
        "case_ids": cases.metadata["case_ids"],
        "target_names": ["t1n"],
        "images_are": f"the {params.conditionings[0]} variant's mean of K samples, composited",
        "conditionings": list(params.conditionings),
        **report,
    }
    return TensorBundle(tensors, metadata), report


def run_baselines(
    cases: TensorBundle,
    unet: TensorBundle,
    prior: TensorBundle,
    methods: tuple[str, ...],
) -> tuple[TensorBundle, dict[str, float]]:
    """The classical fills and the U-Net on the test cases, and their seconds."""
    tensors, seconds = {}, {}
    for name in methods:
        start = time.perf_counter()
        tensors[name] = fill_cases(cases, name)
        seconds[name] = round(time.perf_counter() - start, 2)
    meta = unet.metadata
    with_maps = TensorBundle(
        {**cases.tensors, "conditioning": conditioning_maps(cases, "honest", prior["prior"])},
        cases.metadata,
    )
    start = time.perf_counter()
    tensors["unet_3d"] = predict_unet_baseline(
        unet.tensors,
        with_maps,
        network=meta["network"],
        use_conditioning=meta["use_conditioning"],
    )
    seconds["unet_3d"] = round(time.perf_counter() - start, 2)
    return TensorBundle(tensors, {"case_ids": cases.metadata["case_ids"]}), seconds


def predictions_by_method(
    samples: TensorBundle, baselines: TensorBundle
) -> dict[str, torch.Tensor]:
    """Every scored prediction by method name (the autoencoder ceiling as a reference row)."""
    methods = {METHOD_NAMES[v]: samples[f"{v}_mean"] for v in samples.metadata["conditionings"]}
    methods.update(baselines.tensors)
    if "autoencoder_reconstruction" in samples.tensors:
        methods[AUTOENCODER_CEILING] = samples["autoencoder_reconstruction"]
    return methods


def score_methods(
    cases: TensorBundle,
    samples: TensorBundle,
    baselines: TensorBundle,
    params: ScoringParams,
) -> dict[str, Any]:
    """The method x metric table for each scorer variant, and every per-case row."""
    predictions = predictions_by_method(samples, baselines)
    result: dict[str, Any] = {"variants": {}}
    for variant in (params.variant, *params.other_variants):
        rows = {m: score_predictions(p, cases, variant) for m, p in predictions.items()}
        result["variants"][variant] = {"table": method_table(rows), "cases": rows}
    table = result["variants"][params.variant]["table"]
    learned = [m for m in table if m.startswith("diffusion") and "oracle" not in m]
    baselines_only = [m for m in table if not m.startswith("diffusion") and "oracle" not in m]
    best_baseline = max(baselines_only, key=lambda m: table[m]["ssim"]["mean"])
    result["headline"] = {
        "scorer": params.variant,
        "best_baseline_by_ssim": best_baseline,
        "diffusion_ssim": table[METHOD_NAMES["honest"]]["ssim"]["mean"]
        if METHOD_NAMES["honest"] in table
        else None,
        "best_baseline_ssim": table[best_baseline]["ssim"]["mean"],
        "diffusion_beats_best_baseline": bool(
            learned and table[learned[0]]["ssim"]["mean"] > table[best_baseline]["ssim"]["mean"]
        ),
    }
    return result

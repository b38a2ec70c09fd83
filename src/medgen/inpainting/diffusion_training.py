"""Training the inpainting diffusion model through the one training job.

The network is a MONAI 3D ``DiffusionModelUNet`` on the autoencoder's latents; the task is the
core's ``inpaint`` mode in a ``precomputed_latent`` space (`medgen.diffusion.inpainting_mode`):
input = noisy t1n latent (clean voided latent outside the mask) + voided latent + mask + the
4 conditioning maps, loss = the strategy's MSE over the latent cells of ``score_mask``.

One network learns every conditioning variant: the training set lists each case under each
variant in proportion to ``conditioning_mix`` (tenths), so an ablation row differs from the
default only in what the network is given at test time. Validation every ``val_every`` steps
samples a few val cases (honest conditioning, fixed noise), decodes, composites and scores them
with the leaderboard scorer; its SSIM picks the best checkpoint and drives early stopping.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from medgen.autoencoder.loading import load_autoencoder
from medgen.datasets import TensorBundle
from medgen.diffusion import DiffusionTask, build_task
from medgen.diffusion.diagnostics import DiffusionDiagnostics
from medgen.diffusion.perceptual import attach_perceptual
from medgen.inpainting.params import CONDITIONINGS, DiffusionParams
from medgen.inpainting.scoring import score_case
from medgen.inpainting.unet_baseline import composite
from medgen.metrics.perceptual_distance import build_perceptual_distance
from medgen.metrics.sample_scores import SampleScorer
from medgen.training import JobOutcome, TrainingConfig, TrainingJob, TrainingTask, run_job
from medgen.training.checkpoint import load_checkpoint
from medgen.training.diagnostics import diffusion_diagnostics
from medgen.training.ranks import get_local_rank
from medgen.training.results import TrainingResult, ema_module_state
from medgen.training.setup import resolve_device

CONDITIONING_CHANNELS = 4
SCORER = "synapse_scorer"


def task_config(params: DiffusionParams, model_input: TensorBundle) -> dict[str, Any]:
    """The diffusion task of the inpainting model for a model-input bundle's latent space."""
    meta = model_input.metadata
    return {
        "strategy": params.strategy_config(),
        "mode": "inpaint",
        "modalities": ["t1n"],
        "mode_options": {
            "target": "t1n",
            "known_key": "voided",
            "region_key": "mask",
            "loss_region_key": "score_mask",
            "conditioning_key": "conditioning",
            "conditioning_channels": CONDITIONING_CHANNELS,
            "region_dilation": params.region_dilation,
        },
        "space": {
            "name": "precomputed_latent",
            "latent_channels": meta["latent_channels"],
            "downsample_factor": meta["downsample_factor"],
            "scale_factor": meta["scale_factor"],
        },
    }


def mix_counts(mix: Mapping[str, float]) -> dict[str, int]:
    """How often each case is listed under each variant: the mix in tenths."""
    counts = {v: round(float(mix.get(v, 0.0)) * 10) for v in CONDITIONINGS}
    if not any(counts.values()):
        raise ValueError(f"conditioning_mix {dict(mix)} gives no training item at tenths")
    return counts


class InpaintingLatents(Dataset):
    """Items ``{latents, voided, mask, score_mask, conditioning}`` per (case, variant)."""

    def __init__(self, bundle: TensorBundle, counts: Mapping[str, int]) -> None:
        self.bundle = bundle
        self.items = [
            (i, variant)
            for i in range(len(bundle["latents"]))
            for variant, n in counts.items()
            for _ in range(n)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return case_batch(self.bundle, [self.items[index][0]], self.items[index][1], squeeze=True)


def case_batch(
    bundle: TensorBundle, indices: list[int], variant: str, squeeze: bool = False
) -> dict[str, torch.Tensor]:
    """The mode's batch for ``indices`` of a model-input bundle under one conditioning."""
    t = bundle.tensors
    batch = {
        "latents": t["latents"][indices],
        "voided": t["voided"][indices],
        "mask": t["mask"][indices].float(),
        "score_mask": t["score_mask"][indices].float(),
        "conditioning": t[f"conditioning_{variant}"][indices],
    }
    return {k: v[0] for k, v in batch.items()} if squeeze else batch


def validation_fn(
    task: DiffusionTask,
    model_input: TensorBundle,
    cases: TensorBundle,
    *,
    num_steps: int,
    seed: int,
):
    """``val_fn(model)``: sample, decode, composite and score the val cases (fixed noise)."""

    def val_fn(model: torch.nn.Module) -> dict[str, float]:
        indices = list(range(len(cases["t1n"])))
        generator = torch.Generator().manual_seed(seed)
        batch = case_batch(model_input, indices, "honest")
        decoded = task.inpaint(model, batch, num_steps=num_steps, generator=generator).cpu()
        filled = composite(cases["voided"], decoded.clamp(-1, 1), cases["mask"])
        rows = [score_case(filled[i], cases, i, SCORER) for i in indices]
        inside = cases["score_mask"].bool()
        image_mse = float(((filled - cases["t1n"])[inside] ** 2).mean())
        return {
            "ssim": sum(r["ssim"] for r in rows) / len(rows),
            "psnr": sum(r["psnr"] for r in rows) / len(rows),
            "image_mse": image_mse,
        }

    return val_fn


def build_inpainting_task(
    data: Mapping[str, TensorBundle],
    *,
    task_config: dict[str, Any],
    backbone: dict[str, Any],
    conditioning_mix: dict[str, float],
    validation_steps: int,
    seed: int,
    device: str = "auto",
    perceptual_term: dict[str, Any] | None = None,
) -> TrainingTask:
    """The job's factory, run in every worker: the train latents, a fresh seeded network, a
    validation that decodes with the frozen autoencoder ``data["autoencoder"]``, the
    ``training.perceptual`` term and the training diagnostics (on the val cases)."""
    autoencoder = load_autoencoder(data["autoencoder"], resolve_device(device, get_local_rank()))
    task = build_task(task_config, autoencoder)
    torch.manual_seed(seed)
    model = task.build_model(backbone)
    attach_perceptual(task, perceptual_term, build_perceptual_distance)
    val_items = InpaintingLatents(data["val"], {"honest": 1})
    source = DiffusionDiagnostics(task, val_items, split="val")
    return TrainingTask(
        model=model,
        loss_fn=task.loss,
        train_data=InpaintingLatents(data["train"], mix_counts(conditioning_mix)),
        val_fn=validation_fn(
            task, data["val"], data["val_cases"], num_steps=validation_steps, seed=seed
        ),
        callbacks=diffusion_diagnostics(source, SampleScorer()),
    )


def best_weights(result: TrainingResult) -> tuple[dict[str, torch.Tensor], str]:
    """The weights to sample with: the best checkpoint's (EMA if any), else the last ones."""
    if result.best_checkpoint is not None and Path(result.best_checkpoint).exists():
        state = load_checkpoint(result.best_checkpoint, map_location="cpu")
        ema = ema_module_state(state["ema"])
        return (ema if ema is not None else state["model"]), "best"
    # the result holds the averaged network's own state (a checkpoint holds the wrapper's)
    return (result.ema_state if result.ema_state is not None else result.model_state), "last"


def val_subset(bundle: TensorBundle, n: int, keys: tuple[str, ...]) -> TensorBundle:
    """The first ``n`` cases of ``bundle`` with only ``keys`` (what validation needs)."""
    n = min(n, len(bundle[keys[0]]))
    if n < 1:
        raise ValueError(
            "inpainting validation needs at least one val case; the val split is empty"
        )
    return TensorBundle({k: bundle[k][:n] for k in keys}, dict(bundle.metadata))


def train_inpainting_diffusion(
    model_input_train: TensorBundle,
    model_input_val: TensorBundle,
    cases_val: TensorBundle,
    autoencoder: TensorBundle,
    params: DiffusionParams,
    checkpoint_dir: str | Path,
) -> tuple[JobOutcome, dict[str, Any]]:
    """Train through `run_job`; the outcome and the task config the model samples with."""
    config = TrainingConfig.from_dict(params.training)
    tc = task_config(params, model_input_train)
    build_task(tc)  # fail here, in the node, on a bad strategy
    n = params.validation.cases
    data = {
        "train": model_input_train,
        "val": TensorBundle(
            {k: v[:n] for k, v in model_input_val.tensors.items()}, model_input_val.metadata
        ),
        "val_cases": val_subset(cases_val, n, ("t1n", "voided", "mask", "score_mask")),
        "autoencoder": autoencoder,
    }
    job = TrainingJob(
        name="inpainting_diffusion",
        factory=build_inpainting_task,
        config=config,
        checkpoint_dir=checkpoint_dir,
        data=data,
        options={
            "task_config": tc,
            "backbone": dict(params.backbone),
            "conditioning_mix": dict(params.conditioning_mix),
            "validation_steps": params.validation.num_steps,
            "seed": config.seed,
        },
        runtime_options={"device": config.device},
        resources=params.resources,
        torch_threads=params.torch_threads,
        artifact_path="inpainting/diffusion",
    )
    return run_job(job), tc

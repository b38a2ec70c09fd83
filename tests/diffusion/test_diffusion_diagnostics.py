"""The diffusion side of the training diagnostics: per-sample losses through the real engine,
and the fixed-noise validation samples of every kind of mode."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import MODALITIES, tiny_unet, toy_batch
from torch.utils.data import Dataset

from medgen.diffusion import build_task
from medgen.diffusion.diagnostics import DiffusionDiagnostics
from medgen.training import TrainingConfig, train
from medgen.training.diagnostics import DiagnosticsSink, diffusion_diagnostics
from medgen.training.diagnostics_config import LoggingConfig


class Items(Dataset):
    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return next(iter(self.batch.values())).shape[0]

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.batch.items()}


def toy_items(n=8, size=16):
    batch = toy_batch(batch=n, size=size)
    batch["seg"][0] = 0  # the first item has no lesion
    return Items({"images": batch["images"], "seg": batch["seg"]})


class Recording(DiagnosticsSink):
    def __init__(self):
        super().__init__(prefix="job")
        self.metrics, self.figures = [], []

    @property
    def wants_figures(self):
        return True

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))

    def log_params(self, params):
        pass

    def log_figure(self, figure, name):
        self.figures.append(name)


@pytest.mark.parametrize("strategy", ["ddpm", "rflow", "edm"])
def test_timestep_bins_of_a_diffusion_job_sum_to_its_epoch_losses(strategy):
    task = build_task(
        {
            "strategy": {"name": strategy, "num_inference_steps": 2},
            "mode": "bravo",
            "modalities": MODALITIES,
        }
    )
    model = tiny_unet(task.in_channels, task.out_channels)
    items = toy_items()
    source = DiffusionDiagnostics(task, items)
    logging = LoggingConfig.from_params(
        {
            "validation": {"every": 4, "samples": 2},
            "intermediate_steps": {"every": 4, "frames": 2},
            "timestep_losses": {"bins": 5},
        }
    )
    config = TrainingConfig(
        max_steps=4,
        batch_size=4,
        lr=1e-3,
        log_every=2,
        progress=False,
        device="cpu",
        logging=logging,
    )
    sinks = []
    callbacks = diffusion_diagnostics(source, scorer=None)
    for callback in callbacks:
        callback.sink = Recording()
        sinks.append(callback.sink)
    result = train(model, task.loss, items, config, callbacks=callbacks)
    epochs = [r for r in result.history if r["kind"] == "epoch"]
    assert len(epochs) == 2
    for record in epochs:
        counts, means = record["timestep_counts"], record["timestep_losses"]
        assert sum(counts) == 8 and len(counts) == 5
        weighted = sum(n * m for n, m in zip(counts, means, strict=True) if n) / 8
        assert weighted == pytest.approx(record["loss"], rel=1e-5)
        assert record["region_loss_inside"] > 0 and record["region_loss_outside"] > 0
    figures = [name for sink in sinks for name in sink.figures]
    assert "timestep_loss_heatmap" in figures and "validation_step_00000004" in figures
    assert "trajectory_step_00000004" in figures and "worst_batch_epoch_0002" in figures


def test_bravo_samples_are_paired_with_their_real_images_and_masks():
    task = build_task(
        {
            "strategy": {"name": "rflow", "num_inference_steps": 3},
            "mode": "bravo",
            "modalities": MODALITIES,
        }
    )
    model = tiny_unet(task.in_channels, task.out_channels).eval()
    source = DiffusionDiagnostics(task, toy_items())
    batch = source.validation_batch(3)
    assert bool((batch["seg"] > 0).flatten(1).any(1).all())  # lesion items first
    first = source.sample(model, batch, seed=5, trace_frames=3)
    again = source.sample(model, batch, seed=5, trace_frames=0)
    assert first.paired and torch.equal(first.real, batch["images"][:, 3:4])
    assert torch.equal(first.generated, again.generated)  # the same noise every time
    assert first.generated.shape == (3, 1, 16, 16) and float(first.generated.abs().max()) <= 1
    assert torch.equal(first.masks, (batch["seg"] > 0).float())
    assert [round(t) for t, _, _ in first.trajectory] == [1000, 667, 333]
    assert first.score_region is None and again.trajectory == []
    assert source.reference == "train split: real images for the same condition"


def test_unconditional_and_class_samples_are_not_paired():
    seg_task = build_task(
        {
            "strategy": {"name": "ddpm", "num_inference_steps": 2},
            "mode": "seg",
            "modalities": MODALITIES,
        }
    )
    source = DiffusionDiagnostics(seg_task, toy_items())
    samples = source.sample(tiny_unet(1, 1).eval(), source.validation_batch(2), seed=0)
    assert not samples.paired and samples.masks is None and samples.real.shape == (2, 1, 16, 16)
    class_task = build_task(
        {
            "strategy": {"name": "rflow", "num_inference_steps": 2},
            "mode": "class",
            "modalities": ["a"],
            "mode_options": {"label_key": "label", "class_names": ["no", "yes"]},
            "space": {
                "name": "precomputed_latent",
                "latent_channels": 2,
                "downsample_factor": 4,
                "scale_factor": 0.5,
            },
        }
    )
    latents = torch.randn(4, 2, 4, 4)
    items = Items({"latents": latents, "label": torch.tensor([0, 1, 1, 0])})
    source = DiffusionDiagnostics(class_task, items)

    class Net(torch.nn.Module):  # a stand-in denoiser that takes class labels
        def forward(self, x, timesteps, class_labels=None):
            return torch.zeros_like(x)

    samples = source.sample(Net(), source.validation_batch(2), seed=0)
    assert not samples.paired and samples.labels == ["no", "yes"]
    assert torch.allclose(samples.real, latents[:2])  # unscaled, not decodable here
    assert samples.generated.shape == (2, 2, 4, 4)
    assert source.reference == "train split latents (not decodable here)"


def test_inpainting_samples_are_scored_inside_their_region():
    task = build_task(
        {
            "strategy": {"name": "ddpm", "num_inference_steps": 2, "clip_sample": False},
            "mode": "inpaint",
            "modalities": ["t1n"],
            "mode_options": {"loss_region_key": "score_mask"},
        }
    )
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 8, 8, 8, generator=g) * 2 - 1
    mask = torch.zeros(3, 1, 8, 8, 8)
    mask[:, :, 2:5, 2:5, 2:5] = 1
    score = mask.clone()
    score[0] = 0  # the first case has nothing to score
    items = Items(
        {
            "images": images,
            "voided": torch.where(mask > 0, -1.0, images),
            "mask": mask,
            "score_mask": score,
        }
    )
    source = DiffusionDiagnostics(task, items, split="val")
    batch = source.validation_batch(2)
    assert torch.equal(batch["images"], images[1:3])  # cases with a scored region first
    model = tiny_unet(task.in_channels, task.out_channels, spatial_dims=3).eval()
    samples = source.sample(model, batch, seed=0)
    assert samples.paired and torch.equal(samples.score_region, score[1:3])
    outside = mask[1:3] == 0
    assert torch.equal(samples.generated[outside], batch["voided"][outside].clamp(-1, 1))
    assert source.reference == "val split: real images for the same condition"

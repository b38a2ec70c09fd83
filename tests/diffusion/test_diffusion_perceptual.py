"""The perceptual term: its gradient reaches the diffusion network (also through a latent
decoder), it is the configured weight times the distance, and missing weights are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusion_helpers import MODALITIES, tiny_unet, toy_batch
from torch import nn

from medgen.diffusion import DiffusionTask, LatentSpace, build_mode, build_strategy, build_task
from medgen.diffusion.perceptual import PerceptualTerm, attach_perceptual
from medgen.metrics import MissingWeightsError
from medgen.metrics.perceptual_distance import (
    PerceptualDistance,
    _FeatureImages,
    build_perceptual_distance,
)


def feature_distance(seed: int = 0) -> PerceptualDistance:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2))
    return PerceptualDistance(_FeatureImages(net, rgb_unit_range=False), "test-features")


class Pool2x(nn.Module):
    """A differentiable stand-in autoencoder: average pool / nearest upsample by 2."""

    def encode(self, x):
        return F.avg_pool2d(x, 2)

    def decode(self, z):
        return F.interpolate(z, scale_factor=2, mode="nearest")


@pytest.mark.parametrize("strategy", ["ddpm", "rflow", "edm"])
@pytest.mark.parametrize("latent", [False, True])
def test_the_perceptual_gradient_reaches_the_model(strategy, latent):
    space = LatentSpace(Pool2x(), latent_channels=1, downsample_factor=2) if latent else None
    options = {"clip_sample": False} if strategy == "ddpm" else {}
    task = DiffusionTask(build_strategy(strategy, options), build_mode("bravo", MODALITIES), space)
    model = tiny_unet(task.in_channels, task.out_channels)
    batch = toy_batch(batch=2, size=16)
    mse = task.loss(model, batch, torch.Generator().manual_seed(1))
    distance = feature_distance()
    task.perceptual = PerceptualTerm(0.5, distance)
    seen = []
    task.loss_observers.append(seen.append)
    total = task.loss(model, batch, torch.Generator().manual_seed(1))
    details = seen[0]
    assert torch.allclose(details.mse.mean(), mse.detach())
    assert torch.allclose(total.detach(), (details.mse + 0.5 * details.perceptual).mean())
    assert float(details.perceptual.min()) > 0
    # the perceptual part alone reaches the network; the feature network stays frozen
    model.zero_grad()
    (0.5 * seen_perceptual(task, model, batch)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert all(p.grad is None for p in distance.parameters())


def seen_perceptual(task, model, batch):
    """The perceptual term of one loss computation, with its graph."""
    z0, cond = task.prepare(batch)
    generator = torch.Generator().manual_seed(1)
    terms = task.strategy.training_terms(model, z0, cond, generator=generator)
    return task.perceptual(task, terms, batch).mean()


def test_a_zero_weight_attaches_nothing_and_a_latent_space_needs_its_decoder():
    task = build_task({"strategy": {"name": "rflow"}, "mode": "bravo", "modalities": MODALITIES})
    built = []
    assert attach_perceptual(task, {"weight": 0.0}, built.append) is None
    assert task.perceptual is None and built == []
    term = attach_perceptual(task, {"weight": 0.2}, lambda cfg: feature_distance())
    assert task.perceptual is term and term.weight == 0.2 and term.name == "test-features"
    latent = build_task(
        {
            "strategy": {"name": "rflow"},
            "mode": "class",
            "modalities": ["a"],
            "space": {"name": "precomputed_latent", "latent_channels": 1, "downsample_factor": 2},
        }
    )
    with pytest.raises(ValueError, match="no autoencoder to decode"):
        attach_perceptual(latent, {"weight": 0.2}, lambda cfg: feature_distance())


def test_missing_weights_raise_the_metrics_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache
    with pytest.raises(MissingWeightsError, match="lpips-alex"):
        build_perceptual_distance({"network": "lpips", "pretrained_backbone": True})
    with pytest.raises(MissingWeightsError, match="radimagenet_resnet50"):
        build_perceptual_distance(
            {"network": "radimagenet_resnet50", "weights_path": str(tmp_path / "r50.pt")}
        )
    with pytest.raises(MissingWeightsError, match="in_domain"):
        build_perceptual_distance({"network": "in_domain", "weights_path": str(tmp_path / "x")})
    # the 2D job's factory, as a worker runs it with training.perceptual switched on
    from medgen.datasets import TensorBundle
    from medgen.generation.training_job import build_diffusion_task

    batch = toy_batch(batch=2, size=32)
    with pytest.raises(MissingWeightsError):
        build_diffusion_task(
            {"slices": TensorBundle({"images": batch["images"], "seg": batch["seg"]})},
            task_config={"strategy": {"name": "rflow"}, "mode": "bravo", "modalities": MODALITIES},
            backbone={
                "channels": [8, 16],
                "attention_levels": [False, False],
                "num_head_channels": 8,
                "norm_num_groups": 8,
            },
            seed=0,
            device="cpu",
            perceptual_term={"weight": 0.1, "network": "lpips", "pretrained_backbone": True},
        )


def test_a_random_trunk_lpips_is_named_so_and_compares_volumes_plane_by_plane():
    distance = build_perceptual_distance({"network": "lpips", "pretrained_backbone": False})
    assert "random-init" in distance.name
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, 32, generator=g) * 2 - 1
    same = distance(x, x)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-6)
    y = x.clone()
    y[1] = -y[1]
    moved = distance(x, y)
    assert moved[0] == pytest.approx(0.0, abs=1e-6) and moved[1] > 0.01
    planes = [distance(x.select(a, 16), y.select(a, 16)) for a in (2, 3, 4)]
    assert torch.allclose(moved, torch.stack(planes).mean(0))

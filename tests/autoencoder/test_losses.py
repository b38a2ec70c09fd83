"""Autoencoder losses: KL against torch.distributions, LPIPS as a frozen loss, LSGAN loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from medgen.autoencoder.losses import (
    PerceptualLoss,
    adversarial_loss,
    build_perceptual_loss,
    kl_divergence,
)
from medgen.metrics.errors import MissingWeightsError
from medgen.metrics.lpips_metric import torchvision_trunk_weights_file
from tests.torch_threads import single_torch_thread  # noqa: F401


@pytest.fixture(scope="module")
def loss() -> PerceptualLoss:
    return PerceptualLoss(net="alex", pretrained_backbone=False, seed=0)


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("shape", [(3, 2, 4, 4), (2, 3, 2, 3, 4)])
def test_kl_divergence_equals_torch_distributions(shape):
    mu = images(*shape, seed=1)
    sigma = torch.rand(*shape, generator=torch.Generator().manual_seed(2)) + 0.1
    posterior = torch.distributions.Normal(mu, sigma)
    prior = torch.distributions.Normal(torch.zeros(shape), torch.ones(shape))
    expected = torch.distributions.kl_divergence(posterior, prior).flatten(1).sum(1).mean()
    torch.testing.assert_close(kl_divergence(mu, sigma), expected)
    assert kl_divergence(torch.zeros(shape), torch.ones(shape)) == 0


def test_kl_divergence_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shapes"):
        kl_divergence(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 2))


def test_adversarial_loss_is_least_squares_after_monai_leaky_relu():
    logits = images(2, 1, 5, 5, seed=3)
    activated = F.leaky_relu(logits, 0.05)
    loss = adversarial_loss()
    torch.testing.assert_close(
        loss(logits, target_is_real=True, for_discriminator=False), ((activated - 1) ** 2).mean()
    )
    torch.testing.assert_close(
        loss(logits, target_is_real=False, for_discriminator=True), (activated**2).mean()
    )


def test_perceptual_loss_is_zero_on_identical_images_and_differentiable(loss):
    x, y = images(2, 1, 32, 32), images(2, 1, 32, 32, seed=1)
    assert loss(x, x) == 0
    y.requires_grad_(True)
    value = loss(x, y)
    value.backward()
    assert value > 0 and y.grad is not None and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())


def test_perceptual_loss_stays_in_eval_mode_inside_a_training_parent(loss):
    parent = torch.nn.Sequential(loss)
    parent.train()
    assert not loss.training and not any(m.training for m in loss.modules())
    x, y = images(2, 1, 32, 32), images(2, 1, 32, 32, seed=1)
    assert loss(x, y) == loss(x, y)  # no dropout


def test_each_channel_is_scored_as_grayscale_and_averaged(loss):
    x, y = images(2, 2, 32, 32), images(2, 2, 32, 32, seed=1)
    per_channel = [loss(x[:, c : c + 1], y[:, c : c + 1]) for c in range(2)]
    torch.testing.assert_close(loss(x, y), torch.stack(per_channel).mean())
    grey = x[:, :1].repeat(1, 3, 1, 1), y[:, :1].repeat(1, 3, 1, 1)
    torch.testing.assert_close(per_channel[0], loss.lpips(*grey).mean())


def test_3d_central_mode_averages_the_three_orthogonal_central_slices():
    loss = PerceptualLoss(net="squeeze", pretrained_backbone=False, slices_3d="central")
    x, y = images(2, 1, 20, 22, 24), images(2, 1, 20, 22, 24, seed=1)
    planes = [
        loss(x[:, :, 10], y[:, :, 10]),
        loss(x[:, :, :, 11], y[:, :, :, 11]),
        loss(x[:, :, :, :, 12], y[:, :, :, :, 12]),
    ]
    torch.testing.assert_close(loss(x, y), torch.stack(planes).mean())


def test_3d_random_mode_draws_slices_from_the_global_rng():
    loss = PerceptualLoss(net="squeeze", pretrained_backbone=False, slices_per_plane=2)
    x, y = images(1, 1, 20, 21, 22), images(1, 1, 20, 21, 22, seed=1)
    torch.manual_seed(5)
    value = loss(x, y)
    torch.manual_seed(5)
    planes = []
    for axis in (2, 3, 4):
        index = torch.randperm(x.shape[axis])[:2]
        xs = (
            x.index_select(axis, index)
            .movedim(axis, 0)
            .reshape(2, 1, *x.shape[2:axis], *x.shape[axis + 1 :])
        )
        ys = (
            y.index_select(axis, index)
            .movedim(axis, 0)
            .reshape(2, 1, *y.shape[2:axis], *y.shape[axis + 1 :])
        )
        planes.append(loss(xs, ys))
    torch.testing.assert_close(value, torch.stack(planes).mean())


def test_too_small_images_and_bad_shapes_are_refused(loss):
    with pytest.raises(ValueError, match="at least 31x31"):
        loss(images(1, 1, 16, 16), images(1, 1, 16, 16))
    with pytest.raises(ValueError, match="equal shapes"):
        loss(images(1, 1, 32, 32), images(1, 2, 32, 32))


def test_missing_hub_weights_name_the_file_and_where_it_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert torchvision_trunk_weights_file("alex") == expected
    with pytest.raises(MissingWeightsError) as info:
        PerceptualLoss(net="alex", pretrained_backbone=True)
    message = str(info.value)
    assert str(expected) in message and "torchvision's ImageNet weights" in message
    assert "pretrained_backbone: false" in message


def _fake_imagenet_trunk(path, seed: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    # The trunk part of torchvision's file (the classifier, 230 MB, is not read).
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    state = {f"features.{k}": v for k, v in features.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_trunk_weights_load_from_the_hub_cache_or_an_explicit_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    state = _fake_imagenet_trunk(torchvision_trunk_weights_file("alex"))
    from_hub = PerceptualLoss(net="alex", pretrained_backbone=True)
    assert from_hub.backbone_name == "lpips-alex"
    torch.testing.assert_close(
        from_hub.lpips.net.slice1.get_submodule("0").weight, state["features.0.weight"]
    )
    torch.testing.assert_close(
        from_hub.lpips.net.slice5.get_submodule("10").bias, state["features.10.bias"]
    )

    other = _fake_imagenet_trunk(tmp_path / "mine" / "alex.pth", seed=8)
    explicit = PerceptualLoss(net="alex", weights_path=tmp_path / "mine" / "alex.pth")
    torch.testing.assert_close(
        explicit.lpips.net.slice2.get_submodule("3").weight, other["features.3.weight"]
    )
    assert "trunk from" in explicit.backbone_name
    with pytest.raises(MissingWeightsError, match="nothere.pth"):
        PerceptualLoss(net="alex", weights_path=tmp_path / "nothere.pth")


def test_a_file_of_another_network_is_refused(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="no 'features.0.weight'"):
        PerceptualLoss(net="alex", weights_path=path)


def test_build_perceptual_loss_from_parameters():
    assert build_perceptual_loss({"enabled": False}) is None
    built = build_perceptual_loss({"pretrained_backbone": False, "net": "squeeze"})
    assert isinstance(built, PerceptualLoss) and "random-init" in built.backbone_name
    with pytest.raises(ValueError, match="did you mean 'enabled'"):
        build_perceptual_loss({"enable": False})
    with pytest.raises(ValueError, match="net='resnet'"):
        build_perceptual_loss({"net": "resnet"})
    with pytest.raises(ValueError, match="needs pretrained_backbone: true"):
        build_perceptual_loss({"pretrained_backbone": False, "weights_path": "x.pth"})

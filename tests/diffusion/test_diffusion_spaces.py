"""Pixel and latent spaces with stand-in autoencoders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medgen.diffusion import (
    LatentSpace,
    PixelSpace,
    PrecomputedLatentSpace,
    build_mode,
    build_space,
)


class PoolAutoencoder:
    """encode = average pool by 2, decode = nearest upsample: exact on 2x2-constant inputs."""

    def encode(self, x):
        return F.avg_pool2d(x, 2) if x.ndim == 4 else F.avg_pool3d(x, 2)

    def decode(self, z):
        return F.interpolate(z, scale_factor=2, mode="nearest")


class ShuffleAutoencoder(nn.Module):
    """Invertible: pixel-unshuffle by 2 then a random invertible 1x1 conv (and the inverse)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = 4 * channels
        torch.manual_seed(0)
        matrix = torch.randn(c, c, dtype=torch.float64) + 3 * torch.eye(c, dtype=torch.float64)
        self.register_buffer("a", matrix.float())
        self.register_buffer("a_inv", torch.linalg.inv(matrix).float())

    def encode(self, x):
        return torch.einsum("oc,bchw->bohw", self.a, F.pixel_unshuffle(x, 2))

    def decode(self, z):
        return F.pixel_shuffle(torch.einsum("oc,bchw->bohw", self.a_inv, z), 2)


class TupleEncoder(ShuffleAutoencoder):
    """Like MONAI AutoencoderKL: encode returns (mean, sigma)."""

    def encode(self, x):
        z = super().encode(x)
        return z, torch.full_like(z, 123.0)


@pytest.mark.parametrize("scale_factor", [1.0, 0.18])
def test_latent_round_trip_invertible_autoencoder(scale_factor):
    space = LatentSpace(
        ShuffleAutoencoder(2), latent_channels=8, downsample_factor=2, scale_factor=scale_factor
    )
    x = torch.rand(3, 2, 8, 8) * 2 - 1
    z = space.encode(x)
    assert (
        z.shape == (3, 8, 4, 4) and space.spatial_shape((8, 8)) == (4, 4) and space.channels(2) == 8
    )
    torch.testing.assert_close(z, space.autoencoder.encode(x) * scale_factor)
    torch.testing.assert_close(space.decode(z), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("spatial", [(8, 8), (4, 4, 4)])
def test_latent_round_trip_pool_autoencoder_2d_3d(spatial):
    space = LatentSpace(PoolAutoencoder(), latent_channels=1, downsample_factor=2, scale_factor=2.0)
    coarse = torch.rand(2, 1, *[s // 2 for s in spatial])
    x = F.interpolate(coarse, scale_factor=2, mode="nearest")
    torch.testing.assert_close(space.encode(x), 2.0 * coarse)
    torch.testing.assert_close(space.decode(space.encode(x)), x)


def test_tuple_encoder_uses_the_mean():
    space = LatentSpace(TupleEncoder(1), latent_channels=4, downsample_factor=2)
    x = torch.rand(1, 1, 4, 4)
    torch.testing.assert_close(space.encode(x), ShuffleAutoencoder(1).encode(x))


def test_latent_space_checks_shapes():
    space = LatentSpace(PoolAutoencoder(), latent_channels=4, downsample_factor=2)
    with pytest.raises(ValueError, match=r"expected \(1, 4, 4, 4\)"):
        space.encode(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="not divisible by downsample_factor=2"):
        space.spatial_shape((7, 8))
    with pytest.raises(TypeError, match="no encode"):
        LatentSpace(object(), 1, 2)


def test_condition_resize_area_keeps_small_lesions_nearest_keeps_values():
    cond = -torch.ones(1, 1, 16, 16)
    cond[0, 0, 5, 6] = 1.0  # a one-pixel lesion
    area = LatentSpace(PoolAutoencoder(), 1, 4).resize_condition(cond, (4, 4))
    assert area.shape == (1, 1, 4, 4)
    assert area[0, 0, 1, 1].item() == pytest.approx(-1 + 2 / 16)
    assert (area[0, 0] == -1).sum() == 15
    nearest = LatentSpace(PoolAutoencoder(), 1, 4, condition_resize="nearest").resize_condition(
        cond, (4, 4)
    )
    assert set(nearest.unique().tolist()) <= {-1.0, 1.0}
    cond3d = torch.ones(1, 1, 8, 8, 8)
    assert LatentSpace(PoolAutoencoder(), 1, 2).resize_condition(cond3d, (4, 4, 4)).shape == (
        1,
        1,
        4,
        4,
        4,
    )


def test_pixel_space_is_identity_and_factory():
    x = torch.rand(2, 1, 4, 4)
    space = build_space("pixel")
    assert isinstance(space, PixelSpace) and space.encode(x) is x and space.decode(x) is x
    assert space.channels(3) == 3 and space.bounded
    with pytest.raises(ValueError, match="does not match"):
        space.resize_condition(x, (2, 2))
    latent = build_space(
        "latent", {"latent_channels": 4, "downsample_factor": 2}, ShuffleAutoencoder(1)
    )
    assert isinstance(latent, LatentSpace) and not latent.bounded
    assert (
        build_space("latent", latent.to_config(), ShuffleAutoencoder(1)).to_config()
        == latent.to_config()
    )
    with pytest.raises(ValueError, match="needs an autoencoder"):
        build_space("latent", {"latent_channels": 4, "downsample_factor": 2})
    with pytest.raises(ValueError, match="takes no autoencoder or options"):
        build_space("pixel", {"scale_factor": 2.0})


class SingleChannelPoolAutoencoder(PoolAutoencoder):
    """The project's 2D autoencoder shape: 1 channel in, ``latent_channels`` out (here the pooled
    image and its negative), decoded from the first latent channel."""

    in_channels = 1

    def encode(self, x):
        pooled = super().encode(x)
        return torch.cat([pooled, -pooled], dim=1)

    def decode(self, z):
        return super().decode(z[:, :1])


@pytest.mark.parametrize("spatial", [(8, 8), (4, 4, 4)])
def test_per_channel_latents_round_trip_2d_3d(spatial):
    space = LatentSpace(
        SingleChannelPoolAutoencoder(), 2, downsample_factor=2, scale_factor=0.5, per_channel=True
    )
    coarse = torch.rand(2, 3, *[s // 2 for s in spatial]) * 2 - 1
    x = F.interpolate(coarse, scale_factor=2, mode="nearest")
    z = space.encode(x)
    assert space.channels(3) == 6 and z.shape == (2, 6, *coarse.shape[2:])
    # channel c's latents sit at 2c, 2c + 1: independent per-channel encoding, concatenated
    expected = torch.cat(
        [torch.cat([coarse[:, c : c + 1], -coarse[:, c : c + 1]], 1) for c in range(3)], 1
    )
    torch.testing.assert_close(z, 0.5 * expected)
    torch.testing.assert_close(space.decode(z), x)
    with pytest.raises(ValueError, match="not a multiple of latent_channels=2"):
        space.decode(z[:, :5])


def test_default_latent_space_refuses_multi_channel_input_to_single_channel_autoencoder():
    space = LatentSpace(SingleChannelPoolAutoencoder(), 2, downsample_factor=2)
    assert space.channels(3) == 2 and not space.per_channel
    with pytest.raises(ValueError, match="encodes 1-channel images, got 3.*per_channel: true"):
        space.encode(torch.zeros(1, 3, 4, 4))
    config = LatentSpace(SingleChannelPoolAutoencoder(), 2, 2, per_channel=True).to_config()
    assert config["per_channel"] is True
    rebuilt = build_space("latent", config, SingleChannelPoolAutoencoder())
    assert rebuilt.to_config() == config


def test_precomputed_latent_space_scales_batches_and_decodes_with_an_autoencoder():
    mode = build_mode("class", ["t1_pre", "bravo"])
    space = build_space(
        "precomputed_latent",
        {"latent_channels": 2, "downsample_factor": 2, "scale_factor": 4.0, "per_channel": True},
    )
    assert isinstance(space, PrecomputedLatentSpace) and not space.bounded
    latents = torch.randn(3, 4, 2, 2, 2)
    z = space.prepare_target(mode, {"latents": latents})
    torch.testing.assert_close(z, 4.0 * latents)
    torch.testing.assert_close(space.unscale(z), latents)
    assert space.spatial_shape((4, 4, 4)) == (2, 2, 2)
    with pytest.raises(ValueError, match="no autoencoder to decode with"):
        space.decode(z)
    with pytest.raises(ValueError, match=r"must be \[B, 4, \*spatial\]"):
        space.prepare_target(mode, {"latents": latents[:, :3]})
    with pytest.raises(KeyError, match=r"needs batch\['latents'\]"):
        space.prepare_target(mode, {"images": latents})
    with_ae = build_space("precomputed_latent", space.to_config(), SingleChannelPoolAutoencoder())
    assert with_ae.to_config() == space.to_config()
    decoded = with_ae.decode(z)  # per channel: latent channels (0, 1) -> t1_pre, (2, 3) -> bravo
    expected = F.interpolate(latents[:, [0, 2]], scale_factor=2, mode="nearest")
    torch.testing.assert_close(decoded, expected)

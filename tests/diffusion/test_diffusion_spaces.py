"""Pixel and latent spaces with stand-in autoencoders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medgen.diffusion import LatentSpace, PixelSpace, build_space


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

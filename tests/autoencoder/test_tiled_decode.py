"""Tiled decoding reproduces the full (volume-wise) decode, 2D and 3D, for any tile size."""

from __future__ import annotations

import pytest
import torch

from medgen.autoencoder.tiled import decode_tiled
from medgen.models.patch_volume_autoencoder import build_patch_volume_autoencoder
from tests.torch_threads import single_torch_thread  # noqa: F401 (autouse fixture)

# fp32 rounding only: the tiles compute the same sums as the full decode, in other orders.
TOLERANCE = 1e-5
TINY = {"channels": [4, 8], "latent_channels": 2, "patch_size": 8, "norm_num_groups": 2}


def tiny(spatial_dims: int, **overrides):
    torch.manual_seed(0)
    return build_patch_volume_autoencoder({**TINY, **overrides}, 2, spatial_dims).eval()


def full_and_tiled(model, latent_shape, tile, **kwargs):
    torch.manual_seed(1)
    z = torch.randn(2, model.latent_channels, *latent_shape)
    with torch.no_grad():
        full = model.decode(z)
    return full, decode_tiled(model, z, tile, **kwargs)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_tiled_equals_full_decode_3d_with_sizes_not_divisible_by_the_tile(mode, overlap):
    model = tiny(3)
    full, tiled = full_and_tiled(model, (7, 9, 6), 4, overlap=overlap, mode=mode)
    assert tiled.shape == full.shape == (2, 2, 28, 36, 24)
    assert (tiled - full).abs().max() < TOLERANCE


def test_tiled_equals_full_decode_2d_8x():
    model = tiny(2, downsample_factor=8, channels=[4, 4, 8])
    full, tiled = full_and_tiled(model, (11, 6), (5, 4))
    assert tiled.shape == full.shape == (2, 2, 88, 48)
    assert (tiled - full).abs().max() < TOLERANCE


def test_without_the_halo_tiles_show_seams():
    # The tolerance above is not vacuous: tiles decoded without context differ at their borders.
    model = tiny(3)
    full, tiled = full_and_tiled(model, (7, 9, 6), 4, halo=0)
    assert (tiled - full).abs().max() > 1e3 * TOLERANCE


def test_a_tile_larger_than_the_latent_is_the_full_decode():
    model = tiny(3)
    full, tiled = full_and_tiled(model, (3, 5, 4), 16)
    assert (tiled - full).abs().max() < TOLERANCE


def test_a_globally_normalised_decoder_warns_that_tiling_is_approximate():
    model = tiny(3, decoder_norm="group")
    with pytest.warns(UserWarning, match="only approximates the full decode"):
        full, tiled = full_and_tiled(model, (6, 6, 6), 4, overlap=0.5)
    assert tiled.shape == full.shape


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "linear"}, "mode must be one of"),
        ({"overlap": 1.0}, "overlap must be in"),
        ({"halo": -1}, "halo must be an integer >= 0"),
        ({"tile_size": (4, 4)}, "tile_size must be"),
        ({"tile_size": 0}, "tile_size must be"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    model = tiny(3)
    z = torch.zeros(1, 2, 4, 4, 4)
    with pytest.raises(ValueError, match=message):
        decode_tiled(model, z, **{"tile_size": 2, **kwargs})


def test_a_latent_with_the_wrong_channels_is_refused():
    with pytest.raises(ValueError, match=r"expected a \[B, 2, \.\.\.\] latent"):
        decode_tiled(tiny(3), torch.zeros(1, 3, 4, 4, 4), 2)

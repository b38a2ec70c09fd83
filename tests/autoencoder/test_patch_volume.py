"""PatchVolumeAutoencoder: patch-wise encoding, volume-wise decoding, KL / VQ, config errors."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from medgen.autoencoder.protocol import LatentAutoencoder
from medgen.models.patch_volume_autoencoder import (
    PatchVolumeAutoencoder,
    PatchVolumeAutoencoderConfig,
    build_patch_volume_autoencoder,
    from_patches,
    to_patches,
)
from tests.torch_threads import single_torch_thread  # noqa: F401 (autouse fixture)

TINY = {"channels": [4, 8], "latent_channels": 2, "patch_size": 8, "norm_num_groups": 2}


def tiny(spatial_dims: int = 3, in_channels: int = 2, **overrides) -> PatchVolumeAutoencoder:
    torch.manual_seed(0)
    return build_patch_volume_autoencoder({**TINY, **overrides}, in_channels, spatial_dims).eval()


@pytest.mark.parametrize(
    "shape, patch",
    [((2, 3, 8, 12, 4), (4, 6, 2)), ((1, 2, 6, 10), (3, 5)), ((3, 1, 4, 4, 4), (4, 4, 4))],
)
def test_to_patches_round_trip_and_patch_content(shape, patch):
    x = torch.randn(shape)
    patches, grid = to_patches(x, patch)
    assert torch.equal(from_patches(patches, shape[0], grid), x)
    # The last patch of the first item is the high corner of that item.
    n_per_item = len(patches) // shape[0]
    corner = x[(0, slice(None), *(slice(s - p, s) for s, p in zip(shape[2:], patch, strict=True)))]
    assert torch.equal(patches[n_per_item - 1], corner)


def test_to_patches_refuses_sizes_not_multiple_of_patch():
    with pytest.raises(ValueError, match="not a multiple of the patch"):
        to_patches(torch.zeros(1, 1, 8, 9), (4, 4))


def test_is_a_latent_autoencoder_with_the_advertised_geometry():
    model = tiny(downsample_factor=8, channels=[4, 8, 8], patch_size=16)
    assert isinstance(model, LatentAutoencoder)
    assert (model.spatial_dims, model.in_channels, model.latent_channels) == (3, 2, 2)
    assert model.downsample_factor == 8


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("factor, channels", [(4, [4, 8]), (8, [4, 4, 8])])
@pytest.mark.parametrize("vq", [False, True])
def test_shapes_with_a_volume_that_is_not_a_multiple_of_the_patch(
    spatial_dims, factor, channels, vq
):
    model = tiny(
        spatial_dims,
        downsample_factor=factor,
        channels=channels,
        patch_size=16,
        vq={"enabled": vq, "num_embeddings": 8},
    )
    size = (16, 24, 8)[:spatial_dims]  # 24 and 8 are not multiples of the 16-voxel patch
    x = torch.rand(2, 2, *size) * 2 - 1
    z = model.encode(x)
    assert z.shape == (2, 2, *(s // factor for s in size))
    assert model.decode(z).shape == x.shape
    recon, reg = model.reconstruct(x)
    assert recon.shape == x.shape and reg.ndim == 0 and torch.isfinite(reg)


def test_each_patch_is_encoded_independently():
    model = tiny()
    x = torch.randn(1, 2, 16, 16, 8)
    h = model.encode_patchwise(x)  # patches of 8^3 -> latent blocks of 2^3
    patch = x[:, :, 8:16, 0:8, 0:8]
    assert torch.allclose(h[:, :, 2:4, 0:2, 0:2], model.encoder(patch), atol=1e-6)
    # Changing one patch leaves the latents of the others untouched.
    y = x.clone()
    y[:, :, 8:16, 0:8, 0:8] += 1.0
    h2 = model.encode_patchwise(y)
    assert torch.equal(h2[:, :, 0:2], h[:, :, 0:2])
    assert not torch.allclose(h2[:, :, 2:4, 0:2, 0:2], h[:, :, 2:4, 0:2, 0:2])


def test_padding_is_removed_from_the_latent():
    model = tiny()
    x = torch.randn(1, 2, 8, 12, 8)  # 12 -> padded to 16 by replicating the border
    padded = torch.cat([x, x[:, :, :, -1:].expand(-1, -1, -1, 4, -1)], dim=3)
    assert torch.allclose(model.encode(x), model.encode(padded)[:, :, :, :3], atol=1e-6)


def test_patch_batch_size_does_not_change_the_latent():
    x = torch.randn(2, 2, 16, 16, 8)
    assert torch.allclose(tiny().encode(x), tiny(patch_batch_size=3).encode(x), atol=1e-6)


def test_kl_encode_is_the_posterior_mean_and_the_regulariser_is_the_kl():
    model = tiny()
    x = torch.randn(2, 2, 8, 8, 8)
    mean, logvar = model.encode_patchwise(x).chunk(2, dim=1)
    assert torch.equal(model.encode(x), mean) and torch.equal(model.encode(x), model.encode(x))
    _, reg = model.reconstruct(x)
    expected = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    assert torch.allclose(reg, expected.flatten(1).sum(1).mean(), rtol=1e-5)
    torch.manual_seed(1)
    a, _ = model.reconstruct(x)
    torch.manual_seed(2)
    b, _ = model.reconstruct(x)
    assert not torch.allclose(a, b)  # a posterior sample is decoded


def test_vq_codes_come_from_the_codebook_and_only_training_updates_it():
    model = tiny(vq={"enabled": True, "num_embeddings": 8})
    codebook = model.quantizer.quantizer.embedding.weight
    x = torch.randn(2, 2, 8, 8, 8)
    z = model.train().encode(x)  # encode never updates the codebook, even in training mode
    vectors = z.permute(0, 2, 3, 4, 1).reshape(-1, 2)
    assert (vectors[:, None, :] == codebook[None]).all(-1).any(-1).all()
    before = codebook.clone()
    model.encode(x)
    assert torch.equal(codebook, before)
    _, loss = model.reconstruct(x)  # a training pass moves the EMA codebook
    assert loss > 0 and not torch.equal(codebook, before)


def test_freeze_encoder_keeps_encoder_and_codebook_fixed_in_training_mode():
    model = tiny(vq={"enabled": True, "num_embeddings": 8})
    model.freeze_encoder()
    model.train()
    assert not model.encoder.training and not model.quantizer.training and model.decoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    codebook = model.quantizer.quantizer.embedding.weight.clone()
    recon, _ = model.reconstruct(torch.randn(1, 2, 8, 8, 8))
    recon.mean().backward()
    assert torch.equal(model.quantizer.quantizer.embedding.weight, codebook)
    assert all(p.grad is None for p in model.encoder.parameters())


def _empirical_receptive_radius(model: PatchVolumeAutoencoder) -> int:
    """Largest latent offset along the first axis whose value changes a decoded voxel, over the
    extreme voxel parities (the radius is the same on every axis: all kernels are isotropic)."""
    f, length = model.downsample_factor, 2 * model.decoder_halo + 3  # room for one voxel more
    radius = 0
    for parity in (0, f - 1):
        z = torch.randn(1, model.latent_channels, length, 1, 1, requires_grad=True)
        o = (length // 2) * f + parity
        model.decode(z)[0, :, o].sum().backward()
        touched = z.grad.abs().sum(dim=(0, 1, 3, 4)).nonzero()
        radius = max(radius, int((touched - o // f).abs().max()))
    return radius


@pytest.mark.parametrize(
    "overrides",
    [{}, {"num_res_units": 2}, {"downsample_factor": 8, "channels": [4, 4, 8], "patch_size": 8}],
)
def test_decoder_halo_is_the_receptive_radius(overrides):
    model = tiny(**overrides)
    empirical = _empirical_receptive_radius(model)
    assert empirical <= model.decoder_halo <= empirical + 1


def test_decoder_halo_is_none_for_a_globally_normalised_decoder():
    assert tiny(decoder_norm="group").decoder_halo is None
    assert tiny(decoder_norm="batch").decoder_halo is not None


def test_config_round_trips_through_a_dict():
    config = PatchVolumeAutoencoderConfig.from_dict({**TINY, "vq": {"enabled": True}})
    assert PatchVolumeAutoencoderConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "config, message",
    [
        ({"chanels": [4, 8]}, "did you mean 'channels'"),
        ({"vq": {"num_embedding": 4}}, "did you mean 'num_embeddings'"),
        ({"channels": [4, 8, 16]}, "one width per stride-2 stage"),
        ({"downsample_factor": 6}, "power of two"),
        ({"patch_size": 10}, "multiple of downsample_factor"),
        ({"patch_size": [8, 8]}, "3 positive ints"),
        ({"decoder_norm": "layer"}, "must be one of"),
        ({"norm_num_groups": 3}, "must divide every channel count"),
        ({"vq": {"decay": 1.5}}, "vq.decay"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(config, message):
    with pytest.raises(ValueError, match=message):
        build_patch_volume_autoencoder({**TINY, **config}, in_channels=2)


def test_bad_images_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match="multiple of downsample_factor=4"):
        model.encode(torch.zeros(1, 2, 8, 10, 8))
    with pytest.raises(ValueError, match=r"expects \[B, 2, S, S, S\]"):
        model.encode(torch.zeros(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="decodes"):
        model.decode(torch.zeros(1, 3, 2, 2, 2))

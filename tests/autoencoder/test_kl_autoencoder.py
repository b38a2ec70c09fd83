"""KLAutoencoder: the LatentAutoencoder interface over MONAI's AutoencoderKL, its config, and
the 2D job's weights bundle round trip."""

from __future__ import annotations

import pytest
import torch

from medgen.autoencoder.kl import KLAutoencoder, KLAutoencoderConfig, build_kl_autoencoder
from medgen.autoencoder.losses import kl_divergence
from medgen.autoencoder.protocol import LatentAutoencoder
from medgen.autoencoder.training_2d import load_autoencoder_2d, to_weights_bundle
from medgen.datasets import TensorDataset
from tests.torch_threads import single_torch_thread  # noqa: F401

TINY = {"channels": [8, 8, 16], "latent_channels": 2, "norm_num_groups": 8}


@pytest.mark.parametrize(
    ("spatial_dims", "in_channels", "size"), [(2, 1, (16, 16)), (2, 3, (8, 12)), (3, 2, (8, 8, 12))]
)
def test_shapes_and_interface(spatial_dims, in_channels, size):
    torch.manual_seed(0)
    ae = build_kl_autoencoder(TINY, in_channels=in_channels, spatial_dims=spatial_dims)
    assert isinstance(ae, LatentAutoencoder)
    assert (ae.spatial_dims, ae.in_channels, ae.latent_channels) == (spatial_dims, in_channels, 2)
    assert ae.downsample_factor == 4
    x = torch.rand(2, in_channels, *size) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 2, *(s // 4 for s in size))
    assert ae.decode(z).shape == x.shape
    recon, kl = ae.reconstruct(x)
    assert recon.shape == x.shape and kl.ndim == 0 and kl > 0


def test_encode_is_the_posterior_mean_and_reconstruct_decodes_a_sample():
    torch.manual_seed(0)
    ae = build_kl_autoencoder(TINY, in_channels=1)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    z_mu, z_sigma = ae.net.encode(x)
    torch.testing.assert_close(ae.encode(x), z_mu)
    torch.testing.assert_close(ae.encode(x), ae.encode(x))  # deterministic
    torch.manual_seed(1)
    recon, kl = ae.reconstruct(x)
    torch.manual_seed(1)
    sample = z_mu + torch.randn_like(z_sigma) * z_sigma
    torch.testing.assert_close(recon, ae.net.decode(sample))
    torch.testing.assert_close(kl, kl_divergence(z_mu, z_sigma))
    torch.testing.assert_close(ae(x)[1], kl)


def test_config_round_trips_through_json_values():
    ae = build_kl_autoencoder({**TINY, "attention_levels": [False, False, True]}, in_channels=1)
    again = build_kl_autoencoder(ae.config.to_dict(), in_channels=1)
    assert again.config == ae.config
    assert ae.config.to_dict()["channels"] == [8, 8, 16]
    assert KLAutoencoderConfig().downsample_factor == 4


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"chanels": [8]}, "did you mean 'channels'"),
        ({"channels": [8, 12], "norm_num_groups": 8}, "divisible by norm_num_groups=8"),
        ({"channels": []}, "non-empty list"),
        ({**TINY, "attention_levels": [True]}, "one true/false per level"),
        ({**TINY, "num_res_blocks": [1, 1]}, "one per level"),
        ({**TINY, "latent_channels": 0}, "latent_channels=0"),
    ],
)
def test_bad_configs_name_the_key(config, message):
    with pytest.raises(ValueError, match=message):
        build_kl_autoencoder(config, in_channels=1)


def test_bad_dims_channels_and_sizes_are_refused():
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        KLAutoencoder(4, 1)
    with pytest.raises(ValueError, match="in_channels"):
        build_kl_autoencoder(TINY, in_channels=0)
    ae = build_kl_autoencoder(TINY, in_channels=1)
    with pytest.raises(ValueError, match="not a multiple of the autoencoder's downsample factor 4"):
        ae.encode(torch.zeros(1, 1, 16, 10))
    with pytest.raises(ValueError, match=r"expects \[B, 1"):
        ae.encode(torch.zeros(1, 2, 16, 16))
    with pytest.raises(ValueError, match=r"decode expects \[B, 2"):
        ae.decode(torch.zeros(1, 3, 4, 4))


def test_weights_bundle_round_trip_through_a_safetensors_file(tmp_path):
    torch.manual_seed(0)
    ae = build_kl_autoencoder(TINY, in_channels=1)
    bundle = to_weights_bundle(ae, modalities=["t1_pre", "bravo"], ema=True)
    assert bundle.metadata["kind"] == "kl_autoencoder_2d"
    assert bundle.metadata["downsample_factor"] == 4 and bundle.metadata["latent_channels"] == 2
    dataset = TensorDataset(filepath=str(tmp_path / "ae.safetensors"))
    dataset.save(bundle)
    loaded = load_autoencoder_2d(dataset.load())
    assert not loaded.training and loaded.config == ae.config
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    ae.eval()
    torch.testing.assert_close(loaded.encode(x), ae.encode(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.decode(ae.encode(x)), ae.decode(ae.encode(x)), rtol=0, atol=0)
    bundle.metadata["kind"] = "vqvae"
    with pytest.raises(ValueError, match="kind='vqvae'"):
        load_autoencoder_2d(bundle)

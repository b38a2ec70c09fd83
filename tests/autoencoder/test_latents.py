"""Latent datasets: posterior means, per-channel encoding, the training scale factor."""

import pytest
import torch
import torch.nn.functional as F

from medgen.autoencoder.latents import encode_images, encode_splits, latent_scale_factor
from medgen.autoencoder.protocol import LatentAutoencoder
from medgen.datasets import TensorBundle, TensorDataset


class PoolingAutoencoder(torch.nn.Module):
    """Deterministic stand-in: encode = 2x average pooling repeated to `latent_channels`
    (plus a per-call random draw in `reconstruct`, which encode must never use)."""

    spatial_dims = 2
    downsample_factor = 2

    def __init__(self, in_channels: int = 1, latent_channels: int = 2) -> None:
        super().__init__()
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def encode(self, x):
        pooled = F.avg_pool2d(x, 2).mean(dim=1, keepdim=True)
        return torch.cat([pooled * (k + 1) for k in range(self.latent_channels)], dim=1)

    def decode(self, z):
        return F.interpolate(z[:, :1], scale_factor=2, mode="nearest")

    def reconstruct(self, x):
        z = self.encode(x) + torch.randn_like(self.encode(x))
        return self.decode(z), torch.zeros(())


def bundle(n: int, seed: int) -> TensorBundle:
    g = torch.Generator().manual_seed(seed)
    return TensorBundle(
        {
            "images": torch.rand(n, 3, 8, 8, generator=g) * 2 - 1,
            "seg": torch.randint(0, 4, (n, 1, 8, 8), generator=g, dtype=torch.uint8),
            "subject_index": torch.arange(n),
        },
        {"modalities": ["t1_pre", "t1_gd", "bravo"], "split": "x"},
    )


def test_fake_autoencoder_satisfies_the_protocol():
    assert isinstance(PoolingAutoencoder(), LatentAutoencoder)


def test_per_channel_encoding_concatenates_each_channels_posterior_mean():
    ae = PoolingAutoencoder(in_channels=1, latent_channels=2)
    images = bundle(5, 0)["images"]
    z = encode_images(ae, images, per_channel=True, batch_size=2)
    assert z.shape == (5, 6, 4, 4)
    for c in range(3):
        expected = ae.encode(images[:, c : c + 1])
        torch.testing.assert_close(z[:, 2 * c : 2 * c + 2], expected)


def test_joint_encoding_and_channel_count_errors():
    images = bundle(3, 1)["images"]
    z = encode_images(PoolingAutoencoder(in_channels=3), images, per_channel=False)
    assert z.shape == (3, 2, 4, 4)
    with pytest.raises(ValueError, match="takes 1 channel"):
        encode_images(PoolingAutoencoder(in_channels=1), images, per_channel=False)
    with pytest.raises(ValueError, match="batch_size"):
        encode_images(PoolingAutoencoder(), images, per_channel=True, batch_size=0)


def test_scale_factor_is_inverse_std_of_training_latents_and_shared_by_all_splits(tmp_path):
    ae = PoolingAutoencoder()
    splits = {"train": bundle(6, 0), "val": bundle(3, 1)}
    out = encode_splits(
        ae, splits, autoencoder_kind="pooling", modalities=["bravo"], per_channel=True
    )
    train_latents = ae.encode(splits["train"]["images"][:, 2:3])
    expected = 1.0 / float(train_latents.std())
    assert out["train"].metadata["scale_factor"] == pytest.approx(expected, rel=1e-6)
    assert out["val"].metadata["scale_factor"] == out["train"].metadata["scale_factor"]
    assert out["val"].metadata["modalities"] == ["bravo"]
    assert torch.equal(out["val"]["seg"], splits["val"]["seg"])
    # the stored latents are the unscaled posterior mean, and survive the catalog dataset
    path = tmp_path / "latents.safetensors"
    TensorDataset(filepath=str(path)).save(out["train"])
    loaded = TensorDataset(filepath=str(path)).load()
    torch.testing.assert_close(loaded["latents"], train_latents)
    assert loaded.metadata["downsample_factor"] == 2


def test_errors_name_the_problem():
    ae = PoolingAutoencoder()
    with pytest.raises(ValueError, match="'train' split"):
        encode_splits(ae, {"val": bundle(2, 0)}, autoencoder_kind="x", per_channel=True)
    with pytest.raises(ValueError, match=r"\['flair'\] are not in the data"):
        encode_splits(ae, {"train": bundle(2, 0)}, autoencoder_kind="x", modalities=["flair"])
    with pytest.raises(ValueError, match="standard deviation"):
        latent_scale_factor(torch.ones(4, 2))

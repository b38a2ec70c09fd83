"""The patch-volume autoencoder's two training stages: stage 2 starts from stage 1."""

from __future__ import annotations

import copy

import pytest
import torch

from medgen.autoencoder.training_3d import (
    RandomPatchDataset,
    build_stage_model,
    load_patch_volume_autoencoder,
    resolve_params,
    train_patch_volume_stage1,
    train_patch_volume_stage2,
)
from medgen.datasets import TensorBundle, TensorDataset
from medgen.training import ConfigError
from tests.torch_threads import single_torch_thread  # noqa: F401 (autouse fixture)

MODALITIES = ["t1_pre", "t1_gd", "flair"]
TRAINING = {"batch_size": 2, "lr": 1e-3, "progress": False, "log_every": 1}
PARAMS = {
    "modalities": ["t1_gd", "flair"],
    "autoencoder": {
        "channels": [4, 8],
        "latent_channels": 2,
        "patch_size": 8,
        "norm_num_groups": 2,
    },
    "discriminator": {"channels": 4, "num_layers_d": 1},
    "stage1": {"training": {**TRAINING, "max_steps": 3}, "crops_per_volume": 2},
    "stage2": {
        "training": {**TRAINING, "max_steps": 2, "batch_size": 1},
        # LPIPS-squeeze takes 20-pixel slices: the 2.5D perceptual loss runs on these volumes.
        "perceptual": {"net": "squeeze", "pretrained_backbone": False},
    },
}


def volumes(n: int, seed: int) -> TensorBundle:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 20, 24, 20, generator=g) * 2 - 1
    return TensorBundle({"images": images}, {"modalities": MODALITIES})


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    train, val = volumes(3, 0), volumes(2, 1)
    weights, report = train_patch_volume_stage1(train, val, PARAMS, tmp_path_factory.mktemp("s1"))
    return train, val, weights, report


def test_random_patches_are_crops_fixed_by_their_index():
    # Every voxel holds its own flat index, so a crop tells where it was cut from.
    images = torch.arange(2 * 1 * 10 * 12 * 8, dtype=torch.float32).reshape(2, 1, 10, 12, 8)
    data = RandomPatchDataset(images, (4, 6, 4), crops_per_volume=5, seed=3)
    assert len(data) == 10
    corners = set()
    for index in range(len(data)):
        crop = data[index]
        volume = images[index % 2, 0]
        ((z, y, x),) = (volume == crop[0, 0, 0, 0]).nonzero().tolist()
        assert torch.equal(crop[0], volume[z : z + 4, y : y + 6, x : x + 4])
        assert torch.equal(crop, data[index])  # the same index, the same crop
        corners.add((index % 2, z, y, x))
    assert len(corners) > 5  # random, not one fixed crop
    other_seed = RandomPatchDataset(images, (4, 6, 4), crops_per_volume=5, seed=4)
    assert any(not torch.equal(data[i], other_seed[i]) for i in range(len(data)))
    with pytest.raises(ValueError, match="does not fit"):
        RandomPatchDataset(images, (4, 16, 4))


def test_stage1_weights_round_trip_and_report(stage1, tmp_path):
    _, val, weights, report = stage1
    meta = weights.metadata
    assert meta["kind"] == "patch_volume_autoencoder" and meta["stage"] == 1
    assert (meta["in_channels"], meta["latent_channels"], meta["downsample_factor"]) == (2, 2, 4)
    assert meta["modalities"] == ["t1_gd", "flair"]
    assert any(k.startswith("discriminator.") for k in weights.tensors)
    path = tmp_path / "w.safetensors"
    TensorDataset(filepath=str(path)).save(weights)
    loaded = load_patch_volume_autoencoder(TensorDataset(filepath=str(path)).load())
    state = loaded.state_dict()
    assert all(
        torch.equal(state[k.removeprefix("autoencoder.")], v)
        for k, v in weights.tensors.items()
        if k.startswith("autoencoder.")
    )
    assert report["steps"] == 3 and report["stage"] == 1
    assert set(report["final_losses"]) >= {"loss", "l1", "regularisation", "discriminator"}
    # Validation = whole val volumes (the t1_gd and flair channels) through encode/decode.
    x = val["images"][:, 1:3]
    with torch.no_grad():
        recon = loaded.decode(loaded.encode(x)).clamp(-1, 1)
    psnr = 10 * torch.log10(4.0 / ((recon - x) ** 2).flatten(1).mean(1))
    assert report["validation"]["psnr"] == pytest.approx(float(psnr.mean()), rel=1e-4)
    assert report["validation"]["volumes"] == 2


def test_stage2_model_starts_from_the_stage1_weights(stage1):
    train, _, weights, _ = stage1
    resolved = resolve_params(PARAMS, 2)
    kwargs = resolved.worker_kwargs()
    gan = build_stage_model(
        2,
        kwargs["autoencoder"],
        kwargs["discriminator"],
        kwargs["loss"],
        kwargs["perceptual"],
        in_channels=2,
        init_weights=weights,
    )
    initial = {f"autoencoder.{k}": v for k, v in gan.autoencoder.state_dict().items()}
    initial.update({f"discriminator.{k}": v for k, v in gan.discriminator.state_dict().items()})
    assert initial.keys() == weights.tensors.keys()
    assert all(torch.equal(initial[k], weights.tensors[k]) for k in initial)
    assert not any(p.requires_grad for p in gan.autoencoder.encoder.parameters())


def test_stage2_trains_the_decoder_of_the_stage1_network(stage1, tmp_path):
    train, val, weights1, _ = stage1
    weights2, report = train_patch_volume_stage2(weights1, train, val, PARAMS, tmp_path / "s2")
    assert weights2.metadata["stage"] == 2 and report["stage"] == 2 and report["steps"] == 2
    encoder = [k for k in weights1.tensors if k.startswith("autoencoder.encoder.")]
    decoder = [k for k in weights1.tensors if k.startswith("autoencoder.decoder.")]
    # The encoder is exactly the stage-1 encoder (frozen), the decoder moved from stage 1's.
    assert encoder and all(torch.equal(weights2.tensors[k], weights1.tensors[k]) for k in encoder)
    assert any(not torch.equal(weights2.tensors[k], weights1.tensors[k]) for k in decoder)
    assert report["started_from"]["encoder_unchanged"] is True
    assert report["final_losses"]["perceptual"] > 0
    assert torch.isfinite(torch.tensor(report["validation"]["ssim"]))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, w: p["autoencoder"].update(latent_channels=3), "latent_channels: stage 1 has 2"),
        (lambda p, w: p.update(modalities=["flair", "t1_gd"]), "modalities"),
        (lambda p, w: p["discriminator"].update(channels=8), "discriminator"),
        (lambda p, w: w.metadata.update(kind="kl_autoencoder_2d"), "kind 'kl_autoencoder_2d'"),
        (lambda p, w: w.metadata.update(stage=2), "stage-1 weights, got weights of stage 2"),
    ],
)
def test_stage2_refuses_weights_of_another_network(stage1, tmp_path, change, message):
    train, val, weights, _ = stage1
    params, weights = (
        copy.deepcopy(PARAMS),
        TensorBundle(dict(weights.tensors), copy.deepcopy(weights.metadata)),
    )
    change(params, weights)
    with pytest.raises(ValueError, match=message):
        train_patch_volume_stage2(weights, train, val, params, tmp_path / "s2")


def test_unknown_parameters_are_refused():
    with pytest.raises(ValueError, match="did you mean 'training'"):
        resolve_params({"stage1": {"trainig": {}}}, 1)
    with pytest.raises(ValueError, match="did you mean 'autoencoder'"):
        resolve_params({"autoencodr": {}}, 1)
    with pytest.raises(ValueError, match="whole volumes"):
        resolve_params({"stage2": {"crops_per_volume": 4}}, 2)
    with pytest.raises(ConfigError, match="did you mean 'max_steps'"):
        resolve_params({"stage1": {"training": {"max_step": 3}}}, 1)
    with pytest.raises(ValueError, match="validation.tile_size=0"):
        resolve_params({"validation": {"tile_size": 0}}, 1)
    with pytest.raises(ValueError, match="stages 1 and 2, got 3"):
        resolve_params({}, 3)


def test_vq_regularisation_weight_defaults_to_one_unless_set():
    vq = {"autoencoder": {"vq": {"enabled": True}}}
    assert resolve_params(vq, 1).loss.kl == 1.0
    assert resolve_params({**vq, "stage1": {"loss": {"kl": 0.5}}}, 1).loss.kl == 0.5
    assert resolve_params({}, 1).loss.kl == 1e-6

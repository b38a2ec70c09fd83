"""Backbone loading: missing weights are named before any download; local loading works."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import torch
from torchvision.models import resnet50

from medgen.metrics import backbones
from medgen.metrics.backbones import build_backbone
from medgen.metrics.errors import MissingWeightsError
from medgen.metrics.fid import extract_features
from medgen.metrics.in_domain import (
    UNTRAINED,
    InDomainEncoder,
    in_domain_checkpoint,
    load_in_domain_backbone,
    train_in_domain_backbone,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_inception_clean_names_the_torchscript_file_and_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "cleanfid_inception_dir", lambda: tmp_path)
    with pytest.raises(MissingWeightsError) as err:
        build_backbone("inception_v3", mode="clean")
    assert err.value.file == "inception-2015-12-05.pt" and err.value.directory == str(tmp_path)
    assert "inception-2015-12-05.pt" in str(err.value) and str(tmp_path) in str(err.value)


def test_inception_legacy_pytorch_names_the_torch_hub_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        build_backbone("inception_v3", mode="legacy_pytorch")
    assert err.value.file == "pt_inception-2015-12-05-6726825d.pth"
    assert err.value.directory == str(tmp_path / "hub" / "checkpoints")


def test_clip_names_weights_file(tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "clip_cache_dir", lambda: tmp_path)
    with pytest.raises(MissingWeightsError) as err:
        build_backbone("clip_vit_b_32")
    assert err.value.file == "ViT-B-32.pt" and err.value.directory == str(tmp_path)


class _StandInInceptionLayers(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 2048 "features": the per-channel mean of the normalised 299x299 input, repeated.
        return x.mean(dim=(2, 3), keepdim=True).repeat(1, 683, 1, 1)[:, :2048]


class _StandInInception(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = _StandInInceptionLayers()

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


def test_inception_clean_loads_through_cleanfid_torchscript_wrapper(tmp_path, slices):
    """A stand-in TorchScript file with the real file name exercises the real loading and
    299x299 'clean' resize path (the real Inception weights cannot be downloaded here)."""
    torch.jit.script(_StandInInception()).save(str(tmp_path / "inception-2015-12-05.pt"))
    backbone = build_backbone("inception_v3", mode="clean", weights_dir=tmp_path)
    assert (backbone.name, backbone.mode, backbone.fn_resize) == ("inception_v3", "clean", None)
    images = slices[0][:3]
    features = extract_features(images, backbone)
    assert features.shape == (3, 2048)
    # clean-fid maps [0, 255] to (x - 128) / 128; bicubic resizing roughly keeps the mean.
    quantised = np.round((images.numpy() + 1) * 127.5)
    np.testing.assert_allclose(
        features[:, 0], ((quantised - 128) / 128).mean(axis=(1, 2, 3)), atol=0.02
    )


def test_radimagenet_missing_path_is_named(tmp_path):
    missing = tmp_path / "RadImageNet-ResNet50_notop.pt"
    with pytest.raises(MissingWeightsError) as err:
        build_backbone("radimagenet_resnet50", weights_path=missing)
    assert str(missing) in str(err.value)


def test_radimagenet_loads_a_notop_torchvision_state_dict(tmp_path, slices):
    torch.manual_seed(0)
    state = {
        k: v for k, v in resnet50(weights=None).state_dict().items() if not k.startswith("fc.")
    }
    path = tmp_path / "radimagenet.pt"
    torch.save(state, path)
    backbone = build_backbone("radimagenet_resnet50", weights_path=path)
    assert backbone.name == "radimagenet_resnet50"
    assert extract_features(slices[0][:3], backbone).shape == (3, 2048)
    torch.save({"not": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a torchvision resnet50"):
        build_backbone("radimagenet_resnet50", weights_path=path)


def test_unknown_names_and_modes_are_rejected():
    with pytest.raises(ValueError, match="unknown FID backbone"):
        build_backbone("vgg_face")
    with pytest.raises(ValueError, match="mode"):
        build_backbone("inception_v3", mode="legacy_tensorflow")
    with pytest.raises(ValueError, match="in_domain"):
        build_backbone("in_domain")


def test_in_domain_training_learns_and_round_trips_through_a_checkpoint(tmp_path, slices):
    images, masks = slices
    lesion = (masks.flatten(1).sum(1) > 0).long()
    encoder, history = train_in_domain_backbone(
        images, {"lesion": lesion}, epochs=6, batch_size=32, feature_dim=16, width=8, seed=0
    )
    assert set(history) == {"rotation", "lesion"}
    assert history["rotation"][-1] < history["rotation"][0]
    assert history["lesion"][-1] < history["lesion"][0]
    path = tmp_path / "in_domain.pt"
    torch.save(in_domain_checkpoint(encoder), path)
    reloaded = build_backbone("in_domain", in_domain=path)
    original = build_backbone("in_domain", in_domain=encoder)
    # 96 single-channel slices, 6 epochs of ceil(96 / 32) = 3 steps: recorded by the training
    expected = "in_domain (trained on real training images, 96 images, 18 steps)"
    assert reloaded.name == original.name == expected
    np.testing.assert_allclose(
        extract_features(images[:8], reloaded), extract_features(images[:8], original), rtol=1e-6
    )
    assert load_in_domain_backbone(in_domain_checkpoint(encoder)).config == encoder.config
    with pytest.raises(FileNotFoundError, match="train_in_domain_backbone"):
        load_in_domain_backbone(tmp_path / "absent.pt")


def test_an_untrained_encoder_is_labelled_so_and_never_as_trained():
    encoder = InDomainEncoder(feature_dim=8, width=4, input_size=32)
    assert encoder.provenance == UNTRAINED
    assert build_backbone("in_domain", in_domain=encoder).name == f"in_domain ({UNTRAINED})"
    # a checkpoint saved before provenance was recorded does not claim any training
    old = in_domain_checkpoint(encoder)
    del old["config"]["provenance"]
    assert load_in_domain_backbone(old).provenance == "not recorded in this checkpoint"

"""Feature networks for FID, selected by name, loaded the standard way or refused.

Every backbone is packaged in clean-fid's conventions so ``cleanfid.fid`` does the
work: ``extractor`` is a clean-fid ``custom_feat_extractor`` (a float tensor
[B, 3, H, W] with values in [0, 255] -> features [B, F]) and ``fn_resize`` is a
clean-fid ``custom_fn_resize`` (uint8 HWC array -> resized HWC array), or None to
use clean-fid's own resizer for ``cleanfid_mode`` (299x299; PIL bicubic for
"clean", torch bilinear for "legacy_pytorch").

Nothing is downloaded: before a library would fetch weights we check the exact
file it would look for and raise :class:`MissingWeightsError` naming it.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medgen.metrics.errors import MissingWeightsError, require_weights_file
from medgen.metrics.in_domain import InDomainEncoder, load_in_domain_backbone

BACKBONES = ("inception_v3", "clip_vit_b_32", "radimagenet_resnet50", "in_domain")
INCEPTION_MODES = ("clean", "legacy_pytorch")

# clean-fid's "clean" mode loads this TorchScript file from "/tmp" ("./" on Windows),
# see cleanfid.features.feature_extractor and cleanfid.downloads_helper.
CLEANFID_INCEPTION_FILE = "inception-2015-12-05.pt"
CLIP_WEIGHTS_FILE = "ViT-B-32.pt"  # what clip.load("ViT-B/32") caches
DEFAULT_RADIMAGENET_PATH = Path("data/06_models/pretrained/RadImageNet-ResNet50_notop.pt")

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]
Resizer = Callable[[np.ndarray], np.ndarray]


@dataclass
class FeatureBackbone:
    """A named feature extractor in clean-fid's conventions (see module docstring)."""

    name: str
    extractor: FeatureExtractor
    fn_resize: Resizer | None
    mode: str  # how inputs reach the network, reported next to every FID
    cleanfid_mode: str = "clean"  # clean-fid's resizer when fn_resize is None


def native_resolution(image: np.ndarray) -> np.ndarray:
    """clean-fid ``custom_fn_resize`` that keeps the image as is (float32, 0..255).

    Returning float32 matters: clean-fid's dataset multiplies uint8 output by 255
    after ToTensor but leaves float32 untouched, so both paths end in [0, 255].
    """
    return np.asarray(image, dtype=np.float32)


def cleanfid_inception_dir() -> Path:
    """The directory clean-fid's "clean" mode reads the Inception TorchScript file from."""
    return Path("./") if platform.system() == "Windows" else Path("/tmp")


def legacy_pytorch_inception_file() -> Path:
    """Where torch hub caches pytorch-fid's Inception weights (clean-fid "legacy_pytorch")."""
    from cleanfid.inception_pytorch import FID_WEIGHTS_URL

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(FID_WEIGHTS_URL)


def clip_cache_dir() -> Path:
    return Path(os.path.expanduser("~/.cache/clip"))


def build_backbone(
    name: str,
    *,
    mode: str = "clean",
    device: str | torch.device = "cpu",
    weights_path: str | Path | None = None,
    weights_dir: str | Path | None = None,
    in_domain: InDomainEncoder | Mapping[str, Any] | str | Path | None = None,
) -> FeatureBackbone:
    """Build a FID backbone by name (one of :data:`BACKBONES`).

    Args:
        name: ``inception_v3`` | ``clip_vit_b_32`` | ``radimagenet_resnet50`` | ``in_domain``.
        mode: for ``inception_v3`` only, clean-fid's ``"clean"`` (TorchScript Inception,
            PIL bicubic resize) or ``"legacy_pytorch"`` (pytorch-fid weights, torch
            bilinear resize). Other backbones ignore it.
        device: torch device (default "cpu").
        weights_path: ``radimagenet_resnet50`` state dict (default
            :data:`DEFAULT_RADIMAGENET_PATH`).
        weights_dir: overrides where ``inception_v3`` "clean" looks for
            ``inception-2015-12-05.pt`` (default: clean-fid's own, /tmp).
        in_domain: for ``in_domain``: the trained encoder, its checkpoint dict or a path.
    """
    device = torch.device(device)
    if name == "inception_v3":
        return _inception_backbone(mode, device, weights_dir)
    if name == "clip_vit_b_32":
        return _clip_backbone(device)
    if name == "radimagenet_resnet50":
        return _radimagenet_backbone(weights_path or DEFAULT_RADIMAGENET_PATH, device)
    if name == "in_domain":
        if in_domain is None:
            raise ValueError("backbone 'in_domain' needs the trained encoder (in_domain=...)")
        encoder = (
            in_domain
            if isinstance(in_domain, InDomainEncoder)
            else load_in_domain_backbone(in_domain)
        )
        return in_domain_backbone(encoder, device=device)
    raise ValueError(f"unknown FID backbone '{name}'; choose one of {BACKBONES}")


def custom_backbone(
    name: str,
    network: nn.Module,
    *,
    fn_resize: Resizer | None = native_resolution,
    mode: str = "native-resolution",
    device: str | torch.device = "cpu",
) -> FeatureBackbone:
    """Wrap any network taking [B, 3, H, W] in [0, 1] and returning [B, F] (or [B, F, 1, 1])."""
    network = network.to(device).eval()

    def extract(batch: torch.Tensor) -> torch.Tensor:
        return network(batch.to(device) / 255.0).flatten(1)

    return FeatureBackbone(name=name, extractor=extract, fn_resize=fn_resize, mode=mode)


def in_domain_backbone(
    encoder: InDomainEncoder,
    device: str | torch.device = "cpu",
    provenance: str | None = None,
) -> FeatureBackbone:
    """The in-domain encoder as a clean-fid feature extractor, named ``in_domain (<provenance>)``:
    by default the provenance its training recorded (``encoder.provenance``; UNTRAINED for
    an encoder that was never trained)."""
    provenance = provenance or encoder.provenance
    encoder = encoder.to(device).eval()

    def extract(batch: torch.Tensor) -> torch.Tensor:
        # clean-fid hands 3 identical channels in [0, 255]; the encoder reads one in [-1, 1].
        gray = batch.to(device).mean(dim=1, keepdim=True) / 127.5 - 1.0
        return encoder(gray)

    size = encoder.config["input_size"]
    return FeatureBackbone(
        name=f"in_domain ({provenance})",
        extractor=extract,
        fn_resize=native_resolution,
        mode=f"native-resolution (resized to {size}x{size} inside the encoder)",
    )


def _inception_backbone(
    mode: str, device: torch.device, weights_dir: str | Path | None
) -> FeatureBackbone:
    if mode == "clean":
        from cleanfid.downloads_helper import inception_url
        from cleanfid.inception_torchscript import InceptionV3W

        directory = Path(weights_dir) if weights_dir is not None else cleanfid_inception_dir()
        require_weights_file(
            directory / CLEANFID_INCEPTION_FILE,
            "inception_v3",
            source=inception_url,
            hint="(clean-fid 'clean' mode TorchScript Inception)",
        )
        # clean-fid's own loader, with download disabled because we checked above.
        model = InceptionV3W(str(directory), download=False, resize_inside=False).to(device).eval()
        return FeatureBackbone(
            name="inception_v3",
            extractor=lambda x: model(x.to(device)),
            fn_resize=None,
            mode="clean",
            cleanfid_mode="clean",
        )
    if mode == "legacy_pytorch":
        from cleanfid.features import feature_extractor
        from cleanfid.inception_pytorch import FID_WEIGHTS_URL

        require_weights_file(
            legacy_pytorch_inception_file(),
            "inception_v3",
            source=FID_WEIGHTS_URL,
            hint="(torch hub cache, torch.hub.get_dir()/checkpoints)",
        )
        model_fn = feature_extractor(
            name="pytorch_inception", device=device, use_dataparallel=False
        )
        return FeatureBackbone(
            name="inception_v3",
            extractor=model_fn,
            fn_resize=None,
            mode="legacy_pytorch",
            cleanfid_mode="legacy_pytorch",
        )
    raise ValueError(f"inception_v3 mode must be one of {INCEPTION_MODES}, got '{mode}'")


def _clip_backbone(device: torch.device) -> FeatureBackbone:
    cache = clip_cache_dir()
    if importlib.util.find_spec("clip") is None:
        raise MissingWeightsError(
            "clip_vit_b_32",
            CLIP_WEIGHTS_FILE,
            cache,
            source="clip.load('ViT-B/32') (download URL in the clip package's _MODELS table)",
            hint="clean-fid's CLIP features also need the OpenAI 'clip' package "
            "(git+https://github.com/openai/CLIP.git), which is not installed in this environment.",
        )
    require_weights_file(cache / CLIP_WEIGHTS_FILE, "clip_vit_b_32", source="clip.load('ViT-B/32')")
    from cleanfid.clip_features import CLIP_fx, img_preprocess_clip

    clip_fx = CLIP_fx("ViT-B/32", device=device)
    return FeatureBackbone(
        name="clip_vit_b_32",
        extractor=clip_fx,
        fn_resize=img_preprocess_clip,
        mode="clean (CLIP preprocessing: bicubic 224 + centre crop)",
    )


class _RadImageNetResNet50(nn.Module):
    """torchvision ResNet-50 trunk with RadImageNet's preprocessing and pooled features.

    Preprocessing follows the MONAI GenerativeModels FID tutorial for RadImageNet:
    [0, 1] input, RGB->BGR, subtract the BGR means (0.406, 0.456, 0.485), native
    resolution, global average pool of the last block (2048 features). The [0, 1]
    input is what :func:`custom_backbone` hands any network, so it wraps this one too.
    """

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        self.net = resnet50(weights=None)
        self.net.fc = nn.Identity()
        self.register_buffer("bgr_mean", torch.tensor([0.406, 0.456, 0.485]).view(1, 3, 1, 1))

    def forward(self, batch_0_1: torch.Tensor) -> torch.Tensor:
        return self.net(batch_0_1[:, [2, 1, 0]] - self.bgr_mean)


def _radimagenet_backbone(path: str | Path, device: torch.device) -> FeatureBackbone:
    path = require_weights_file(
        Path(path),
        "radimagenet_resnet50",
        source="RadImageNet (RadImageNet-ResNet50_notop, converted to a torchvision resnet50 state_dict "
        "without the fc layer)",
    )
    model = _RadImageNetResNet50()
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    result = model.net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path} is not a torchvision resnet50 state_dict: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    return custom_backbone("radimagenet_resnet50", model, device=device)

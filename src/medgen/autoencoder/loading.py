"""Rebuild any trained medgen autoencoder from its weights bundle (``metadata["kind"]``)."""

from __future__ import annotations

from importlib import import_module

import torch
from torch import nn

from medgen.datasets import TensorBundle

# kind -> "module:function" taking the weights bundle; imported on use, so loading one kind
# never imports the other's code.
LOADERS = {
    "kl_autoencoder_2d": "medgen.autoencoder.training_2d:load_autoencoder_2d",
    "patch_volume_autoencoder": "medgen.autoencoder.patch_volume_weights:load_patch_volume_autoencoder",
}


def load_autoencoder(weights: TensorBundle, device: str | torch.device = "cpu") -> nn.Module:
    """The frozen autoencoder (eval mode, no gradients) saved in ``weights``."""
    kind = weights.metadata.get("kind")
    if kind not in LOADERS:
        raise ValueError(
            f"weights of kind {kind!r} are not a medgen autoencoder; known kinds: {sorted(LOADERS)}"
        )
    module, function = LOADERS[kind].split(":")
    autoencoder = getattr(import_module(module), function)(weights)
    autoencoder.requires_grad_(False)
    return autoencoder.to(device).eval()

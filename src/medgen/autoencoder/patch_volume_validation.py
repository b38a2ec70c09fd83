"""Whole-volume reconstruction quality of a patch-volume autoencoder (PSNR, SSIM, MAE)."""

from __future__ import annotations

import torch

from medgen.autoencoder.tiled import decode_tiled
from medgen.metrics.paired import paired_metrics
from medgen.models.patch_volume_autoencoder import PatchVolumeAutoencoder

DATA_RANGE = 2.0  # images live in [-1, 1]


@torch.no_grad()
def reconstruct_volumes(
    autoencoder: PatchVolumeAutoencoder,
    images: torch.Tensor,
    batch_size: int = 1,
    tile_size: int | None = None,
) -> torch.Tensor:
    """Deterministic reconstructions decode(encode(x)) on the CPU (tiled decode with ``tile_size``)."""
    device = next(autoencoder.parameters()).device
    was_training = autoencoder.training
    autoencoder.eval()
    out = []
    try:
        for start in range(0, images.shape[0], batch_size):
            z = autoencoder.encode(images[start : start + batch_size].to(device))
            decoded = (
                autoencoder.decode(z)
                if tile_size is None
                else decode_tiled(autoencoder, z, tile_size)
            )
            out.append(decoded.float().cpu())
    finally:
        autoencoder.train(was_training)
    return torch.cat(out)


def reconstruction_metrics(
    autoencoder: PatchVolumeAutoencoder,
    images: torch.Tensor,
    batch_size: int = 1,
    tile_size: int | None = None,
) -> dict[str, float]:
    """PSNR / SSIM / MAE / MSE of whole-volume reconstructions (`medgen.metrics.paired`, range 2)."""
    recon = reconstruct_volumes(autoencoder, images, batch_size, tile_size)
    return paired_metrics(recon.clamp(-1.0, 1.0), images.float(), data_range=DATA_RANGE)

"""Tiled (sliding-window) decoding: decoder memory bounded by a tile, not by the volume.

`decode_tiled` runs MONAI's `sliding_window_inference` over the LATENT: a window is a latent tile,
the predictor decodes it into an image tile ``downsample_factor`` times larger per axis, and MONAI
stitches the tiles at that zoom into the full-size output (its "output zoom" support, see the
``predictor`` argument of `monai.inferers.sliding_window_inference`). Peak memory is then the
output image plus one tile's decoder activations, instead of the whole volume's activations.

Seams. A tile decoded on its own differs from the full decode near its border, because the
decoder zero-pads there instead of seeing the neighbouring latents. Each tile is therefore decoded
with a ``halo`` of surrounding latent voxels (clamped at the volume border, where the full decode
pads too) and the halo's output is cropped away. With a halo at least the decoder's receptive
radius -- `PatchVolumeAutoencoder.decoder_halo` computes it -- every tile reproduces the full
decode exactly, so the blending ``mode`` and ``overlap`` no longer matter for correctness (only
float rounding differs). Decoders that normalise over the whole image (GroupNorm, as in MONAI's
AutoencoderKL) or use global attention have no finite halo: their tiles can only be blended
(overlap + Gaussian weights), which is approximate; a warning says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference

from medgen.autoencoder.protocol import LatentAutoencoder

MODES = ("gaussian", "constant")


def _per_axis(name: str, value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    values = (value,) * dims if isinstance(value, int) else tuple(value)
    if len(values) != dims or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
    ):
        raise ValueError(f"{name} must be a positive int or {dims} positive ints, got {value!r}")
    return values


def resolve_halo(autoencoder: LatentAutoencoder, halo: int | None) -> int:
    """``halo``, or the autoencoder's ``decoder_halo`` when None (0 with a warning if it has none)."""
    if halo is not None:
        if not isinstance(halo, int) or isinstance(halo, bool) or halo < 0:
            raise ValueError(f"halo must be an integer >= 0 (latent voxels), got {halo!r}")
        return halo
    known = getattr(autoencoder, "decoder_halo", None)
    if known is None:
        warnings.warn(
            f"{type(autoencoder).__name__} has no finite decoder receptive field (global "
            "normalisation or attention): tiled decoding only approximates the full decode; "
            "use overlap >= 0.5 and mode='gaussian' to hide the seams",
            stacklevel=3,
        )
        return 0
    return int(known)


@torch.no_grad()
def decode_tiled(
    autoencoder: LatentAutoencoder,
    z: torch.Tensor,
    tile_size: int | Sequence[int],
    overlap: float = 0.25,
    mode: str = "gaussian",
    *,
    halo: int | None = None,
    sw_batch_size: int = 1,
    output_device: torch.device | str | None = None,
) -> torch.Tensor:
    """Decode ``z`` ``[B, latent_channels, *L]`` tile by tile into ``[B, C, *(L * factor)]``.

    Args:
        autoencoder: any `LatentAutoencoder` (2D or 3D); its ``decode`` is called per tile.
        z: the latent (unscaled, as `LatentAutoencoder.decode` takes it).
        tile_size: latent tile side, an int or one per axis; clamped to the latent size (a tile
            larger than the latent is the whole latent). Need not divide the latent size:
            MONAI places the last window flush with the border.
        overlap: fraction of a tile shared with its neighbour (default 0.25; MONAI's default).
        mode: ``gaussian`` (default) or ``constant`` blending of overlapping tiles.
        halo: extra latent voxels decoded around each tile and cropped away (default None: the
            autoencoder's ``decoder_halo``, the receptive radius that makes tiles exact).
        sw_batch_size: tiles decoded per decoder call (default 1: the smallest memory).
        output_device: where the full-size output is assembled (default: ``z``'s device); e.g.
            ``"cpu"`` keeps GPU memory at one tile while decoding on the GPU.

    Returns the decoded image on ``output_device``. Put the autoencoder in eval mode first
    (BatchNorm statistics, dropout): tiles are decoded exactly as ``decode`` would.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(overlap, int | float) or not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    dims = autoencoder.spatial_dims
    if z.ndim != dims + 2 or z.shape[1] != autoencoder.latent_channels:
        raise ValueError(
            f"expected a [B, {autoencoder.latent_channels}, ...] latent with {dims} spatial axes, "
            f"got shape {tuple(z.shape)}"
        )
    size = tuple(z.shape[2:])
    # Clamped so MONAI never pads the latent: a padded window would decode invented latents.
    tile = tuple(
        min(t, s) for t, s in zip(_per_axis("tile_size", tile_size, dims), size, strict=True)
    )
    margin = resolve_halo(autoencoder, halo)
    factor = autoencoder.downsample_factor

    def decode_windows(windows: torch.Tensor, coords: list[list[slice]]) -> torch.Tensor:
        # `windows` are the latent tiles MONAI cut; we re-cut them from `z` with the halo.
        images = []
        for index in coords:
            batch, spatial = index[0], index[2:]
            lows = [max(s.start - margin, 0) for s in spatial]
            highs = [min(s.stop + margin, n) for s, n in zip(spatial, size, strict=True)]
            latent = z[
                (batch, slice(None), *(slice(a, b) for a, b in zip(lows, highs, strict=True)))
            ]
            image = autoencoder.decode(latent.to(windows.device))
            keep = tuple(
                slice((s.start - a) * factor, (s.stop - a) * factor)
                for s, a in zip(spatial, lows, strict=True)
            )
            images.append(image[(slice(None), slice(None), *keep)])
        return torch.cat(images)

    return sliding_window_inference(
        z,
        roi_size=tile,
        sw_batch_size=sw_batch_size,
        predictor=decode_windows,
        overlap=overlap,
        mode=mode,
        device=output_device,
        with_coord=True,
    )

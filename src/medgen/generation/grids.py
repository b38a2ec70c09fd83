"""PNG grids of slices and masks (PIL images, saved by the catalog's pillow datasets).

Every sample is one cell: a grey tile per image channel, then its mask drawn in red on
the first channel (or white on black when there is no image, e.g. generated masks), so a
glance shows whether the lesion in the image sits where its mask says.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (24, 24, 24)
MASK_RGB = np.array([255, 40, 40], dtype=np.float32)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Intensities in [-1, 1] → uint8 [0, 255] (values outside are clipped)."""
    array = images.detach().cpu().float().clamp(-1, 1).numpy()
    return np.round((array + 1.0) * 127.5).astype(np.uint8)


def mask_overlay(gray: np.ndarray | None, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """RGB ``[H, W, 3]``: ``gray`` with the mask blended in red (white mask on black if no image)."""
    mask = mask.astype(bool)
    if gray is None:
        return np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
    rgb = np.repeat(gray[..., None].astype(np.float32), 3, axis=2)
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * MASK_RGB
    return rgb.round().astype(np.uint8)


def tile(array: np.ndarray, scale: int) -> np.ndarray:
    """Grey ``[H, W]`` or RGB ``[H, W, 3]`` uint8 as RGB, upscaled ``scale`` times (nearest)."""
    rgb = array if array.ndim == 3 else np.repeat(array[..., None], 3, axis=2)
    return np.kron(rgb, np.ones((scale, scale, 1), dtype=np.uint8))


def sample_grid(
    images: torch.Tensor | None,
    masks: torch.Tensor,
    ncols: int = 4,
    tile_px: int = 96,
    gap: int = 4,
) -> Image.Image:
    """Grid of ``ncols`` samples per row; each sample = its image channels + mask overlay.

    Args:
        images: ``[N, C, H, W]`` in [-1, 1], or None to draw masks only.
        masks: ``[N, 1, H, W]``, non-zero = lesion.
        tile_px: each tile is upscaled (nearest) by the integer factor closest to this size.
    """
    n, _, height, width = masks.shape
    if images is not None and (images.shape[0] != n or images.shape[2:] != masks.shape[2:]):
        raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} disagree")
    if n == 0:
        raise ValueError("nothing to draw: zero samples")
    scale = max(1, round(tile_px / max(height, width)))
    gray = to_uint8(images) if images is not None else None
    mask_np = masks.detach().cpu().numpy()[:, 0] > 0
    cells = []
    for i in range(n):
        tiles = [] if gray is None else [tile(channel, scale) for channel in gray[i]]
        tiles.append(tile(mask_overlay(None if gray is None else gray[i, 0], mask_np[i]), scale))
        cells.append(stack(tiles, gap // 2, axis=1))
    ncols = max(1, min(ncols, n))
    rows = [stack(cells[r : r + ncols], gap * 2, axis=1) for r in range(0, n, ncols)]
    return Image.fromarray(stack(rows, gap * 2, axis=0))


def stack(
    parts: list[np.ndarray], gap: int, axis: int, background: tuple[int, int, int] = BACKGROUND
) -> np.ndarray:
    """RGB arrays side by side (``axis=1``) or one above the other (``axis=0``), ``gap`` pixels
    of ``background`` apart; parts smaller across the stack are padded at their end."""
    across = 1 - axis
    extent = max(p.shape[across] for p in parts)
    out = []
    for i, part in enumerate(parts):
        shape = [0, 0, 3]
        shape[across] = extent
        if i:
            shape[axis] = gap
            out.append(np.full(shape, background, np.uint8))
        shape[axis] = part.shape[axis]
        padded = np.full(shape, background, np.uint8)
        padded[: part.shape[0], : part.shape[1]] = part
        out.append(padded)
    return np.concatenate(out, axis=axis)


def titled(image: Image.Image, title: str, margin: int = 6) -> Image.Image:
    """``image`` with a one-line caption above it."""
    font = ImageFont.load_default()
    text_height = font.getbbox("Ag")[3] + 2 * margin
    out = Image.new("RGB", (image.width, image.height + text_height), BACKGROUND)
    ImageDraw.Draw(out).text((margin, margin), title, fill=(235, 235, 235), font=font)
    out.paste(image.convert("RGB"), (0, text_height))
    return out


def side_by_side(*panels: Image.Image, gap: int = 16) -> Image.Image:
    """Panels next to each other, top-aligned."""
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    out = Image.new("RGB", (width, max(p.height for p in panels)), BACKGROUND)
    x = 0
    for panel in panels:
        out.paste(panel.convert("RGB"), (x, 0))
        x += panel.width + gap
    return out

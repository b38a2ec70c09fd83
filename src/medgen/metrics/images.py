"""medgen's image convention and its conversions, for metric libraries and for figures.

medgen images are float arrays/tensors shaped [N, C, H, W] with intensities in [-1, 1].
Metric libraries get float tensors, or the 8-bit images a PNG would store; figures (the
PNG grids of latent_diffusion, the autoencoder and the evaluation report) are built from
the same 8-bit tiles, stacked into panels with captions. Everything here is generic: what a
grid shows (masks beside images, orthogonal views) belongs to its package.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ArrayLike = np.ndarray | torch.Tensor
BACKGROUND = (24, 24, 24)


def as_tensor(images: ArrayLike, ndim: int | None = 4) -> torch.Tensor:
    """Float32 CPU tensor, checking the number of dimensions and finiteness."""
    tensor = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    tensor = tensor.detach().to(device="cpu", dtype=torch.float32)
    if ndim is not None and tensor.ndim != ndim:
        raise ValueError(f"expected a {ndim}D array, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError("images contain NaN or Inf values")
    return tensor


def as_tensor_pair(images_a: ArrayLike, images_b: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Two equally shaped [N, C, H, W] or [N, C, D, H, W] tensors (see :func:`as_tensor`)."""
    a, b = as_tensor(images_a, ndim=None), as_tensor(images_b, ndim=None)
    if a.shape != b.shape:
        raise ValueError(
            f"paired images must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.ndim not in (4, 5):
        raise ValueError(f"expected [N, C, H, W] or [N, C, D, H, W], got shape {tuple(a.shape)}")
    return a, b


def to_uint8_hwc(images: ArrayLike) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C] in [0, 255].

    The mapping is round((x + 1) * 127.5) after clipping to [-1, 1], i.e. exactly
    what saving the image as an 8-bit PNG would store. clean-fid is defined on
    8-bit images (it reads PNG/JPEG files), so quantising here makes the
    in-memory path give the same features as ``cleanfid.fid.compute_fid`` on a
    folder of PNGs written from the same arrays.
    """
    return np.ascontiguousarray(to_uint8(as_tensor(images)).transpose(0, 2, 3, 1))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Intensities in [-1, 1] -> uint8 [0, 255], any shape: ``round((x + 1) * 127.5)`` after
    clipping to [-1, 1] (values outside are clipped)."""
    tensor = images.detach().to(device="cpu", dtype=torch.float32).clamp(-1.0, 1.0)
    return torch.round((tensor + 1.0) * 127.5).to(torch.uint8).numpy()


def grayscale_channel_groups(images: torch.Tensor) -> list[torch.Tensor]:
    """Split [N, C, H, W] into the 1- or 3-channel images a 2D backbone can read.

    C == 3 is taken as RGB. Any other C (1 for one MRI sequence, 2 for a paired
    T1 pre/post-contrast slice) is split into C grayscale images [N, 1, H, W]:
    MRI channels are different sequences, not colours, so each is scored on its
    own and callers average over channels.
    """
    if images.shape[1] == 3:
        return [images]
    return [images[:, c : c + 1] for c in range(images.shape[1])]


def to_three_channels(images: torch.Tensor) -> torch.Tensor:
    """Repeat a single grayscale channel to the three input channels ImageNet nets expect."""
    if images.shape[1] == 1:
        return images.repeat(1, 3, 1, 1)
    if images.shape[1] == 3:
        return images
    raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]}")


def tile(array: np.ndarray, scale: int) -> np.ndarray:
    """Grey ``[H, W]`` or RGB ``[H, W, 3]`` uint8 as RGB, upscaled ``scale`` times (nearest)."""
    rgb = array if array.ndim == 3 else np.repeat(array[..., None], 3, axis=2)
    return np.kron(rgb, np.ones((scale, scale, 1), dtype=np.uint8))


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


def new_figure(**kwargs):
    """A bare matplotlib ``Figure`` (rendered with Agg when saved; pyplot's global backend, a
    notebook's included, is never touched). matplotlib is imported here: a second of import
    time that only figure makers pay."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def figure_png(figure, dpi: int = 90, tight: bool = True) -> bytes:
    """PNG bytes of a matplotlib figure (``tight``: trimmed to its content)."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buffer.getvalue()


def figure_image(figure, dpi: int = 90, tight: bool = True) -> Image.Image:
    """The figure as an RGB PIL image (for ``pillow.ImageDataset`` outputs)."""
    import io

    return Image.open(io.BytesIO(figure_png(figure, dpi, tight))).convert("RGB")

"""Readers behind ``CSVImageDataset``: one function per format, and the shared intensity and
geometry steps (channels, [-1, 1] scaling, square resize).

Every reader takes the file's bytes and returns float planes ``[C, H, W]`` (or a NIfTI image);
a reader that cannot use a file raises `BadImage` with the reason only, and the dataset adds the
row and path.
"""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.valuerep import DSfloat

from medgen.datasets.nifti_dataset import NiftiReadError, decode_nifti

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, the weights Pillow's "L" uses


class BadImage(Exception):
    """Raised by the readers with the reason only; the dataset adds row and path."""


def read_raster(raw: bytes) -> np.ndarray:
    """PNG/JPEG as float64 [1 or 3, H, W]; 16-bit grey keeps its values, alpha is dropped."""
    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except Exception as exc:  # Pillow raises OSError, SyntaxError, DecompressionBombError, ...
        raise BadImage(f"unreadable image ({type(exc).__name__}: {exc})") from None
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise BadImage(f"animated image with {frames} frames; one image per row")
    if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        grey = image.getchannel(0) if image.mode == "LA" else image
        return np.asarray(grey, dtype=np.float64)[None]
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    return np.moveaxis(rgb, -1, 0)


def read_dicom(raw: bytes, window: tuple[float, float] | None) -> np.ndarray:
    """One DICOM frame as float64 [1 or 3, H, W], modality and VOI LUTs applied to grey."""
    try:
        ds = pydicom.dcmread(io.BytesIO(raw), force=True)
    except Exception as exc:  # a forced read of a damaged file can raise almost anything
        raise BadImage(f"unreadable DICOM ({type(exc).__name__}: {exc})") from None
    if "PixelData" not in ds:
        raise BadImage("not a DICOM image (no Pixel Data element)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise BadImage(f"multi-frame DICOM with {frames} frames; one image per row")
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples not in (1, 3):
        raise BadImage(f"DICOM with {samples} samples per pixel; expected 1 (grey) or 3 (colour)")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types: missing decoder, bad length, ...
        raise BadImage(f"unreadable DICOM pixel data ({type(exc).__name__}: {exc})") from None
    if samples == 3:  # colour: no modality or VOI LUT applies (PS3.3 C.11.1, C.11.2)
        return np.moveaxis(pixels.astype(np.float64), -1, 0)
    if pixels.ndim != 2:
        raise BadImage(f"DICOM pixel array of shape {pixels.shape}; expected rows x columns")
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    if window is not None:
        # The configured window replaces the file's VOI LUT: pydicom then applies it.
        if "VOILUTSequence" in ds:
            del ds.VOILUTSequence
        ds.WindowCenter = DSfloat(window[0], auto_format=True)
        ds.WindowWidth = DSfloat(window[1], auto_format=True)
        ds.VOILUTFunction = "LINEAR"
    try:
        values = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
    except (ValueError, KeyError, AttributeError) as exc:
        raise BadImage(f"invalid DICOM VOI LUT or window ({exc})") from None
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":  # low values are white
        values = -values
    return values[None]


def canonical_volume(raw: bytes, path: str, role: str) -> nib.Nifti1Image:
    """A 2D or 3D NIfTI (trailing singleton axes allowed) reoriented to RAS, as 3D."""
    try:
        image = decode_nifti(raw, path)
    except NiftiReadError as exc:
        raise BadImage(f"unreadable {role} NIfTI ({exc.reason})") from None
    shape = image.shape
    if len(shape) > 3 and any(s != 1 for s in shape[3:]):
        raise BadImage(f"{len(shape)}D {role} NIfTI of shape {shape}; one 2D or 3D image per row")
    if len(shape) < 2 or min(shape) < 1:
        raise BadImage(f"{role} NIfTI of shape {shape}; expected 2D or 3D")
    data = np.asarray(image.dataobj).reshape(shape[:2] + (shape[2] if len(shape) > 2 else 1,))
    image = nib.Nifti1Image(data, image.affine)
    return nib.as_closest_canonical(image)


def match_channels(planes: np.ndarray, color: str) -> np.ndarray:
    if color == "rgb":
        return np.repeat(planes, 3, axis=0) if planes.shape[0] == 1 else planes
    if planes.shape[0] == 3:
        return np.tensordot(LUMA, planes, axes=1)[None]
    return planes


def scale_to_unit_range(planes: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Map the image's (low, high) percentiles, over all channels, to [-1, 1]; clip."""
    low, high = np.percentile(planes, percentiles)
    if high <= low:
        raise BadImage(f"no contrast: percentiles {list(percentiles)} of the image both {low:g}")
    return np.clip(2.0 * (planes - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)


def square_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Pad [C, H, W] to a centred square with -1 (background), then resize (antialiased)."""
    height, width = image.shape[-2:]
    side = max(height, width)
    pad_h, pad_w = side - height, side - width
    image = F.pad(
        image, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=-1.0
    )
    if side != size:
        image = F.interpolate(
            image[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )[0]
    return image.clamp(-1.0, 1.0).contiguous()

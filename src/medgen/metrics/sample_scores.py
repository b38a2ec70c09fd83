"""Scores of a training run's validation samples (`medgen.training.validation_samples`).

`SampleScorer()(samples, metrics)` scores a `medgen.diffusion.diagnostics.ProbeSamples`:

* ``ssim``, ``psnr`` (data range 2, medgen's [-1, 1]), ``lpips``: generated vs real, only where
  ``samples.paired`` (the condition fixes the answer: a lesion mask → an image, inpainting).
  With a ``score_region`` (inpainting) SSIM and PSNR are the BraTS scorer's, over the region
  (`brats_inpainting_metrics`); LPIPS is 2D only. LPIPS uses the pretrained AlexNet trunk when
  its weights are on disk, else a seeded random trunk, and says which in ``lpips_name``.
* ``lesion_contrast`` (`lesion_contrast`) and ``boundary_sharpness`` (`boundary_sharpness`) at
  the mask, of the generated images and, where there are real ones, of those: ``<name>``,
  ``<name>_real``; boundary sharpness also as ``boundary_sharpness_ratio`` (generated / real).

A metric that does not apply (no pair, no mask with a lesion, an image too small for LPIPS) is
left out, not given a value.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from medgen.metrics.brats_inpainting import brats_inpainting_metrics, to_scanner_range
from medgen.metrics.errors import MissingWeightsError
from medgen.metrics.paired import psnr
from medgen.metrics.ssim import ssim

log = logging.getLogger(__name__)

DATA_RANGE = 2.0
BRAIN_THRESHOLD = -0.8  # as in medgen.generation.lesion_contrast: background is -1


def _cross_dilate(mask: torch.Tensor, iterations: int = 1) -> torch.Tensor:
    """Binary dilation ``[N, 1, *spatial]`` by the cross (face neighbours), ``iterations``
    times: scipy's ``binary_dilation`` with its default structure."""
    out = mask.bool()
    dims = out.ndim - 2
    for _ in range(iterations):
        grown = out.clone()
        for axis in range(2, 2 + dims):
            pad = [0, 0] * dims
            index = 2 * (out.ndim - 1 - axis)
            for shift in (1, -1):
                pad_here = list(pad)
                pad_here[index + (0 if shift == 1 else 1)] = 1
                padded = F.pad(out.float(), pad_here)
                start = 0 if shift == 1 else 1
                grown |= padded.narrow(axis, start, out.shape[axis]).bool()
        out = grown
    return out


def lesion_contrast(
    images: torch.Tensor, masks: torch.Tensor, ring_px: int = 2, channel: int = 0
) -> torch.Tensor:
    """Per image with at least 2 mask and 2 ring voxels: mean(in mask) − mean(ring), the ring
    being the brain voxels within ``ring_px`` (cross dilation) outside the mask; the definition
    of `medgen.generation.lesion_contrast.lesion_contrasts`, in torch and for 2D or 3D."""
    image = images[:, channel : channel + 1].float()
    mask = masks[:, :1] > 0
    ring = _cross_dilate(mask, ring_px) & ~mask & (image > BRAIN_THRESHOLD)
    n_mask, n_ring = mask.flatten(1).sum(1), ring.flatten(1).sum(1)
    inside = (image * mask).flatten(1).sum(1) / n_mask.clamp_min(1)
    around = (image * ring).flatten(1).sum(1) / n_ring.clamp_min(1)
    valid = (n_mask >= 2) & (n_ring >= 2)
    return (inside - around)[valid]


def boundary_sharpness(images: torch.Tensor, masks: torch.Tensor, channel: int = 0) -> torch.Tensor:
    """Per image with a mask edge: the mean gradient magnitude (central differences, per
    voxel) over the band of voxels one step inside and outside the mask's edge. A generated
    image that blurs the lesion border scores lower than the real one."""
    image = images[:, channel].float()
    mask = masks[:, :1] > 0
    outer = _cross_dilate(mask) & ~mask  # just outside the edge
    inner = mask & _cross_dilate(~mask)  # just inside it
    band = (outer | inner)[:, 0]
    dims = tuple(range(1, image.ndim))
    gradients = torch.gradient(image, dim=dims)
    magnitude = torch.sqrt(sum(g.pow(2) for g in gradients))
    n = band.flatten(1).sum(1)
    values = (magnitude * band).flatten(1).sum(1) / n.clamp_min(1)
    return values[n > 0]


def _mean(values: torch.Tensor) -> float | None:
    return float(values.mean()) if values.numel() else None


class SampleScorer:
    """``scorer(samples, metrics) -> {name: value}`` (module docstring).

    Args:
        lpips_net: LPIPS trunk ("alex", default).
        seed: seed of a random LPIPS trunk.
    """

    def __init__(self, lpips_net: str = "alex", seed: int = 0) -> None:
        self.lpips_net = lpips_net
        self.seed = seed
        self._lpips = None
        self.lpips_name: str | None = None

    def lpips(self):
        """The LPIPS scorer, pretrained when its weights are on disk (built once)."""
        if self._lpips is None:
            from medgen.metrics.lpips_metric import LPIPSScorer

            try:
                self._lpips = LPIPSScorer(net=self.lpips_net, pretrained_backbone=True)
            except MissingWeightsError:
                with warnings.catch_warnings():  # torchvision's note on lpips' random trunk
                    warnings.filterwarnings("ignore", module="torchvision")
                    self._lpips = LPIPSScorer(
                        net=self.lpips_net, pretrained_backbone=False, seed=self.seed
                    )
            self.lpips_name = self._lpips.name
        return self._lpips

    def __call__(self, samples: Any, metrics: Sequence[str]) -> dict[str, float]:
        generated = samples.generated.float().clamp(-1.0, 1.0)
        real = None if samples.real is None else samples.real.float().clamp(-1.0, 1.0)
        out: dict[str, float | None] = {}
        if samples.paired and real is not None and real.shape == generated.shape:
            out |= self._paired(generated, real, samples.score_region, metrics)
        masks = samples.masks
        if masks is not None and bool((masks > 0).any()):
            for name, fn in (
                ("lesion_contrast", lesion_contrast),
                ("boundary_sharpness", boundary_sharpness),
            ):
                if name not in metrics:
                    continue
                out[name] = _mean(fn(generated, masks))
                if real is not None and real.shape == generated.shape:
                    out[f"{name}_real"] = _mean(fn(real, masks))
            gen_b, real_b = out.get("boundary_sharpness"), out.get("boundary_sharpness_real")
            if gen_b is not None and real_b:
                out["boundary_sharpness_ratio"] = gen_b / real_b
        return {k: v for k, v in out.items() if v is not None}

    def _paired(
        self,
        generated: torch.Tensor,
        real: torch.Tensor,
        region: torch.Tensor | None,
        metrics: Sequence[str],
    ) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        if region is not None:
            rows = [
                brats_inpainting_metrics(
                    to_scanner_range(generated[i, 0]),
                    to_scanner_range(real[i, 0]),
                    region[i, 0] > 0,
                )
                for i in range(len(generated))
                if bool((region[i] > 0).any())
            ]
            for name in ("ssim", "psnr"):
                if name in metrics and rows:
                    out[name] = sum(r[name] for r in rows) / len(rows)
        else:
            if "ssim" in metrics:
                out["ssim"] = float(ssim(generated, real, data_range=DATA_RANGE).mean())
            if "psnr" in metrics:
                values = psnr(generated, real, data_range=DATA_RANGE)
                finite = values[torch.isfinite(values)]
                out["psnr"] = _mean(finite)
        if "lpips" in metrics and generated.ndim == 4:
            try:
                out["lpips"] = self.lpips().quality(real, generated)
            except (ValueError, RuntimeError) as exc:  # e.g. images below the trunk's minimum
                log.warning("validation LPIPS not computed: %s", exc)
        return out

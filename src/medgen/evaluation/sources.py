"""Generated-sample sources: what was found on disk, and what was expected but is absent.

A source is one ``samples.safetensors`` under ``data/07_model_output``; its id is the
partition path (e.g. ``latent_diffusion/ddpm_bravo``), its first component the
pipeline that produced it. ``expected`` names the producing pipelines the report
must mention even when they have not run (``not present``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from medgen.datasets import TensorBundle

logger = logging.getLogger(__name__)


@dataclass
class GeneratedSource:
    """One set of generated samples with what the evaluators need from its bundle."""

    name: str
    pipeline: str
    images: torch.Tensor  # [N, C, H, W] in [-1, 1]
    masks: torch.Tensor | None  # [N, 1, H, W] binary conditioning masks, if any
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str | None:
        return self.metadata.get("mode")

    @property
    def target_names(self) -> list[str]:
        names = self.metadata.get("target_names")
        return list(names) if names else [f"channel_{c}" for c in range(self.images.shape[1])]

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(self.images.shape[2:])

    @classmethod
    def from_bundle(cls, name: str, bundle: TensorBundle) -> GeneratedSource:
        if "images" not in bundle.tensors:
            raise ValueError(f"generated samples '{name}' have no 'images' tensor")
        masks = bundle.tensors.get("masks")
        return cls(
            name=name,
            pipeline=name.split("/", 1)[0],
            images=bundle["images"].float(),
            masks=None if masks is None else binary_masks(masks),
            metadata=dict(bundle.metadata),
        )


def binary_masks(masks: torch.Tensor) -> torch.Tensor:
    """``masks > 0`` as 0/1 floats, except that NaN/Inf entries stay NaN: ``nan > 0`` is
    False, and a diverged mask must fail its metrics, not read as "no lesion"."""
    binary = (masks > 0).float()
    if masks.is_floating_point():
        binary[~torch.isfinite(masks)] = float("nan")
    return binary


def absent_note(pipeline: str) -> dict[str, str]:
    """The report line for a source that is expected but has no samples on disk."""
    return {
        "source": pipeline,
        "status": "not present",
        "note": f"no samples.safetensors from '{pipeline}' under data/07_model_output "
        f"(run `kedro run --pipelines {pipeline}` first)",
    }


def collect_sources(
    partitions: Mapping[str, Callable[[], TensorBundle]] | None, expected: Iterable[str]
) -> tuple[list[GeneratedSource], list[dict[str, str]]]:
    """Load every partition (None: nothing generated yet); note expected pipelines without any."""
    sources = [
        GeneratedSource.from_bundle(name.strip("/"), load())
        for name, load in sorted((partitions or {}).items())
    ]
    found = {s.pipeline for s in sources}
    absent = [absent_note(p) for p in expected if p not in found]
    for note in absent:
        logger.info("evaluation: %s", note["note"])
    return sources, absent

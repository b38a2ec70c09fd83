"""What every source evaluator shares: real data, FID backbones, LPIPS, segmenters.

The real reference is the held-out splits together (``scoring.reference_splits``, default
val + test: :func:`held_out_reference`), so its floors can split it into two halves of
several patients each. The generators never train on either split (latent_diffusion reads
val only to draw real slices beside its sample grids).

Real images are matched to each source: the channels it generated (by modality
name) and its spatial size. Generated slices may be smaller than the real ones
(e.g. 32x32 against 64x64); the real reference is then resized to the generated size
(`medgen.data.resize`: antialiased bilinear; masks: area average, threshold 0.5), never
the other way round, so no generated pixel is invented.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from medgen.data.resize import resize_binary_masks, resize_images
from medgen.datasets import TensorBundle
from medgen.evaluation.networks import fit_segmenter
from medgen.evaluation.params import ScoringParams
from medgen.generation.slices import select_slices
from medgen.metrics import FeatureBackbone, LPIPSScorer

logger = logging.getLogger(__name__)


def real_images(bundle: TensorBundle, names: list[str], size: tuple[int, ...]) -> torch.Tensor:
    """The named modality channels of real slices, resized to ``size``."""
    modalities = list(bundle.metadata.get("modalities", []))
    missing = [n for n in names if n not in modalities]
    if missing:
        raise ValueError(f"generated channels {missing} are not real modalities {modalities}")
    return resize_images(bundle["images"][:, [modalities.index(n) for n in names]], size)


def real_masks(bundle: TensorBundle, size: tuple[int, ...]) -> torch.Tensor:
    """Binary lesion masks (seg > 0) of real slices at ``size``."""
    return resize_binary_masks(bundle["seg"], size)


def held_out_reference(
    splits: TensorBundle | Mapping[str, TensorBundle], names: Sequence[str] = ("val", "test")
) -> TensorBundle:
    """The named held-out splits' slices as one bundle (a single bundle is returned as is).

    ``subject_index`` is renumbered across splits (each split counts its patients from
    0), so a patient keeps one label and two patients never share one; ``metadata``
    records the splits and their slice counts.
    """
    if isinstance(splits, TensorBundle):
        return splits
    missing = [name for name in names if name not in splits]
    if missing:
        raise KeyError(f"reference splits {missing} not given (have {sorted(splits)})")
    bundles = [splits[name] for name in names]
    keys = set(bundles[0].tensors)
    for name, bundle in zip(names, bundles, strict=True):
        if set(bundle.tensors) != keys:
            raise ValueError(
                f"split {name!r} holds tensors {sorted(bundle.tensors)}, "
                f"{names[0]!r} holds {sorted(keys)}: they cannot form one reference"
            )
    tensors = {key: torch.cat([b[key] for b in bundles]) for key in keys if key != "subject_index"}
    subjects: list[str] = []
    if "subject_index" in keys:
        offset, index = 0, []
        for bundle in bundles:
            local = bundle["subject_index"]
            named = list(bundle.metadata.get("subjects") or [])
            index.append(local + offset)
            subjects += named
            offset += max(len(named), int(local.max()) + 1 if len(local) else 0)
        tensors["subject_index"] = torch.cat(index)
    metadata = {
        **bundles[0].metadata,
        "split": "+".join(names),
        "subjects": subjects,
        "slices_per_split": {name: len(b) for name, b in zip(names, bundles, strict=True)},
    }
    return TensorBundle(tensors, metadata)


def select_reference(bundle: TensorBundle, which: str = "all") -> TensorBundle:
    """The real reference slices: all, or only those with a lesion (seg > 0).

    latent_diffusion trains and samples on lesion-bearing slices only (its masks are
    redrawn until they hold a lesion), so comparing with every real slice, most of them
    lesion-free, would measure the slice selection rather than the generator.
    """
    return select_slices(bundle, which, "reference_slices")


@dataclass
class EvaluationContext:
    """Shared state for one evaluation run (see module docstring).

    ``backbones`` maps each requested FID backbone to the built network, or to the
    message saying why it is unavailable (missing pretrained weights).
    """

    reference: TensorBundle  # real held-out slices the generated ones are compared with
    train: TensorBundle  # real training slices (segmenters are trained on them)
    backbones: dict[str, FeatureBackbone | str]
    lpips: LPIPSScorer
    params: ScoringParams
    seed: int
    segmenters: dict[tuple, tuple[torch.nn.Module, dict[str, Any]]] = field(default_factory=dict)

    def real_images(
        self, names: list[str], size: tuple[int, ...], split: str = "reference"
    ) -> torch.Tensor:
        """Real slices of the named modalities at ``size``, from the reference or train split."""
        return real_images(self.reference if split == "reference" else self.train, names, size)

    def real_masks(self, size: tuple[int, ...], split: str = "reference") -> torch.Tensor:
        """Binary lesion masks (seg > 0) of the reference or train split at ``size``."""
        return real_masks(self.reference if split == "reference" else self.train, size)

    @property
    def reference_groups(self) -> torch.Tensor | None:
        """Patient of each reference slice (``subject_index``), which makes the FID floors'
        real halves patient-disjoint; None (split by slice, logged) when the bundle lacks it."""
        groups = self.reference.tensors.get("subject_index")
        if groups is None:
            logger.warning(
                "evaluation: the reference has no subject_index; real-vs-real floors split it "
                "by slice, so both halves may share patients (optimistic floors)"
            )
        return groups

    def segmenter(
        self, names: list[str], size: tuple[int, ...]
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        """A segmenter for these channels at this size, trained once per run and reused."""
        key = (tuple(names), tuple(size))
        if key not in self.segmenters:
            logger.info("evaluation: training the fidelity segmenter for %s at %s", names, size)
            self.segmenters[key] = fit_segmenter(
                self.real_images(names, size, "train"),
                self.real_masks(size, "train"),
                self.params.fidelity,
                seed=self.seed,
            )
        return self.segmenters[key]

    @property
    def max_generated(self) -> int | None:
        return self.params.max_generated

    @property
    def min_patients_per_half(self) -> int:
        return int(self.params.floors.min_patients_per_half)

"""The evaluation pipeline's two small networks, trained on the real training slices.

Both train on the CPU wherever the run is (`medgen.metrics.in_domain` and
`medgen.metrics.fidelity` set ``device: cpu``); the rows say so. The in-domain FID encoder sees
single-channel slices of ``slices.size``²; the conditioning-Dice segmenter sees the image
model's channels at its training resolution (what latent_diffusion generates).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from medgen import generation
from medgen.check_config.jobs import JobProbe, modalities_of, zeros
from medgen.datasets import TensorBundle
from medgen.diffusion import build_task
from medgen.evaluation.params import InDomainBackboneParams, ScoringParams
from medgen.metrics.fidelity import build_segmenter_task
from medgen.metrics.in_domain import build_in_domain_task
from medgen.training import TrainingConfig

PIPELINE = "evaluation"
ON_THE_CPU = ("trains on the CPU (device: cpu in medgen.metrics), not on a GPU",)


def in_domain_job(params: Mapping[str, Any]) -> JobProbe:
    """The in-domain feature network (``evaluation.in_domain_backbone``)."""
    options = InDomainBackboneParams.from_params(params[PIPELINE]["in_domain_backbone"])
    size = int(params["slices"]["size"])
    labels = {"lesion": 2} if options.lesion_head else {}

    def data() -> dict[str, TensorBundle]:
        tensors = {"images": zeros((1, 1, size, size))}
        tensors.update({f"label.{name}": zeros((1,), torch.long) for name in labels})
        return {"images": TensorBundle(tensors)}

    return JobProbe(
        pipeline=PIPELINE,
        model=f"in-domain FID encoder ({size}²)",
        factory=build_in_domain_task,
        data=data,
        options={
            "feature_dim": options.feature_dim,
            "width": options.width,
            "label_classes": labels,
            "seed": int(params[PIPELINE]["seed"]),
        },
        training=TrainingConfig(batch_size=options.batch_size, device="cpu"),
        notes=ON_THE_CPU,
    )


def segmenter_job(params: Mapping[str, Any]) -> JobProbe:
    """The conditioning-Dice segmenter (``evaluation.scoring.fidelity``)."""
    fidelity = ScoringParams.from_params(params[PIPELINE]["scoring"]).fidelity
    block = params["latent_diffusion"]
    images = generation.model_settings(
        "images", block["images"], block["shared"], modalities_of(params, "slices")
    )
    channels = build_task(images.task_config).mode.target_channels  # the generated images'
    size = images.resolution

    def data() -> dict[str, TensorBundle]:
        pairs = {
            "images": zeros((1, channels, size, size)),
            # a lesion in the one slice: the segmenter's data refuses masks without any
            "masks": torch.ones(()).expand(1, 1, size, size),
        }
        return {"pairs": TensorBundle(pairs)}

    return JobProbe(
        pipeline=PIPELINE,
        model=f"conditioning-Dice segmenter ({size}²)",
        factory=build_segmenter_task,
        data=data,
        options={
            "channels": list(fidelity.channels),
            "strides": list(fidelity.strides),
            "lesion_fraction": fidelity.lesion_fraction,
            "flip": fidelity.flip,
            "seed": int(params[PIPELINE]["seed"]),
        },
        training=TrainingConfig(batch_size=fidelity.batch_size, device="cpu"),
        notes=ON_THE_CPU,
    )


def evaluation_jobs(params: Mapping[str, Any]) -> list[JobProbe]:
    """The evaluation networks the check builds (the segmenter only when it is enabled)."""
    fidelity = ScoringParams.from_params(params[PIPELINE]["scoring"]).fidelity
    return [in_domain_job(params), *([segmenter_job(params)] if fidelity.enabled else [])]

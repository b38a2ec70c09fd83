"""latent_diffusion's demo checks: are the generated slices and volumes what they claim?

The checks themselves are `medgen.metrics.demo_checks`; this module picks the real data
they are measured against, the same way for every run:

* 2D: the generated images' own channels (the samples' ``target_names``) of the real lesion
  slices at the generated resolution: the training split's for the trivial baselines, the
  floor and the feature network, the validation split's as the reference the distances are
  measured to. The lesion contrast is the generation report's.
* 3D: the generated volumes' modalities of the real training volumes (shape, intensities,
  baselines, feature network, the class-conditional lesion effect on their
  ``lesion_present`` labels) and the validation volumes (the distances' reference).

Each returns ``{"status": passed | failed | not run, "checks": {...}}`` for ``summary.json``;
:func:`log_demo_checks` sends the same numbers to MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medgen.autoencoder.latents import select_channels
from medgen.autoencoder.patch_volume_validation import reconstruct_volumes
from medgen.data.labels import has_lesion
from medgen.datasets import TensorBundle
from medgen.generation.slices import resize_slices
from medgen.metrics.demo_checks import DemoCheckParams, check_metrics
from medgen.metrics.demo_distances import slice_checks, volume_checks
from medgen.training.tracking import active_mlflow

SLICES_SECTION = "latent_diffusion.demo_checks"
VOLUMES_SECTION = "latent_diffusion.volumes.demo_checks"
NOT_RUN = {"status": "not run", "reason": "demo_checks.enabled is false"}


def _lesion_targets(bundle: TensorBundle, names: list[str], resolution: int):
    slices = resize_slices(bundle, resolution)
    images, _ = select_channels(slices, names)
    return images[has_lesion(slices["seg"])]


def slice_demo_checks(
    samples: TensorBundle,
    train: TensorBundle,
    val: TensorBundle,
    lesion_contrast: Mapping[str, Any],
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """The 2D checks of an image model's ``samples`` (the ``samples.safetensors`` bundle)."""
    config = DemoCheckParams.from_params(params, SLICES_SECTION)
    if not config.enabled:
        return dict(NOT_RUN)
    names = [str(n) for n in samples.metadata["target_names"]]
    resolution = int(samples["images"].shape[-1])
    return slice_checks(
        samples["images"],
        _lesion_targets(train, names, resolution),
        _lesion_targets(val, names, resolution),
        lesion_contrast,
        config,
    )


def volume_demo_checks(
    samples: TensorBundle,
    train: TensorBundle,
    val: TensorBundle,
    params: Mapping[str, Any],
    autoencoder: Any = None,
) -> dict[str, Any]:
    """The 3D checks of the generated volumes (``latent_diffusion_3d/samples.safetensors``);
    ``autoencoder`` (the generator's latent space): the lesion effect's ceiling."""
    config = DemoCheckParams.from_params(params, VOLUMES_SECTION)
    if not config.enabled:
        return dict(NOT_RUN)
    modalities = [str(m) for m in samples.metadata["modalities"]]
    real_train, _ = select_channels(train, modalities)
    real_val, _ = select_channels(val, modalities)
    # the generator's class label (lesion_present), on the samples and the real volumes
    label = samples.metadata.get("label_key", "lesion_present")
    classes = (
        (samples[label], train[label])
        if label in samples.tensors and label in train.tensors
        else None
    )
    reconstructed = None
    if config.lesion_effect is not None and classes is not None and autoencoder is not None:
        reconstructed = reconstruct_volumes(autoencoder, real_train).clamp(-1.0, 1.0)
    return volume_checks(
        samples["images"],
        real_train,
        real_val,
        config,
        classes=classes,
        modalities=modalities,
        reconstructed_train=reconstructed,
    )


def log_demo_checks(report: Mapping[str, Any], prefix: str) -> bool:
    """Log ``<prefix>/<check>/passed`` (1 or 0) and the checks' numbers when a run is active."""
    mlflow = active_mlflow()
    metrics = check_metrics(report, prefix)
    if mlflow is None or not metrics:
        return False
    mlflow.log_metrics(metrics)
    return True

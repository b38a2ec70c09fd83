"""The perceptual term of the diffusion loss: ``loss = mse + weight · perceptual(x̂0, x0)``.

The predicted clean sample x̂0 (`medgen.diffusion.loss_details.predicted_x0`: from ε, v, a flow
velocity or EDM's denoiser output) is brought to images, decoded by the frozen autoencoder in a
latent space (with gradients with respect to the latent: the autoencoder itself stays fixed),
and compared with the real images by a frozen feature network, per sample. The gradient
reaches the diffusion network through x̂0. An inpainting task compares the composite (known
values outside the region), which is what sampling produces.

The feature network is configured by ``training.perceptual``
(`medgen.training.perceptual_config`) and built by `medgen.metrics.perceptual_distance`
(LPIPS, RadImageNet ResNet-50 or the in-domain network; missing weights raise the metrics'
`MissingWeightsError`); this module only needs a module ``distance(x, y) -> [B]`` on images in
[-1, 1]. The term is off by default (weight 0): every training step of a latent model then also
decodes the batch, which is what it costs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from medgen.diffusion.loss_details import TrainingTerms, predicted_x0
from medgen.diffusion.spaces import LatentSpace


def decode_with_gradient(space: Any, z: torch.Tensor) -> torch.Tensor:
    """``space``'s decode of ``z`` keeping the graph to ``z`` (pixels: ``z`` itself)."""
    if not isinstance(space, LatentSpace):
        return z
    if space.autoencoder is None:
        raise ValueError(
            f"the perceptual term in {space.name} space decodes x̂0 and needs the autoencoder"
        )
    # LatentSpace.decode runs under no_grad (it serves sampling); the same decode, with a graph.
    return LatentSpace.decode.__wrapped__(space, z)


def reference_images(task: Any, terms: TrainingTerms, batch: Mapping[str, Any]) -> torch.Tensor:
    """The real images x̂0 is compared with: the target itself (pixels), the batch's data images
    (a latent space that encodes them), or the decoded clean latents (precomputed latents)."""
    if not isinstance(task.space, LatentSpace):
        return terms.x0
    if task.space.name == "latent":
        return task.mode.target(batch).to(terms.x0.device)
    with torch.no_grad():
        return task.space.decode(terms.x0)


class PerceptualTerm:
    """``distance(decoded x̂0, real images)`` per sample, with its ``weight`` in the loss.

    Args:
        weight: multiplier of the term in the loss (> 0).
        distance: frozen module ``(x, y) -> [B]`` on images ``[B, C, *spatial]`` in [-1, 1],
            moved to the batch's device on first use.
        name: what the network is, for the run's params (e.g. ``lpips-alex``).
    """

    def __init__(self, weight: float, distance: nn.Module, name: str = "") -> None:
        if not weight > 0:
            raise ValueError(f"perceptual weight must be > 0, got {weight}")
        self.weight = float(weight)
        self.distance = distance
        self.name = name or getattr(distance, "name", type(distance).__name__)

    def __call__(self, task: Any, terms: TrainingTerms, batch: Mapping[str, Any]) -> torch.Tensor:
        x0_hat = predicted_x0(task.strategy, terms.x_t, terms.prediction, terms.timesteps)
        if terms.known is not None:
            x0_hat = terms.known.apply(x0_hat)
        generated = decode_with_gradient(task.space, x0_hat)
        real = reference_images(task, terms, batch).to(generated.dtype)
        self.distance.to(generated.device)
        return self.distance(generated, real).float().reshape(-1)


def attach_perceptual(
    task: Any,
    config: Mapping[str, Any] | None,
    build_distance: Callable[[Mapping[str, Any]], nn.Module],
) -> PerceptualTerm | None:
    """Set ``task.perceptual`` from a ``training.perceptual`` dict when its weight is > 0,
    building the network with ``build_distance(config)`` (which raises on missing weights);
    a latent space's autoencoder is frozen (the gradient goes to x̂0, not to it), and a latent
    space without one (nothing to decode x̂0 with) is refused with ``ValueError``."""
    if not config or not float(config.get("weight", 0.0)) > 0:
        task.perceptual = None
        return None
    autoencoder = getattr(task.space, "autoencoder", None)
    if isinstance(task.space, LatentSpace) and autoencoder is None:
        raise ValueError(
            f"training.perceptual compares images, but this job's {task.space.name} space has no "
            "autoencoder to decode x̂0 with; set training.perceptual.weight: 0"
        )
    distance = build_distance(config)
    if isinstance(autoencoder, nn.Module):
        autoencoder.requires_grad_(False)
    task.perceptual = PerceptualTerm(float(config["weight"]), distance)
    return task.perceptual

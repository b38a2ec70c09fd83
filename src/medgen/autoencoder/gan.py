"""VAE-GAN training of any `LatentAutoencoder` (2D or 3D) with one optimizer.

`AutoencoderGAN` holds the autoencoder, an optional MONAI ``PatchDiscriminator`` and an
optional frozen `PerceptualLoss`. Its ``forward(images)`` returns every loss term, and
``loss`` is what the engine minimises::

    loss = l1 * L1(x, x') + kl * regularisation + perceptual * LPIPS(x', x)
           + channel_difference * Σ_(a,b) L1(x'_a − x'_b, x_a − x_b)
           + adversarial * G_adv(D_frozen(x')) + adversarial * D_loss(D(x), D(x'.detach()))

The channel-difference term is for multi-contrast inputs whose information lies in the
difference of two nearly equal channels (post- minus pre-contrast T1: the enhancing rims of a
metastasis cover < 1 % of the brain, and a plain L1 lets the autoencoder draw the same image in
both channels; measured in docs/autoencoder.md).

so the engine's single AdamW trains both networks (MONAI's tutorials use two optimizers;
the weights and least-squares criterion are theirs). The two adversarial terms are
separated exactly: the generator term runs the discriminator with *detached* parameters
(``torch.func.functional_call``), so it gives the discriminator no gradient, and the
discriminator term sees ``x'.detach()``, so it gives the autoencoder none. The
discriminator's learning rate is ``lr * discriminator_lr_scale`` through
`AutoencoderGAN.optimizer_param_groups`, which `medgen.training.engine.build_optimizer` uses.
Gradient clipping (``max_grad_norm``) is global, over both networks together.

Adversarial start: both adversarial terms are off until ``adversarial_start_step``
optimizer steps are done. The step count is the ``step_count`` buffer (in every checkpoint,
so exact resume keeps it), incremented by each training ``forward``: one forward per
micro-batch, hence ``micro_batches_per_step`` (the engine's ``accum_steps``) converts it to
optimizer steps. While off, the discriminator's parameters are tied into the loss with weight
0: DistributedDataParallel needs every trainable parameter in the graph, and doing the same
without DDP keeps single- and multi-process runs identical (AdamW then sees zero gradients,
so its step count advances and weight decay, if set, applies to the discriminator).

Components: the module sums the detached terms of its training forwards in buffers;
`GANComponentsLogger` adds their means to each step record of the engine (hence to its
history, checkpoints and `TrainingResult`) and to MLflow. They are rank 0's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch import nn

from medgen.autoencoder.gan_weights import (
    GANLossWeights,
    channel_difference_l1,
    is_int,
    is_number,
)
from medgen.autoencoder.losses import (
    PerceptualConfig,
    PerceptualLoss,
    adversarial_loss,
    build_perceptual_loss,
)
from medgen.autoencoder.protocol import LatentAutoencoder
from medgen.config import config_from_params
from medgen.training.callbacks import LossComponentsLogger

COMPONENTS = (
    "l1",
    "regularisation",
    "perceptual",
    "channel_difference",
    "generator_adversarial",
    "discriminator",
)
NORMS = ("BATCH", "INSTANCE")
_PADDING = 1  # PatchDiscriminator's default padding, used by every strided layer


@dataclass(frozen=True)
class PatchDiscriminatorConfig:
    """The ``discriminator`` parameters (MONAI ``PatchDiscriminator``, LeakyReLU 0.2).

    enabled (True): False trains without a discriminator (no adversarial terms).
    channels (32): filters of the first layer, doubled per layer.
    num_layers_d (3): strided layers; the input side must be at least about
        ``3 * 2 ** num_layers_d`` pixels (see `patch_discriminator_output_size`).
    kernel_size (4), norm ("BATCH" or "INSTANCE"), dropout (0.0).
    """

    enabled: bool = True
    channels: int = 32
    num_layers_d: int = 3
    kernel_size: int = 4
    norm: str = "BATCH"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(
                f"discriminator parameter enabled={self.enabled!r}: must be true or false"
            )
        for key in ("channels", "num_layers_d", "kernel_size"):
            value = getattr(self, key)
            if not is_int(value) or value < 1:
                raise ValueError(
                    f"discriminator parameter {key}={value!r}: must be an integer >= 1"
                )
        if str(self.norm).upper() not in NORMS:
            raise ValueError(f"discriminator parameter norm={self.norm!r}: must be one of {NORMS}")
        if not is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ValueError(f"discriminator parameter dropout={self.dropout!r}: must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def discriminator_config(
    config: Mapping[str, Any] | PatchDiscriminatorConfig | None,
) -> PatchDiscriminatorConfig:
    """Validated `PatchDiscriminatorConfig` from the ``discriminator`` parameters."""
    if isinstance(config, PatchDiscriminatorConfig):
        return config
    return config_from_params(PatchDiscriminatorConfig, config, "discriminator")


def build_patch_discriminator(
    spatial_dims: int, in_channels: int, config: Mapping[str, Any] | PatchDiscriminatorConfig | None
) -> PatchDiscriminator | None:
    """MONAI ``PatchDiscriminator`` from the ``discriminator`` parameters; None when disabled.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        config: see `PatchDiscriminatorConfig` (None: its defaults).
    """
    cfg = discriminator_config(config)
    if spatial_dims not in (2, 3):
        raise ValueError(f"discriminator spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if not cfg.enabled:
        return None
    return PatchDiscriminator(
        spatial_dims=spatial_dims,
        channels=cfg.channels,
        in_channels=in_channels,
        num_layers_d=cfg.num_layers_d,
        kernel_size=cfg.kernel_size,
        norm=cfg.norm.upper(),
        dropout=cfg.dropout,
        padding=_PADDING,
    )


def patch_discriminator_output_size(
    size: int, config: Mapping[str, Any] | PatchDiscriminatorConfig | None
) -> int:
    """Side of the patch-logit map for an input side ``size`` (< 1: the input is too small)."""
    cfg = discriminator_config(config)
    k = cfg.kernel_size
    size = (size + 2 * _PADDING - k) // 2 + 1  # initial stride-2 conv
    for layer in range(cfg.num_layers_d):
        stride = 1 if layer == cfg.num_layers_d - 1 else 2
        size = (size + 2 * _PADDING - k) // stride + 1
    return size + 2 * ((k - 1) // 2) - k + 1  # final conv (kernel k, "same"-style padding)


class AutoencoderGAN(nn.Module):
    """An autoencoder, its optional discriminator and perceptual loss, trained as one module.

    Args:
        autoencoder: an ``nn.Module`` implementing `LatentAutoencoder` (2D or 3D).
        discriminator: a patch discriminator over the autoencoder's images (None: no GAN).
        perceptual: a `PerceptualLoss` (None: the perceptual term is 0).
        weights: `GANLossWeights` (default: its defaults).
        micro_batches_per_step: forwards per optimizer step (the engine's ``accum_steps``,
            default 1), so ``adversarial_start_step`` counts optimizer steps.
        discriminator_config: the config the discriminator was built with; when given, the
            input size is checked against it with a clear error.

    ``forward(images)`` returns ``{"loss", "l1", "regularisation", "perceptual",
    "channel_difference", "generator_adversarial", "discriminator"}`` (scalars; the components
    unweighted).
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        *,
        discriminator: nn.Module | None = None,
        perceptual: PerceptualLoss | None = None,
        weights: GANLossWeights | None = None,
        micro_batches_per_step: int = 1,
        discriminator_config: PatchDiscriminatorConfig | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(autoencoder, nn.Module) or not isinstance(autoencoder, LatentAutoencoder):
            raise TypeError(
                f"autoencoder must be an nn.Module implementing LatentAutoencoder, got "
                f"{type(autoencoder).__name__}"
            )
        if not is_int(micro_batches_per_step) or micro_batches_per_step < 1:
            raise ValueError(
                f"micro_batches_per_step must be an integer >= 1, got {micro_batches_per_step!r}"
            )
        weights = weights or GANLossWeights()
        channels = int(autoencoder.in_channels)
        if any(max(p) >= channels for p in weights.difference_pairs):
            raise ValueError(
                f"loss parameter difference_pairs={[list(p) for p in weights.difference_pairs]}"
                f": the autoencoder has {channels} input channels"
            )
        self.autoencoder = autoencoder
        self.discriminator = discriminator
        self.perceptual = perceptual
        self.weights = weights
        self.micro_batches_per_step = micro_batches_per_step
        self.discriminator_config = discriminator_config
        self.adversarial = adversarial_loss()
        # Buffers, not attributes: they are in every checkpoint, so resume is exact.
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("component_sums", torch.zeros(len(COMPONENTS)))
        self.register_buffer("component_count", torch.zeros((), dtype=torch.long))

    @property
    def optimizer_steps(self) -> int:
        """Optimizer steps done so far (training forwards / micro_batches_per_step)."""
        return int(self.step_count) // self.micro_batches_per_step

    @property
    def adversarial_active(self) -> bool:
        """Whether the adversarial terms are on for the current optimizer step."""
        return (
            self.discriminator is not None
            and self.optimizer_steps >= self.weights.adversarial_start_step
        )

    def optimizer_param_groups(self, lr: float) -> list[dict[str, Any]]:
        """AdamW groups: the autoencoder at ``lr``, the discriminator at ``lr * scale``."""
        groups = [{"name": "autoencoder", "params": list(self.autoencoder.parameters()), "lr": lr}]
        if self.discriminator is not None:
            groups.append(
                {
                    "name": "discriminator",
                    "params": list(self.discriminator.parameters()),
                    "lr": lr * self.weights.discriminator_lr_scale,
                }
            )
        return groups

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """All loss terms for ``images`` ``[B, C, *spatial]``; counts the step when training."""
        self._check_discriminator_input(images)
        w = self.weights
        reconstruction, regularisation = self.autoencoder.reconstruct(images)
        zero = reconstruction.new_zeros((), dtype=torch.float32)
        l1 = F.l1_loss(reconstruction.float(), images.float())
        difference = channel_difference_l1(reconstruction, images, w.difference_pairs)
        perceptual = (
            self.perceptual(reconstruction, images) if self.perceptual is not None else zero
        )
        generator_adv, discriminator_loss = zero, zero
        discriminator_term = zero
        if self.adversarial_active:
            generator_adv = self._generator_adversarial(reconstruction)
            discriminator_loss = self._discriminator_loss(images, reconstruction.detach())
            discriminator_term = w.adversarial * discriminator_loss
        elif self.discriminator is not None:
            # Weight 0: every parameter is in the graph, as DDP requires (module docstring).
            discriminator_term = 0.0 * sum(p.sum() for p in self.discriminator.parameters())
        loss = (
            w.l1 * l1
            + w.kl * regularisation
            + w.perceptual * perceptual
            + w.channel_difference * difference
            + w.adversarial * generator_adv
            + discriminator_term
        )
        out = {
            "loss": loss,
            "l1": l1,
            "regularisation": regularisation,
            "perceptual": perceptual,
            "channel_difference": difference,
            "generator_adversarial": generator_adv,
            "discriminator": discriminator_loss,
        }
        if self.training:
            with torch.no_grad():
                self.component_sums += torch.stack([out[k].detach().float() for k in COMPONENTS])
                self.component_count += 1
                self.step_count += 1
        return out

    def _discriminator_logits(self, images: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        if not frozen:
            return self.discriminator(images)[-1]
        params = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        return torch.func.functional_call(self.discriminator, params, (images,))[-1]

    def _generator_adversarial(self, reconstruction: torch.Tensor) -> torch.Tensor:
        logits = self._discriminator_logits(reconstruction, frozen=True)
        return self.adversarial(logits, target_is_real=True, for_discriminator=False)

    def _discriminator_loss(self, images: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        real = self.adversarial(
            self._discriminator_logits(images), target_is_real=True, for_discriminator=True
        )
        fake = self.adversarial(
            self._discriminator_logits(fake), target_is_real=False, for_discriminator=True
        )
        return 0.5 * (real + fake)

    def _check_discriminator_input(self, images: torch.Tensor) -> None:
        if self.discriminator is None or self.discriminator_config is None:
            return
        smallest = min(images.shape[2:])
        if patch_discriminator_output_size(smallest, self.discriminator_config) < 1:
            raise ValueError(
                f"images of size {tuple(images.shape[2:])} are too small for the patch "
                f"discriminator with num_layers_d={self.discriminator_config.num_layers_d}: use "
                "larger images or fewer layers"
            )

    @torch.no_grad()
    def pop_component_means(self) -> dict[str, float]:
        """Mean of each component over the training forwards since the last call; resets."""
        count = int(self.component_count)
        means = (self.component_sums / max(count, 1)).tolist()
        self.component_sums.zero_()
        self.component_count.zero_()
        return dict(zip(COMPONENTS, means, strict=True)) if count else {}


def build_autoencoder_gan(
    autoencoder: nn.Module,
    *,
    discriminator: Mapping[str, Any] | PatchDiscriminatorConfig | None = None,
    loss: Mapping[str, Any] | GANLossWeights | None = None,
    perceptual: Mapping[str, Any] | PerceptualConfig | None = None,
    micro_batches_per_step: int = 1,
) -> AutoencoderGAN:
    """`AutoencoderGAN` from the ``discriminator``, ``loss`` and ``perceptual`` parameters.

    The discriminator is built for the autoencoder's ``spatial_dims`` and ``in_channels``.
    ``perceptual`` None means the `PerceptualConfig` defaults (pretrained AlexNet trunk,
    which must be on disk); pass ``{"enabled": False}`` to train without it.
    """
    disc_config = discriminator_config(discriminator)
    weights = (
        loss
        if isinstance(loss, GANLossWeights)
        else config_from_params(GANLossWeights, loss, "loss")
    )
    return AutoencoderGAN(
        autoencoder,
        discriminator=build_patch_discriminator(
            autoencoder.spatial_dims, autoencoder.in_channels, disc_config
        ),
        perceptual=build_perceptual_loss(perceptual),
        weights=weights,
        micro_batches_per_step=micro_batches_per_step,
        discriminator_config=disc_config,
    )


def gan_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The engine's ``loss_fn``: ``model(images)["loss"]`` (``model`` may be a DDP wrapper)."""
    return model(batch)["loss"]


#: The engine callback that puts the GAN's loss components into the step records.
GANComponentsLogger = LossComponentsLogger

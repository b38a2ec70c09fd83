"""``DiffusionTask``: a strategy (HOW) + a mode (WHAT) + a space (WHERE), ready for an engine.

``task.loss`` has the generic engine signature ``loss_fn(model, batch) -> scalar Tensor`` and
``task.generate`` produces data-space samples. ``task.build_model(backbone_config)`` builds a
backbone with the right channel counts: in = space channels of the target + space channels of a known image
(inpainting) + spatial condition channels (channel concatenation; class labels and token ids add
none), out = space channels of the target; a class-conditional mode also sets the backbone's
``num_classes``. An inpainting mode's region and known image become a
:class:`~medgen.diffusion.known_region.KnownRegion` for the strategy (see :meth:`DiffusionTask.inpaint`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medgen.diffusion.base import DiffusionStrategy, Tracer, build_strategy, model_device
from medgen.diffusion.known_region import KnownRegion, Resampling
from medgen.diffusion.loss_details import assemble_loss
from medgen.diffusion.modes import DiffusionMode, build_mode
from medgen.diffusion.spaces import DiffusionSpace, PixelSpace, build_space
from medgen.models import build_backbone


class DiffusionTask:
    """Bundle of strategy, mode and space.

    Args:
        strategy: the diffusion algorithm.
        mode: what is generated and from which condition.
        space: where diffusion runs (default :class:`PixelSpace`).

    Raises:
        ValueError: if the strategy clips its x0 prediction to [-1, 1] (``clip_sample``) in an
            unbounded (latent) space, which would silently distort samples.
    """

    def __init__(
        self, strategy: DiffusionStrategy, mode: DiffusionMode, space: DiffusionSpace | None = None
    ) -> None:
        self.strategy = strategy
        self.mode = mode
        self.space = space if space is not None else PixelSpace()
        #: ``loss = mse + weight · perceptual`` when set (`medgen.diffusion.perceptual`)
        self.perceptual = None
        #: called with each loss's `LossDetails` (`medgen.diffusion.diagnostics`)
        self.loss_observers: list = []
        if getattr(strategy, "clip_sample", False) and not self.space.bounded:
            raise ValueError(
                f"{strategy.name}: clip_sample=True clips predicted x0 to [-1, 1], which is wrong in "
                f"{self.space.name} space; set clip_sample: false"
            )

    @property
    def in_channels(self) -> int:
        known = self.space.channels(self.mode.known_channels) if self.mode.known_channels else 0
        return self.space.channels(self.mode.target_channels) + known + self.mode.condition_channels

    @property
    def out_channels(self) -> int:
        return self.space.channels(self.mode.target_channels)

    def backbone_config(self, backbone_config: Mapping[str, Any]) -> dict[str, Any]:
        """``backbone_config`` completed for this task: a class-conditional mode's ``num_classes``
        is filled in (a different value set there is an error)."""
        config = dict(backbone_config)
        classes = self.mode.num_classes
        if classes:
            if config.get("num_classes", classes) != classes:
                raise ValueError(
                    f"backbone num_classes={config['num_classes']} but mode "
                    f"{self.mode.name!r} has {classes} classes"
                )
            config["num_classes"] = classes
        return config

    def build_model(self, backbone_config: Mapping[str, Any]) -> nn.Module:
        """Backbone named by ``backbone_config["name"]`` (default diffusion_unet) with this task's
        channel counts (and classes, see :meth:`backbone_config`)."""
        return build_backbone(
            self.backbone_config(backbone_config), self.in_channels, self.out_channels
        )

    def prepare(self, batch: Mapping[str, Any], device: torch.device | str = "cpu"):
        """Batch → ``(x0, cond)`` in space coordinates on ``device`` (labels and tokens
        unchanged; for inpainting the known image's space coordinates come first in ``cond``)."""
        z0 = self.space.prepare_target(self.mode, batch, device)
        cond, _ = self._condition(batch, device, tuple(z0.shape[2:]))
        return z0, cond

    def _condition(
        self,
        batch: Mapping[str, Any],
        device: torch.device | str,
        spatial: tuple[int, ...] | None = None,
    ) -> tuple[torch.Tensor | None, KnownRegion | None]:
        """The network condition and, for inpainting, the known region on the space's grid
        (``spatial``: the target's grid; None: the encoded known image's)."""
        known = None
        if self.mode.known_channels:
            known = self.space.encode(self.mode.known(batch).to(device))
            spatial = tuple(known.shape[2:]) if spatial is None else spatial
        cond = self.mode.condition(batch)
        if cond is not None:
            cond = cond.to(device)
            if self.mode.spatial_condition:
                cond = self.space.resize_condition(cond, spatial)
        if known is None:
            return cond, None
        data_region = self.mode.region(batch).to(device)
        dilation = getattr(self.mode, "region_dilation", 0)
        region = _dilate(_pool_region(data_region, spatial), dilation)
        loss_region = region if dilation else None
        if getattr(self.mode, "loss_region_key", None) is not None:
            scored = self.mode.loss_region(batch).to(device)
            unscored = _pool_region((data_region - scored).clamp(0, 1), spatial)
            loss_region = region * (1.0 - unscored) if dilation else _pool_region(scored, spatial)
        # network input: known image | region as {-1, +1} (the max-pooled region the strategy
        # generates) | the maps (area-averaged to the grid)
        parts = [known, region * 2.0 - 1.0] + ([] if cond is None else [cond])
        cond = torch.cat(parts, dim=1)
        return cond, KnownRegion(region, known, loss_region)

    def loss(
        self, model: nn.Module, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scalar training loss for a data batch (engine ``loss_fn(model, batch)``): the
        strategy's, plus the perceptual term when set (`medgen.diffusion.loss_details`)."""
        device = model_device(model)
        z0 = self.space.prepare_target(self.mode, batch, device)
        cond, known = self._condition(batch, device, tuple(z0.shape[2:]))
        terms = self.strategy.training_terms(model, z0, cond, generator=generator, known=known)
        return assemble_loss(self, terms, batch, cond, known)

    @torch.no_grad()
    def inpaint(
        self,
        model: nn.Module,
        batch: Mapping[str, Any],
        *,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
        resampling: Resampling | None = None,
        progress: bool = False,
        decode: bool = True,
        trace: Tracer | None = None,
    ) -> torch.Tensor:
        """Fill the region of an inpainting batch (no ground truth needed): the sample holds the
        known image's space coordinates outside the region at every step. Returns data space
        (``decode``) or space coordinates; compositing in data space is the caller's."""
        if not self.mode.known_channels:
            raise ValueError(f"mode {self.mode.name!r} is not an inpainting mode")
        cond, known = self._condition(batch, model_device(model))
        shape = (known.known.shape[0], self.out_channels, *known.known.shape[2:])
        z = self.strategy.sample(
            model,
            shape,
            cond,
            num_steps=num_steps,
            generator=generator,
            progress=progress,
            known=known,
            resampling=resampling,
            trace=trace,
        )
        return self.space.decode(z) if decode else z

    __call__ = loss

    @torch.no_grad()
    def generate(
        self,
        model: nn.Module,
        n: int | None = None,
        cond: torch.Tensor | None = None,
        *,
        spatial_shape: Sequence[int] | None = None,
        num_steps: int | None = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
        decode: bool = True,
        noise: torch.Tensor | None = None,
        trace: Tracer | None = None,
    ) -> torch.Tensor:
        """Generate ``[n, target_channels, *spatial_shape]`` samples in data space.

        Args:
            model: the trained network.
            n: number of samples (default: ``cond.shape[0]``).
            cond: the condition, required for conditional modes: a lesion mask in data form
                ``[n, 1, *spatial]`` in {-1, +1} (see
                :func:`~medgen.diffusion.modes.lesion_condition`), or for a class-conditional
                mode int64 class labels ``[n]`` (-1: unconditional sample).
            spatial_shape: data spatial size (default: the mask condition's; required with
                class labels and for unconditional modes).
            num_steps, guidance_scale, generator, progress, noise, trace: passed to
                ``strategy.sample`` (``noise`` in space coordinates, ``[n, out_channels, *latent
                spatial]``).
            decode: return data (default) or space coordinates.
        """
        if self.mode.known_channels:
            raise ValueError(f"mode {self.mode.name!r} inpaints: use DiffusionTask.inpaint")
        if self.mode.conditional and cond is None:
            what = "class labels" if self.mode.num_classes else "a lesion mask"
            raise ValueError(f"mode {self.mode.name!r} is conditional: pass cond ({what})")
        if not self.mode.conditional and cond is not None:
            raise ValueError(f"mode {self.mode.name!r} is unconditional: cond must be None")
        device = model_device(model)
        if cond is not None and not self.mode.spatial_condition:
            check = getattr(self.mode, "check_labels", None)
            cond = check(cond, allow_null=True) if check else self.mode.check_tokens(cond)
            n = cond.shape[0] if n is None else n
            if n != cond.shape[0]:
                raise ValueError(f"{cond.shape[0]} condition rows disagree with n={n}")
        elif cond is not None:
            n = cond.shape[0] if n is None else n
            spatial_shape = tuple(cond.shape[2:]) if spatial_shape is None else tuple(spatial_shape)
            if n != cond.shape[0] or tuple(cond.shape[2:]) != spatial_shape:
                raise ValueError(
                    f"cond {tuple(cond.shape)} disagrees with n={n}, spatial_shape={spatial_shape}"
                )
        if n is None or spatial_shape is None:
            raise ValueError("generation needs n and spatial_shape (or a mask condition)")
        latent_spatial = self.space.spatial_shape(spatial_shape)
        shape = (n, self.out_channels, *latent_spatial)
        if cond is not None:
            cond = cond.to(device)
            if self.mode.spatial_condition:
                cond = self.space.resize_condition(cond, latent_spatial)
        z = self.strategy.sample(
            model,
            shape,
            cond,
            num_steps=num_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            progress=progress,
            noise=noise,
            trace=trace,
        )
        return self.space.decode(z) if decode else z

    def to_data(self, generated: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoded samples → data tensors (see ``DiffusionMode.to_data``)."""
        return self.mode.to_data(generated)

    def to_config(self) -> dict[str, Any]:
        """JSON-serialisable description (the autoencoder itself is not part of it);
        ``mode_options`` only for a mode that has options."""
        config = {
            "strategy": self.strategy.to_config(),
            "mode": self.mode.name,
            "modalities": list(self.mode.modalities),
            "space": self.space.to_config(),
        }
        if self.mode.options():
            config["mode_options"] = self.mode.options()
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any], autoencoder: Any = None) -> DiffusionTask:
        """Inverse of :meth:`to_config`; ``autoencoder`` is needed for a latent space."""
        return build_task(config, autoencoder)

    def __repr__(self) -> str:
        return f"DiffusionTask({self.strategy!r}, {self.mode!r}, {type(self.space).__name__})"


def _pool_region(region: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """A {0, 1} region on the ``spatial`` grid: max-pooled, so a cell that overlaps it at all is
    in it (identity when the grids agree)."""
    spatial = tuple(int(s) for s in spatial)
    if tuple(region.shape[2:]) == spatial:
        return region
    pool = F.adaptive_max_pool2d if region.ndim == 4 else F.adaptive_max_pool3d
    return pool(region, spatial)


def _dilate(region: torch.Tensor, cells: int) -> torch.Tensor:
    """``region`` grown by ``cells`` on its grid (a cube / square structuring element)."""
    if not cells:
        return region
    pool = F.max_pool2d if region.ndim == 4 else F.max_pool3d
    return pool(region, kernel_size=2 * cells + 1, stride=1, padding=cells)


def build_task(config: Mapping[str, Any], autoencoder: Any = None) -> DiffusionTask:
    """Build a task from ``{"strategy": {"name": ..., ...}, "mode": str, "modalities": [...],
    "mode_options": {...}, "space": {"name": "pixel" | "latent" | "precomputed_latent", ...}}``
    (mode_options and space optional; default: none and pixel)."""
    missing = [k for k in ("strategy", "mode", "modalities") if k not in config]
    if missing:
        raise ValueError(f"diffusion task config is missing {missing}")
    strategy_cfg = dict(config["strategy"])
    strategy = build_strategy(strategy_cfg.pop("name"), strategy_cfg)
    mode = build_mode(config["mode"], config["modalities"], config.get("mode_options"))
    space_cfg = dict(config.get("space") or {"name": "pixel"})
    space = build_space(space_cfg.pop("name", "pixel"), space_cfg, autoencoder)
    return DiffusionTask(strategy, mode, space)

"""The diffusion side of the training diagnostics (`medgen.training.diagnostics`).

`DiffusionDiagnostics(task, dataset)` is the ``source`` a diffusion job's factory hands
`medgen.training.diagnostics.diffusion_diagnostics`: it attaches loss observers to the task
(per-sample `LossDetails`, `medgen.diffusion.loss_details`), names the time bins, picks a fixed
validation batch from ``dataset`` and samples it (`ProbeSamples`), and shows a batch of clean
samples as images (decoded when the space has a decoder).

What a validation sample is compared with (``reference``): the real images for modes whose
condition fixes the answer (a lesion mask → an image; inpainting), decoded from the stored real
latents when the job only has those (then the reference is the autoencoder's reconstruction,
and named so). Unconditional, class- and text-conditioned samples have no pair: they are drawn
beside real items but not scored against them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from medgen.diffusion.base import model_device
from medgen.diffusion.loss_details import predicted_x0, time_bin_labels
from medgen.diffusion.modes import lesion_condition
from medgen.diffusion.spaces import LatentSpace


@dataclass
class ProbeSamples:
    """One validation sampling pass, on the CPU.

    generated: ``[N, C, *spatial]`` samples (data space when decodable, else the space's
        coordinates, unscaled); real: the real counterparts (None when there are none);
    paired: whether ``real[i]`` is the answer for the condition of ``generated[i]``;
    masks: ``[N, 1, *spatial]`` {0, 1} lesion / inpainting region on the images' grid, or None;
    score_region: where paired metrics are computed (inpainting: the region), None: everywhere;
    trajectory: ``(t, x_t [C, *s], x̂0 [C, *s])`` of the first sample at a few evaluations;
    labels: a caption per sample (class names), or None.
    """

    generated: torch.Tensor
    real: torch.Tensor | None
    paired: bool
    masks: torch.Tensor | None = None
    score_region: torch.Tensor | None = None
    trajectory: list[tuple[float, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    labels: list[str] | None = None


class _Trajectory:
    """``trace(x, t, prediction)`` for :meth:`DiffusionStrategy.sample`: keeps the first sample's
    x_t and x̂0 at ``frames`` evenly spaced network evaluations out of ``evaluations``."""

    def __init__(self, strategy: Any, frames: int, evaluations: int) -> None:
        self.strategy = strategy
        last = max(evaluations - 1, 0)
        self.keep = {round(i * last / max(frames - 1, 1)) for i in range(frames)}
        self.calls = 0
        self.frames: list[tuple[float, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, t: float, prediction: torch.Tensor) -> None:
        if self.calls in self.keep:
            x0 = predicted_x0(self.strategy, x[:1], prediction[:1], torch.tensor([float(t)]))
            self.frames.append(
                (float(t), x[0].detach().float().cpu(), x0[0].detach().float().cpu())
            )
        self.calls += 1


class DiffusionDiagnostics:
    """The diagnostics source of a `DiffusionTask` trained on ``dataset`` (module docstring).

    Args:
        task: the job's task (its loss is observed, its sampler samples).
        dataset: where the fixed validation batch comes from (the training data unless the job
            has validation data: ``reference`` names it in the run).
        split: ``"train"`` or ``"val"``, which split ``dataset`` is (reported).
    """

    def __init__(self, task: Any, dataset: Dataset, split: str = "train") -> None:
        self.task = task
        self.dataset = dataset
        self.split = split

    # ------------------------------------------------------------------ losses
    def add_loss_observer(self, observer: Any) -> None:
        self.task.loss_observers.append(observer)

    def time_bin_labels(self, bins: int) -> list[str]:
        return time_bin_labels(self.task.strategy, bins)

    @property
    def params(self) -> dict[str, str]:
        """What the run's params should say about the loss: its perceptual network."""
        term = self.task.perceptual
        return {"loss.perceptual": "off" if term is None else f"{term.weight} x {term.name}"}

    # ------------------------------------------------------------------ images
    def display(self, x0: torch.Tensor) -> torch.Tensor:
        """Clean samples in space coordinates as images: decoded, or the unscaled latents."""
        space = self.task.space
        if not isinstance(space, LatentSpace):
            return x0.float().cpu()
        if space.autoencoder is None:
            return space.unscale(x0).float().cpu()
        device = model_device(space.autoencoder)
        with torch.no_grad():
            return space.decode(x0.to(device)).float().cpu()

    @property
    def reference(self) -> str:
        mode, space = self.task.mode, self.task.space
        what = f"{self.split} split"
        if space.name == "precomputed_latent":
            if space.autoencoder is None:
                return f"{what} latents (not decodable here)"
            return f"{what}: autoencoder reconstructions of the real latents"
        if mode.spatial_condition or mode.known_channels:
            return f"{what}: real images for the same condition"
        return f"{what}: real images (unpaired)"

    # ------------------------------------------------------------- validation
    def validation_batch(self, n: int) -> dict[str, Any]:
        """``n`` fixed items (the first ones whose mask is not empty, for modes with a mask,
        so lesion metrics have something to measure), collated on the CPU."""
        total = len(self.dataset)
        if total == 0:
            raise ValueError("the diagnostics' validation batch needs data; the dataset is empty")
        indices = list(range(total))
        if self._has_mask():
            with_mask = [i for i in indices if self._mask_of(self.dataset[i]).any()]
            indices = with_mask + [i for i in indices if i not in set(with_mask)]
        return default_collate([self.dataset[i] for i in indices[: min(n, total)]])

    def _has_mask(self) -> bool:
        return bool(self.task.mode.spatial_condition or self.task.mode.known_channels)

    def _mask_of(self, batch: Mapping[str, Any]) -> torch.Tensor:
        mode = self.task.mode
        if mode.known_channels:
            key = mode.loss_region_key or mode.region_key
            return batch[key] > 0
        return batch["seg"] > 0

    def sample(
        self,
        net: torch.nn.Module,
        batch: Mapping[str, Any],
        *,
        seed: int,
        num_steps: int | None = None,
        trace_frames: int = 0,
    ) -> ProbeSamples:
        """Sample ``batch``'s conditions from the noise of ``seed`` with the task's sampler
        (no guidance: the network itself), ``num_steps`` solver steps (None: configured)."""
        task, mode, space = self.task, self.task.mode, self.task.space
        device = model_device(net)
        generator = torch.Generator(device=device).manual_seed(int(seed))
        z0 = self._clean_target(batch, device)
        n = _batch_size(batch)
        trajectory = None
        if trace_frames:
            evaluations = task.strategy.num_sampling_steps(num_steps)
            trajectory = _Trajectory(task.strategy, trace_frames, evaluations)
        options = dict(num_steps=num_steps, generator=generator, decode=False, trace=trajectory)
        if mode.known_channels:
            z = task.inpaint(net, batch, **options)
        else:
            spatial = self._data_spatial(batch, z0)
            cond = None
            if mode.conditional:
                cond = mode.condition(batch)
            z = task.generate(net, n, cond, spatial_shape=spatial, **options)
        generated = self._images(self.display(z))
        real = None
        if space.name == "precomputed_latent":  # only the stored latents: decoded (or not)
            real = self.display(z0) if z0 is not None else None
        elif z0 is not None:
            real = mode.target(batch).float().cpu()
        masks = self._masks(batch, generated)
        paired = bool(real is not None and (mode.spatial_condition or mode.known_channels))
        frames = []
        if trajectory is not None:
            frames = [
                (t, self._frame(x), self._images(self._frame(x0))) for t, x, x0 in trajectory.frames
            ]
        return ProbeSamples(
            generated=generated,
            real=real,
            paired=paired,
            masks=masks,
            score_region=masks if mode.known_channels else None,
            trajectory=frames,
            labels=self._labels(batch),
        )

    def _clean_target(self, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor | None:
        """The batch's clean sample in space coordinates, or None when it has none (a
        generation-only batch); only stored latents are read here, images are not encoded."""
        space, mode = self.task.space, self.task.mode
        if space.name == "precomputed_latent":
            return space.prepare_target(mode, batch, device) if space.latent_key in batch else None
        try:
            return mode.target(batch)
        except (KeyError, ValueError):
            return None

    def _data_spatial(self, batch: Mapping[str, Any], z0: torch.Tensor | None) -> list[int]:
        space = self.task.space
        if space.name == "precomputed_latent" and z0 is not None:
            return [s * space.downsample_factor for s in z0.shape[2:]]
        return list(self.task.mode.target(batch).shape[2:])

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        """Data-space samples clamped to medgen's [-1, 1], as `DiffusionMode.to_data` does;
        undecoded latents as they are."""
        space = self.task.space
        if isinstance(space, LatentSpace) and space.autoencoder is None:
            return x
        return x.clamp(-1.0, 1.0)

    def _frame(self, x: torch.Tensor) -> torch.Tensor:
        return self.display(x[None])[0]

    def _masks(self, batch: Mapping[str, Any], generated: torch.Tensor) -> torch.Tensor | None:
        if not self._has_mask():
            return None
        mask = self._mask_of(batch).float()
        if self.task.mode.spatial_condition and not self.task.mode.known_channels:
            mask = (lesion_condition(batch["seg"]) > 0).float()
        if tuple(mask.shape[2:]) != tuple(generated.shape[2:]):
            return None
        return mask.cpu()

    def _labels(self, batch: Mapping[str, Any]) -> list[str] | None:
        mode = self.task.mode
        names: Sequence[str] | None = getattr(mode, "class_names", None)
        if names and mode.num_classes:
            return [names[int(c)] for c in mode.condition(batch).tolist()]
        return None


def _batch_size(batch: Mapping[str, Any]) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.ndim:
            return int(value.shape[0])
    raise ValueError("the validation batch holds no tensors")

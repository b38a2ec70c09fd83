"""Diagnostics of the training loss itself, from the per-sample loss details a source reports.

* `LossByTimestep` (``logging.timestep_losses``): the loss by diffusion time, binned;
* `RegionalLoss` (``logging.regional_losses``): inside the conditioning mask vs outside;
* `WorstBatch` (``logging.worst_batch``): the highest-loss batch as an image.

Each accumulates while the engine computes losses (the source calls the observer from inside
the loss function, on the device, without synchronising except where noted) and reports every
``every`` epochs over the epochs since its last report, then once more at the end for what is
left (a run shorter than an epoch still reports). Losses computed without gradients (the FLOPs
count, evaluation) are not training losses and are ignored.

The bins are per-sample means: bin ``b`` holds ``n_b`` samples with mean loss ``m_b``, so
``Σ_b (n_b / N) m_b`` is the mean per-sample loss of the epoch, which is the engine's epoch loss
when every batch has the same size (``drop_last: true``, the default). The values are added to
the engine's epoch record (``timestep_losses``, ``timestep_counts``, ``region_loss_inside``,
``region_loss_outside``), so they travel with the history into checkpoints and the heatmap of a
resumed run still shows every epoch (the epoch a run was resumed in counts from the resume on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medgen.training.diagnostic_figures import heatmap, image_rows
from medgen.training.diagnostics_sink import DiagnosticCallback, DiagnosticsSink, due

if TYPE_CHECKING:  # pragma: no cover
    from medgen.training.engine import Trainer
    from medgen.training.results import TrainingResult


def _training_loss(callback: DiagnosticCallback) -> bool:
    return callback.active and torch.is_grad_enabled()


def _accumulator(size: int, device: torch.device) -> torch.Tensor:
    dtype = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
    return torch.zeros(size, dtype=dtype, device=device)


class TimestepBins:
    """Per-sample losses summed into ``bins`` equal bins of a time fraction in [0, 1]."""

    def __init__(self, bins: int) -> None:
        self.bins = int(bins)
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None

    def add(self, fraction: torch.Tensor, losses: torch.Tensor) -> None:
        fraction, losses = fraction.detach().flatten(), losses.detach().flatten()
        if self.sums is None or self.sums.device != losses.device:
            self.sums = _accumulator(self.bins, losses.device)
            self.counts = _accumulator(self.bins, losses.device)
        index = (fraction.float() * self.bins).long().clamp(0, self.bins - 1).to(losses.device)
        self.sums.index_add_(0, index, losses.to(self.sums.dtype))
        self.counts.index_add_(0, index, torch.ones_like(losses, dtype=self.counts.dtype))

    @property
    def empty(self) -> bool:
        return self.counts is None or float(self.counts.sum()) == 0

    def pop(self) -> tuple[list[float | None], list[int]]:
        """``(mean per bin or None for an empty bin, count per bin)``, and start again."""
        if self.counts is None:
            return [None] * self.bins, [0] * self.bins
        sums, counts = self.sums.tolist(), [int(c) for c in self.counts.tolist()]
        self.sums = self.counts = None
        return [s / c if c else None for s, c in zip(sums, counts, strict=True)], counts


class _LossObserver(DiagnosticCallback):
    """A diagnostic fed by the task's per-sample loss details: ``config_key`` names its
    ``training.logging`` block; when enabled it registers :meth:`observe` with the source."""

    config_key = ""

    def __init__(self, source: Any, sink: DiagnosticsSink | None = None) -> None:
        super().__init__(sink)
        self.source = source

    def on_train_start(self, trainer: Trainer) -> None:
        self.cfg = getattr(trainer.config.logging, self.config_key)
        if not self.cfg.enabled:
            return
        self.start(trainer)
        self.prepare()
        self.source.add_loss_observer(self.observe)
        self.active = True

    def prepare(self) -> None:
        """Set-up once the block is known (nothing by default)."""

    def observe(self, details: Any) -> None:
        raise NotImplementedError


class LossByTimestep(_LossObserver):
    """``timestep_loss/<bin>`` every N epochs and a bins × epochs heatmap at the end."""

    config_key = "timestep_losses"

    def __init__(self, source: Any, sink: DiagnosticsSink | None = None) -> None:
        super().__init__(source, sink)
        self.columns: list[tuple[str, list[float | None]]] = []

    def prepare(self) -> None:
        self.bins = TimestepBins(self.cfg.bins)
        self.labels = list(self.source.time_bin_labels(self.cfg.bins))

    def observe(self, details: Any) -> None:
        if _training_loss(self):
            self.bins.add(details.time_fraction, details.per_sample)

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        if self.active and due(record["epoch"], self.cfg.every):
            self._report(record, record["step"])

    def _report(self, record: dict[str, Any], step: int) -> None:
        means, counts = self.bins.pop()
        record["timestep_losses"], record["timestep_counts"] = means, counts
        metrics = {f"timestep_loss/{lab}": m for lab, m in zip(self.labels, means, strict=True)}
        self.sink.log_metrics({k: v for k, v in metrics.items() if v is not None}, step)

    def on_train_end(self, trainer: Trainer, result: TrainingResult) -> None:
        if not self.active:
            return
        columns = [
            (f"{r['epoch']:g}", r["timestep_losses"])
            for r in trainer.history
            if r.get("kind") == "epoch" and "timestep_losses" in r
        ]
        if not self.bins.empty:  # the part of an epoch since the last report
            rest: dict[str, Any] = {}
            self._report(rest, trainer.step)
            columns.append((f"{trainer.epoch:.2f}", rest["timestep_losses"]))
        if columns and self.sink.wants_figures:
            values = np.array(
                [[np.nan if v is None else v for v in col] for _, col in columns], dtype=float
            ).T
            title = f"training loss by diffusion time ({self.sink.prefix})"
            figure = heatmap(values, self.labels, [c for c, _ in columns], title)
            self.sink.log_figure(figure, "timestep_loss_heatmap")
        self.active = False


class RegionalLoss(_LossObserver):
    """``region_loss/inside``, ``/outside`` and ``/inside_to_outside`` every N epochs: the
    loss per voxel inside the mask the source reports (lesion, inpainting region) and outside,
    pooled over the epoch's samples."""

    config_key = "regional_losses"

    def __init__(self, source: Any, sink: DiagnosticsSink | None = None) -> None:
        super().__init__(source, sink)
        self.sums: torch.Tensor | None = None  # inside sum, inside count, outside sum, count

    def observe(self, details: Any) -> None:
        if not _training_loss(self) or details.region_sums is None:
            return
        parts = (
            details.region_sums,
            details.region_counts,
            details.outside_sums,
            details.outside_counts,
        )
        totals = torch.stack([p.detach().sum() for p in parts])
        if self.sums is None or self.sums.device != totals.device:
            self.sums = _accumulator(4, totals.device)
        self.sums += totals.to(self.sums.dtype)

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        if self.active and due(record["epoch"], self.cfg.every):
            self._report(record, record["step"])

    def _report(self, record: dict[str, Any], step: int) -> None:
        if self.sums is None:
            return
        inside_sum, inside_n, outside_sum, outside_n = self.sums.tolist()
        self.sums = None
        metrics = {}
        if inside_n:
            metrics["region_loss/inside"] = record["region_loss_inside"] = inside_sum / inside_n
        if outside_n:
            metrics["region_loss/outside"] = record["region_loss_outside"] = outside_sum / outside_n
        if inside_n and outside_n and outside_sum > 0:
            metrics["region_loss/inside_to_outside"] = (
                metrics["region_loss/inside"] / (metrics["region_loss/outside"])
            )
        self.sink.log_metrics(metrics, step)

    def on_train_end(self, trainer: Trainer, result: TrainingResult) -> None:
        if self.active:
            self._report({}, trainer.step)
        self.active = False


class WorstBatch(_LossObserver):
    """The highest-mean-loss training micro-batch since the last report, drawn with each
    sample's timestep and loss (``worst_batch_epoch_<e>.png``), and ``worst_batch_loss``.

    Each micro-batch's mean loss is read on the host (a synchronisation per micro-batch; the
    engine synchronises on every step's loss anyway); a new worst batch is copied to the CPU.
    """

    config_key = "worst_batch"

    def __init__(self, source: Any, sink: DiagnosticsSink | None = None) -> None:
        super().__init__(source, sink)
        self.worst: dict[str, Any] | None = None

    def observe(self, details: Any) -> None:
        if not _training_loss(self):
            return
        loss = float(details.per_sample.detach().float().mean())
        if self.worst is not None and not loss > self.worst["loss"]:
            return
        n = self.cfg.images
        region = getattr(details, "region", None)
        self.worst = {
            "loss": loss,
            "x0": details.x0[:n].detach().float().cpu(),
            "timesteps": details.timesteps[:n].detach().float().cpu().tolist(),
            "losses": details.per_sample[:n].detach().float().cpu().tolist(),
            "region": None if region is None else region[:n].detach().float().cpu(),
        }

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        if self.active and due(record["epoch"], self.cfg.every):
            self._report(f"epoch_{int(record['epoch']):04d}", record["step"])

    def _report(self, name: str, step: int) -> None:
        worst, self.worst = self.worst, None
        if worst is None:
            return
        self.sink.log_metrics({"worst_batch_loss": worst["loss"]}, step)
        if not self.sink.wants_figures:
            return
        images = self.source.display(worst["x0"])
        titles = [
            f"t={t:.4g}\nloss={v:.3g}"
            for t, v in zip(worst["timesteps"], worst["losses"], strict=True)
        ]
        figure = image_rows(
            [("clean batch x0", images)],
            titles,
            f"worst batch ({self.sink.prefix}, step {step}): mean loss {worst['loss']:.4g}",
            masks=_on_grid(worst["region"], images),
        )
        self.sink.log_figure(figure, f"worst_batch_{name}")

    def on_train_end(self, trainer: Trainer, result: TrainingResult) -> None:
        if self.active:
            self._report(f"step_{trainer.step:08d}", trainer.step)
        self.active = False


def _on_grid(region: torch.Tensor | None, images: torch.Tensor) -> torch.Tensor | None:
    """The mask to outline, when it lies on the shown images' grid (not a latent's)."""
    if region is None or tuple(region.shape[2:]) != tuple(images.shape[2:]):
        return None
    return region

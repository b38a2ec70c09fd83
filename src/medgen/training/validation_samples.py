"""Validation samples and the denoising trajectory, every N steps, on a fixed batch.

`ValidationSamples` (``logging.validation`` and ``logging.intermediate_steps``) asks its source
for a fixed batch once (``validation_batch(n)``), then every ``validation.every`` steps (and at
the last step) samples it with the configured sampler from the same noise (``seed``), on the EMA
network when there is one, and:

* logs the scorer's metrics as ``validation/<name>`` (SSIM, PSNR, LPIPS against the real images
  where pairs exist, lesion contrast and boundary sharpness at the mask: `medgen.metrics.
  sample_scores`), with the compared reference named in the run's params;
* saves the grid ``validation_step_<step>.png`` (real row, generated row, mask outlined): the
  same noise every time, so the figures show the model improving over steps.

Every ``intermediate_steps.every`` steps it also records x_t and the predicted x̂0 of the first
sample at ``frames`` network evaluations (``trajectory_step_<step>.png``); when both are due,
one sampling pass serves both. Sampling runs under ``no_grad`` with the random streams forked,
so the training run (and its exact resume) is the same with or without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from medgen.training.diagnostic_figures import image_rows
from medgen.training.diagnostics_sink import DiagnosticCallback, DiagnosticsSink, due

if TYPE_CHECKING:  # pragma: no cover
    from medgen.training.engine import Trainer

METRICS = ("ssim", "psnr", "lpips", "lesion_contrast", "boundary_sharpness")


def first_items(batch: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` items of a dict batch (tensors sliced, other values kept)."""
    return {k: v[:n] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class ValidationSamples(DiagnosticCallback):
    """See the module docstring. ``scorer(samples, metrics) -> {name: value}``."""

    def __init__(self, source: Any, scorer: Any = None, sink: DiagnosticsSink | None = None):
        super().__init__(sink)
        self.source = source
        self.scorer = scorer
        self.logged: list[tuple[int, dict[str, float]]] = []  # (step, metrics), for reading back

    def on_train_start(self, trainer: Trainer) -> None:
        logging = trainer.config.logging
        self.val, self.traj = logging.validation, logging.intermediate_steps
        if not (self.val.enabled or self.traj.enabled):
            return
        self.start(trainer)
        self.batch = self.source.validation_batch(self.val.samples if self.val.enabled else 1)
        self.metrics = [m for m in METRICS if getattr(self.val, m)]
        self.sink.log_params(
            {"validation.reference": self.source.reference, "validation.seed": self.val.seed}
        )
        self.named_backbone = False
        self.active = True

    def on_step_end(self, trainer: Trainer) -> None:
        if not self.active:
            return
        step, last = trainer.step, trainer.step == trainer.config.max_steps
        validate = self.val.enabled and due(step, self.val.every, last)
        trace = self.traj.enabled and due(step, self.traj.every, last) and self.sink.wants_figures
        if not (validate or trace):
            return
        samples = self._sample(trainer, validate, trace)
        if validate:
            self._validation(samples, step)
        if trace and samples.trajectory:
            frames = samples.trajectory
            figure = image_rows(
                [
                    ("x_t", torch.stack([f[1] for f in frames])),
                    ("x̂0", torch.stack([f[2] for f in frames])),
                ],
                [f"t={f[0]:.4g}" for f in frames],
                f"denoising trajectory ({self.sink.prefix}, step {step})",
            )
            self.sink.log_figure(figure, f"trajectory_step_{step:08d}")

    def _sample(self, trainer: Trainer, validate: bool, trace: bool) -> Any:
        net = trainer.ema.module if trainer.ema is not None else trainer.model
        batch = self.batch if validate else first_items(self.batch, 1)
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        was_training = net.training
        net.eval()
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                return self.source.sample(
                    net,
                    batch,
                    seed=self.val.seed,
                    num_steps=self.val.num_steps,
                    trace_frames=self.traj.frames if trace else 0,
                )
        finally:
            net.train(was_training)

    def _validation(self, samples: Any, step: int) -> None:
        metrics = {}
        if self.scorer is not None and self.metrics:
            metrics = dict(self.scorer(samples, self.metrics))
            name = getattr(self.scorer, "lpips_name", None)
            if name and not self.named_backbone:
                self.sink.log_params({"validation.lpips_backbone": name})
                self.named_backbone = True
        self.logged.append((step, metrics))
        self.sink.log_metrics({f"validation/{k}": v for k, v in metrics.items()}, step)
        if not self.sink.wants_figures:
            return
        rows = [("generated", samples.generated)]
        if samples.real is not None:
            rows.insert(0, ("real" if samples.paired else "real (unpaired)", samples.real))
        masks = samples.masks
        if masks is not None and tuple(masks.shape[2:]) != tuple(samples.generated.shape[2:]):
            masks = None
        shown = ", ".join(
            f"{k} {metrics[k]:.3g}" for k in ("ssim", "psnr", "lpips") if k in metrics
        )
        title = f"validation samples ({self.sink.prefix}, step {step})\n{self.source.reference}"
        figure = image_rows(
            rows,
            getattr(samples, "labels", None),
            f"{title}\n{shown}" if shown else title,
            masks=masks,
        )
        self.sink.log_figure(figure, f"validation_step_{step:08d}")

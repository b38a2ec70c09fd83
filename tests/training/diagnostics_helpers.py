"""Pieces shared by the training-diagnostics tests: a sink that records, a fake source."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from medgen.training.diagnostics import DiagnosticsSink


class RecordingSink(DiagnosticsSink):
    """Keeps every metric, param and figure name instead of sending them anywhere."""

    def __init__(self, figures: bool = True) -> None:
        super().__init__(prefix="job", artifact_path="job")
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.params: dict[str, object] = {}
        self.figures: list[str] = []
        self._figures = figures

    @property
    def wants_figures(self) -> bool:
        return self._figures

    def log_metrics(self, metrics, step):
        if metrics:
            self.metrics.append((int(step), dict(metrics)))

    def log_params(self, params):
        self.params.update(params)

    def log_figure(self, figure, name):
        self.figures.append(name)
        return name

    def steps_of(self, name: str) -> list[int]:
        return [step for step, m in self.metrics if name in m]

    def values_of(self, name: str) -> list[float]:
        return [m[name] for _, m in self.metrics if name in m]


@dataclass
class Details:
    """`LossDetails`-like record for fake sources."""

    per_sample: torch.Tensor
    time_fraction: torch.Tensor
    timesteps: torch.Tensor
    x0: torch.Tensor
    region: torch.Tensor | None = None
    region_sums: torch.Tensor | None = None
    region_counts: torch.Tensor | None = None
    outside_sums: torch.Tensor | None = None
    outside_counts: torch.Tensor | None = None


@dataclass
class Samples:
    generated: torch.Tensor
    real: torch.Tensor | None
    paired: bool
    masks: torch.Tensor | None = None
    score_region: torch.Tensor | None = None
    trajectory: list = field(default_factory=list)
    labels: list | None = None


class FakeSource:
    """A diagnostics source whose loss is an MLP's per-sample MSE on ``(x, y)`` batches; the
    "time" of a sample is its first input feature squashed to [0, 1]."""

    reference = "fake reference"

    def __init__(self) -> None:
        self.observers = []
        self.sample_calls: list[dict] = []

    def add_loss_observer(self, fn):
        self.observers.append(fn)

    def time_bin_labels(self, bins):
        return [f"bin{i}" for i in range(bins)]

    def loss_fn(self, model, batch):
        x, y = batch
        per_sample = (model(x) - y).pow(2).mean(dim=1)
        details = Details(
            per_sample=per_sample.detach(),
            time_fraction=torch.sigmoid(x[:, 0]).detach(),
            timesteps=x[:, 0].detach(),
            x0=x.detach()[:, None, :, None].expand(-1, 1, -1, 6),
        )
        for observe in self.observers:
            observe(details)
        return per_sample.mean()

    def validation_batch(self, n):
        return {"x": torch.zeros(n, 6)}

    def sample(self, net, batch, *, seed, num_steps, trace_frames):
        n = batch["x"].shape[0]
        torch.randn(16)  # a draw from the global stream, as a sampler without a generator makes
        self.sample_calls.append(
            {"n": n, "trace_frames": trace_frames, "seed": seed, "training": net.training}
        )
        images = torch.zeros(n, 1, 8, 8)
        frames = [(float(i), images[0], images[0]) for i in range(trace_frames)]
        return Samples(images, images.clone(), True, trajectory=frames)

    def display(self, x0):
        return x0.float()

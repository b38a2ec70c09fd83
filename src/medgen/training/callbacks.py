"""Callbacks: how the engine reports progress, metrics and artifacts.

The engine calls callbacks on rank 0 only. Records are plain dicts:

* ``{"kind": "step", "step", "epoch", "loss", "lr"}`` every ``log_every`` steps
  (loss = mean over the steps since the previous record, lr = lr of the last step),
* ``{"kind": "epoch", "step", "epoch", "loss"}`` when an epoch completes (the loss diagnostics
  add their per-epoch values to it: `medgen.training.loss_diagnostics`),
* ``{"kind": "val", "step", "epoch", <metric>: value, ...}`` after validation.

mlflow and matplotlib are imported lazily: a CPU worker should not pay seconds of
import time for tools it does not use.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen.training.tracking import active_mlflow

if TYPE_CHECKING:  # pragma: no cover
    from medgen.training.engine import Trainer
    from medgen.training.results import TrainingResult


class Callback:
    """No-op base class; override what you need."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None: ...

    def on_log(self, record: dict[str, Any]) -> None: ...

    def on_epoch_end(self, record: dict[str, Any]) -> None: ...

    def on_validation_end(self, record: dict[str, Any]) -> None: ...

    def on_checkpoint(self, path: Path, kind: str) -> None: ...

    def on_train_end(self, trainer: Trainer, result: TrainingResult) -> None: ...


class ProgressBar(Callback):
    """tqdm bar over optimizer steps; shows the last logged loss, lr and it/s."""

    def __init__(self, desc: str = "train"):
        self.desc = desc
        self._bar = None

    def on_train_start(self, trainer: Trainer) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=trainer.config.max_steps, initial=trainer.step, desc=self.desc, dynamic_ncols=True
        )

    def on_step_end(self, trainer: Trainer) -> None:
        self._bar.update(1)

    def on_log(self, record: dict[str, Any]) -> None:
        self._bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.3g}", refresh=False)

    def on_train_end(self, trainer: Trainer, result: TrainingResult) -> None:
        self._bar.close()


class MlflowCallback(Callback):
    """Log params, metrics and artifacts to the active MLflow run; no-op without one.

    kedro-mlflow opens a run around `kedro run`. Metric names are
    ``<prefix>/loss``, ``<prefix>/lr``, ``<prefix>/epoch_loss`` and ``val/<name>``;
    params are ``<prefix>.<config key>``. At the end a loss-curve PNG is logged
    under ``<artifact_path>/``.
    """

    def __init__(
        self,
        prefix: str = "train",
        log_params: bool = True,
        log_loss_curve: bool = True,
        artifact_path: str = "training",
    ):
        self.prefix = prefix
        self.log_params = log_params
        self.log_loss_curve = log_loss_curve
        self.artifact_path = artifact_path

    def on_train_start(self, trainer: Trainer) -> None:
        mlflow = active_mlflow()
        if mlflow is None or not self.log_params:
            return
        # nested blocks (logging, perceptual, augmentation) as one param per leaf
        params = {f"{self.prefix}.{k}": v for k, v in _flatten(trainer.config.to_dict()).items()}
        params[f"{self.prefix}.world_size"] = trainer.world_size
        run = mlflow.active_run()
        # A resumed run re-attaches to the same MLflow run: params are already there
        # (MLflow refuses to overwrite a param), so only log the missing ones.
        existing = mlflow.get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in params.items() if k not in existing})

    def on_log(self, record: dict[str, Any]) -> None:
        self._log_metrics(
            {
                f"{self.prefix}/loss": record["loss"],
                f"{self.prefix}/lr": record["lr"],
                f"{self.prefix}/epoch": record["epoch"],
            },
            record["step"],
        )

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self._log_metrics({f"{self.prefix}/epoch_loss": record["loss"]}, record["step"])

    def on_validation_end(self, record: dict[str, Any]) -> None:
        metrics = {f"val/{k}": v for k, v in record.items() if k not in ("kind", "step", "epoch")}
        self._log_metrics(metrics, record["step"])

    def on_train_end(self, trainer: Trainer, result: TrainingResult) -> None:
        if not self.log_loss_curve or active_mlflow() is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = save_loss_curve(result.history, Path(tmp) / f"{self.prefix}_loss_curve.png")
            self.log_artifact(path)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> bool:
        """Log a file (e.g. a sample grid PNG); returns False when no run is active."""
        mlflow = active_mlflow()
        if mlflow is None:
            return False
        mlflow.log_artifact(str(path), artifact_path=artifact_path or self.artifact_path)
        return True

    @staticmethod
    def _log_metrics(metrics: dict[str, float], step: int) -> None:
        mlflow = active_mlflow()
        if mlflow is not None:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


class LossComponentsLogger(Callback):
    """Adds a model's mean loss components to each engine step record and to MLflow.

    For models whose loss has named terms (a GAN's l1/kl/adversarial, a network with several
    heads): the model keeps running sums and returns their means since the last call from
    ``pop_component_means() -> dict[str, float]``. The record is the dict the engine also keeps
    in its history, so the components travel with the history into checkpoints and the
    `TrainingResult`. MLflow metric names are ``<prefix>/<component>``.
    """

    def __init__(self, prefix: str = "train") -> None:
        self.prefix = prefix
        self.module = None

    def on_train_start(self, trainer: Trainer) -> None:
        if not callable(getattr(trainer.model, "pop_component_means", None)):
            raise TypeError(
                f"{type(self).__name__} needs a model with pop_component_means(), got "
                f"{type(trainer.model).__name__}"
            )
        self.module = trainer.model

    def on_log(self, record: dict[str, Any]) -> None:
        means = self.module.pop_component_means()
        record.update(means)
        mlflow = active_mlflow()
        if mlflow is not None and means:
            mlflow.log_metrics(
                {f"{self.prefix}/{k}": v for k, v in means.items()}, step=record["step"]
            )


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def save_loss_curve(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Plot step loss (and epoch loss, val metrics on a second axis) to a PNG."""
    # A bare Figure renders with Agg and never touches pyplot's global backend.
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = [r for r in history if r.get("kind") == "step"]
    epochs = [r for r in history if r.get("kind") == "epoch"]
    vals = [r for r in history if r.get("kind") == "val"]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train loss", lw=1)
    if epochs:
        ax.plot(
            [r["step"] for r in epochs],
            [r["loss"] for r in epochs],
            "o-",
            label="epoch mean loss",
            ms=3,
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    if steps and min(r["loss"] for r in steps) > 0:
        ax.set_yscale("log")
    if vals:
        ax2 = ax.twinx()
        names = sorted({k for r in vals for k in r} - {"kind", "step", "epoch"})
        for name in names:
            pts = [(r["step"], r[name]) for r in vals if name in r]
            ax2.plot(*zip(*pts, strict=True), "s--", ms=3, label=f"val {name}")
        ax2.set_ylabel("validation")
        ax2.legend(loc="upper center", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path

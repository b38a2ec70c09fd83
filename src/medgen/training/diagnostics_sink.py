"""Where the training diagnostics go, and the base of their callbacks.

`DiagnosticsSink`: the active MLflow run (metric names ``<job>/<name>``, figures under
``<artifact path>/diagnostics/``, both taken from the job's `MlflowCallback`), else PNG files in
``<checkpoint dir>/diagnostics/`` (metrics then go nowhere: the engine's history and MLflow are
where training numbers live). `DiagnosticCallback` finds the sink when training starts; `due`
is the one interval rule (every ``every`` steps or epochs, and where a callback says, the last).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medgen.training.callbacks import Callback, MlflowCallback
from medgen.training.tracking import active_mlflow

if TYPE_CHECKING:  # pragma: no cover
    from medgen.training.engine import Trainer

DIAGNOSTICS_DIR = "diagnostics"


class DiagnosticsSink:
    """Where diagnostics go (module docstring). ``prefix`` names metrics, ``artifact_path``
    is the job's MLflow artifact folder, ``folder`` the fallback for figures (None: figures
    are not even drawn when no MLflow run is active)."""

    def __init__(
        self,
        prefix: str = "train",
        artifact_path: str = "training",
        folder: str | Path | None = None,
    ) -> None:
        self.prefix = prefix
        self.artifact_path = artifact_path
        self.folder = Path(folder) if folder is not None else None

    @classmethod
    def for_trainer(cls, trainer: Trainer) -> DiagnosticsSink:
        """The sink of ``trainer``'s job: its `MlflowCallback`'s names, its checkpoint folder."""
        mlflow_cb = next((c for c in trainer.callbacks if isinstance(c, MlflowCallback)), None)
        folder = trainer.checkpoint_dir / DIAGNOSTICS_DIR if trainer.checkpoint_dir else None
        if mlflow_cb is None:
            return cls(folder=folder)
        return cls(mlflow_cb.prefix, mlflow_cb.artifact_path, folder)

    @property
    def wants_figures(self) -> bool:
        return active_mlflow() is not None or self.folder is not None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        mlflow = active_mlflow()
        if mlflow is not None and metrics:
            named = {f"{self.prefix}/{k}": float(v) for k, v in metrics.items()}
            mlflow.log_metrics(named, step=int(step))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params ``<prefix>.<name>`` not yet in the run (a resumed run has them already)."""
        mlflow = active_mlflow()
        if mlflow is None or not params:
            return
        existing = mlflow.get_run(mlflow.active_run().info.run_id).data.params
        named = {f"{self.prefix}.{k}": str(v) for k, v in params.items()}
        missing = {k: v for k, v in named.items() if k not in existing}
        if missing:
            mlflow.log_params(missing)

    def log_figure(self, figure: Any, name: str) -> str | None:
        """Save a matplotlib figure as ``<name>.png``: an MLflow artifact, else a file in the
        folder. Returns where it went (None: nowhere)."""
        mlflow = active_mlflow()
        if mlflow is None and self.folder is None:
            return None
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        if mlflow is not None:
            folder = f"{self.artifact_path}/{DIAGNOSTICS_DIR}"
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{name}.png"
                path.write_bytes(buffer.getvalue())
                mlflow.log_artifact(str(path), artifact_path=folder)
            return f"{folder}/{name}.png"
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{name}.png"
        target.write_bytes(buffer.getvalue())
        return str(target)


def due(count: int, every: int, last: bool = False) -> bool:
    """Whether a diagnostic with interval ``every`` runs at ``count`` (a step or an epoch)."""
    return last or (count > 0 and count % every == 0)


class DiagnosticCallback(Callback):
    """Base of the diagnostics: ``sink`` (given, or the trainer's at the start)."""

    def __init__(self, sink: DiagnosticsSink | None = None) -> None:
        self.sink = sink
        self.active = False

    def start(self, trainer: Trainer) -> None:
        if self.sink is None:
            self.sink = DiagnosticsSink.for_trainer(trainer)

"""The active MLflow run, found without importing mlflow."""

from __future__ import annotations

import sys


def active_mlflow():
    """The mlflow module if a run is active, else None (without importing mlflow:
    a process that never imported it cannot have an active run)."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None or mlflow.active_run() is None:
        return None
    return mlflow

"""A temporary copy of the project for whole-pipeline runs, and running a session in it.

Runs happen in a temporary folder (conf/ + pyproject.toml), so data/ and mlflow.db are
written there, never in the checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import mlflow
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

REPO = Path(__file__).resolve().parents[1]


def make_project(root: Path) -> Path:
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()  # Kedro checks it exists; medgen itself is imported from the install
    # MLflow caches one store per tracking-URI string; the relative default would make a
    # second project in this process write into the first project's database.
    (root / "conf" / "test" / "mlflow_tracking.yml").write_text(
        f"server:\n  mlflow_tracking_uri: sqlite:///{root / 'mlflow.db'}\n"
    )
    return root


def run_pipeline(
    project: Path,
    pipeline: str,
    params: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    node_names: list[str] | None = None,
) -> str | None:
    """Run one pipeline with env ``test`` (only its nodes with one of ``tags`` or named in
    ``node_names``, when given); return the MLflow run id it logged to."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(project)
        bootstrap_project(project)
        run_id = None
        try:
            with KedroSession.create(
                project_path=project, env="test", runtime_params=params or None
            ) as session:
                session.run(pipeline_names=[pipeline], tags=tags, node_names=node_names)
                run_id = mlflow.active_run().info.run_id if mlflow.active_run() else None
        finally:
            # kedro-mlflow re-enters its run once per node and closes it once: in a process
            # that runs several sessions, close what is left so each run logs to its own.
            while mlflow.active_run():
                mlflow.end_run()
    return run_id

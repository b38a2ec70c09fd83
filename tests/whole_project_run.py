"""One test-size run of the whole project (``__default__``: all six pipelines, env ``test``),
shared by the browser, notebook and provenance tests.

The run takes minutes, so it happens once per test process: each module's session-scoped
fixture calls :func:`whole_project_run`, which runs it the first time and hands every later
caller the same :class:`ProjectRun` (a fixture imported into several modules would be one
fixture per module, and run once each). It happens in a temporary copy of the project
(`tests.kedro_project`), so data/, mlflow.db and mlruns/ are written there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kedro_project import make_project, run_pipeline

PIPELINES = (
    "data_processing",
    "autoencoder",
    "latent_diffusion",
    "inpainting",
    "text2image_rlhf",
    "evaluation",
)


@dataclass(frozen=True)
class ProjectRun:
    root: Path  # the temporary project
    run_id: str | None  # kedro-mlflow's run
    seconds: float

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def report(self) -> Path:
        return self.data / "08_reporting/evaluation/report.html"

    @property
    def metrics(self) -> Path:
        return self.data / "08_reporting/evaluation/metrics.json"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"


_RUNS: dict[str, ProjectRun | BaseException] = {}


def whole_project_run(tmp_path_factory: pytest.TempPathFactory) -> ProjectRun:
    """The shared test-size ``kedro run`` (run on first use; see the module docstring).

    A run that failed is not tried again by the next module: its error is raised again.
    """
    if "default" not in _RUNS:
        root = make_project(tmp_path_factory.mktemp("whole-project"))
        start = time.perf_counter()
        try:
            run_id = run_pipeline(root, "__default__")
        except Exception as error:
            _RUNS["default"] = error
            raise
        _RUNS["default"] = ProjectRun(root, run_id, time.perf_counter() - start)
    run = _RUNS["default"]
    if isinstance(run, BaseException):
        raise RuntimeError(f"the shared test-size run failed: {run}") from run
    return run

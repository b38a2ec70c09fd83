"""Project hooks: the run clock, and the provenance every MLflow run records."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl

from medgen import runtime
from medgen.hooks import provenance

logger = logging.getLogger(__name__)
# larger files are listed in provenance.json but not copied into the artifact store
MAX_ARTIFACT_BYTES = 512 * 1024**2


class RunClockHooks:
    """Start the run clock so reports can state how long the run took so far, and flush
    subnormal floats to zero for the whole run (sampling too; `runtime.flush_denormals`)."""

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:  # noqa: ARG002
        runtime.start_run_clock()
        runtime.flush_denormals()


class ProvenanceHooks:
    """Record in kedro-mlflow's run where it came from (`medgen.hooks.provenance`).

    At the start (so a failed run has them too): tags ``git.commit``, ``git.dirty``,
    ``git.branch``, ``git.diff_sha256``, ``python`` and ``version.<package>``; artifacts
    ``provenance/parameters.json`` (every resolved ``params:`` input of the pipelines run)
    and ``provenance/packages.txt``. At the end of a successful run: tags
    ``fingerprint.<dataset>`` for the raw cohort and every model input, artifact
    ``provenance/provenance.json`` (all of the above with file counts and sizes), and the
    files of the run's ``models`` and ``reporting`` outputs as artifacts under their
    project-relative folders (``data/08_reporting/evaluation/metrics.json``, ...). What
    cannot be recorded is named in provenance.json (``errors``), the tag
    ``provenance.errors`` and the log; the rest is still recorded.

    Nothing happens when no MLflow run is active (tracking disabled for the pipeline).
    The end-of-run hook runs before kedro-mlflow's, which closes the run (``tryfirst``).
    """

    def __init__(self) -> None:
        self._run_id: str | None = None
        self._record: dict[str, Any] = {}

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        run = mlflow.active_run()
        self._run_id = run.info.run_id if run else None
        if self._run_id is None:
            return
        git = provenance.git_state()
        env = provenance.environment()
        self._record = {"git": git, "environment": env, "run_params": dict(run_params)}
        tags = {f"git.{k}": str(v) for k, v in git.items() if k != "root" and v is not None}
        tags["python"] = env["python"]
        tags |= {f"version.{name}": v for name, v in env["packages"].items()}
        self._set_tags(tags)
        parameters = provenance.pipeline_parameters(pipeline, catalog)
        self._log_text(provenance.to_json(parameters), "provenance", "parameters.json")
        versions = provenance.package_versions()
        packages = "".join(f"{name}=={version}\n" for name, version in versions.items())
        self._log_text(packages, "provenance", "packages.txt")

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, run_params, pipeline, catalog) -> None:
        if self._run_id is None:
            return
        root = Path(run_params.get("project_path") or ".").resolve()
        names = pipeline.datasets() | {"raw_cohort"}
        inputs = provenance.datasets_in_layers(catalog, names, provenance.FINGERPRINT_LAYERS)
        fingerprints, errors = provenance.data_fingerprints(catalog, inputs, root)
        self._set_tags({f"fingerprint.{name}": fp["sha256"] for name, fp in fingerprints.items()})
        outputs = provenance.datasets_in_layers(
            catalog, pipeline.all_outputs(), provenance.ARTIFACT_LAYERS
        )
        logged, too_large = self._log_outputs(catalog, outputs, root, errors)
        self._record |= {
            "fingerprints": fingerprints,
            "artifacts": logged,
            "not_logged_too_large": too_large,
            "errors": errors,
        }
        if errors:  # what could not be recorded is said, in the log and in the run
            logger.error("provenance: not recorded: %s", errors)
            self._set_tags({"provenance.errors": str(len(errors))})
        self._log_text(provenance.to_json(self._record), "provenance", "provenance.json")
        logger.info(
            "provenance: %d fingerprints, %d artifact files", len(fingerprints), len(logged)
        )

    def _set_tags(self, tags: dict[str, str]) -> None:
        client = mlflow.MlflowClient()
        for key, value in tags.items():
            client.set_tag(self._run_id, provenance.tag_key(key), value)

    def _log_outputs(
        self, catalog, names, root: Path, errors: dict[str, str]
    ) -> tuple[list[str], list[str]]:
        client = mlflow.MlflowClient()
        logged, too_large = [], []
        for name in names:
            try:
                for path in provenance.dataset_files(catalog.get(name), root):
                    relative = provenance.project_relative(path, root).lstrip("/")
                    if path.stat().st_size > MAX_ARTIFACT_BYTES:
                        too_large.append(relative)
                        continue
                    client.log_artifact(self._run_id, str(path), str(Path(relative).parent))
                    logged.append(relative)
            except Exception as error:  # one output that cannot be logged stops no other
                errors[f"artifact {name}"] = f"{type(error).__name__}: {error}"
        return logged, too_large

    def _log_text(self, text: str, folder: str, filename: str) -> None:
        with tempfile.TemporaryDirectory(prefix="medgen-provenance-") as tmp:
            path = Path(tmp) / filename
            path.write_text(text)
            mlflow.MlflowClient().log_artifact(self._run_id, str(path), folder)

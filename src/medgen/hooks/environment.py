"""What a run environment owns: its data root, and its MLflow server's address.

`DataRootHooks`: every catalog path and checkpoint folder of an environment lies under its
``data_root`` (``conf/<env>/globals.yml``: ``data`` in conf/base, ``$MEDGEN_DATA_ROOT`` or
``data/cluster`` in conf/cluster). The first run in a root claims it for its environment
(``<data_root>/.medgen-environment``); a run of another environment refuses to start there,
naming both, before any node could overwrite or delete what the other one produced (the
cohort's clean-up of stale subjects included). ``local`` (the default ``kedro run``) and
``base`` are one environment: conf/local only adds a user's overrides to conf/base.

`TrackingCredentialsHooks`: the MLflow tracking URI of a remote server often carries a token,
so it may live in the environment's git-ignored ``credentials.yml`` under the entry that
``mlflow.yml``'s ``server.credentials`` names (Kedro's conf/local/credentials.yml convention,
for ``--env cluster`` conf/cluster/credentials.yml)::

    mlflow_credentials:
      MLFLOW_TRACKING_URI: https://user:token@mlflow.example.org
      MLFLOW_TRACKING_USERNAME: ...

kedro-mlflow exports that entry as environment variables only after it has read the tracking
URI, so this hook exports ``MLFLOW_TRACKING_URI`` first (``tryfirst``), unless the job's
environment already sets it; conf/cluster/mlflow.yml reads it with ``oc.env``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

MARKER = ".medgen-environment"
#: environments that are the same configuration (conf/local only holds a user's overrides)
SAME_ENVIRONMENT = {"base": "local", None: "local"}


class DataRootClaimedError(RuntimeError):
    """A run's data root holds another environment's outputs."""


def environment_name(env: str | None) -> str:
    return SAME_ENVIRONMENT.get(env, env)


def claim_data_root(root: Path, env: str | None) -> None:
    """Claim ``root`` for ``env`` (write the marker when there is none) or raise
    `DataRootClaimedError` when another environment claimed it."""
    env = environment_name(env)
    marker = root / MARKER
    if marker.is_file():
        owner = json.loads(marker.read_text(encoding="utf-8")).get("environment")
        if owner != env:
            raise DataRootClaimedError(
                f"the data root {root} holds the outputs of environment {owner!r} ({marker}); "
                f"this run of environment {env!r} could overwrite or delete them. Give "
                f"{env!r} its own data_root in conf/{env}/globals.yml (for cluster: "
                "MEDGEN_DATA_ROOT), or remove the marker if those outputs may go."
            )
        return
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"environment": env}) + "\n", encoding="utf-8")
    logger.info("data root %s now belongs to environment %r (%s)", root, env, MARKER)


class DataRootHooks:
    """Refuse a run in a data root another environment claimed (module docstring)."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._env: str | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        root = context.config_loader["globals"].get("data_root")
        self._env = context.env
        self._root = None
        if root is None or "://" in str(root):
            return  # no root, or a remote one (s3://...): nothing local to claim
        root = Path(root)
        self._root = root if root.is_absolute() else Path(context.project_path) / root

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:  # noqa: ARG002
        if self._root is not None:
            claim_data_root(self._root, self._env)


class TrackingCredentialsHooks:
    """Export ``MLFLOW_TRACKING_URI`` from the credentials entry mlflow.yml names, before
    kedro-mlflow reads the URI (module docstring)."""

    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return  # the job's environment wins
        loader = context.config_loader
        # the pattern kedro-mlflow registers in its own after_context_created, which runs later
        loader.config_patterns.setdefault("mlflow", ["mlflow*", "mlflow*/**", "**/mlflow*"])
        try:
            entry = (loader["mlflow"].get("server") or {}).get("credentials")
            credentials = loader["credentials"] if entry else {}
        except Exception:  # noqa: BLE001 - no mlflow.yml or no credentials: kedro-mlflow says so
            return
        uri = (credentials.get(entry) or {}).get("MLFLOW_TRACKING_URI") if entry else None
        if uri:
            os.environ["MLFLOW_TRACKING_URI"] = str(uri)
            logger.info("MLflow tracking URI from credentials entry %r", entry)

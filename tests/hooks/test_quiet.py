"""Known library notices are silenced before any plugin prints them; other warnings still show."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from medgen.hooks.quiet import CapturedKnownWarnings, silence_known_notices

ROOT = Path(__file__).resolve().parents[2]


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("py.warnings", logging.WARNING, "x.py", 1, "%s", (message,), None)


def test_captured_warning_filter_drops_known_notices_only():
    drop = CapturedKnownWarnings()
    mlflow_notice = "x.py:187: UserWarning: \x1b[33mAdd type hints to the `predict` method to ..."
    assert not drop.filter(_record(mlflow_notice))
    assert drop.filter(_record("x.py:3: UserWarning: the loss is NaN"))


def test_silencing_is_idempotent_and_leaves_unknown_warnings_visible():
    silence_known_notices()
    silence_known_notices()
    captured = logging.getLogger("py.warnings").filters
    assert sum(isinstance(f, CapturedKnownWarnings) for f in captured) == 1
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        silence_known_notices()
        warnings.warn("register_new_resolver() is deprecated", UserWarning, stacklevel=1)
        warnings.warn("something a user must read", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something a user must read"]


def test_the_kedro_cli_starts_without_the_mlflow_type_hint_notice():
    # the kedro.init entry point runs before kedro-mlflow is imported, whose model class
    # triggers mlflow's notice under mlflow's own "once" filter
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "registry", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "text2image_rlhf" in output
    assert "Add type hints" not in output and "Warning" not in output

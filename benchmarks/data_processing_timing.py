"""Wall time and peak memory of ``kedro run --pipeline data_processing``, fresh and cached.

    uv run python benchmarks/data_processing_timing.py [--env base] [--keep DIR]

Runs the pipeline twice in a temporary copy of the project (conf/ + pyproject.toml), so
the checkout's data/ is untouched: once from nothing, once again with unchanged inputs
and parameters (which should reuse the cohort). Each run is a separate ``kedro run``
process, timed from the outside, startup included, like a user would experience it.
Peak memory is the maximum resident set size of the run's process tree as reported by
``getrusage`` (largest single process: the Kedro process or one worker). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_info  # benchmarks/machine.py (scripts run from this folder)

REPO = Path(__file__).resolve().parents[1]


def make_project(root: Path) -> None:
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()


def timed_run(root: Path, env: str) -> dict:
    command = [sys.executable, "-m", "kedro", "run", "--pipeline", "data_processing", "--env", env]
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(completed.stdout[-3000:] + completed.stderr[-3000:])
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads((root / "data/08_reporting/data_summary.json").read_text())
    return {
        "wall_seconds": round(seconds, 1),
        "pipeline_seconds": summary["elapsed_seconds"],
        "peak_rss_mib_so_far": round(peak_kib / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local", help="Kedro environment (local = base defaults)")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="medgen-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    make_project(root)
    try:
        fresh = timed_run(root, args.env)
        cached = timed_run(root, args.env)
        summary = json.loads((root / "data/08_reporting/data_summary.json").read_text())
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "data_processing_timing",
                "env": args.env,
                "machine": machine_info(),
                "fresh": fresh,
                "cached": cached,
                "speedup": round(fresh["wall_seconds"] / cached["wall_seconds"], 2),
                "subjects_per_split": summary["subjects_per_split"],
                "slices_per_split": summary["slices_per_split"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

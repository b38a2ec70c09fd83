"""Seconds of every node and pipeline of a ``kedro run``, from a fresh temporary copy or a log.

    uv run python benchmarks/pipeline_times.py run [--dir DIR] [--pipelines a,b] [--env base]
                                                   [--source CHECKOUT] [--json OUT.json]
    uv run python benchmarks/pipeline_times.py log RUN.log [--project .]

``run`` copies conf/ and pyproject.toml into a temporary folder (the checkout's data/ and
mlflow.db are never touched; ``--dir`` keeps the copy), then starts one child process that
runs the Kedro session there, like ``uv run kedro run``, with one extra hook: a node timer.
The hook is registered on that session only, so the project's settings stay as they are.
``--source`` takes conf/, pyproject.toml and src/ from another checkout (e.g. ``git archive``
of an earlier commit; its src/ goes first on PYTHONPATH), to compare two versions.

``log`` reads what ``kedro run`` printed (Kedro's rich log: one timestamp per second that
changed, messages wrapped over several lines) and times each task from the previous task's
completion to its own, which includes loading its inputs and saving its outputs.

Per node: ``task`` seconds (previous task's end → this node's last save) and, in ``run``
mode, ``compute`` seconds (the node function alone). Per pipeline: the sum of its nodes'
task seconds (each node belongs to the registered pipeline that holds it; the default run
is every pipeline). ``startup`` is process start → the pipeline's start. Prints a markdown
table for docs/benchmarks.md; ``--json FILE`` writes every node's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py

TIMESTAMP = re.compile(r"^\[(\d\d/\d\d/\d\d \d\d:\d\d:\d\d)\]")
# The message column of Kedro's rich log; the file:line column starts after it.
CONTINUATION = re.compile(r"^ {20,}(\S.*?)\s*(?:\S+\.py:\d+)?\s*$")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (worker pools):
    on a shared machine a node's CPU time changes far less with the load than its wall time."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class NodeTimer:
    """Kedro hooks that record when each node starts, ends and last saves an output, and the
    CPU seconds used since the previous node ended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = time.time()
        self.pipeline_start: float | None = None
        self.nodes: list[dict] = []
        self._open: dict[str, dict] = {}

    def _hook(name):  # noqa: N805 - a decorator used in the class body
        from kedro.framework.hooks import hook_impl

        return hook_impl(specname=name)

    @_hook("before_pipeline_run")
    def pipeline_started(self, run_params, pipeline, catalog) -> None:  # noqa: ARG002
        self.pipeline_start = time.time()
        self.cpu_start = self._cpu = cpu_seconds()

    @_hook("before_node_run")
    def node_started(self, node, catalog, inputs, is_async, run_id) -> None:  # noqa: ARG002
        self._open[node.name] = {"node": node.name, "started": time.time()}

    @_hook("after_node_run")
    def node_finished(self, node, catalog, inputs, outputs, is_async, run_id) -> None:  # noqa: ARG002
        record = self._open.pop(node.name)
        record["finished"] = record["saved"] = time.time()
        record["cpu_to_finish"] = cpu_seconds()
        record["outputs"] = list(node.outputs)
        self.nodes.append(record)

    @_hook("after_dataset_saved")
    def dataset_saved(self, dataset_name, data, node) -> None:  # noqa: ARG002
        if self.nodes and self.nodes[-1]["node"] == node.name:
            self.nodes[-1]["saved"] = time.time()
            self.nodes[-1]["cpu_to_finish"] = cpu_seconds()

    @_hook("after_pipeline_run")
    def pipeline_finished(self, run_params, run_result, pipeline, catalog) -> None:  # noqa: ARG002
        self.path.write_text(
            json.dumps(
                {
                    "process_start": self.start,
                    "pipeline_start": self.pipeline_start,
                    "pipeline_end": time.time(),
                    "cpu_start": self.cpu_start,
                    "cpu_end": cpu_seconds(),
                    "nodes": self.nodes,
                }
            )
        )


def node_pipelines() -> dict[str, str]:
    """Node name → the registered pipeline that holds it (the project must be bootstrapped)."""
    from kedro.framework.project import pipelines

    owner = {}
    for name, pipeline in pipelines.items():
        if name == "__default__":
            continue
        for node in pipeline.nodes:
            owner.setdefault(node.name, name)
    return owner


def child_session(project: Path, env: str | None, names: list[str] | None, out: Path) -> None:
    """Runs in the child process: one Kedro session in ``project`` with the node timer."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    os.chdir(project)
    bootstrap_project(project)
    timer = NodeTimer(out)
    with KedroSession.create(project_path=project, env=env) as session:
        session._hook_manager.register(timer)  # this session only: settings.py stays as it is
        session.run(pipeline_names=names)
    record = json.loads(out.read_text())
    record["owners"] = node_pipelines()
    out.write_text(json.dumps(record))


def tasks_from_timer(record: dict) -> list[dict]:
    """Task seconds (previous end → this node's last save), compute seconds (the node
    function) and task CPU seconds per node."""
    tasks, previous, cpu = [], record["pipeline_start"], record["cpu_start"]
    for node in record["nodes"]:
        tasks.append(
            {
                "node": node["node"],
                "pipeline": record["owners"].get(node["node"], "?"),
                "task_seconds": round(node["saved"] - previous, 1),
                "compute_seconds": round(node["finished"] - node["started"], 1),
                "cpu_seconds": round(node["cpu_to_finish"] - cpu, 1),
            }
        )
        previous, cpu = node["saved"], node["cpu_to_finish"]
    return tasks


def make_project(root: Path, source: Path = REPO) -> None:
    shutil.copytree(source / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir(exist_ok=True)
    shutil.copy(source / "pyproject.toml", root / "pyproject.toml")
    (root / "src").mkdir()  # Kedro checks it exists; medgen is imported from the install


def timed_run(root: Path, env: str | None, names: list[str] | None, source: Path = REPO) -> dict:
    """Run the session in a child process; its wall time from the outside, its node times."""
    out = root / "node_times.json"
    environment = dict(os.environ)
    if source != REPO and (source / "src").is_dir():
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(source / "src"), *filter(None, [environment.get("PYTHONPATH")])]
        )
    command = [sys.executable, __file__, "_child", str(root), "--out", str(out)]
    if env:
        command += ["--env", env]
    if names:
        command += ["--pipelines", ",".join(names)]
    start = time.time()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, env=environment)
    wall = time.time() - start
    (root / "run.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"kedro run failed (log: {root / 'run.log'}):\n{done.stderr[-3000:]}")
    record = json.loads(out.read_text())
    return {
        "wall_seconds": round(wall, 1),
        "startup_seconds": round(record["pipeline_start"] - start, 1),
        "pipeline_seconds": round(record["pipeline_end"] - record["pipeline_start"], 1),
        "pipeline_cpu_seconds": round(record["cpu_end"] - record["cpu_start"], 1),
        "tasks": tasks_from_timer(record),
    }


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%m/%d/%y %H:%M:%S").timestamp()


def tasks_from_log(lines: list[str], owners: dict[str, str]) -> dict:
    """Task seconds from a rich ``kedro run`` log: each "Completed node" minus the one before
    (the first minus the MLflow/runner start). One-second resolution."""
    now = first = start = end = None
    tasks, previous = [], None
    for i, line in enumerate(lines):
        if match := TIMESTAMP.match(line):
            now = _stamp(match.group(1))
            first = first if first is not None else now
        if "Using synchronous mode" in line or "Mlflow run" in line:
            start = previous = now if start is None else start
        if "Pipeline execution completed" in line:
            end = now
        if "Completed node:" not in line:
            continue
        name = line.split("Completed node:", 1)[1].split("runner.py")[0].strip()
        for following in lines[i + 1 : i + 4]:  # a long node name wraps onto the next lines
            part = CONTINUATION.match(following)
            if part is None or "Completed" in following or TIMESTAMP.match(following):
                break
            name += part.group(1).strip()
        tasks.append(
            {
                "node": name,
                "pipeline": owners.get(name, "?"),
                "task_seconds": round(now - previous, 1),
            }
        )
        previous = now
    return {
        "startup_seconds": None if start is None else round(start - first, 1),
        "pipeline_seconds": None if end is None else round(end - start, 1),
        "tasks": tasks,
    }


def per_pipeline(tasks: list[dict], key: str = "task_seconds") -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for task in tasks:
        totals[task["pipeline"]] += task.get(key) or 0.0
    return {name: round(seconds, 1) for name, seconds in totals.items()}


def markdown(result: dict) -> str:
    cpu = "pipelines_cpu" in result
    head = "| pipeline | seconds |" + (" CPU seconds |" if cpu else "")
    rows = [
        head + " slowest nodes (task seconds) |",
        "|---|---|" + ("---|" if cpu else "") + "---|",
    ]
    for name, seconds in sorted(result["pipelines"].items(), key=lambda kv: -kv[1]):
        nodes = sorted(
            (t for t in result["tasks"] if t["pipeline"] == name), key=lambda t: -t["task_seconds"]
        )
        slowest = ", ".join(f"{t['node']} {t['task_seconds']:.0f}" for t in nodes[:4])
        extra = f" {result['pipelines_cpu'][name]:.0f} |" if cpu else ""
        rows.append(f"| `{name}` | {seconds:.0f} |{extra} {slowest} |")
    rows.append(
        f"| start-up | {result.get('startup_seconds') or 0:.0f} |" + (" |" if cpu else "") + " |"
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run", help="time a run in a fresh temporary copy of the project")
    run.add_argument("--dir", type=Path, help="run in this folder and keep it")
    run.add_argument("--env", default=None, help="Kedro environment (default: Kedro's)")
    run.add_argument("--pipelines", default=None, help="comma-separated (default: all)")
    run.add_argument("--source", type=Path, default=REPO, help="checkout to take conf/ src/ from")
    log = sub.add_parser("log", help="time the nodes of a saved `kedro run` log")
    log.add_argument("logfile", type=Path)
    log.add_argument("--project", type=Path, default=REPO, help="where the pipelines are")
    child = sub.add_parser("_child")  # internal: the timed session
    child.add_argument("project", type=Path)
    child.add_argument("--out", type=Path, required=True)
    child.add_argument("--env", default=None)
    child.add_argument("--pipelines", default=None)
    for p in (run, log):
        p.add_argument("--json", type=Path, help="also write the whole result here")
    args = parser.parse_args()

    names = args.pipelines.split(",") if getattr(args, "pipelines", None) else None
    if args.mode == "_child":
        child_session(args.project, args.env, names, args.out)
        return
    from machine import machine_info

    if args.mode == "run":
        root = args.dir or Path(tempfile.mkdtemp(prefix="medgen-times-"))
        root.mkdir(parents=True, exist_ok=True)
        make_project(root, args.source.resolve())
        load = list(os.getloadavg())
        try:
            result = timed_run(root, args.env, names, args.source.resolve())
        finally:
            if args.dir is None:
                shutil.rmtree(root, ignore_errors=True)
        result["load_average_at_start"] = load
    else:
        from kedro.framework.startup import bootstrap_project

        bootstrap_project(args.project)
        result = tasks_from_log(args.logfile.read_text().splitlines(), node_pipelines())
    result["pipelines"] = per_pipeline(result["tasks"])
    if args.mode == "run":
        result["pipelines_cpu"] = per_pipeline(result["tasks"], "cpu_seconds")
    result["machine"] = machine_info()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()

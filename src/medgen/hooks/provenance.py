"""Where a run came from: the code's git state, the parameters, the data, the packages.

kedro-mlflow already starts one MLflow run per ``kedro run``, tags it with Kedro's run
parameters (env, pipeline names, the ``kedro_command``) and logs every ``params:`` input
of the nodes that ran (flattened, long values truncated). What it does not record, and
this module collects for :class:`medgen.hooks.ProvenanceHooks`:

- the git commit of the code that ran, whether the working tree was dirty (and a hash
  of the uncommitted diff, so two dirty runs can be told apart);
- the resolved parameters of the pipelines run, whole (``provenance/parameters.json``);
- fingerprints of the raw cohort (its subjects' own fingerprints, which chain generation
  parameters and file contents: `medgen.datasets.SubjectFolderDataset`) and of every model
  input file (SHA-256 of the bytes);
- the installed package versions (``provenance/packages.txt``) and Python/platform;
- the files of the run's model and reporting outputs (metrics.json, report.html, the
  summaries, the trained models), to be logged as artifacts under their project paths.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import medgen
from medgen.datasets import SubjectFolderDataset

# the packages whose versions also become run tags (all of them are in packages.txt)
KEY_PACKAGES = ("torch", "monai", "kedro", "kedro-mlflow", "mlflow", "clean-fid", "diffusers")
ARTIFACT_LAYERS = ("models", "reporting")
FINGERPRINT_LAYERS = ("raw", "model_input")
CHUNK = 1 << 20


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def git_state(path: Path | None = None) -> dict[str, Any]:
    """``commit``, ``dirty``, ``branch`` and ``diff_sha256`` of the git checkout holding
    ``path`` (default: the medgen source that is running); ``commit`` says why when there
    is no checkout (an installed wheel, git missing)."""
    path = Path(path or Path(medgen.__file__).resolve().parent)
    try:
        root = Path(_git(["rev-parse", "--show-toplevel"], path).strip())
        commit = _git(["rev-parse", "HEAD"], root).strip()
        status = _git(["status", "--porcelain"], root)
        diff = _git(["diff", "HEAD", "--binary"], root)
        branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], root).strip()
    except (OSError, subprocess.SubprocessError) as error:
        reason = getattr(error, "stderr", "") or str(error)
        return {"commit": f"unknown (no git checkout at {path}: {reason.strip()[:200]})"}
    return {
        "commit": commit,
        "dirty": bool(status.strip()),
        "changed_files": len(status.splitlines()),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if status.strip() else None,
        "branch": branch,
        "root": str(root),
    }


def package_versions() -> dict[str, str]:
    """Every installed distribution's version, by normalised name."""
    versions = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name:
            versions[name] = dist.version
    return dict(sorted(versions.items()))


def environment() -> dict[str, Any]:
    """Python, platform and the key packages' versions."""
    versions = package_versions()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: versions.get(name, "not installed") for name in KEY_PACKAGES},
    }


def layer_of(dataset: Any) -> str | None:
    """The kedro-viz layer a catalog entry declares in its metadata, if any."""
    metadata = getattr(dataset, "metadata", None) or {}
    return (metadata.get("kedro-viz") or {}).get("layer")


def _inner(dataset: Any) -> Any:
    # medgen.datasets.OptionalDataset wraps the dataset that holds the files
    return getattr(dataset, "_dataset", dataset)


def dataset_files(dataset: Any, root: Path) -> list[Path]:
    """The local files a catalog entry holds (sorted; none when it is not on local disk).

    Single-file datasets name theirs in ``_describe()["filepath"]``; a
    ``PartitionedDataset`` holds the files under its path that end with its
    ``filename_suffix`` (so checkpoint folders next to the models are not included).
    """
    dataset = _inner(dataset)
    described = dataset._describe()
    if described.get("protocol", "file") not in ("file", None):
        return []
    if "filepath" in described:
        path = root / str(described["filepath"])
        return [path] if path.is_file() else []
    if "path" in described and hasattr(dataset, "_filename_suffix"):
        folder = root / str(described["path"])
        suffix = str(dataset._filename_suffix or "")
        return sorted(p for p in folder.rglob("*") if p.is_file() and p.as_posix().endswith(suffix))
    return []


def project_relative(path: Path, root: Path) -> str:
    """``path`` relative to the project root, or absolute when it lies outside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_fingerprint(files: Iterable[Path], root: Path) -> dict[str, Any]:
    """One SHA-256 over the files' project-relative paths and contents, with counts."""
    digest, count, size = hashlib.sha256(), 0, 0
    for path in sorted(files):
        digest.update(f"{project_relative(path, root)}\0{sha256_of(path)}\n".encode())
        count, size = count + 1, size + path.stat().st_size
    return {"sha256": digest.hexdigest(), "files": count, "bytes": size}


def subjects_fingerprint(subjects: Mapping[str, Any]) -> dict[str, Any]:
    """One SHA-256 over each subject's id and its own fingerprint (SubjectFolderDataset).

    NIfTI files are gzipped with a time stamp in the header, so their bytes differ between
    two builds of the same cohort; the subjects' fingerprints do not.
    """
    lines = "".join(f"{sid}\0{subjects[sid].fingerprint}\n" for sid in sorted(subjects))
    return {
        "sha256": hashlib.sha256(lines.encode()).hexdigest(),
        "subjects": len(subjects),
        "of": "subject ids and their SubjectFolderDataset fingerprints",
    }


def data_fingerprints(
    catalog: Any, names: Iterable[str], root: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """Fingerprints of the named catalog entries that exist locally (see module docstring),
    and for each entry that could not be fingerprinted, why (the run still records the rest)."""
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in sorted(set(names)):
        try:
            dataset = catalog.get(name)
            if dataset is None or not dataset.exists():
                continue
            if isinstance(_inner(dataset), SubjectFolderDataset):
                out[name] = subjects_fingerprint(dataset.load())
                continue
            files = dataset_files(dataset, root)
            if files:
                out[name] = files_fingerprint(files, root)
        except Exception as error:  # recorded in provenance.json and the log, never silent
            errors[name] = f"{type(error).__name__}: {error}"
    return out, errors


def datasets_in_layers(catalog: Any, names: Iterable[str], layers: Iterable[str]) -> list[str]:
    """The named catalog entries (no ``params:``) whose kedro-viz layer is one of ``layers``."""
    wanted = set(layers)
    found = []
    for name in sorted(set(names)):
        if name.startswith("params:") or name == "parameters":
            continue
        dataset = catalog.get(name)
        if dataset is not None and layer_of(dataset) in wanted:
            found.append(name)
    return found


def pipeline_parameters(pipeline: Any, catalog: Any) -> dict[str, Any]:
    """Every ``params:`` input of the pipeline, resolved (runtime ``--params`` included)."""
    names = sorted(n for n in pipeline.inputs() if n.startswith("params:") or n == "parameters")
    return {name.removeprefix("params:"): catalog.load(name) for name in names}


def tag_key(text: str) -> str:
    """``text`` as an MLflow tag key: characters MLflow refuses (``@`` of transcoded catalog
    entries such as ``text2image.captions_2d@images``) become ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", text)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)

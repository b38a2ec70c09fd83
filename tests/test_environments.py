"""Environments never destroy each other's data, and conf/cluster matches its sbatch templates.

Every environment reads and writes under its own ``data_root`` (conf/<env>/globals.yml); a run
in a root another environment claimed refuses to start (medgen.hooks.environment); a split
that would leave train, val or test empty is an error naming the counts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import mlflow
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from medgen.check_config.parameters import config_loader, load_parameters
from medgen.data.splits import split_by_patient
from medgen.hooks.environment import MARKER, DataRootClaimedError, claim_data_root
from medgen.training.distributed import Resources
from tests.kedro_project import REPO, make_project, run_pipeline

PATTERN = r"^(.+)-\d{3}$"
FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
SLURM = REPO / "conf" / "cluster" / "slurm"


# ---------------------------------------------------------------- splits


def test_a_split_that_would_leave_val_and_test_empty_names_the_counts():
    subjects = ["BraTS-SYN-00000-000", "BraTS-SYN-00001-000"]
    with pytest.raises(
        ValueError, match=r"2 patients .* train/val/test = 2/0/0, leaving val, test"
    ):
        split_by_patient(subjects, FRACTIONS, seed=0, patient_pattern=PATTERN)


def test_three_patients_fill_every_split_and_a_zero_fraction_is_logged(caplog):
    subjects = [f"P-{i:05d}-000" for i in range(3)]
    splits = split_by_patient(subjects, FRACTIONS, seed=0, patient_pattern=PATTERN)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [1, 1, 1]
    with caplog.at_level(logging.WARNING, logger="medgen.data.splits"):
        splits = split_by_patient(
            subjects[:2], {"train": 0.5, "val": 0.5, "test": 0.0}, seed=0, patient_pattern=PATTERN
        )
    assert [len(splits[k]) for k in ("train", "val", "test")] == [1, 1, 0]
    assert "split.fractions.test is 0" in caplog.text


# ---------------------------------------------------------------- data roots


def test_a_data_root_belongs_to_the_first_environment_that_ran_in_it(tmp_path):
    root = tmp_path / "data"
    claim_data_root(root, None)  # the default `kedro run`: environment local
    assert json.loads((root / MARKER).read_text()) == {"environment": "local"}
    claim_data_root(root, "local")
    claim_data_root(root, "base")  # conf/local only adds overrides to conf/base
    with pytest.raises(DataRootClaimedError, match=r"environment 'local'.*environment 'cluster'"):
        claim_data_root(root, "cluster")
    claim_data_root(tmp_path / "data" / "cluster", "cluster")  # its own root is fine


def _paths(entry: Any) -> list[str]:
    """Every filepath / path of a catalog entry (wrapped datasets included)."""
    if not isinstance(entry, dict):
        return []
    found = [str(entry[k]) for k in ("filepath", "path", "rejected_filepath") if k in entry]
    return found + [p for value in entry.values() for p in _paths(value)]


@pytest.mark.parametrize(
    ("env", "variables", "root"),
    [
        ("base", {}, "data"),
        ("test", {}, "data"),
        ("cluster", {}, "data/cluster"),
        ("cluster", {"MEDGEN_DATA_ROOT": "/scratch/me/medgen"}, "/scratch/me/medgen"),
    ],
)
def test_every_catalog_path_and_checkpoint_folder_lies_under_the_data_root(
    env, variables, root, monkeypatch
):
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    loader = config_loader(env, REPO / "conf")
    assert loader["globals"]["data_root"] == root
    outside = [
        (name, path)
        for name, entry in loader["catalog"].items()
        for path in _paths(entry)
        if not path.startswith(f"{root}/")
    ]
    assert not outside
    params = load_parameters(env, REPO / "conf")
    folders = {
        "autoencoder": params["autoencoder"]["checkpoint_root"],
        "latent_diffusion": params["latent_diffusion"]["shared"]["checkpoint_root"],
        "dit_3d": params["latent_diffusion"]["volumes"]["checkpoint_dir"],
        "inpainting": params["inpainting"]["checkpoint_root"],
        "text2image": params["text2image"]["checkpoint_root"],
    }
    assert {k: v for k, v in folders.items() if not v.startswith(f"{root}/")} == {}


# ---------------------------------------------------------------- SLURM templates


def _resources_blocks(block: Any, path: str = "") -> list[tuple[str, Any]]:
    if not isinstance(block, dict):
        return []
    found = [(f"{path}.resources", block["resources"])] if block.get("resources") else []
    return found + [
        item
        for key, value in block.items()
        if key != "resources"
        for item in _resources_blocks(value, f"{path}.{key}")
    ]


def test_the_sbatch_templates_give_every_resources_block_its_slurm_job(monkeypatch):
    """What a 2 x 4 GPU job's environment makes of every ``resources`` block of conf/cluster:
    one rendezvous at the first node, one job id, 8 ranks, nccl."""
    exported = {
        name
        for template in SLURM.glob("*.sbatch")
        for name in re.findall(r"^export (\w+)=", template.read_text(), flags=re.M)
    }
    conf_variables = {
        name
        for path in (REPO / "conf" / "cluster").glob("*.yml")
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith("#")
        for name in re.findall(r"\$\{oc\.env:(\w+)", line)
    }
    # every variable conf/cluster reads is SLURM's, the user's, or exported by the templates
    user_set = {"MLFLOW_TRACKING_URI", "MEDGEN_RAW_COHORT"}
    assert conf_variables - user_set - exported == {
        v for v in conf_variables if v.startswith("SLURM_")
    }
    assert {"MASTER_ADDR", "MASTER_PORT", "MEDGEN_DATA_ROOT"} <= exported
    job = {
        "SLURM_NNODES": "2",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_JOB_ID": "4711",
        "MASTER_ADDR": "node-a",
        "MASTER_PORT": "24711",
    }
    for key, value in job.items():
        monkeypatch.setenv(key, value)
    params = config_loader("cluster", REPO / "conf")["parameters"]
    blocks = _resources_blocks(params)
    assert len(blocks) >= 6  # 2D diffusion, both autoencoders, inpainting x 3, text2image
    for where, block in blocks:
        resources = Resources.from_dict(block)
        assert (resources.nnodes, resources.nproc_per_node, resources.world_size) == (2, 4, 8)
        assert resources.rdzv_endpoint == "node-a:24711" and resources.rdzv_id == "4711", where
        assert resources.backend == "nccl", where


# ---------------------------------------------------------------- whole runs


def run_in_env(project: Path, env: str, pipeline: str, params: dict[str, Any]) -> None:
    """`run_pipeline` for any environment (tests/kedro_project.py runs ``test``)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(project)
        bootstrap_project(project)
        try:
            with KedroSession.create(project_path=project, env=env, runtime_params=params) as s:
                s.run(pipeline_names=[pipeline])
        finally:
            while mlflow.active_run():
                mlflow.end_run()


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, str]]:
    """(mtime_ns, sha256) of every file under ``root`` outside ``skip``."""
    return {
        str(path.relative_to(root)): (
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(root.rglob("*"))
        if path.is_file() and skip not in path.parents
    }


#: conf/cluster's data processing shrunk to minutes on a CPU (its catalog and data root stay)
TINY_CLUSTER = {
    "cohort": {"n_subjects": 3, "resolution_mm": 2, "inpainting_masks": 1},
    "preprocessing": {"spacing_mm": [2.0, 2.0, 2.0], "spatial_size": [64, 80, 64]},
    "slices": {"size": 32},
    "volumes": {"size": [24, 32, 24]},
}


def test_a_cluster_run_never_touches_the_default_runs_data(tmp_path, monkeypatch):
    """base (test sizes), then data processing with --env cluster (tiny overrides), then base
    again: the base outputs are byte for byte and time stamp for time stamp what the first
    base run wrote, and its raw subjects are reused, not rebuilt (none was deleted as stale)."""
    project = make_project(tmp_path / "project")
    data = project / "data"
    monkeypatch.delenv("MEDGEN_DATA_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'cluster-mlflow.db'}")

    run_pipeline(project, "data_processing", params={"cohort": {"n_subjects": 3}})
    base = snapshot(data, data / "cluster")
    subjects = sorted(p.name for p in (data / "01_raw" / "cohort").iterdir() if p.is_dir())
    assert len(subjects) == 3 and json.loads((data / MARKER).read_text())["environment"] == "test"

    run_in_env(project, "cluster", "data_processing", TINY_CLUSTER)
    cluster = data / "cluster"
    assert json.loads((cluster / MARKER).read_text())["environment"] == "cluster"
    splits = json.loads((cluster / "03_primary" / "subject_splits.json").read_text())
    assert sorted(len(v) for v in splits.values()) == [1, 1, 1]
    assert (cluster / "05_model_input" / "slices_2d_train.safetensors").is_file()
    assert snapshot(data, cluster) == base  # nothing of the base run changed

    # a cluster run pointed at the base data refuses before any node runs
    monkeypatch.setenv("MEDGEN_DATA_ROOT", str(data))
    with pytest.raises(DataRootClaimedError, match="environment 'test'"):
        run_in_env(project, "cluster", "data_processing", TINY_CLUSTER)
    monkeypatch.delenv("MEDGEN_DATA_ROOT")
    assert snapshot(data, cluster) == base

    run_pipeline(project, "data_processing", params={"cohort": {"n_subjects": 3}})
    again = snapshot(data, cluster)
    raw = {k: v for k, v in base.items() if k.startswith("01_raw/cohort/")}
    assert {k: again[k] for k in raw} == raw  # reused, not rebuilt
    assert sorted(p.name for p in (data / "01_raw" / "cohort").iterdir() if p.is_dir()) == subjects

"""The notebooks in notebooks/ run clean on the shared test-size run, as a user runs them.

Each notebook is executed top to bottom by nbclient in a fresh kernel whose working folder
is the temporary project's notebooks/ (a copy of this checkout's), with ``KEDRO_ENV=test``:
``%load_ext kedro.ipython`` finds the project above it and loads its catalog, every cell
must run without an error, and every notebook must draw pictures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.kedro_project import REPO
from tests.whole_project_run import ProjectRun, whole_project_run

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# one for the cohort and one per pipeline family
EXPECTED = [
    "01_explore_cohort.ipynb",
    "02_generation_2d_3d.ipynb",
    "03_inpainting.ipynb",
    "04_text2image.ipynb",
]


@pytest.fixture(scope="session")
def project_run(tmp_path_factory) -> ProjectRun:
    return whole_project_run(tmp_path_factory)


def test_one_notebook_per_pipeline_family_each_loading_the_catalog():
    assert [p.name for p in NOTEBOOKS] == EXPECTED
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
        assert code[0].strip() == "%load_ext kedro.ipython", path.name
        assert any("catalog.load(" in source for source in code), path.name
        # committed without outputs: what they show comes from the reader's own run
        assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_clean_on_the_test_size_run(path: Path, project_run: ProjectRun, monkeypatch):
    folder = project_run.root / "notebooks"
    folder.mkdir(exist_ok=True)
    shutil.copy(path, folder / path.name)
    nb = nbformat.read(folder / path.name, as_version=4)
    monkeypatch.setenv("KEDRO_ENV", "test")  # the kernel inherits it
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    pictures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(pictures) >= 2, f"{path.name} drew {len(pictures)} pictures"

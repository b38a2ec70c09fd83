"""A test-size run of the whole inpainting pipeline through Kedro (env ``test``).

The preprocessed cohort is six tiny synthetic subjects written where the catalog expects it
(16 x 20 x 16, CSF/GM/WM shells, two masks each, the first with a mask-healthy part), with a
patient split; every node runs at 16³ with a few training steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medgen.datasets import TensorDataset
from tests.conftest import write_subject
from tests.inpainting.test_cases import subject_images
from tests.kedro_project import make_project, run_pipeline

SPLITS = {"train": ["S-0", "S-1", "S-2"], "val": ["S-3"], "test": ["S-4", "S-5"]}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"))
    cohort = root / "data/02_intermediate/preprocessed_cohort"
    for index in range(6):
        write_subject(cohort, f"S-{index}", subject_images(index % 2, 2))
    (root / "data/03_primary").mkdir(parents=True, exist_ok=True)
    (root / "data/03_primary/subject_splits.json").write_text(json.dumps(SPLITS))
    run_pipeline(root, "inpainting")
    return root


def test_summary_has_every_method_and_the_ablation_rows(project: Path):
    summary = json.loads((project / "data/08_reporting/inpainting/summary.json").read_text())
    table = summary["table"]
    expected = {
        "diffusion",
        "diffusion (no conditioning)",
        "diffusion (oracle tissue, leaks ground truth: upper bound)",
        "unet_3d",
        "zero_fill",
        "mean_fill",
        "local_mean_fill",
        "nearest_fill",
        "biharmonic",
        "autoencoder reconstruction (oracle, reads ground truth: ceiling of latent methods)",
    }
    assert set(table) == expected
    for entry in table.values():
        assert entry["n_cases"] == 4 and entry["n_patients"] == 2
        for metric in ("ssim", "psnr", "mse"):
            assert set(entry[metric]) >= {"mean", "sd", "median", "q1", "q3", "n"}
    assert summary["scorer"] == "synapse_scorer"
    assert "inpainting_package" in summary["other_scorers"]
    assert table["zero_fill"]["mse"]["mean"] > table["nearest_fill"]["mse"]["mean"]


def test_outputs_keep_known_voxels_and_the_input_affine(project: Path):
    cases = TensorDataset(
        filepath=str(project / "data/05_model_input/inpainting/cases_test.safetensors")
    ).load()
    samples = TensorDataset(
        filepath=str(project / "data/07_model_output/inpainting/samples.safetensors")
    ).load()
    known = cases["mask"] == 0
    for variant in ("honest", "none", "oracle"):
        assert torch.equal(samples[f"{variant}_mean"][known], cases["voided"][known])
        assert samples[f"{variant}_sd"][known].abs().max() == 0
    case_id = cases.metadata["case_ids"][0]
    nifti_dir = project / "data/07_model_output/inpainting/nifti"
    image = nib.load(nifti_dir / f"{case_id}_inpainted.nii.gz")
    assert np.allclose(image.affine, np.asarray(cases.metadata["affine"][0]))
    assert np.allclose(image.get_fdata(), samples["honest_mean"][0, 0].numpy(), atol=1e-6)
    assert (nifti_dir / f"{case_id}_std.nii.gz").exists()
    assert list((project / "data/08_reporting/inpainting/triplanar").glob("*.png"))


def test_per_case_scores_and_training_report(project: Path):
    scores = pd.read_csv(project / "data/08_reporting/inpainting/case_scores.csv")
    assert set(scores["scorer"]) == {"synapse_scorer", "inpainting_package"}
    assert len(scores) == 2 * 10 * 4
    report = json.loads((project / "data/08_reporting/inpainting/diffusion.json").read_text())
    assert report["steps"] == 4 and report["weights"] in ("best", "last")
    assert any(r["kind"] == "val" and "ssim" in r for r in report["history"])

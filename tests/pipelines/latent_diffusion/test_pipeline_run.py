"""One test-size run of latent_diffusion's 2D chain through Kedro.

The run happens in a temporary copy of the project (conf/ + pyproject.toml) with env
``test``; instead of running data_processing, tiny slice bundles are written where the
catalog expects ``slices_2d_{split}``. The LR range test is switched on so its nodes run too.
The 3D role needs the autoencoder pipeline's 3D model and latents: it runs, with the rest
of the pipeline, in tests/pipelines/autoencoder/test_pipeline_run.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medgen.datasets import TensorDataset
from medgen.generation import load_diffusion_model
from tests.generation.synthetic_slices import synthetic_slices
from tests.kedro_project import make_project, run_pipeline

REPO = Path(__file__).resolve().parents[3]
LAYER = "data/07_model_output/latent_diffusion"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"))
    for split, n, seed in (("train", 12, 0), ("val", 6, 1), ("test", 6, 2)):
        path = root / f"data/05_model_input/slices_2d_{split}.safetensors"
        TensorDataset(filepath=str(path)).save(synthetic_slices(n=n, size=32, seed=seed))
    return root


@pytest.fixture(scope="module")
def run(project: Path) -> dict:
    start = time.perf_counter()
    params = {"latent_diffusion": {"lr_finder": {"enabled": True}}}
    run_id = run_pipeline(project, "latent_diffusion", params, tags=["generation_2d"])
    summary = json.loads((project / "data/08_reporting/latent_diffusion/summary.json").read_text())
    return {"seconds": time.perf_counter() - start, "summary": summary, "run_id": run_id}


def test_models_are_weights_only_and_rebuild_the_network(project: Path, run: dict):
    for combo, mode in (("rflow_seg", "seg"), ("rflow_bravo", "bravo")):
        folder = project / "data/06_models/latent_diffusion" / combo
        bundle = TensorDataset(filepath=str(folder / "model.safetensors")).load()
        assert bundle.metadata["task"]["mode"] == mode and bundle.metadata["has_ema"]
        assert bundle.metadata["resolution"] == 16 and bundle.metadata["steps"] == 3
        task, model = load_diffusion_model(bundle)
        assert task.mode.name == mode and not model.training
        assert (folder / "checkpoints/latest.pt").is_file()  # resumable


def test_samples_follow_the_evaluation_contract(project: Path, run: dict):
    masks_bundle = TensorDataset(filepath=f"{project}/{LAYER}/rflow_seg/samples.safetensors").load()
    images_bundle = TensorDataset(
        filepath=f"{project}/{LAYER}/rflow_bravo/samples.safetensors"
    ).load()
    for bundle, channels in ((masks_bundle, 1), (images_bundle, 1)):
        images, masks = bundle["images"], bundle["masks"]
        assert images.shape == (4, channels, 16, 16) and images.dtype == torch.float32
        assert images.min() >= -1 and images.max() <= 1
        assert masks.shape == (4, 1, 16, 16) and masks.dtype == torch.uint8
        assert set(masks.unique().tolist()) <= {0, 1}
        meta = bundle.metadata
        assert {
            "strategy",
            "mode",
            "target_names",
            "sampler",
            "num_steps",
            "guidance_scale",
            "seed",
            "pixel_spacing_mm",
            "source_models",
        } <= set(meta)
        assert meta["sampler"] == "euler" and meta["num_steps"] == 3
        assert meta["pixel_spacing_mm"] == pytest.approx(12.0)  # 32 px of 6 mm shown in 16
    # the chain: the image model was conditioned on the masks the mask model generated
    assert torch.equal(images_bundle["masks"], masks_bundle["masks"])
    assert torch.equal(masks_bundle["masks"], (masks_bundle["images"] > 0).to(torch.uint8))
    assert images_bundle.metadata["target_names"] == ["bravo"]
    assert images_bundle.metadata["source_models"]["masks"]["combination"] == "rflow_seg"


def test_nifti_grids_and_reports_are_written(project: Path, run: dict):
    niftis = sorted((project / LAYER / "rflow_bravo/nifti").glob("*.nii.gz"))
    assert len(niftis) == 8  # 4 images + their 4 masks
    image = nib.load(niftis[0])
    assert image.shape == (16, 16, 1) and nib.aff2axcodes(image.affine) == ("R", "P", "S")
    assert np.allclose(np.abs(np.diag(image.affine)[:3]), 12.0)
    assert len(list((project / LAYER / "rflow_seg/nifti").glob("*-mask.nii.gz"))) == 4
    for name in ("grid_generated", "grid_real", "grid_comparison"):
        with Image.open(project / LAYER / f"rflow_bravo/{name}.png") as png:
            assert png.width > 64 and png.height > 64
    reporting = project / "data/08_reporting/latent_diffusion"
    for combo in ("rflow_seg", "rflow_bravo"):
        assert (reporting / combo / "loss_curve.png").is_file()
        assert (reporting / combo / "training_preview.png").is_file()
        lr_test = json.loads((reporting / f"lr_range_test_{combo}.json").read_text())
        assert lr_test["suggested_lr"] > 0 and len(lr_test["lrs"]) >= 2
        assert (reporting / f"lr_range_test_{combo}.png").is_file()

    summary = run["summary"]
    assert summary["combinations"] == ["rflow_seg", "rflow_bravo"]
    for combo in summary["combinations"]:
        trained = summary["training"][combo]
        assert trained["steps"] == 3 and np.isfinite(trained["final_loss"])
    assert summary["generation"]["samplers"]["rflow_bravo"] == {
        "sampler": "euler",
        "num_steps": 3,
        "network_evaluations": 3,
    }
    assert summary["generation"]["files"]["nifti"] == 12
    assert summary["seconds"]["generate"] > 0 and summary["seconds"]["train_rflow_seg"] > 0


def test_metrics_and_artifacts_reach_mlflow(project: Path, run: dict):
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    data = client.get_run(run["run_id"]).data
    assert {"rflow_seg/loss", "rflow_bravo/loss", "rflow_bravo/lr"} <= set(data.metrics)
    assert data.params["rflow_bravo.max_steps"] == "3"
    history = client.get_metric_history(run["run_id"], "rflow_bravo/loss")
    assert [m.step for m in history] == [1, 2, 3]  # log_every: 1 in the test env
    artifacts = {
        a.path for a in client.list_artifacts(run["run_id"], "latent_diffusion/rflow_bravo")
    }
    assert "latent_diffusion/rflow_bravo/rflow_bravo_loss_curve.png" in artifacts
    assert "latent_diffusion/rflow_bravo/training_preview.png" in artifacts


def test_run_is_fast_enough_for_the_test_suite(run: dict):
    assert run["seconds"] < 90

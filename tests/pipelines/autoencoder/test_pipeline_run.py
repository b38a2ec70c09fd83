"""A test-size run of the autoencoder pipeline, then all of latent_diffusion on its outputs.

Both run through Kedro in a temporary copy of the project (env ``test``) on tiny synthetic
slices (32²) and volumes (16³) written where the catalog expects data_processing's outputs:
latent_diffusion's image model diffuses in the 2D autoencoder's latent space, and its 3D
role trains the class-conditional DiT on the 3D latents and decodes volumes with the 3D model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.autoencoder.loading import load_autoencoder
from medgen.datasets import TensorDataset
from tests.autoencoder.synthetic_volumes import synthetic_volumes
from tests.generation.synthetic_slices import synthetic_slices
from tests.kedro_project import make_project, run_pipeline

SPLITS = (("train", 0), ("val", 1), ("test", 2))


def load(project: Path, relative: str):
    return TensorDataset(filepath=str(project / relative)).load()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"))
    for split, seed in SPLITS:
        slices = synthetic_slices(n=12 if split == "train" else 6, size=32, seed=seed)
        TensorDataset(
            filepath=str(root / f"data/05_model_input/slices_2d_{split}.safetensors")
        ).save(slices)
        volumes = synthetic_volumes(n=4 if split == "train" else 2, seed=seed)
        TensorDataset(
            filepath=str(root / f"data/05_model_input/volumes_3d_{split}.safetensors")
        ).save(volumes)
    run_pipeline(root, "autoencoder")
    return root


@pytest.fixture(scope="module")
def latent_diffusion_run(project: Path) -> Path:
    """The whole latent_diffusion pipeline (2D chain with a latent image model, 3D volumes)."""
    params = {"latent_diffusion": {"images": {"space": "latent", "resolution": 32}}}
    run_pipeline(project, "latent_diffusion", params)
    return project


def test_2d_latents_hold_the_posterior_mean_and_the_training_scale_factor(project: Path):
    weights = load(project, "data/06_models/autoencoder/kl_autoencoder_2d.safetensors")
    autoencoder = load_autoencoder(weights)
    record = json.loads((project / "data/06_models/autoencoder/latent_space_2d.json").read_text())
    train = load(project, "data/05_model_input/latents_2d_train.safetensors")
    slices = load(project, "data/05_model_input/slices_2d_train.safetensors")
    factor = autoencoder.downsample_factor
    assert train["latents"].shape == (
        12,
        4 * autoencoder.latent_channels,
        32 // factor,
        32 // factor,
    )
    with torch.no_grad():  # channel 2 (flair) of slice 5, encoded alone
        expected = autoencoder.encode(slices["images"][5:6, 2:3])
    c = autoencoder.latent_channels
    torch.testing.assert_close(train["latents"][5:6, 2 * c : 3 * c], expected, atol=1e-5, rtol=1e-4)
    assert record["scale_factor"] == pytest.approx(1 / float(train["latents"].std()), rel=1e-5)
    val = load(project, "data/05_model_input/latents_2d_val.safetensors")
    assert val.metadata["scale_factor"] == record["scale_factor"]
    assert torch.equal(
        val["seg"], load(project, "data/05_model_input/slices_2d_val.safetensors")["seg"]
    )


def test_stage_2_starts_from_the_stage_1_catalog_weights(project: Path):
    stage1 = load(project, "data/06_models/autoencoder/patch_volume_stage1.safetensors")
    stage2 = load(project, "data/06_models/autoencoder/patch_volume.safetensors")
    assert (stage1.metadata["stage"], stage2.metadata["stage"]) == (1, 2)
    report = json.loads(
        (project / "data/08_reporting/autoencoder/patch_volume_stage2.json").read_text()
    )
    assert report["started_from"]
    # stage 2 trains the decoder only: the encoder is the stage-1 encoder
    encoder_keys = [
        k for k in stage1.tensors if ".encoder." in k or k.startswith("autoencoder.encoder")
    ]
    assert encoder_keys
    for key in encoder_keys:
        assert torch.equal(stage1[key], stage2[key]), key


def test_summary_reports_finite_reconstruction_quality_and_times(project: Path):
    summary = json.loads((project / "data/08_reporting/autoencoder/summary.json").read_text())
    models = summary["models"]
    assert set(models) == {"autoencoder_2d", "patch_volume_stage1", "patch_volume_stage2"}
    for name in ("autoencoder_2d", "patch_volume_stage2"):
        metrics = models[name]["validation_reconstruction"]
        assert {"psnr", "ssim", "mae"} <= set(metrics)
        assert all(math.isfinite(v) for v in metrics.values())
    assert models["autoencoder_2d"]["steps"] == 4  # two phases of two steps
    check = summary["demo_checks"]["checks"]["reconstruction_vs_trilinear"]
    assert check["status"] in ("passed", "failed")
    assert check["autoencoder"]["psnr"] == pytest.approx(
        models["patch_volume_stage2"]["validation_reconstruction"]["psnr"], abs=1e-4
    )
    assert check["compression"]["factor_per_axis"] == 4 and math.isfinite(
        check["trilinear"]["psnr"]
    )
    for name in ("reconstructions_2d", "reconstructions_3d"):
        assert (project / f"data/08_reporting/autoencoder/{name}.png").is_file()


def test_latent_diffusion_trains_and_generates_in_the_autoencoders_latent_space(
    latent_diffusion_run: Path,
):
    project = latent_diffusion_run
    bundle = load(project, "data/06_models/latent_diffusion/rflow_bravo_latent/model.safetensors")
    space = bundle.metadata["task"]["space"]
    record = json.loads((project / "data/06_models/autoencoder/latent_space_2d.json").read_text())
    assert space == {
        "name": "latent",
        **{
            k: record[k]
            for k in ("latent_channels", "downsample_factor", "scale_factor", "per_channel")
        },
    }
    samples = load(
        project, "data/07_model_output/latent_diffusion/rflow_bravo_latent/samples.safetensors"
    )
    assert samples["images"].shape == (4, 1, 32, 32)  # decoded from latents
    assert samples["masks"].shape == (4, 1, 32, 32)  # 16² masks resized for the image model
    report = json.loads(
        (project / "data/08_reporting/latent_diffusion/generation.json").read_text()
    )
    assert (report["mask_resolution"], report["resolution"]) == (16, 32)
    # the pixel-space mask model was not retrained for the latent image model
    assert (project / "data/06_models/latent_diffusion/rflow_seg/model.safetensors").is_file()


def test_latent_diffusion_3d_volumes_are_nifti_with_the_real_voxel_spacing(
    latent_diffusion_run: Path,
):
    project = latent_diffusion_run
    generator = load(project, "data/06_models/latent_diffusion/dit_3d.safetensors")
    assert generator.metadata["classes"] == ["lesion_absent", "lesion_present"]
    assert generator.metadata["task"]["space"]["name"] == "precomputed_latent"
    assert (project / "data/06_models/latent_diffusion/dit_3d/checkpoints/latest.pt").is_file()
    folder = project / "data/07_model_output/latent_diffusion_3d/nifti"
    files = sorted(folder.rglob("*.nii.gz"))
    assert len(files) == 2 * 4  # one volume per class, four modalities
    assert {f.parent.parent.name for f in files} == {"lesion_absent", "lesion_present"}
    image = nib.load(files[0])
    assert image.shape == (16, 16, 16)
    np.testing.assert_allclose(image.header.get_zooms(), [3.0, 3.0, 3.0])
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    data = np.asarray(image.dataobj)
    assert np.isfinite(data).all() and data.min() >= -1 and data.max() <= 1
    samples = load(project, "data/07_model_output/latent_diffusion_3d/samples.safetensors")
    assert samples["images"].shape == (2, 4, 16, 16, 16)
    assert samples["lesion_present"].tolist() == [0, 1]


def test_latent_diffusion_3d_summary_reports_training_and_generation(latent_diffusion_run: Path):
    reporting = latent_diffusion_run / "data/08_reporting/latent_diffusion_3d"
    summary = json.loads((reporting / "summary.json").read_text())
    assert summary["generator"]["steps"] == 2 and math.isfinite(summary["generator"]["final_loss"])
    assert summary["generation"]["n_volumes"] == 2
    assert summary["generation"]["per_class"] == {"lesion_absent": 1, "lesion_present": 1}
    assert summary["generation"]["latent_shape"][0] == 2  # the test autoencoder's latent channels
    for name in ("generator.json", "generation.json", "generated_volumes.png"):
        assert (reporting / name).is_file()
    checks = summary["demo_checks"]
    assert checks["status"] in ("passed", "failed")
    assert set(checks["checks"]) == {
        "brain_shape",
        "intensity_range",
        "diversity",
        "frechet_2p5d",
        "lesion_effect",
    }
    lesion = checks["checks"]["lesion_effect"]
    # the test cohort may lack a class among its training volumes; else the ceiling is given
    assert "both classes" in lesion.get("reason", "") or (
        lesion["autoencoder_reconstructions"]["n_present"] == lesion["real"]["n_present"]
    )
    frechet = checks["checks"]["frechet_2p5d"]
    assert set(frechet["baselines"]) == {"gaussian_noise", "mean_plus_noise"}
    assert frechet["n_generated"] == 2 and frechet["n_reference"] == 2
    # the 2D chain's summary carries its own checks (a latent-space image model here)
    summary_2d = json.loads(
        (latent_diffusion_run / "data/08_reporting/latent_diffusion/summary.json").read_text()
    )
    assert set(summary_2d["demo_checks"]["checks"]) == {"frechet_2d", "lesion_contrast"}

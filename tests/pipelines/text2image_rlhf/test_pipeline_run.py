"""A test-size run of text2image_rlhf (part 1) through Kedro (env ``test``).

Tiny synthetic slice bundles (32², an elliptic brain, a lesion in every other slice) stand in
for data_processing's outputs; every node runs: export with captions, the CSV reader, the
tokenizer, the generator for three steps, generation, the prompt-agreement classifiers and the
(disabled) pretrained path; part 2; then the pretrained path and part 2 on a tiny Stable
Diffusion.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
import torch

from medgen.datasets import TensorDataset
from tests.generation.synthetic_slices import synthetic_slices
from tests.kedro_project import make_project, run_pipeline
from tests.text2image.tiny_sd import save_tiny_stable_diffusion


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"))
    for seed, split in enumerate(("train", "val", "test")):
        bundle = synthetic_slices(n=8, size=32, seed=seed)
        bundle.metadata["subjects"] = [f"{split}-S{i}" for i in range(2)]
        bundle.metadata["split"] = split
        TensorDataset(
            filepath=str(root / f"data/05_model_input/slices_2d_{split}.safetensors")
        ).save(bundle)
    run_pipeline(root, "text2image_rlhf")
    return root


def test_captions_csv_follows_the_split_and_states_the_slice(project: Path):
    table = pd.read_csv(project / "data/05_model_input/text2image/captions_2d.csv")
    assert set(table["split"]) == {"train", "val", "test"}
    assert set(table["modality"]) == {"t1_gd", "flair"}
    assert table["text"].str.startswith("Brain MRI, ").all()
    lesion = table[table["n_metastases"] > 0]
    assert not lesion.empty and lesion["text"].str.contains("metasta").all()
    for path in table["path"].head(3):
        assert (project / "data/05_model_input/text2image" / path).exists()


def test_generated_samples_prompts_files_and_summary(project: Path):
    samples = TensorDataset(
        filepath=str(project / "data/07_model_output/text2image_rlhf/samples.safetensors")
    ).load()
    images = samples["images"]
    assert images.shape == (6, 1, 16, 16) and images.abs().max() <= 1
    assert len(samples.metadata["prompts"]) == 6
    assert len(set(samples.metadata["distinct_prompts"])) == 3
    nifti = nib.load(
        project / "data/07_model_output/text2image_rlhf/nifti/prompt_00/image_0.nii.gz"
    )
    assert nifti.shape == (16, 16, 1)
    assert torch.allclose(
        torch.from_numpy(nifti.get_fdata()[:, :, 0].T).float(), images[0, 0], atol=1e-6
    )
    assert (project / "data/08_reporting/text2image/grid.png").exists()
    summary = json.loads((project / "data/08_reporting/text2image/summary.json").read_text())
    assert summary["generator"]["steps"] == 3
    assert summary["pretrained"]["status"] == "disabled"
    assert set(summary["prompt_agreement"]["attributes"]) == {"modality", "lesion_present", "side"}
    tokenizer = json.loads((project / "data/06_models/text2image/tokenizer.json").read_text())
    assert tokenizer["max_length"] == 24


def test_part2_rates_scores_fine_tunes_and_filters(project: Path):
    ratings = pd.read_csv(project / "data/05_model_input/text2image/ratings.csv")
    assert list(ratings.columns[:5]) == [
        "image_path",
        "rating",
        "modality",
        "expert_level",
        "prompt",
    ]
    assert set(ratings["rating"]) <= {1, 2, 3}
    assert set(ratings["source"]) == {"real", "degraded", "undertrained_generator"}
    assert (project / "data/05_model_input/text2image" / ratings["image_path"].iloc[0]).exists()
    models = project / "data/06_models/text2image"
    filtered = TensorDataset(filepath=str(models / "generator_filtered.safetensors")).load()
    reinforced = TensorDataset(filepath=str(models / "generator_reinforced.safetensors")).load()
    assert filtered.tensors.keys() == reinforced.tensors.keys()
    assert any(not torch.equal(filtered[k], reinforced[k]) for k in filtered.tensors)  # updated
    summary = json.loads((project / "data/08_reporting/text2image/summary.json").read_text())
    assert set(summary["stages"]["stages"]) == {"part1", "selector_filtered", "ddpo"}
    assert set(summary["rlhf"]["proxy_vs_oracle_gaps"]) == {"selector_filtered", "ddpo"}
    assert summary["selector"]["headline"]["shuffled_control_vs_ratings"] is not None
    best = summary["best_of_n"]
    pngs = sorted(
        p.name for p in (project / "data/07_model_output/text2image_rlhf/best_of_n").glob("*.png")
    )
    assert pngs == sorted(item["file"] for item in best["files"])
    for item in best["files"]:
        assert f"_selector_{item['selector']:.2f}_policy_{item['policy']:.2f}.png" in item["file"]
    assert (project / "data/08_reporting/text2image/stages_grid.png").exists()
    assert (project / "data/08_reporting/text2image/selector_reliability.png").exists()


def test_part2_on_stable_diffusion_with_lora_through_kedro(project: Path, tmp_path: Path):
    """The same stages on a tiny Stable Diffusion (conf/cluster's path), re-running only its node
    and the summary on this project's scorers and rated pool."""
    folder = save_tiny_stable_diffusion(tmp_path / "tiny_sd")
    training = {"max_steps": 2, "batch_size": 2, "lr": 1.0e-3, "log_every": 1, "progress": False}
    params = {
        "text2image": {
            "pretrained": {
                "enabled": True,
                "model": str(folder),
                "resolution": 8,
                "num_inference_steps": 2,
                "images_per_prompt": 1,
                "part2": {
                    "enabled": True,
                    "lora_rank": 2,
                    "gradient_checkpointing": False,
                    "filtered_training": training,
                    "reinforce": {
                        "rounds": 1,
                        "prompts_per_round": 1,
                        "images_per_prompt": 2,
                        "num_steps": 3,
                        "training": {"lr": 1.0e-3, "progress": False},
                    },  # fmt: skip
                },
            }
        }
    }
    run_pipeline(
        project, "text2image_rlhf", params,
        node_names=["pretrained_baseline", "pretrained_part2", "summarise_text2image"],
    )  # fmt: skip
    report = json.loads(
        (project / "data/08_reporting/text2image/pretrained_part2.json").read_text()
    )
    assert report["status"] == "ran" and report["lora_rank"] == 2
    assert report["filtered_finetune"]["steps"] == 2
    assert report["filtered_finetune"]["trained"] == "lora"
    assert report["reinforce"]["steps"] == 2  # 1 round x 2 stochastic DDIM steps
    assert report["reinforce"]["trained_parameters"] > 0
    assert set(report["stages"]["stages"]) == {"pretrained", "selector_filtered", "ddpo"}
    assert set(report["stages"]["gaps"]) == {"selector_filtered", "ddpo"}
    out = project / "data/07_model_output/text2image_rlhf/stable_diffusion_part2"
    assert (out / "stages_grid.png").exists()
    best = sorted(p.name for p in (out / "best_of_n").glob("*.png"))
    assert best == sorted(item["file"] for item in report["best_of_n"]["files"])
    summary = json.loads((project / "data/08_reporting/text2image/summary.json").read_text())
    assert summary["pretrained"]["status"] == "ran"
    sd = summary["rlhf"]["stable_diffusion"]
    assert set(sd["stage_means"]) == {"pretrained", "selector_filtered", "ddpo"}
    checkpoints = project / "data/06_models/text2image/stable_diffusion_part2"
    assert (checkpoints / "filtered").is_dir() and (checkpoints / "ddpo").is_dir()

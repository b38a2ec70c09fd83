"""The 3D training jobs in two CPU processes with gloo, as `run_job` launches them for GPUs.

Mirrors `test_distributed.py` for the job factories of the 3D patch-volume autoencoder
(`medgen.autoencoder.training_3d.build_stage_task`, with its patch discriminator) and the 3D
class-conditional generator (`medgen.generation.class_conditional_3d.build_generator_task`), at
tiny sizes: every worker rebuilds its model from the factory's options and the staged data,
DistributedDataParallel keeps the two replicas identical, rank 0's weights come back and only
rank 0 writes the checkpoint, holding both ranks' random states. Unlike the regression test,
the result is not compared with one process at the same global batch: a diffusion or GAN step
draws noise, timesteps and patches per rank, so the two runs see different random numbers.
"""

from __future__ import annotations

import math

import torch
from distributed_3d_tasks import rank_weights_worker

from medgen.autoencoder.patch_volume_params import resolve_params
from medgen.autoencoder.training_3d import build_stage_task
from medgen.datasets import TensorBundle, TensorDataset
from medgen.generation.class_conditional_3d import build_generator_task
from medgen.training import JobSpec, TrainingConfig, launch, load_checkpoint
from medgen.training.distributed import factory_reference

CONFIG = TrainingConfig(
    max_steps=3, batch_size=2, lr=1e-3, log_every=1, seed=3, progress=False, device="cpu"
)
RESOURCES = {
    "nproc_per_node": 2,
    "nnodes": 1,
    "backend": "gloo",
    "rdzv_endpoint": "localhost:0",
    "rdzv_timeout": 120,
    "start_method": "forkserver",  # set up by the fixture; production uses spawn
}


def stage(bundles: dict[str, TensorBundle], tmp_path) -> dict[str, str]:
    """Write the bundles as `run_job` stages them; name -> path."""
    paths = {}
    for name, bundle in bundles.items():
        path = tmp_path / "inputs" / f"{name}.safetensors"
        TensorDataset(filepath=str(path)).save(bundle)
        paths[name] = str(path)
    return paths


def run_two_ranks(factory, options, bundles, tmp_path, forkserver):
    spec = JobSpec(
        factory=factory_reference(factory),
        config=CONFIG.to_dict(),
        factory_kwargs=options,
        data=stage(bundles, tmp_path),
        checkpoint_dir=str(tmp_path / "ckpt"),
    )
    result = launch(rank_weights_worker, spec, RESOURCES, log_dir=tmp_path / "logs")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    return result, ranks


def check_two_ranks(result, ranks, tmp_path, initial):
    """``initial``: the factory's parameters before training (name -> tensor)."""
    assert result.steps == CONFIG.max_steps
    losses = [r["loss"] for r in result.history if r["kind"] == "step"]
    assert len(losses) == CONFIG.max_steps and all(math.isfinite(v) for v in losses)
    for key, value in result.model_state.items():
        assert torch.equal(ranks[0][key], value), key  # launch returns rank 0's
    # DDP keeps the replicas' weights identical (buffers such as a rank's own loss sums for
    # logging may differ)
    for key in initial:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    changed = [k for k, v in initial.items() if not torch.equal(v, ranks[0][k])]
    assert changed, "no weight changed in three steps"
    state = load_checkpoint(tmp_path / "ckpt" / "latest.pt")
    assert state["step"] == CONFIG.max_steps and state["world_size"] == 2
    assert len(state["rng"]) == 2 and not torch.equal(
        state["rng"][0]["torch"], state["rng"][1]["torch"]
    )


def test_the_3d_autoencoder_stage_trains_in_two_gloo_ranks(tmp_path, forkserver):
    params = {
        "autoencoder": {
            "channels": [4, 8],
            "latent_channels": 2,
            "patch_size": 8,
            "norm_num_groups": 2,
        },
        # the adversarial term from the second step: both of the GAN's branches run under DDP
        "discriminator": {"channels": 4, "num_layers_d": 1},
        "stage1": {
            "training": CONFIG.to_dict(),
            "crops_per_volume": 2,
            "loss": {"adversarial_start_step": 1},
        },
    }
    resolved = resolve_params(params, 1)
    options = {**resolved.worker_kwargs(), "validation_batch_size": 1}
    g = torch.Generator().manual_seed(0)
    volumes = TensorBundle({"images": torch.rand(4, 2, 16, 16, 16, generator=g) * 2 - 1})
    bundles = {"train": volumes, "val": volumes}
    initial = dict(build_stage_task(bundles, **options).model.named_parameters())

    result, ranks = run_two_ranks(build_stage_task, options, bundles, tmp_path, forkserver)

    check_two_ranks(result, ranks, tmp_path, initial)
    assert any(k.startswith("discriminator.") for k in result.model_state)


def test_the_3d_class_conditional_generator_trains_in_two_gloo_ranks(tmp_path, forkserver):
    task_config = {
        "strategy": {"name": "rflow", "num_inference_steps": 2, "cond_drop_prob": 0.5},
        "mode": "class",
        "modalities": ["t1_pre", "t1_gd"],
        "mode_options": {"label_key": "lesion_present", "num_classes": 2},
        "space": {
            "name": "precomputed_latent",
            "latent_channels": 2,
            "downsample_factor": 4,
            "scale_factor": 1.0,
        },
    }
    backbone = {
        "name": "dit",
        "spatial_dims": 3,
        "input_size": [4, 4, 4],
        "patch_size": 2,
        "hidden_size": 24,
        "depth": 1,
        "num_heads": 2,
        "num_classes": 2,
    }
    options = {
        "task_config": task_config,
        "backbone": backbone,
        "label_key": "lesion_present",
        "seed": 3,
    }
    g = torch.Generator().manual_seed(0)
    latents = TensorBundle(
        {"latents": torch.randn(8, 2, 4, 4, 4, generator=g), "lesion_present": torch.arange(8) % 2}
    )
    initial = dict(build_generator_task({"latents": latents}, **options).model.named_parameters())

    result, ranks = run_two_ranks(
        build_generator_task, options, {"latents": latents}, tmp_path, forkserver
    )

    check_two_ranks(result, ranks, tmp_path, initial)

"""``autoencoder`` wiring: a 2D and a 3D autoencoder and their latent datasets.

    2D: train_autoencoder_2d -> encode_slices (latents_2d_<split>, latent_space_2d)
    3D: stage 1 -> stage 2 (from the stage-1 weights, a catalog dataset) -> encode_volumes
    summarise_autoencoders: data/08_reporting/autoencoder/summary.json (with the 3D model's
        demo check: PSNR / SSIM beside trilinear down/up-sampling)

The 2D model and latent-space record feed latent_diffusion's latent space; the 3D model and
latents feed latent_diffusion's 3D role (class-conditional volumes). See docs/autoencoder.md.
"""

from kedro.pipeline import Pipeline, node

from medgen.pipelines.autoencoder import nodes

CHECKPOINT_ROOT = "params:autoencoder.checkpoint_root"


def _splits(prefix: str) -> list[str]:
    return [f"{prefix}_{split}" for split in ("train", "val", "test")]


def create_pipeline(**kwargs) -> Pipeline:
    two_d = [
        node(
            nodes.train_autoencoder_2d,
            [
                "slices_2d_train",
                "slices_2d_val",
                "params:autoencoder.autoencoder_2d",
                CHECKPOINT_ROOT,
            ],
            ["autoencoder.model_2d", "autoencoder.autoencoder_2d_report", "autoencoder.figures_2d"],
            name="train_autoencoder_2d",
            tags=["autoencoder_2d", "training"],
        ),
        node(
            nodes.encode_slices,
            ["autoencoder.model_2d", *_splits("slices_2d"), "params:autoencoder.encoding_2d"],
            [*_splits("latents_2d"), "autoencoder.latent_space_2d"],
            name="encode_slices",
            tags=["autoencoder_2d"],
        ),
    ]
    three_d = [
        node(
            nodes.train_volume_autoencoder_stage1,
            [
                "volumes_3d_train",
                "volumes_3d_val",
                "params:autoencoder.patch_volume",
                CHECKPOINT_ROOT,
            ],
            ["autoencoder.model_3d_stage1", "autoencoder.patch_volume_stage1_report"],
            name="train_volume_autoencoder_stage1",
            tags=["autoencoder_3d", "training"],
        ),
        node(
            nodes.train_volume_autoencoder_stage2,
            [
                "autoencoder.model_3d_stage1",
                "volumes_3d_train",
                "volumes_3d_val",
                "params:autoencoder.patch_volume",
                CHECKPOINT_ROOT,
            ],
            [
                "autoencoder.model_3d",
                "autoencoder.patch_volume_stage2_report",
                "autoencoder.figures_3d",
            ],
            name="train_volume_autoencoder_stage2",
            tags=["autoencoder_3d", "training"],
        ),
        node(
            nodes.encode_volumes,
            ["autoencoder.model_3d", *_splits("volumes_3d"), "params:autoencoder.encoding_3d"],
            _splits("latents_3d"),
            name="encode_volumes",
            tags=["autoencoder_3d"],
        ),
    ]
    summary = node(
        nodes.summarise_autoencoders,
        [
            "autoencoder.autoencoder_2d_report",
            "autoencoder.patch_volume_stage1_report",
            "autoencoder.patch_volume_stage2_report",
            "volumes_3d_val",
        ],
        "autoencoder.summary",
        name="summarise_autoencoders",
    )
    return Pipeline([*two_d, *three_d, summary])

"""``inpainting`` wiring: BraTS local-synthesis inpainting in the latent space of a t1n autoencoder.

    build_cases -> inpainting.cases_{train,val,test}
    train_autoencoder (patch-volume, t1n) -> prepare_model_input (latents, conditioning, prior)
    train_diffusion (one training job, val SSIM: best checkpoint, early stopping)
    inpaint_test_cases (K samples x conditioning variants) | fill_baselines (classical + U-Net)
    score_inpainting -> data/08_reporting/inpainting/summary.json ; write_outputs -> NIfTI, PNG

See docs/inpainting.md.
"""

from kedro.pipeline import Pipeline, node

from medgen.pipelines.inpainting import nodes

ROOT = "params:inpainting.checkpoint_root"


def _splits(prefix: str) -> list[str]:
    return [f"{prefix}_{split}" for split in ("train", "val", "test")]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.build_cases,
                ["preprocessed_cohort", "subject_splits", "params:inpainting.cases"],
                [*_splits("inpainting.cases"), "inpainting.rejected_cases"],
                name="build_inpainting_cases",
            ),
            node(
                nodes.train_autoencoder,
                [
                    "inpainting.cases_train",
                    "inpainting.cases_val",
                    "params:inpainting.autoencoder",
                    ROOT,
                ],
                ["inpainting.autoencoder", "inpainting.autoencoder_report"],
                name="train_inpainting_autoencoder",
                tags=["training"],
            ),
            node(
                nodes.prepare_model_input,
                [
                    "inpainting.autoencoder",
                    *_splits("inpainting.cases"),
                    "params:inpainting.encoding_batch_size",
                ],
                [*_splits("inpainting.model_input"), "inpainting.tissue_prior"],
                name="prepare_inpainting_model_input",
            ),
            node(
                nodes.train_diffusion,
                [
                    "inpainting.model_input_train",
                    "inpainting.model_input_val",
                    "inpainting.cases_val",
                    "inpainting.autoencoder",
                    "params:inpainting.diffusion",
                    ROOT,
                ],
                ["inpainting.diffusion_model", "inpainting.diffusion_report"],
                name="train_inpainting_diffusion",
                tags=["training"],
            ),
            node(
                nodes.train_unet,
                [
                    "inpainting.cases_train",
                    "inpainting.tissue_prior",
                    "params:inpainting.unet_baseline",
                    ROOT,
                ],
                ["inpainting.unet_baseline", "inpainting.unet_baseline_report"],
                name="train_inpainting_unet_baseline",
                tags=["training"],
            ),
            node(
                nodes.inpaint_test_cases,
                [
                    "inpainting.diffusion_model",
                    "inpainting.autoencoder",
                    "inpainting.model_input_test",
                    "inpainting.cases_test",
                    "params:inpainting.sampling",
                ],
                ["inpainting.samples", "inpainting.sampling_report"],
                name="inpaint_test_cases",
            ),
            node(
                nodes.fill_baselines,
                [
                    "inpainting.cases_test",
                    "inpainting.unet_baseline",
                    "inpainting.tissue_prior",
                    "params:inpainting.baselines",
                ],
                ["inpainting.baseline_predictions", "inpainting.baseline_seconds"],
                name="fill_inpainting_baselines",
            ),
            node(
                nodes.score_inpainting,
                [
                    "inpainting.cases_test",
                    "inpainting.samples",
                    "inpainting.baseline_predictions",
                    "inpainting.sampling_report",
                    "inpainting.baseline_seconds",
                    "inpainting.diffusion_report",
                    "params:inpainting.scoring",
                ],
                ["inpainting.summary", "inpainting.case_scores"],
                name="score_inpainting",
            ),
            node(
                nodes.write_outputs,
                ["inpainting.cases_test", "inpainting.samples", "params:inpainting.scoring"],
                ["inpainting.niftis", "inpainting.figures"],
                name="write_inpainting_outputs",
            ),
        ]
    )

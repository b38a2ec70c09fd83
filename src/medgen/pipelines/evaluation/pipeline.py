"""``evaluation`` wiring: feature network -> metrics.json (+ MLflow) -> report.html.

Ordering in ``kedro run``: Kedro orders nodes only by dataset dependencies, and the
generated samples are read through ``evaluation.generated_samples`` (a collection of
every ``data/07_model_output/**/samples.safetensors``), a name no pipeline writes. So
the metrics node also takes ``latent_diffusion.summary`` and
``latent_diffusion.volumes.summary``, the last outputs of latent_diffusion's 2D chain and
3D role: in ``__default__`` this makes evaluation wait for both; run alone
(``--pipelines evaluation``) they are free inputs read from disk. All are optional (see
docs/evaluation.md): absent sources are reported as "not present". The report also embeds
the figures the autoencoder, 3D volumes, inpainting and text2image pipelines drew of their own
outputs (optional too: a pipeline that has not run has none), and reads data_processing's and
the autoencoder's summaries so that it covers all six pipelines.
"""

from kedro.pipeline import Pipeline, node

from medgen.pipelines.evaluation import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.train_in_domain_feature_network,
                [
                    "slices_2d_train",
                    "params:evaluation.in_domain_backbone",
                    "params:evaluation.seed",
                ],
                "evaluation.in_domain_backbone",
                name="train_in_domain_feature_network",
            ),
            node(
                nodes.evaluate_generated_sources,
                [
                    "evaluation.generated_samples",
                    "slices_2d_val",
                    "slices_2d_test",
                    "slices_2d_train",
                    "evaluation.in_domain_backbone",
                    "latent_diffusion.summary",
                    "latent_diffusion.volumes.summary",
                    "inpainting.summary",
                    "text2image.summary",
                    "params:evaluation.scoring",
                    "params:evaluation.seed",
                    "data_summary",
                    "autoencoder.summary",
                ],
                "evaluation.metrics",
                name="evaluate_generated_sources",
            ),
            node(
                nodes.build_evaluation_report,
                [
                    "evaluation.metrics",
                    "evaluation.generated_samples",
                    "slices_2d_val",
                    "slices_2d_test",
                    "latent_diffusion.summary",
                    "params:evaluation.report",
                    "evaluation.training_reports",
                    "inpainting.summary",
                    "latent_diffusion.volumes.figures",
                    "inpainting.figures",
                    "text2image.stages_grid",
                    "autoencoder.figures_3d",
                ],
                "evaluation.report",
                name="build_evaluation_report",
            ),
        ]
    )

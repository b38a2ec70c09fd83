"""``text2image_rlhf`` wiring, part 1: captioned slices -> tokenizer -> generator -> images.

    export_slices -> captions_2d.csv + PNGs (read back by CSVImageDataset, like any CSV)
    fit_tokenizer -> train_generator (one training job) -> generate (K per prompt, grid)
    check_prompt_agreement (offline attribute classifiers) ; pretrained_baseline (Stable Diffusion)
    summarise -> data/08_reporting/text2image/summary.json

The CSV is one file under two catalog names (Kedro transcoding): ``@pandas`` written by the
export, ``@images`` read by `medgen.datasets.CSVImageDataset`. See docs/text2image.md.
"""

from kedro.pipeline import Pipeline, node

from medgen.pipelines.text2image_rlhf import nodes

IMAGES = "text2image.captions_2d@images"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                nodes.export_slices,
                [
                    "slices_2d_train",
                    "slices_2d_val",
                    "slices_2d_test",
                    "params:text2image.export",
                ],
                ["text2image.slices", "text2image.captions_2d@pandas"],
                name="export_captioned_slices",
            ),
            node(
                nodes.fit_tokenizer,
                [IMAGES, "params:text2image.tokenizer"],
                "text2image.tokenizer",
                name="fit_text2image_tokenizer",
            ),
            node(
                nodes.train_generator,
                [
                    IMAGES,
                    "text2image.tokenizer",
                    "params:text2image.generator",
                    "params:text2image.network",
                    "params:text2image.checkpoint_root",
                    # optional: used when generator.space is latent
                    "autoencoder.model_2d",
                    "autoencoder.latent_space_2d",
                ],
                ["text2image.generator", "text2image.generator_report"],
                name="train_text2image_generator",
                tags=["training"],
            ),
            node(
                nodes.generate,
                [
                    "text2image.generator",
                    "text2image.tokenizer",
                    IMAGES,
                    "slices_2d_test",
                    "params:text2image.generation",
                    "autoencoder.model_2d",
                ],
                [
                    "text2image.samples",
                    "text2image.generation_report",
                    "text2image.generated_png",
                    "text2image.generated_nifti",
                    "text2image.grid",
                ],
                name="generate_text2image",
            ),
            node(
                nodes.check_prompt_agreement,
                [IMAGES, "text2image.samples", "params:text2image.attributes"],
                ["text2image.attribute_classifiers", "text2image.agreement_report"],
                name="check_prompt_agreement",
                tags=["training"],
            ),
            node(
                nodes.pretrained_baseline,
                [
                    "params:text2image.pretrained",
                    "text2image.samples",
                    IMAGES,
                    "params:text2image.checkpoint_root",
                ],
                "text2image.pretrained_report",
                name="pretrained_baseline",
            ),
            node(
                nodes.summarise,
                [
                    "text2image.generator_report",
                    "text2image.generation_report",
                    "text2image.agreement_report",
                    "text2image.pretrained_report",
                    IMAGES,
                ],
                "text2image.summary",
                name="summarise_text2image",
            ),
        ]
    )

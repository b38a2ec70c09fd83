"""``text2image_rlhf`` wiring: captioned slices -> tokenizer -> generator -> rewards -> RLHF.

Part 1:
    export_slices -> captions_2d.csv + PNGs (read back by CSVImageDataset, like any CSV)
    fit_tokenizer -> train_generator (one training job) -> generate (K per prompt, grid)
    check_prompt_agreement (offline attribute classifiers) ; pretrained_baseline (Stable Diffusion)
Part 2:
    train_undertrained_generator -> simulate_ratings (ratings.csv with a known truth)
    train_selector (quality, from ratings) ; train_alignment (Policy, from captions)
    finetune_filtered (Stage 2a) -> reinforce (Stage 2b, DDPO)
    measure_stages (proxy vs oracle, Fréchet) ; quality_filtered_generation (best-of-N)
    pretrained_part2 (the same stages on Stable Diffusion with LoRA, where enabled)
    summarise -> data/08_reporting/text2image/summary.json

The CSV is one file under two catalog names (Kedro transcoding): ``@pandas`` written by the
export, ``@images`` read by `medgen.datasets.CSVImageDataset`. See docs/text2image.md.
"""

from kedro.pipeline import Pipeline, node

from medgen.pipelines.text2image_rlhf import nodes

IMAGES = "text2image.captions_2d@images"
RATED = "text2image.ratings@images"
ROOT = "params:text2image.checkpoint_root"


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
                    ROOT,
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
                nodes.train_undertrained_generator,
                [
                    IMAGES,
                    "text2image.tokenizer",
                    "params:text2image.generator",
                    "params:text2image.network",
                    "params:text2image.undertrained",
                    ROOT,
                ],
                ["text2image.undertrained_generator", "text2image.undertrained_report"],
                name="train_undertrained_generator",
                tags=["training"],
            ),
            node(
                nodes.simulate_ratings,
                [
                    IMAGES,
                    "text2image.undertrained_generator",
                    "text2image.tokenizer",
                    "params:text2image.ratings",
                    "params:text2image.undertrained",
                ],
                [
                    "text2image.rated_png",
                    "text2image.ratings@pandas",
                    "text2image.oracle_reference",
                    "text2image.ratings_report",
                ],
                name="simulate_ratings",
            ),
            node(
                nodes.train_selector,
                [RATED, "params:text2image.selector", "params:text2image.ratings", ROOT],
                ["text2image.selector", "text2image.selector_report", "text2image.reliability"],
                name="train_selector",
                tags=["training"],
            ),
            node(
                nodes.train_alignment,
                [IMAGES, "text2image.tokenizer", "params:text2image.alignment", ROOT],
                ["text2image.alignment_scorer", "text2image.alignment_report"],
                name="train_alignment_scorer",
                tags=["training"],
            ),
            node(
                nodes.finetune_filtered,
                [
                    "text2image.generator",
                    RATED,
                    "text2image.selector",
                    "text2image.tokenizer",
                    "params:text2image.reward",
                    "params:text2image.filtered_finetune",
                    ROOT,
                ],
                ["text2image.generator_filtered", "text2image.filtered_finetune_report"],
                name="finetune_selector_filtered",
                tags=["training"],
            ),
            node(
                nodes.reinforce,
                [
                    "text2image.generator_filtered",
                    "text2image.selector",
                    "text2image.alignment_scorer",
                    "text2image.tokenizer",
                    IMAGES,
                    "params:text2image.reinforce",
                    "params:text2image.reward",
                    ROOT,
                ],
                ["text2image.generator_reinforced", "text2image.reinforce_report"],
                name="reinforce_ddpo",
                tags=["training"],
            ),
            node(
                nodes.measure_stages,
                [
                    "text2image.generator",
                    "text2image.generator_filtered",
                    "text2image.generator_reinforced",
                    "text2image.tokenizer",
                    IMAGES,
                    "text2image.selector",
                    "text2image.alignment_scorer",
                    "params:text2image.reward",
                    "text2image.oracle_reference",
                    "text2image.attribute_classifiers",
                    "params:text2image.stage_evaluation",
                ],
                ["text2image.stages_report", "text2image.stages_grid"],
                name="measure_stages",
            ),
            node(
                nodes.quality_filtered_generation,
                [
                    "text2image.generator_reinforced",
                    "text2image.tokenizer",
                    IMAGES,
                    "text2image.selector",
                    "text2image.alignment_scorer",
                    "params:text2image.reward",
                    "text2image.oracle_reference",
                    "params:text2image.best_of_n",
                ],
                [
                    "text2image.best_of_n_png",
                    "text2image.best_of_n_samples",
                    "text2image.best_of_n_report",
                ],
                name="quality_filtered_generation",
            ),
            node(
                nodes.pretrained_part2,
                [
                    "params:text2image.pretrained",
                    RATED,
                    "text2image.selector",
                    "text2image.alignment_scorer",
                    "text2image.tokenizer",
                    IMAGES,
                    "params:text2image.reward",
                    "text2image.oracle_reference",
                    "text2image.attribute_classifiers",
                    "params:text2image.stage_evaluation",
                    "params:text2image.best_of_n",
                    ROOT,
                ],
                ["text2image.pretrained_part2_report", "text2image.pretrained_part2_png"],
                name="pretrained_part2",
                tags=["training"],
            ),
            node(
                nodes.summarise,
                [
                    "text2image.generator_report",
                    "text2image.generation_report",
                    "text2image.agreement_report",
                    "text2image.pretrained_report",
                    IMAGES,
                    "text2image.ratings_report",
                    "text2image.selector_report",
                    "text2image.alignment_report",
                    "text2image.filtered_finetune_report",
                    "text2image.reinforce_report",
                    "text2image.stages_report",
                    "text2image.best_of_n_report",
                    "text2image.pretrained_part2_report",
                ],
                "text2image.summary",
                name="summarise_text2image",
            ),
        ]
    )

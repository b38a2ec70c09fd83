"""``latent_diffusion`` wiring (2D; pixel space, or latent space with the autoencoder pipeline's model).

A chain of two models, each built from the same template under its own namespace:

    latent_diffusion.masks   unconditional lesion masks (mode seg)
    latent_diffusion.images  images conditioned on a mask (mode bravo | dual | t1_pre | t1_gd)

then ``generate_samples`` draws masks with the first and images for exactly those masks
with the second, and ``summarise_run`` writes summary.json. Which strategy and mode each
role uses is a parameter (``latent_diffusion.strategy``, ``latent_diffusion.images.mode``),
so the graph is fixed and a run is selected with ``--params``; outputs are partitioned by
``<strategy>_<mode>``. The LR range test nodes carry the tag ``lr_finder`` and do nothing
unless ``latent_diffusion.lr_finder.enabled`` is true. See docs/latent_diffusion.md.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from medgen.generation.settings import ROLES
from medgen.pipelines.latent_diffusion import nodes

# Optional inputs from the autoencoder pipeline, used when a role's space is latent (absent:
# None). Reading them also orders latent_diffusion after autoencoder in a full run.
AUTOENCODER_INPUTS = ("autoencoder.model_2d", "autoencoder.latent_space_2d")


def _for_role(func, role: str):
    """``func`` with its ``role`` argument fixed, keeping its name for logs and kedro-viz."""
    return update_wrapper(partial(func, role=role), func)


def model_pipeline(role: str) -> Pipeline:
    """Training (and the optional LR range test) of one model of the chain."""
    template = Pipeline(
        [
            node(
                _for_role(nodes.find_learning_rate, role),
                ["slices_2d_train", "params:latent_diffusion", *AUTOENCODER_INPUTS],
                ["lr_range_test_plot", "lr_range_test"],
                name="find_learning_rate",
                tags=["lr_finder"],
            ),
            node(
                _for_role(nodes.train_diffusion_model, role),
                ["slices_2d_train", "params:latent_diffusion", *AUTOENCODER_INPUTS],
                ["model", "training_report", "training_plots"],
                name="train_diffusion_model",
                tags=["training"],
            ),
        ]
    )
    return Pipeline(
        template,
        namespace=f"latent_diffusion.{role}",
        inputs={"slices_2d_train", *AUTOENCODER_INPUTS},
        parameters={"params:latent_diffusion"},
    )


def create_pipeline(**kwargs) -> Pipeline:
    generation = Pipeline(
        [
            node(
                nodes.generate_samples,
                [
                    "mask_model",
                    "image_model",
                    "slices_2d_val",
                    "params:latent_diffusion",
                    *AUTOENCODER_INPUTS,
                ],
                ["samples", "sample_niftis", "sample_grids", "generation_report"],
                name="generate_samples",
                tags=["generation"],
            ),
            node(
                nodes.summarise_run,
                ["mask_training_report", "image_training_report", "generation_report"],
                "summary",
                name="summarise_run",
                tags=["generation"],
            ),
        ]
    )
    models = sum((model_pipeline(role) for role in ROLES), Pipeline([]))
    return models + Pipeline(
        generation,
        namespace="latent_diffusion",
        # the models and reports come from the role namespaces above
        inputs={
            "slices_2d_val": "slices_2d_val",
            **{name: name for name in AUTOENCODER_INPUTS},
            "mask_model": "latent_diffusion.masks.model",
            "image_model": "latent_diffusion.images.model",
            "mask_training_report": "latent_diffusion.masks.training_report",
            "image_training_report": "latent_diffusion.images.training_report",
        },
        parameters={"params:latent_diffusion"},
    )

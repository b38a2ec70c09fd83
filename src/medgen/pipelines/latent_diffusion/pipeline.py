"""``latent_diffusion`` wiring: the 2D chain (pixel or latent space) and the 3D volumes.

The 2D chain is two models, each built from the same template under its own namespace:

    latent_diffusion.masks   unconditional lesion masks (mode seg)
    latent_diffusion.images  images conditioned on a mask (mode bravo | dual | t1_pre | t1_gd)

then ``generate_samples`` draws masks with the first and images for exactly those masks
with the second, and ``summarise_run`` writes summary.json with the demo checks of the
images (`medgen.generation.demo_checks`). Which strategy and mode each
role uses is a parameter (``latent_diffusion.shared.strategy``, ``latent_diffusion.images.mode``),
so the graph is fixed and a run is selected with ``--params``; outputs are partitioned by
``<strategy>_<mode>``. The LR range test nodes carry the tag ``lr_finder`` and do nothing
unless ``latent_diffusion.lr_finder.enabled`` is true.

The 3D role, ``latent_diffusion.volumes``, trains a class-conditional DiT on the autoencoder
pipeline's 3D latents and decodes its volumes with the autoencoder's 3D model. Tags
``generation_2d`` and ``generation_3d`` select one of the two. See docs/latent_diffusion.md.
"""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node

from medgen.generation.settings import ROLES
from medgen.pipelines.latent_diffusion import nodes

# Optional inputs from the autoencoder pipeline, used when a role's space is latent (absent:
# None). Reading them also orders latent_diffusion after autoencoder in a full run.
AUTOENCODER_INPUTS = ("autoencoder.model_2d", "autoencoder.latent_space_2d")
SHARED = "params:latent_diffusion.shared"


def _for_role(func, role: str):
    """``func`` with its ``role`` argument fixed, keeping its name for logs and kedro-viz."""
    return update_wrapper(partial(func, role=role), func)


def model_pipeline(role: str) -> Pipeline:
    """Training (and the optional LR range test) of one model of the chain."""
    template = Pipeline(
        [
            node(
                _for_role(nodes.find_learning_rate, role),
                [
                    "slices_2d_train",
                    "params:role",
                    SHARED,
                    "params:lr_finder",
                    *AUTOENCODER_INPUTS,
                ],
                ["lr_range_test_plot", "lr_range_test"],
                name="find_learning_rate",
                tags=["lr_finder"],
            ),
            node(
                _for_role(nodes.train_diffusion_model, role),
                ["slices_2d_train", "params:role", SHARED, *AUTOENCODER_INPUTS],
                ["model", "training_report", "training_plots"],
                name="train_diffusion_model",
                tags=["training"],
            ),
        ],
        tags=["generation_2d"],
    )
    return Pipeline(
        template,
        namespace=f"latent_diffusion.{role}",
        inputs={"slices_2d_train", *AUTOENCODER_INPUTS},
        parameters={
            "params:role": f"params:latent_diffusion.{role}",
            SHARED: SHARED,
            "params:lr_finder": "params:latent_diffusion.lr_finder",
        },
    )


def chain_generation_pipeline() -> Pipeline:
    """Masks, then images for exactly those masks, from the two trained models; the summary."""
    template = Pipeline(
        [
            node(
                nodes.generate_samples,
                [
                    "mask_model",
                    "image_model",
                    "slices_2d_val",
                    "params:masks",
                    "params:images",
                    "params:shared",
                    "params:generation",
                    *AUTOENCODER_INPUTS,
                ],
                ["samples", "sample_niftis", "sample_grids", "generation_report"],
                name="generate_samples",
            ),
            node(
                nodes.summarise_run,
                [
                    "mask_training_report",
                    "image_training_report",
                    "generation_report",
                    "samples",
                    "slices_2d_train",
                    "slices_2d_val",
                    "params:demo_checks",
                ],
                "summary",
                name="summarise_run",
            ),
        ],
        tags=["generation", "generation_2d"],
    )
    return Pipeline(
        template,
        namespace="latent_diffusion",
        # the models and reports come from the role namespaces above
        inputs={
            "slices_2d_train": "slices_2d_train",
            "slices_2d_val": "slices_2d_val",
            **{name: name for name in AUTOENCODER_INPUTS},
            "mask_model": "latent_diffusion.masks.model",
            "image_model": "latent_diffusion.images.model",
            "mask_training_report": "latent_diffusion.masks.training_report",
            "image_training_report": "latent_diffusion.images.training_report",
        },
    )


def volumes_pipeline() -> Pipeline:
    """The 3D role: a class-conditional DiT on the 3D latents, its volumes, their summary."""
    template = Pipeline(
        [
            node(
                nodes.train_volume_generator,
                ["latents_3d_train", "params:generator", "params:checkpoint_dir"],
                ["generator", "generator_report"],
                name="train_volume_generator",
                tags=["training"],
            ),
            node(
                nodes.generate_volumes,
                [
                    "generator",
                    "autoencoder.model_3d",
                    "volumes_3d_val",
                    "params:generator",
                    "params:generation",
                ],
                ["niftis", "samples", "figures", "generation_report"],
                name="generate_volumes",
                tags=["generation"],
            ),
            node(
                nodes.summarise_volumes,
                [
                    "generator_report",
                    "generation_report",
                    "samples",
                    "volumes_3d_train",
                    "volumes_3d_val",
                    "params:demo_checks",
                    "autoencoder.model_3d",
                ],
                "summary",
                name="summarise_volumes",
                tags=["generation"],
            ),
        ],
        tags=["generation_3d"],
    )
    return Pipeline(
        template,
        namespace="latent_diffusion.volumes",
        # the autoencoder pipeline's 3D latents and model, data_processing's real volumes
        inputs={"latents_3d_train", "autoencoder.model_3d", "volumes_3d_train", "volumes_3d_val"},
    )


def create_pipeline(**kwargs) -> Pipeline:
    models = sum((model_pipeline(role) for role in ROLES), Pipeline([]))
    return models + chain_generation_pipeline() + volumes_pipeline()

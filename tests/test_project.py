"""Project wiring: the registry, and that every pipeline output persists via the catalog."""

from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader
from kedro.framework.project import configure_project, pipelines
from kedro.io import DataCatalog, MemoryDataset

REPO = Path(__file__).resolve().parents[1]
PIPELINES = [
    "data_processing",
    "autoencoder",
    "latent_diffusion",
    "inpainting",
    "text2image_rlhf",
    "evaluation",
]


@pytest.fixture(scope="module")
def catalog():
    # Built from conf/ directly: a session would run kedro-mlflow's hooks in the checkout.
    loader = OmegaConfigLoader(str(REPO / "conf"), base_env="base", default_run_env="test")
    return DataCatalog.from_config(loader["catalog"])


def test_all_six_pipelines_are_registered():
    configure_project("medgen")
    registered = set(pipelines.keys())
    assert set(PIPELINES) <= registered
    assert "__default__" in registered


@pytest.mark.parametrize("name", PIPELINES)
def test_every_output_has_a_persistent_catalog_entry(catalog, name):
    """A misspelt output would silently become a MemoryDataset and vanish after the run."""
    configure_project("medgen")
    pipeline = pipelines[name]
    for dataset_name in pipeline.all_outputs():
        assert dataset_name in catalog, f"{name}: output {dataset_name!r} has no catalog entry"
        dataset = catalog.get(dataset_name)
        assert not isinstance(dataset, MemoryDataset), f"{name}: {dataset_name!r} would not persist"


def test_3d_generation_belongs_to_latent_diffusion():
    """The autoencoder pipeline compresses; latent_diffusion's 3D role generates from its
    3D model and latents, read through the catalog."""
    configure_project("medgen")
    autoencoder, latent_diffusion = pipelines["autoencoder"], pipelines["latent_diffusion"]
    assert {"latents_3d_train", "autoencoder.model_3d"} <= autoencoder.all_outputs()
    assert not [name for name in autoencoder.all_outputs() if "generat" in name]
    volumes = latent_diffusion.only_nodes_with_namespaces(["latent_diffusion.volumes"])
    assert {"latents_3d_train", "autoencoder.model_3d", "volumes_3d_val"} <= volumes.inputs()
    assert {n.name for n in volumes.nodes} == {
        "latent_diffusion.volumes.train_volume_generator",
        "latent_diffusion.volumes.generate_volumes",
        "latent_diffusion.volumes.summarise_volumes",
    }

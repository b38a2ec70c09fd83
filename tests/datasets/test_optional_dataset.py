"""OptionalDataset: absent data loads as the default, saves go through to the wrapped dataset."""

from __future__ import annotations

import pytest
import torch
from kedro.io import DataCatalog
from kedro.io.core import DatasetError

from medgen.datasets import TensorBundle
from medgen.datasets.optional_dataset import OptionalDataset


def test_absent_json_loads_none_and_save_goes_through(tmp_path):
    path = tmp_path / "reports" / "summary.json"
    dataset = OptionalDataset(dataset={"type": "json.JSONDataset", "filepath": str(path)})
    assert not dataset.exists()
    assert dataset.load() is None
    dataset.save({"loss": [1.0, 0.5]})
    assert path.is_file() and dataset.exists()
    assert dataset.load() == {"loss": [1.0, 0.5]}


def test_configured_default_is_returned_as_a_copy(tmp_path):
    dataset = OptionalDataset(
        dataset={"type": "json.JSONDataset", "filepath": str(tmp_path / "x.json")},
        default={"a": []},
    )
    first = dataset.load()
    first["a"].append(1)
    assert dataset.load() == {"a": []}


def test_partitioned_samples_from_catalog_config(tmp_path):
    """The catalog_evaluation.yml form: missing folder and empty folder give None."""
    config = {
        "samples": {
            "type": "medgen.datasets.optional_dataset.OptionalDataset",
            "dataset": {
                "type": "partitions.PartitionedDataset",
                "path": str(tmp_path / "07_model_output"),
                "dataset": "medgen.datasets.TensorDataset",
                "filename_suffix": "/samples.safetensors",
            },
        }
    }
    catalog = DataCatalog.from_config(config)
    assert catalog.load("samples") is None
    (tmp_path / "07_model_output").mkdir()
    assert catalog.load("samples") is None

    bundle = TensorBundle({"images": torch.zeros(2, 1, 4, 4)}, {"mode": "bravo"})
    catalog.save("samples", {"latent_diffusion/ddpm_bravo": bundle})
    assert (tmp_path / "07_model_output/latent_diffusion/ddpm_bravo/samples.safetensors").is_file()
    loaded = catalog.load("samples")
    assert list(loaded) == ["latent_diffusion/ddpm_bravo"]
    assert loaded["latent_diffusion/ddpm_bravo"]().metadata == {"mode": "bravo"}


def test_present_but_unreadable_data_still_raises(tmp_path):
    """Only absence is tolerated: a corrupt file is an error, never silently None."""
    path = tmp_path / "samples.safetensors"
    path.write_bytes(b"not a safetensors file")
    dataset = OptionalDataset(
        dataset={"type": "medgen.datasets.TensorDataset", "filepath": str(path)}
    )
    with pytest.raises(DatasetError, match="unreadable"):
        dataset.load()

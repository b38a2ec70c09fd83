"""Feature-network storage and the MLflow form of the metrics."""

from __future__ import annotations

import torch
from evaluation_helpers import real_slices

from medgen.datasets import TensorDataset
from medgen.evaluation import feature_network_from_bundle, log_to_mlflow, mlflow_metrics


def test_feature_network_round_trips_through_safetensors(tmp_path, feature_network):
    path = tmp_path / "in_domain_backbone.safetensors"
    TensorDataset(filepath=str(path)).save(feature_network)
    loaded = TensorDataset(filepath=str(path)).load()
    expected = "trained on slices_2d_train (the real training split), 48 images, 3 steps"
    assert loaded.metadata["provenance"] == expected
    assert feature_network_from_bundle(loaded).provenance == expected  # kept in the config
    assert loaded.metadata["train_slices"] == 12
    x = real_slices(4)["images"][:, :1]
    with torch.no_grad():
        a = feature_network_from_bundle(feature_network)(x)
        b = feature_network_from_bundle(loaded)(x)
    assert torch.allclose(a, b)


def test_mlflow_metrics_name_source_metric_backbone_and_floor(metrics):
    logged = mlflow_metrics(metrics)
    assert "evaluation/latent_diffusion/ddpm_bravo/fid/in_domain" in logged
    assert "evaluation/latent_diffusion/ddpm_bravo/fid/in_domain/floor" in logged
    assert not any("inception" in key for key in logged)  # missing weights: no number


def test_log_to_mlflow_only_into_an_active_run(metrics, monkeypatch):
    import mlflow

    logged = {}
    monkeypatch.setattr(mlflow, "active_run", lambda: None)
    assert log_to_mlflow(metrics) == 0
    monkeypatch.setattr(mlflow, "active_run", lambda: object())
    monkeypatch.setattr(mlflow, "log_metrics", logged.update)
    assert log_to_mlflow(metrics) == len(logged) > 0

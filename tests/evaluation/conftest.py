"""One tiny evaluation, computed once per module that asks for it."""

from __future__ import annotations

import pytest
from evaluation_helpers import TINY_PARAMS, TINY_SCORING, generated_bundle, partitions, real_slices

from medgen.evaluation import evaluate_sources, train_feature_network


@pytest.fixture(scope="session")
def real():
    return {"train": real_slices(24, seed=0), "test": real_slices(16, seed=5)}


@pytest.fixture(scope="session")
def feature_network(real):
    return train_feature_network(real["train"], TINY_PARAMS["in_domain_backbone"], seed=0)


@pytest.fixture(scope="session")
def samples():
    return partitions(ddpm_bravo=generated_bundle("bravo"), ddpm_seg=generated_bundle("seg"))


@pytest.fixture(scope="session")
def metrics(real, feature_network, samples):
    return evaluate_sources(
        samples, real["test"], real["train"], feature_network, TINY_SCORING, seed=0
    )

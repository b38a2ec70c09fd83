"""Every parameter block is a frozen dataclass: conf/base holds all its values, and a misspelt
or missing key fails naming the key (and, when misspelt, the closest known one)."""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from kedro.config import OmegaConfigLoader

from medgen.autoencoder.latents import Encoding2DParams, Encoding3DParams
from medgen.config import nested_dataclass
from medgen.data.splits import SplitConfig
from medgen.evaluation import EvaluationParams
from medgen.generation import GenerationParams, LrFinderParams, RoleParams, SharedModelParams
from medgen.generation.class_conditional_3d import ClassConditionalParams
from medgen.generation.volumes_3d import VolumeGenerationParams
from tests.conf_parameters import REPO, base_parameters

# (parameters file, key path of the block, its dataclass, how a node reads it)
BLOCKS: list[tuple[str, tuple[str, ...], type, Callable[[Mapping[str, Any]], Any]]] = [
    (
        "latent_diffusion",
        ("latent_diffusion", "shared"),
        SharedModelParams,
        SharedModelParams.from_params,
    ),
    (
        "latent_diffusion",
        ("latent_diffusion", "masks"),
        RoleParams,
        lambda p: RoleParams.from_params(p, "masks"),
    ),
    (
        "latent_diffusion",
        ("latent_diffusion", "images"),
        RoleParams,
        lambda p: RoleParams.from_params(p, "images"),
    ),
    (
        "latent_diffusion",
        ("latent_diffusion", "generation"),
        GenerationParams,
        GenerationParams.from_params,
    ),
    (
        "latent_diffusion",
        ("latent_diffusion", "lr_finder"),
        LrFinderParams,
        LrFinderParams.from_params,
    ),
    (
        "latent_diffusion",
        ("latent_diffusion", "volumes", "generator"),
        ClassConditionalParams,
        ClassConditionalParams.from_params,
    ),
    (
        "latent_diffusion",
        ("latent_diffusion", "volumes", "generation"),
        VolumeGenerationParams,
        VolumeGenerationParams.from_params,
    ),
    ("evaluation", ("evaluation",), EvaluationParams, EvaluationParams.from_params),
    ("autoencoder", ("autoencoder", "encoding_2d"), Encoding2DParams, Encoding2DParams.from_params),
    ("autoencoder", ("autoencoder", "encoding_3d"), Encoding3DParams, Encoding3DParams.from_params),
    ("data_processing", ("split",), SplitConfig, SplitConfig.from_params),
]
IDS = [".".join(keys) for _, keys, _, _ in BLOCKS]


def keys_of(
    cls: type, block: Mapping[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """The path of every key the block sets, descending into sub-blocks that are dataclasses."""
    hints = typing.get_type_hints(cls)
    for key, value in block.items():
        yield (*path, key)
        nested = nested_dataclass(hints[key])
        if nested is not None and isinstance(value, Mapping):
            yield from keys_of(nested, value, (*path, key))


def required_fields(cls: type) -> set[str]:
    """Fields without a default: their values must come from conf."""
    missing = dataclasses.MISSING
    return {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is missing and f.default_factory is missing
    }


def at(block: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        block = block[key]
    return block


@pytest.fixture(scope="module")
def test_env_parameters() -> dict:
    loader = OmegaConfigLoader(
        str(REPO / "conf"),
        base_env="base",
        default_run_env="test",
        merge_strategy={"parameters": "soft"},
    )
    return loader["parameters"]


@pytest.mark.parametrize(("pipeline", "keys", "cls", "read"), BLOCKS, ids=IDS)
def test_conf_base_and_conf_test_blocks_are_complete_and_valid(
    pipeline, keys, cls, read, test_env_parameters
):
    base = base_parameters(pipeline, *keys)
    config = read(base)
    assert isinstance(config, cls) and dataclasses.is_dataclass(config)
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required <= set(base), f"conf/base lacks {sorted(required - set(base))}"
    assert isinstance(read(at(test_env_parameters, keys)), cls)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, dataclasses.fields(cls)[0].name, None)


@pytest.mark.parametrize(("pipeline", "keys", "cls", "read"), BLOCKS, ids=IDS)
def test_a_misspelt_key_fails_with_a_did_you_mean_hint(pipeline, keys, cls, read):
    base = base_parameters(pipeline, *keys)
    paths = list(keys_of(cls, base))
    assert paths
    for path in paths:
        block = copy.deepcopy(base)
        parent = at(block, path[:-1])
        parent[path[-1][:-1]] = parent.pop(path[-1])  # drop the key's last letter
        section = ".".join((*keys, *path[:-1]))
        with pytest.raises(ValueError, match=rf"{section} .*did you mean '{path[-1]}'\?"):
            read(block)


@pytest.mark.parametrize(("pipeline", "keys", "cls", "read"), BLOCKS, ids=IDS)
def test_a_missing_key_is_named_not_guessed(pipeline, keys, cls, read):
    base = base_parameters(pipeline, *keys)
    for key in sorted(required_fields(cls)):
        block = {k: v for k, v in base.items() if k != key}
        with pytest.raises(ValueError, match=rf"Missing {'.'.join(keys)} parameters: '{key}'"):
            read(block)


def test_nodes_receive_the_blocks_they_use():
    """No node reads a whole pipeline block: kedro-viz shows which parameters feed which node."""
    from kedro.framework.project import configure_project, pipelines

    configure_project("medgen")
    whole = {"params:latent_diffusion", "params:autoencoder", "params:evaluation"}
    for node in pipelines["__default__"].nodes:
        assert not whole & set(node.inputs), f"{node.name} reads {whole & set(node.inputs)}"


def test_yaml_has_no_leftover_blocks():
    assert "generator_3d" not in base_parameters("autoencoder", "autoencoder")
    assert "generation_3d" not in base_parameters("autoencoder", "autoencoder")
    assert set(base_parameters("latent_diffusion", "latent_diffusion")) == {
        "shared",
        "masks",
        "images",
        "generation",
        "lr_finder",
        "volumes",
        "demo_checks",
    }

"""An environment's parameters, resolved exactly as `kedro run --env <env>` resolves them."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medgen import settings

#: Variables a scheduler sets inside a job; absent here, so `oc.env` falls back to the defaults
#: written in conf/ (what a run outside SLURM gets).
SCHEDULER_PREFIXES = ("SLURM_",)
SCHEDULER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")


@contextmanager
def without_scheduler_variables() -> Iterator[None]:
    """``os.environ`` without SLURM's and torchrun's variables inside the block."""
    removed = {
        key: value
        for key, value in os.environ.items()
        if key.startswith(SCHEDULER_PREFIXES) or key in SCHEDULER_VARIABLES
    }
    for key in removed:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(removed)


def config_loader(
    env: str, conf_source: str | Path, runtime_params: Mapping[str, Any] | None = None
):
    """The project's config loader (`medgen.settings`: class, custom resolvers, merge strategy)
    for ``env``, as a `KedroContext` builds it."""
    return settings.CONFIG_LOADER_CLASS(
        conf_source=str(conf_source),
        env=env,
        runtime_params=dict(runtime_params or {}),
        **settings.CONFIG_LOADER_ARGS,
    )


def load_parameters(
    env: str, conf_source: str | Path, runtime_params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every pipeline's parameters for ``env`` (conf/base merged with conf/<env>), resolved with
    the scheduler's variables absent."""
    with without_scheduler_variables():
        return dict(config_loader(env, conf_source, runtime_params)["parameters"])

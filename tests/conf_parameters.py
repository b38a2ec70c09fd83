"""The parameter values of conf/base, read as Kedro gives them to a node (plain dicts).

Parameter dataclasses have no defaults of their own: tests that call library code directly
start from these values and override single keys, as an environment or --params would.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def base_parameters(pipeline: str, *keys: str) -> Any:
    """``conf/base/parameters_<pipeline>.yml``, or the block at ``keys`` inside it (a copy)."""
    block = yaml.safe_load((REPO / f"conf/base/parameters_{pipeline}.yml").read_text())
    for key in keys:
        block = block[key]
    return copy.deepcopy(block)


def overridden(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in key by key (Kedro's soft merge of an environment)."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = overridden(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out

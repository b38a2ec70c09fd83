"""Building frozen config dataclasses from Kedro ``params:`` dictionaries."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar

T = TypeVar("T")


def refuse_unknown_keys(
    cls: type, params: Mapping[str, Any], section: str, error: type[Exception] = ValueError
) -> None:
    """Raise ``error`` naming every key of ``params`` that is not a field of ``cls``.

    A misspelt key in a parameters file would otherwise be ignored silently and the
    default used; each unknown key gets its closest known key as a hint.
    """
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(known))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise error(f"Unknown {section} parameters: {', '.join(hints)}; known: {', '.join(known)}")


def config_from_params(cls: type[T], params: Mapping[str, Any] | None, section: str) -> T:
    """``cls(**params)`` with YAML lists turned into tuples and unknown keys refused."""
    params = dict(params or {})
    refuse_unknown_keys(cls, params, section)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


def refuse_missing_keys(
    cls: type, params: Mapping[str, Any], section: str, error: type[Exception] = ValueError
) -> None:
    """Raise ``error`` naming every field of ``cls`` without a default that ``params`` lacks.

    Parameter blocks whose values live in ``conf/base`` have no defaults in code: a key
    missing here was removed by an environment or never written, and guessing a value
    would hide that.
    """
    missing = [
        f.name
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in params
    ]
    if missing:
        raise error(
            f"Missing {section} parameters: {', '.join(map(repr, missing))}; their values "
            "belong in conf/base/parameters_<pipeline>.yml"
        )


def nested_dataclass(hint: Any) -> type | None:
    """The dataclass a field's type names (``Params`` or ``Params | None``), else None."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return nested_dataclass(options[0])
    return None


def config_tree_from_params(cls: type[T], params: Mapping[str, Any] | None, section: str) -> T:
    """`config_from_params` for a tree of dataclasses: fields typed as a dataclass are built
    from their sub-block the same way, and every field without a default must be given.

    Errors name the full key (``latent_diffusion.volumes.generator.sampling``) and, for an
    unknown key, the closest known one.
    """
    params = dict(params or {})
    refuse_unknown_keys(cls, params, section)
    refuse_missing_keys(cls, params, section)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in params.items():
        nested = nested_dataclass(hints[name])
        if nested is not None and isinstance(value, Mapping):
            value = config_tree_from_params(nested, value, f"{section}.{name}")
        elif isinstance(value, Mapping):  # an option dict handed on as it is (a copy)
            value = copy.deepcopy(dict(value))
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def require_positive_ints(config: Any, section: str, *keys: str) -> None:
    """ValueError naming ``<section>.<key>`` unless each attribute ``key`` of ``config`` is an
    integer >= 1 (booleans are not integers here, though Python says they are)."""
    for key in keys:
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{section}.{key} must be an integer >= 1, got {value!r}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A parameter dataclass as the plain JSON-friendly dict its loader accepts: nested
    dataclasses become dicts and tuples become lists (YAML and JSON have no tuples)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))

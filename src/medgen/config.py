"""Building frozen config dataclasses from Kedro ``params:`` dictionaries."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_params(cls: type[T], params: dict[str, Any] | None, section: str) -> T:
    """``cls(**params)`` with YAML lists turned into tuples and unknown keys refused.

    A misspelt key in a parameters file would otherwise be ignored silently and the
    default used; the error names the section and the keys it knows.
    """
    params = dict(params or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"Unknown {section} parameters {unknown}; known: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})

"""Building frozen config dataclasses from Kedro ``params:`` dictionaries."""

from __future__ import annotations

import dataclasses

import difflib
from collections.abc import Mapping
from dataclasses import fields
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

"""A minimal name -> factory registry shared by backbones, strategies, modes and spaces.

A new component is one decorated function or class plus a config entry naming it::

    BACKBONES = Registry("backbone")

    @BACKBONES.register("my_net")
    def build_my_net(config, in_channels, out_channels): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a lower-case name to a registered object (a class or a factory function).

    Args:
        kind: what is registered, used in error messages (e.g. ``"backbone"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a name can be registered only once."""
        key = name.lower()

        def decorator(obj: T) -> T:
            if key in self._items:
                raise ValueError(
                    f"{self.kind} {key!r} is already registered ({self._items[key]!r})"
                )
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the object registered under ``name`` or raise a ``KeyError`` listing the choices."""
        key = str(name).lower()
        if key not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {sorted(self._items)}")
        return self._items[key]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

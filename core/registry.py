"""Registries that plugins fill at startup: name -> class, remembering who registered what."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import PluginError

T = TypeVar("T")


class NameTaken(PluginError):
    """A plugin registered a name another plugin has: start-up stops, whoever is optional."""


class Registry(Generic[T]):
    """Named things of one kind (exchange types, dispatch policies, ...).

    Filled once at startup; afterwards lookups are plain dict reads.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        #: name -> the plugin that registered it
        self.sources: dict[str, str] = {}
        #: set by the plugin loader while a plugin's register hook runs
        self.current_plugin = "?"

    def add(self, item: T, name: str | None = None) -> None:
        """Register ``item`` under ``name`` (default: its ``name`` attribute)."""
        key = name if name is not None else getattr(item, "name", None)
        if not isinstance(key, str) or not key:
            raise PluginError(
                f"plugin '{self.current_plugin}' registered a {self.kind} without a name"
            )
        if key in self._items:
            raise NameTaken(
                f"plugin '{self.current_plugin}' registered {self.kind} '{key}', "
                f"already registered by plugin '{self.sources[key]}'"
            )
        self._items[key] = item
        self.sources[key] = self.current_plugin

    def discard_plugin(self, plugin: str) -> None:
        """Forget everything ``plugin`` registered (it failed and is skipped)."""
        for key in [key for key, source in self.sources.items() if source == plugin]:
            del self._items[key]
            del self.sources[key]

    def get(self, name: str) -> T | None:
        return self._items.get(name)

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

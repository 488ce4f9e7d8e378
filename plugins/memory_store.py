"""The ``memory`` store: keeps nothing on disk (a transient broker; the default for now)."""

from __future__ import annotations

from typing import Any

from warrenmq import Store, hookimpl


class MemoryStore(Store):
    name = "memory"


@hookimpl
def warrenmq_register_stores(registry: Any) -> None:
    registry.add(MemoryStore)

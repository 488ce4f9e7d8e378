"""A counted set of destinations, shared by routers whose index maps keys to destinations."""

from __future__ import annotations

from typing import Any


def add_target(index: dict[Any, dict[Any, int]], key: Any, target: Any) -> None:
    targets = index.setdefault(key, {})
    targets[target] = targets.get(target, 0) + 1


def remove_target(index: dict[Any, dict[Any, int]], key: Any, target: Any) -> None:
    targets = index.get(key)
    if targets is None or target not in targets:
        return
    if targets[target] > 1:
        targets[target] -= 1
        return
    del targets[target]
    if not targets:
        del index[key]

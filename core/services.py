"""Long-running plugin tasks (a bridge, an HTTP API): ``warrenmq_start_services`` gets a
``Services`` that starts them in the broker's task group, each guarded so that one that fails
is logged with its plugin's name and does not stop the broker."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from anyio.abc import TaskGroup

from .failures import log_failure

log = logging.getLogger("warrenmq.plugins")


class Services:
    """Starts one plugin's tasks; they are cancelled when the broker stops."""

    def __init__(self, group: TaskGroup, plugin_name: str) -> None:
        self._group = group
        self.plugin_name = plugin_name

    def start_soon(
        self, function: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        """Run ``await function(*args)`` as a task of the broker (``name`` for logs)."""
        label: str = name or str(getattr(function, "__qualname__", repr(function)))
        self._group.start_soon(self._guarded, function, args, label, name=label)

    async def _guarded(
        self, function: Callable[..., Awaitable[Any]], args: tuple[Any, ...], label: str
    ) -> None:
        try:
            await function(*args)
        except Exception as exc:  # cancellation is not an Exception: shutdown passes through
            log_failure(log, f"plugin {self.plugin_name!r}: service {label!r} failed", exc)

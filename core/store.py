"""The store interface: durable definitions and persistent messages.

The broker calls the store when durable things change; the store decides how to keep them.
The built-in ``memory`` store keeps nothing (a transient broker); an embedded disk store
and stores on replicated engines plug in here through ``warrenmq_register_stores``.
"""

from __future__ import annotations

from abc import ABC
from pathlib import Path
from typing import ClassVar

from .exchange import Binding, Exchange
from .message import Message
from .queue import Queue


class Store(ABC):
    """Keeps what must survive a restart. Every method has a do-nothing default."""

    name: ClassVar[str]

    def __init__(self, data_dir: Path | None) -> None:
        self.data_dir = data_dir

    async def open(self) -> None:
        """Open files/connections before the broker loads definitions."""

    async def close(self) -> None:
        """Flush and close at shutdown."""

    def save_exchange(self, exchange: Exchange) -> None: ...

    def delete_exchange(self, exchange: Exchange) -> None: ...

    def save_queue(self, queue: Queue) -> None: ...

    def delete_queue(self, queue: Queue) -> None: ...

    def save_binding(self, binding: Binding) -> None: ...

    def delete_binding(self, binding: Binding) -> None: ...

    def add_message(self, queue: Queue, message: Message) -> None:
        """A persistent message entered a durable queue."""

    def remove_message(self, queue: Queue, message: Message) -> None:
        """A persistent message left a durable queue (acked, dropped, expired)."""

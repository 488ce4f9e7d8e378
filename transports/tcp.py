"""The TCP transport: asyncio protocol objects feeding a sans-IO engine per connection, the
engine's bytes written as they are. Flushing, timers and back-pressure are the shared driver's
(``driver.py``), which the WebSocket transport uses too."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
from anyio.abc import TaskStatus

from warrenmq import Broker, ListenerSpec, Transport, hookimpl

from .driver import Link, Listener


class TCPLink(Link):
    """One TCP connection: the engine of the listener's protocol, from the first byte."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self._write = self.transport.write
        spec = self.listener.spec
        self.attach(spec.protocol, "tcp" if spec.tls is None else "tls")


class TCPTransport(Transport):
    name = "tcp"

    async def serve(
        self,
        broker: Broker,
        spec: ListenerSpec,
        *,
        task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        broker.protocol(spec.protocol)  # an unknown protocol fails before listening
        context = spec.tls.server_context() if spec.tls is not None else None
        listener = Listener(broker, spec, asyncio.get_running_loop())
        address = await listener.serve(lambda: TCPLink(listener), context)
        task_status.started(address)
        await listener.run()


@hookimpl
def warrenmq_register_transports(registry: Any) -> None:
    registry.add(TCPTransport)

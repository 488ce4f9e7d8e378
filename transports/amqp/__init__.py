"""AMQP 0-9-1 (RabbitMQ's dialect) as a protocol plugin: a sans-IO engine per connection."""

from __future__ import annotations

from typing import Any

from warrenmq import Broker, Protocol, ProtocolConnection, hookimpl

from .connection import AMQPConnection


class AMQPProtocol(Protocol):
    name = "amqp"
    default_port = 5672
    default_tls_port = 5671
    websocket_subprotocols = ("amqp",)

    def create_connection(
        self, broker: Broker, peer: tuple[str, int] | None, *, transport_name: str
    ) -> ProtocolConnection:
        return AMQPConnection(broker, peer, transport_name)


@hookimpl
def warrenmq_register_protocols(registry: Any) -> None:
    registry.add(AMQPProtocol)


__all__ = ["AMQPConnection", "AMQPProtocol"]

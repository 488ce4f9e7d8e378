"""MQTT 3.1.1 as a protocol plugin: a sans-IO engine per connection, served by any transport."""

from __future__ import annotations

from typing import Any

from warrenmq import Broker, Protocol, ProtocolConnection, hookimpl

from .connection import MQTTConnection


class MQTTProtocol(Protocol):
    name = "mqtt"
    default_port = 1883
    default_tls_port = 8883
    #: as RabbitMQ's Web-MQTT: MQTT 3.1.1 clients offer "mqtt", some older ones "mqttv3.1"
    websocket_subprotocols = ("mqtt", "mqttv3.1")

    def create_connection(
        self, broker: Broker, peer: tuple[str, int] | None, *, transport_name: str
    ) -> ProtocolConnection:
        return MQTTConnection(broker, peer, transport_name)


@hookimpl
def warrenmq_register_protocols(registry: Any) -> None:
    registry.add(MQTTProtocol)


__all__ = ["MQTTConnection", "MQTTProtocol"]

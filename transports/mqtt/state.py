"""What MQTT keeps per virtual host: live connections by client id, the sessions of clients
that asked for ``clean session = 0``, and retained messages (in memory for now)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from warrenmq import Message
from warrenmq.broker import MESSAGE_OVERHEAD
from warrenmq.vhost import VirtualHost

if TYPE_CHECKING:
    from .connection import MQTTConnection


@dataclass
class SessionState:
    """The packet-id state of one client's session that must outlive a connection."""

    #: inbound QoS 2 packet ids published and PUBREC'd, awaiting PUBREL (exactly once)
    awaiting_rel: set[int] = field(default_factory=set)
    #: outbound QoS 2 packet ids PUBREC'd by the client, awaiting PUBCOMP
    awaiting_comp: set[int] = field(default_factory=set)


@dataclass
class MQTTState:
    connections: dict[str, MQTTConnection] = field(default_factory=dict)
    sessions: dict[str, SessionState] = field(default_factory=dict)
    #: retained messages by MQTT topic (each already marked ``x-mqtt-retain``)
    retained: dict[str, Message] = field(default_factory=dict)

    def retained_bytes(self) -> int:
        return sum(len(message.body) + MESSAGE_OVERHEAD for message in self.retained.values())


def mqtt_state(vhost: VirtualHost) -> MQTTState:
    state = vhost.extensions.get("mqtt")
    if state is None:
        state = vhost.extensions["mqtt"] = MQTTState()
        # retained messages count towards the memory alarm
        vhost.broker.memory_sources.append(state.retained_bytes)
    return state  # type: ignore[no-any-return]


def subscription_queue_name(client_id: str, qos: int) -> str:
    """RabbitMQ's name for the queue that holds one client's subscriptions of one QoS."""
    return f"mqtt-subscription-{client_id}qos{qos}"

"""What MQTT keeps per virtual host: live connections by client id, the sessions of clients
that asked for ``clean session = 0``, and retained messages (in memory for now)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from warrenmq import Message
from warrenmq.broker import MESSAGE_OVERHEAD
from warrenmq.queue import READY, StoredEntry
from warrenmq.store import MessageLog
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


#: the store's log of a vhost's retained messages (``Store.extension_log``)
RETAINED_LOG = "mqtt/retained"
#: header of a retained message that keeps its MQTT topic (the routing key loses "." vs "/")
TOPIC_HEADER = "x-mqtt-topic"


@dataclass
class MQTTState:
    connections: dict[str, MQTTConnection] = field(default_factory=dict)
    sessions: dict[str, SessionState] = field(default_factory=dict)
    #: retained messages by MQTT topic (each already marked ``x-mqtt-retain``)
    retained: dict[str, Message] = field(default_factory=dict)
    #: the store keeps retained messages here (None: the store keeps nothing)
    log: MessageLog | None = None
    #: each retained message's entry in ``log``, by topic
    stored: dict[str, StoredEntry] = field(default_factory=dict)

    def retain(self, topic: str, message: Message) -> None:
        self.clear_retained(topic)
        self.retained[topic] = message
        if self.log is not None:
            entry = self.stored[topic] = StoredEntry(message, 0, 0.0, READY)
            self.log.append(entry)

    def clear_retained(self, topic: str) -> None:
        self.retained.pop(topic, None)
        entry = self.stored.pop(topic, None)
        if entry is not None and self.log is not None:
            self.log.remove(entry)

    def recover(self) -> None:
        """Retained messages the store kept from before a restart."""
        if self.log is None:
            return
        for entry in self.log.recovered():
            topic = entry.message.headers.get(TOPIC_HEADER)
            if isinstance(topic, str):
                self.retained[topic] = entry.message
                self.stored[topic] = entry

    def retained_bytes(self) -> int:
        return sum(len(message.body) + MESSAGE_OVERHEAD for message in self.retained.values())


def mqtt_state(vhost: VirtualHost) -> MQTTState:
    state = vhost.extensions.get("mqtt")
    if state is None:
        state = vhost.extensions["mqtt"] = MQTTState()
        state.log = vhost.broker.store.extension_log(vhost.name, RETAINED_LOG)
        state.recover()
        # retained messages count towards the memory alarm
        vhost.broker.memory_sources.append(state.retained_bytes)
    return state  # type: ignore[no-any-return]


def subscription_queue_name(client_id: str, qos: int) -> str:
    """RabbitMQ's name for the queue that holds one client's subscriptions of one QoS."""
    return f"mqtt-subscription-{client_id}qos{qos}"

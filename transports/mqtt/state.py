"""What MQTT keeps per virtual host: live connections by client id, the sessions of clients
that asked for ``clean session = 0``, and retained messages.

Everything that must outlive the broker is kept by the store, in two logs of the vhost
(``Store.extension_log``): ``mqtt/retained`` holds the retained messages, ``mqtt/sessions``
one record per persistent session and one per unfinished QoS 2 exchange of such a session
(MQTT 3.1.1 4.3.3, 4.4). Subscriptions are the bindings of durable queues and undelivered
QoS 1 and 2 messages are persistent messages in them, which the store keeps anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from warrenmq import Message
from warrenmq.broker import MESSAGE_OVERHEAD
from warrenmq.message import Properties
from warrenmq.queue import READY, StoredEntry
from warrenmq.store import MessageLog
from warrenmq.vhost import VirtualHost

if TYPE_CHECKING:
    from .connection import MQTTConnection

#: the store's log of a vhost's retained messages (``Store.extension_log``)
RETAINED_LOG = "mqtt/retained"
#: the store's log of a vhost's persistent sessions and their unfinished QoS 2 exchanges
SESSIONS_LOG = "mqtt/sessions"
#: header of a retained message that keeps its MQTT topic (the routing key loses "." vs "/")
TOPIC_HEADER = "x-mqtt-topic"
#: headers of a session record (its routing key is the client id)
RECORD_HEADER = "x-mqtt-record"
PACKET_ID_HEADER = "x-mqtt-packet-id"
QUEUE_HEADER = "x-mqtt-queue"
POSITION_HEADER = "x-mqtt-position"

#: kinds of session records: the session itself; an inbound QoS 2 packet id PUBREC'd and
#: awaiting PUBREL; an outbound QoS 2 PUBLISH awaiting PUBREC (its queue and log position,
#: so that it is sent again with the same packet id); an outbound one PUBREC'd, awaiting
#: PUBCOMP (PUBREL is sent again, not the message)
SESSION, REL, PUB, COMP = "session", "rel", "pub", "comp"


@dataclass
class SessionState:
    """The state of one client's session that must outlive a connection (and, when the store
    keeps it, the broker)."""

    client_id: str
    #: inbound QoS 2 packet ids published and PUBREC'd, awaiting PUBREL (exactly once)
    awaiting_rel: set[int] = field(default_factory=set)
    #: outbound QoS 2 packet ids PUBREC'd by the client, awaiting PUBCOMP
    awaiting_comp: set[int] = field(default_factory=set)
    #: outbound QoS 2 publishes not PUBREC'd yet, by message id: their packet ids, so that a
    #: redelivery after a reconnect keeps the id the client may have seen (4.4)
    sent: dict[int, int] = field(default_factory=dict)
    #: the same for messages read back after a restart, by (queue name, log position)
    sent_stored: dict[tuple[str, int], int] = field(default_factory=dict)
    #: the store's records of this session, by (kind, packet id); (SESSION, 0) for itself
    records: dict[tuple[str, int], StoredEntry] = field(default_factory=dict)

    def packet_id_taken(self, packet_id: int) -> bool:
        return (
            packet_id in self.awaiting_comp
            or packet_id in self.sent.values()
            or packet_id in self.sent_stored.values()
        )


def _record(
    client_id: str, kind: str, packet_id: int = 0, queue: str = "", position: int = 0
) -> Message:
    headers: dict[str, object] = {RECORD_HEADER: kind, PACKET_ID_HEADER: packet_id}
    if queue:
        headers[QUEUE_HEADER] = queue
        headers[POSITION_HEADER] = position
    return Message("", client_id, b"", Properties(headers=headers, delivery_mode=2))


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
    #: the store keeps sessions here (None: the store keeps nothing)
    sessions_log: MessageLog | None = None

    # -- retained messages ---------------------------------------------------------------

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

    def retained_bytes(self) -> int:
        return sum(len(message.body) + MESSAGE_OVERHEAD for message in self.retained.values())

    # -- sessions ------------------------------------------------------------------------

    def keep_session(self, client_id: str) -> SessionState:
        """The persistent session of ``client_id``, made (and stored) if it has none."""
        state = self.sessions.get(client_id)
        if state is None:
            state = self.sessions[client_id] = SessionState(client_id)
            self.add_record(state, SESSION, 0)
        return state

    def discard_session(self, client_id: str) -> None:
        """A clean session: the persistent one (if any) goes, with its records."""
        state = self.sessions.pop(client_id, None)
        if state is not None and self.sessions_log is not None:
            for entry in state.records.values():
                self.sessions_log.remove(entry)
            state.records.clear()

    def add_record(
        self, state: SessionState, kind: str, packet_id: int, queue: str = "", position: int = 0
    ) -> None:
        if self.sessions_log is None:
            return
        previous = state.records.pop((kind, packet_id), None)
        if previous is not None:
            self.sessions_log.remove(previous)
        message = _record(state.client_id, kind, packet_id, queue, position)
        entry = state.records[kind, packet_id] = StoredEntry(message, 0, 0.0, READY)
        self.sessions_log.append(entry)

    def remove_record(self, state: SessionState, kind: str, packet_id: int) -> None:
        entry = state.records.pop((kind, packet_id), None)
        if entry is not None and self.sessions_log is not None:
            self.sessions_log.remove(entry)

    # -- recovery ------------------------------------------------------------------------

    def recover(self) -> None:
        """Retained messages and sessions the store kept from before a restart."""
        if self.log is not None:
            for entry in self.log.recovered():
                topic = entry.message.headers.get(TOPIC_HEADER)
                if isinstance(topic, str):
                    self.retained[topic] = entry.message
                    self.stored[topic] = entry
        if self.sessions_log is None:
            return
        records = self.sessions_log.recovered()
        sessions = {
            e.message.routing_key
            for e in records
            if e.message.headers.get(RECORD_HEADER) == SESSION
        }
        for entry in records:
            headers = entry.message.headers
            client_id, kind = entry.message.routing_key, headers.get(RECORD_HEADER)
            packet_id = headers.get(PACKET_ID_HEADER)
            if client_id not in sessions or not isinstance(packet_id, int):
                self.sessions_log.remove(entry)  # left over from a discarded session
                continue
            state = self.sessions.get(client_id)
            if state is None:
                state = self.sessions[client_id] = SessionState(client_id)
            state.records[kind, packet_id] = entry  # type: ignore[index]
            if kind == REL:
                state.awaiting_rel.add(packet_id)
            elif kind == COMP:
                state.awaiting_comp.add(packet_id)
            elif kind == PUB:
                queue, position = headers.get(QUEUE_HEADER), headers.get(POSITION_HEADER)
                if isinstance(queue, str) and isinstance(position, int):
                    state.sent_stored[queue, position] = packet_id


def mqtt_state(vhost: VirtualHost) -> MQTTState:
    state = vhost.extensions.get("mqtt")
    if state is None:
        state = vhost.extensions["mqtt"] = MQTTState()
        store = vhost.broker.store
        state.log = store.extension_log(vhost.name, RETAINED_LOG)
        state.sessions_log = store.extension_log(vhost.name, SESSIONS_LOG)
        state.recover()
        # retained messages count towards the memory alarm
        vhost.broker.memory_sources.append(state.retained_bytes)
    return state  # type: ignore[no-any-return]


def subscription_queue_name(client_id: str, qos: int) -> str:
    """RabbitMQ's name for the queue that holds one client's subscriptions of one QoS."""
    return f"mqtt-subscription-{client_id}qos{qos}"

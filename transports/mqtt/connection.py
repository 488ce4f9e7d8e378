"""The sans-IO MQTT 3.1.1 server connection: bytes in, broker calls, bytes out.

Publishes go to ``amq.topic`` (topics mapped as RabbitMQ's MQTT plugin maps them). Each
client's subscriptions of one QoS are the bindings of one ordinary queue,
``mqtt-subscription-<client id>qos<N>``, consumed through the core's ``Session``: QoS 1 and 2
deliveries are tracked there and settled by PUBACK (QoS 1) or PUBREC (QoS 2).

A client that sets the high bit of the protocol level (``0x84``, ``0x83``: mosquitto's
``try_private``) is a bridge, treated as mosquitto treats one: it is not sent back what it
published (no-local), and messages published retained reach it with the retain flag.
"""

from __future__ import annotations

import logging
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from warrenmq import Broker, Message, ProtocolConnection, Queue
from warrenmq.auth import LoginRefused, User
from warrenmq.errors import BrokerError
from warrenmq.failures import log_failure
from warrenmq.message import Properties
from warrenmq.queue import ACK, Entry, StoredEntry
from warrenmq.session import Delivery, Session, SessionConsumer
from warrenmq.tls import TLSPeer
from warrenmq.vhost import VirtualHost
from warrenmq.views import ConnectionView

from . import packets as p
from .state import (
    COMP,
    PUB,
    REL,
    TOPIC_HEADER,
    MQTTState,
    SessionState,
    mqtt_state,
    subscription_queue_name,
)
from .topics import BadTopic, check_filter, check_topic, matches, to_amqp, to_mqtt

log = logging.getLogger("warrenmq.mqtt")

EXCHANGE = "amq.topic"
#: the largest packet a client that has not logged in may send (RabbitMQ's
#: mqtt.max_packet_size_unauthenticated)
MAX_PACKET_UNAUTHENTICATED = 65536
#: unacknowledged QoS 1/2 deliveries per subscription queue (packet ids in flight)
PREFETCH = 100
#: output buffered in the engine beyond which deliveries wait for the transport to take it
OUT_LIMIT = 1024 * 1024
#: input between two memory-alarm checks made by the connection itself
MEMORY_CHECK_BYTES = 4 * 1024 * 1024
#: header that carries the QoS a message was published with (as RabbitMQ's MQTT plugin)
QOS_HEADER = "x-mqtt-publish-qos"
#: header of the copies of retained messages given to new subscriptions
RETAIN_HEADER = "x-mqtt-retain"
#: header of a message published with the retain flag: bridges get it with the flag
PUBLISHED_RETAINED_HEADER = "x-mqtt-published-retained"
#: header naming the client id of the bridge that published a message: not sent back to it
FROM_BRIDGE_HEADER = "x-mqtt-from-bridge"
#: the bit of the CONNECT protocol level that says "I am a bridge" (mosquitto's try_private)
BRIDGE_BIT = 0x80

AWAIT_CONNECT, LOGGING_IN, CONNECTED = range(3)
#: topics remembered per connection (checked and mapped once) before the cache starts over
TOPIC_CACHE_SIZE = 1024

#: the properties of an MQTT publish of each QoS, shared by every such message (a message's
#: properties are never changed once it is made: whoever needs others makes a copy)
_PROPERTIES = tuple(
    Properties(headers={QOS_HEADER: qos}, delivery_mode=2 if qos else 1) for qos in range(3)
)
#: those of a publish with the retain flag (sent on without it, but to bridges)
_RETAINED_PROPERTIES = tuple(
    Properties(
        headers={QOS_HEADER: qos, PUBLISHED_RETAINED_HEADER: True}, delivery_mode=2 if qos else 1
    )
    for qos in range(3)
)
#: (QoS, retain) of a message with one of those shared properties, by their id
_SHARED = {
    id(properties): (qos, False)
    for shared in (_PROPERTIES, _RETAINED_PROPERTIES)
    for qos, properties in enumerate(shared)
}
_U16 = struct.Struct(">H")
#: a PUBACK: first byte and remaining length (0x4002), packet id
_PUBACK = struct.Struct(">HH")


class MQTTConsumer(SessionConsumer):
    """One subscription queue of a client, delivered at up to ``qos``."""

    __slots__ = ("connection", "qos")

    def __init__(self, connection: MQTTConnection, queue: Queue, qos: int) -> None:
        super().__init__(
            connection.session, queue, f"mqtt-qos{qos}", acks=qos > 0, prefetch=PREFETCH
        )
        self.connection = connection
        self.qos = qos

    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        """Write a PUBLISH for ``message`` into the connection's output (here rather than in
        the connection: one call less per delivery)."""
        c = self.connection
        known = _SHARED.get(id(message.properties))
        if known is None or c.bridge:
            known = _message_qos(message.properties, c.client_id if c.bridge else None)
            if known is None:  # what this bridge published: not sent back (no-local)
                if entry is not None and self.acks:
                    queue.ack(entry)
                return
        published_qos, retain = known
        qos = self.qos if self.qos < published_qos else published_qos
        key = message.routing_key
        topic = c._topics_out.get(key)
        if topic is None:
            topic = c._topic_out(key)
        body = message.body
        out = c._out
        if not out and not c._receiving:
            c._wake()
        if qos == 0:
            if entry is not None and self.acks:
                queue.ack(entry)  # a QoS 0 message on a QoS 1 subscription: settled at once
            size = len(topic) + len(body)
            first = 0x31 if retain else 0x30
        else:
            assert entry is not None
            inflight = c.inflight
            state = c.state
            if qos == 2 and not c.clean:
                packet_id = c._persistent_packet_id(queue, message, entry)
            else:
                packet_id = c._next_packet_id = c._next_packet_id % 65535 + 1
                if packet_id in inflight or state.awaiting_comp or state.sent or state.sent_stored:
                    packet_id = c._packet_id()  # the thorough search
            tag = c.session.track(queue, entry, self)
            inflight[packet_id] = (tag, qos, message.id if qos == 2 else 0)
            size = len(topic) + 2 + len(body)
            first = 0x30 | qos << 1 | (8 if entry.deliveries > 1 else 0) | (1 if retain else 0)
        out.append(first)
        if size < 0x80:
            out.append(size)
        else:
            out += p.remaining_length(size)
        out += topic
        if qos:
            out += _U16.pack(packet_id)
        out += body
        c.messages_out += 1
        if len(out) > OUT_LIMIT and not c._out_full:
            c._out_full = True
            c.session.pause()

    def cancelled_by_broker(self, queue: Queue) -> None:
        """The queue was deleted (by an AMQP client, say): a later SUBSCRIBE makes a new one.
        MQTT cannot tell the client; its subscriptions of this QoS are gone."""
        self.connection.forget_consumer(self)


class MQTTSession(Session):
    def __init__(self, connection: MQTTConnection) -> None:
        super().__init__()
        self.connection = connection

    def consumer_failed(self, consumer: SessionConsumer, error: BaseException) -> None:
        super().consumer_failed(consumer, error)
        self.connection.drop("a delivery failed")


def _message_qos(properties: Properties, bridge: str | None = None) -> tuple[int, bool] | None:
    """The QoS a message was published with (an AMQP publish does not cap it: 2), and
    whether it goes with the retain flag: the copy of a retained message does, and to a
    bridge (client id ``bridge``) one published retained too, as mosquitto sends it
    (retain-as-published). None for a message that bridge published itself."""
    headers = properties.headers
    if bridge is None:
        known = _SHARED.get(id(properties))
        if known is not None:
            return known
    if not headers:
        return 2, False
    if bridge is not None and headers.get(FROM_BRIDGE_HEADER) == bridge:
        return None
    qos = headers.get(QOS_HEADER)
    retain = bool(headers.get(RETAIN_HEADER)) or (
        bridge is not None and bool(headers.get(PUBLISHED_RETAINED_HEADER))
    )
    if isinstance(qos, int) and 0 <= qos <= 2:
        return qos, retain
    return 2, retain


class MQTTConnection(ProtocolConnection):
    """One MQTT client connection, from CONNECT to DISCONNECT (or a drop)."""

    def __init__(
        self, broker: Broker, peer: tuple[str, int] | None = None, transport_name: str = "tcp"
    ) -> None:
        self.broker = broker
        self.peer = peer
        self.name = f"{peer[0]}:{peer[1]}" if peer else "local"
        self.transport_name = transport_name
        self._out = bytearray()
        #: input not parsed yet (a packet still arriving); a bytearray, so that a large
        #: packet read in many pieces is appended to, not copied again with every piece
        self._buf = bytearray()
        self._receiving = False
        self._parsing = False
        self._state = AWAIT_CONNECT
        self._closed = False
        self._released = False
        self._out_full = False
        self.write_paused = False
        self._blocked = broker.memory_alarm
        self.has_published = False
        self.timers_changed = False
        self._started = self._last_recv = time.monotonic()
        self.connected_at = time.time()
        self.keepalive = 0
        self.client_id = ""
        self.clean = True
        #: the client connected as a bridge (protocol level with BRIDGE_BIT)
        self.bridge = False
        #: the properties of its publishes, by QoS (a bridge's name it)
        self._properties = _PROPERTIES
        self.user: User | None = None
        self.vhost: VirtualHost | None = None
        self.mqtt: MQTTState | None = None
        self.state = SessionState("")
        self.session = MQTTSession(self)
        #: subscription queue consumers by QoS
        self.consumers: dict[int, MQTTConsumer] = {}
        #: outbound packet id -> (delivery tag, QoS, message id) of deliveries awaiting
        #: PUBACK/PUBREC
        self.inflight: dict[int, tuple[int, int, int]] = {}
        #: acknowledgements waiting for the store's fsync: (store's ``written`` mark, packet)
        self._unsynced: deque[tuple[int, bytes]] = deque()
        self._sync_waiting = False
        #: deliveries PUBACKed in the input being parsed, settled together at its end
        self._acked: list[tuple[int, Delivery]] = []
        #: PUBLISH topics seen: raw bytes -> (topic, routing key), checked once
        self._topics: dict[bytes, tuple[str, str]] = {}
        #: the topic of the last PUBLISH (raw), its size (-1: none yet) and what it maps to
        self._last_topic = b""
        self._last_size = -1
        self._last_known = ("", "")
        #: routing keys delivered: -> the MQTT topic, UTF-8 with its length in front
        self._topics_out: dict[str, bytes] = {}
        #: the user may publish (checked at the first publish, as AMQP channels do)
        self._may_publish = False
        self._limit = MAX_PACKET_UNAUTHENTICATED
        self._max_payload = broker.settings.max_message_size
        self._store = broker.store
        self._next_packet_id = 0
        #: (topic, payload, qos, retain) published if the connection drops
        self.will: tuple[str, bytes, int, bool] | None = None
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0
        self._next_memory_check = MEMORY_CHECK_BYTES
        self.wakeup: Callable[[], None] | None = None
        self.transport_buffer: Callable[[], int] | None = None
        self.tls: TLSPeer | None = None
        broker.connections.add(self)

    # -- transport-facing API -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def data_to_send(self) -> bytearray:
        out = self._out
        if out:
            self._out = bytearray()
            self.bytes_out += len(out)
        if self._out_full:
            self._out_full = False
            self._update_paused()
        return out

    @property
    def reading_paused(self) -> bool:  # type: ignore[override]
        return (self._blocked and self.has_published) or self.write_paused

    def memory_alarm(self, active: bool) -> None:
        self._blocked = active
        self._last_recv = time.monotonic()
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.session.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._out_full = False
        self._update_paused()

    def _update_paused(self) -> None:
        if self.write_paused or self._out_full or self._closed:
            return
        if self.session.paused:
            self.session.paused = False
            self.session.credit_changed()

    def session_count(self) -> int:
        return 1 if self._state == CONNECTED else 0

    def buffered_bytes(self) -> int:
        held = len(self._out) + len(self._buf)
        if self.transport_buffer is not None:
            held += self.transport_buffer()
        return held

    def view(self) -> ConnectionView:
        peer = self.peer
        return ConnectionView(
            name=self.name,
            protocol="mqtt",
            transport=self.transport_name,
            peer_host=peer[0] if peer else None,
            peer_port=peer[1] if peer else None,
            user=self.user.name if self.user else None,
            vhost=self.vhost.name if self.vhost and self._state == CONNECTED else None,
            connected_at=self.connected_at,
            client={"client_id": self.client_id},
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            blocked=self.reading_paused,
            sessions=[],
        )

    def receive_data(self, data: bytes) -> None:
        if self._closed:
            return
        if not data:
            self.drop("the client closed the connection without DISCONNECT", quiet=True)
            return
        self._last_recv = time.monotonic()
        received = self.bytes_in = self.bytes_in + len(data)
        if received >= self._next_memory_check:
            # between the broker's periodic checks a fast publisher could overshoot the
            # memory limit by a lot: check every few MiB of input too (as the AMQP engine)
            self._next_memory_check = received + MEMORY_CHECK_BYTES
            self.broker.check_memory()
        self._buf += data
        if self._state != CONNECTED and len(self._buf) > 2 * MAX_PACKET_UNAUTHENTICATED:
            self.drop("too much input before the login was accepted")
            return
        self._receiving = True
        try:
            self._parse()
        except p.MalformedPacket as exc:
            self.drop(f"malformed packet: {exc}")
        except Exception as exc:  # a bug must cost this connection only
            log_failure(log, f"internal error on MQTT connection {self.name}", exc)
            self.drop("internal error")
        finally:
            self._receiving = False

    def connection_lost(self) -> None:
        self.drop("connection lost", quiet=True)

    def tick(self, now: float) -> float | None:
        if self._closed:
            return None
        if self._state != CONNECTED:
            deadline = self._started + self.broker.settings.handshake_timeout
            if now >= deadline:
                log.warning("closing MQTT connection %s: handshake timeout", self.name)
                self.drop("handshake timeout", quiet=True)
                return None
            return deadline
        if not self.keepalive:
            return None
        if self.reading_paused:
            self._last_recv = now  # not reading a blocked publisher: its silence is ours
        deadline = self._last_recv + 1.5 * self.keepalive
        if now >= deadline:
            self.drop(f"no packet within 1.5 times the keepalive of {self.keepalive} s")
            return None
        return deadline

    def shutdown(self, reason: str) -> None:
        """MQTT 3.1.1 has no server-side DISCONNECT: close the socket, keep the will back."""
        if self._closed:
            return
        self.will = None
        self.drop(reason, quiet=True)

    # -- output ---------------------------------------------------------------------------

    def _wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup()

    def write(self, data: bytes) -> None:
        if not self._out and not self._receiving:
            self._wake()
        self._out += data

    # -- input ----------------------------------------------------------------------------

    def _parse(self) -> None:
        self._parsing = True
        try:
            self._parse_packets()
        finally:
            self._parsing = False

    def _parse_packets(self) -> None:
        data = self._buf
        start = 0
        end = len(data)
        try:
            while end - start >= 2 and not self._closed and self._state != LOGGING_IN:
                first = data[start]
                length = data[start + 1]
                if length < 0x80:  # the usual one-byte remaining length, read inline
                    body_start = start + 2
                else:
                    header = p.parse_fixed_header(data, start)
                    if header is None:
                        break
                    first, length, body_start = header
                if body_start - start + length > self._limit:
                    raise p.MalformedPacket(
                        f"packet of {length} bytes exceeds the limit of {self._limit}"
                    )
                body_end = body_start + length
                if body_end > end:
                    break
                start = body_end
                if first >> 4 == p.PUBLISH and self._state == CONNECTED:
                    self._publish(first, data, body_start, body_end)
                elif first == 0x40 and length == 2 and self._state == CONNECTED:  # PUBACK
                    packet_id = data[body_start] << 8 | data[body_start + 1]
                    found = self.inflight.get(packet_id)
                    if found is not None and found[1] == 1:  # else unknown, or not QoS 1
                        del self.inflight[packet_id]
                        delivery = self.session.unacked.pop(found[0], None)
                        if delivery is not None:  # settled with the rest of this input
                            self._acked.append((found[0], delivery))
                else:
                    self._packet(first, p.Reader(data, body_start, body_end))
        finally:
            if self._acked:  # even if a bad packet follows: these go back or away, not lost
                acked, self._acked = self._acked, []
                self.session.apply(acked, ACK)
        if start:
            del data[:start]

    def _packet(self, first: int, reader: p.Reader) -> None:
        kind, flags = first >> 4, first & 0x0F
        if self._state == AWAIT_CONNECT:
            if kind != p.CONNECT or flags:
                raise p.MalformedPacket("the first packet is not CONNECT")
            self._connect(reader)
            return
        if kind == p.PUBACK and not flags:
            self._puback(reader.u16())
        elif kind == p.PUBREC and not flags:
            self._pubrec(reader.u16())
        elif kind == p.PUBREL and flags == 2:
            packet_id = reader.u16()
            state = self.state
            if packet_id in state.awaiting_rel:
                state.awaiting_rel.discard(packet_id)
                if not self.clean and self.mqtt is not None:
                    self.mqtt.remove_record(state, REL, packet_id)
            self.write(p.ack(p.PUBCOMP, packet_id))
        elif kind == p.PUBCOMP and not flags:
            packet_id = reader.u16()
            state = self.state
            if packet_id in state.awaiting_comp:
                state.awaiting_comp.discard(packet_id)
                if not self.clean and self.mqtt is not None:
                    self.mqtt.remove_record(state, COMP, packet_id)
        elif kind == p.SUBSCRIBE and flags == 2:
            self._subscribe(reader)
        elif kind == p.UNSUBSCRIBE and flags == 2:
            self._unsubscribe(reader)
        elif kind == p.PINGREQ and not flags:
            self.write(p.PINGRESP_PACKET)
        elif kind == p.DISCONNECT and not flags:
            log.info("MQTT client '%s' disconnected (%s)", self.client_id, self.name)
            self.will = None  # a clean disconnect discards the will
            self._closed = True
            self._release()
        else:
            raise p.MalformedPacket(f"unexpected packet type {kind} with flags {flags:#x}")

    # -- CONNECT --------------------------------------------------------------------------

    def _connect(self, reader: p.Reader) -> None:
        name = reader.text()
        level = reader.byte()
        bridge = bool(level & BRIDGE_BIT)  # 0x84 and 0x83: a bridge (mosquitto's try_private)
        level &= ~BRIDGE_BIT
        if (name, level) not in (("MQTT", 4), ("MQIsdp", 3)):
            if name not in ("MQTT", "MQIsdp"):
                raise p.MalformedPacket(f"unknown protocol name '{name}'")
            self._refuse(p.UNACCEPTABLE_PROTOCOL_VERSION, f"unsupported protocol level {level}")
            return
        flags = reader.byte()
        if flags & 1:
            raise p.MalformedPacket("reserved CONNECT flag set")
        self.clean = bool(flags & 2)
        will_qos = (flags >> 3) & 3
        if flags & 4:
            if will_qos == 3:
                raise p.MalformedPacket("will QoS 3")
        elif will_qos or flags & 0x20:
            raise p.MalformedPacket("will QoS or retain without a will")
        if flags & 0x40 and not flags & 0x80:
            raise p.MalformedPacket("password without a user name")
        self.keepalive = reader.u16()
        client_id = reader.text()
        if flags & 4:
            topic = reader.text()
            try:
                check_topic(topic)
            except BadTopic as exc:
                raise p.MalformedPacket(f"will topic: {exc}") from None
            self.will = (topic, reader.binary(), will_qos, bool(flags & 0x20))
        username = reader.text() if flags & 0x80 else None
        password = reader.binary().decode(errors="replace") if flags & 0x40 else ""
        if reader.remaining():
            raise p.MalformedPacket("bytes after the CONNECT payload")
        if not client_id:
            if not self.clean:
                self._refuse(p.IDENTIFIER_REJECTED, "empty client id without clean session")
                return
            client_id = f"warrenmq-{uuid.uuid4().hex}"
        self.client_id = client_id
        if bridge:
            self.bridge = True
            self._properties = tuple(
                Properties(
                    headers={QOS_HEADER: qos, FROM_BRIDGE_HEADER: client_id},
                    delivery_mode=2 if qos else 1,
                )
                for qos in range(3)
            )
        settings = self.broker.settings
        vhost_name = settings.mqtt_vhost
        certified = (
            self.tls.login_name(settings.ssl_cert_login_from)
            if self.tls is not None and settings.mqtt_ssl_cert_login
            else None
        )
        login_password: str | None = password
        if username is None and certified is not None:  # RabbitMQ's mqtt.ssl_cert_login
            username, login_password = certified, None
        elif username is None:
            if not settings.mqtt_allow_anonymous:  # 4, as RabbitMQ's "no credentials provided"
                self._refuse(p.BAD_USERNAME_OR_PASSWORD, "no credentials provided")
                return
            username = settings.mqtt_default_user
            login_password = settings.mqtt_default_password
        elif ":" in username:  # RabbitMQ's "vhost:user"
            vhost_name, username = username.split(":", 1)
        self._state = LOGGING_IN
        self.timers_changed = True
        host = self.peer[0] if self.peer else None
        self.broker.login(
            username, login_password, host, lambda result: self._login_done(result, vhost_name)
        )

    def _login_done(self, result: User | LoginRefused, vhost_name: str) -> None:
        if self._closed or self._state != LOGGING_IN:
            return
        if isinstance(result, LoginRefused):
            # as RabbitMQ's MQTT plugin: 5 for a user who may not come from this address
            code = p.BAD_USERNAME_OR_PASSWORD if result.bad_credentials else p.NOT_AUTHORIZED
            self._refuse(code, result.reason)
        else:
            self.user = result
            self._open(vhost_name)
        if not self._closed and self._buf and not self._parsing:
            # packets that came while the login was checked (a login answered at once is
            # still inside ``_parse``, which goes on by itself)
            self._receiving = True
            try:
                self._parse()
            except p.MalformedPacket as exc:
                self.drop(f"malformed packet: {exc}")
            finally:
                self._receiving = False
        self._wake()

    def _open(self, vhost_name: str) -> None:
        assert self.user is not None
        broker = self.broker
        vhost = broker.vhosts.get(vhost_name)
        if vhost is None:  # RabbitMQ's MQTT plugin answers 4 here too
            self._refuse(p.BAD_USERNAME_OR_PASSWORD, f"vhost '{vhost_name}' does not exist")
            return
        try:
            broker.access.check_vhost(self.user.name, vhost.name)
        except BrokerError:  # logged in the words of the AMQP engine's log
            reason = f"user '{self.user.name}' has no access to vhost '{vhost.name}'"
            self._refuse(p.NOT_AUTHORIZED, reason)
            return
        try:
            broker.limits.open_connection(self, self.user.name, vhost.name)
        except BrokerError as exc:
            self._refuse(p.SERVER_UNAVAILABLE, exc.reply_text)
            return
        self.vhost = vhost
        mqtt = self.mqtt = mqtt_state(vhost)
        previous = mqtt.connections.get(self.client_id)
        if previous is not None:
            previous.drop(f"client id '{self.client_id}' connected again ({self.name})")
        mqtt.connections[self.client_id] = self
        names = [subscription_queue_name(self.client_id, qos) for qos in range(3)]
        if self.clean:
            mqtt.discard_session(self.client_id)
            for name in names:
                queue = vhost.queues.get(name)
                if queue is not None:
                    vhost.remove_queue(queue)
            present = False
        else:
            present = self.client_id in mqtt.sessions or any(n in vhost.queues for n in names)
            self.state = mqtt.keep_session(self.client_id)
        self._state = CONNECTED
        self._limit = broker.settings.mqtt_max_packet_size
        self.timers_changed = True
        self.write(p.connack(present, p.ACCEPTED))
        log.info(
            "accepted MQTT %s %s (client '%s', user '%s', vhost '%s', clean %s)",
            "bridge" if self.bridge else "connection", self.name, self.client_id,
            self.user.name, vhost.name, self.clean,
        )  # fmt: skip
        for packet_id in sorted(self.state.awaiting_comp):
            self.write(p.ack(p.PUBREL, packet_id))
        for qos, name in enumerate(names):
            queue = vhost.queues.get(name)
            if queue is not None:
                self._consume(qos, queue)

    def _refuse(self, code: int, reason: str) -> None:
        log.warning(
            "MQTT login refused (return code %d): %s (connection %s)", code, reason, self.name
        )
        self.write(p.connack(False, code))
        self.will = None
        self._closed = True
        self._release()

    # -- publishing -----------------------------------------------------------------------

    def _publish(self, first: int, data: bytearray, start: int, end: int) -> None:
        """A PUBLISH packet, parsed in place (the hot path: no ``Reader``, topics checked
        and mapped once per connection)."""
        qos = (first >> 1) & 3
        if qos == 3:
            raise p.MalformedPacket("PUBLISH with QoS 3")
        if end - start < 2:
            raise p.MalformedPacket("packet too short")
        pos = start + 2 + (data[start] << 8 | data[start + 1])
        if pos > end:
            raise p.MalformedPacket("string longer than the packet")
        # most publishers send to one topic after another: compare in place, copy nothing
        if pos - start - 2 == self._last_size and data.startswith(self._last_topic, start + 2):
            known = self._last_known
        else:
            raw = bytes(data[start + 2 : pos])
            found = self._topics.get(raw)
            known = found if found is not None else self._learn_topic(raw)
            self._last_topic, self._last_size, self._last_known = raw, len(raw), known
        packet_id = 0
        if qos:
            if pos + 2 > end:
                raise p.MalformedPacket("packet too short")
            packet_id = data[pos] << 8 | data[pos + 1]
            if not packet_id:
                raise p.MalformedPacket("PUBLISH with packet id 0")
            pos += 2
        if end - pos > self._max_payload:
            raise p.MalformedPacket(f"payload of {end - pos} bytes is too large")
        # a small slice is copied faster directly, a large one once through a memoryview
        payload = bytes(data[pos:end]) if end - pos < 4096 else bytes(memoryview(data)[pos:end])
        self.messages_in += 1
        self.has_published = True
        store = self._store
        written = store.written
        if qos == 2 and packet_id in self.state.awaiting_rel:
            # a resend: published once already
            self._reply(p.ack(p.PUBREC, packet_id), written)
            return
        if not self._may_publish:
            user = self.user.name if self.user else ""
            assert self.vhost is not None
            access = self.broker.access
            try:
                access.check(user, self.vhost.name, "write", "exchange", EXCHANGE)
                if access.topic_permissions:  # on the topic in its AMQP form, as RabbitMQ
                    variables = {"client_id": self.client_id}
                    access.check_topic(
                        user, self.vhost.name, "write", EXCHANGE, known[1], variables
                    )
            except BrokerError as exc:
                self.drop(exc.reply_text)
                return
            # with topic permissions every publish is checked; without, the first one only
            self._may_publish = not access.topic_permissions
        if first & 1:
            self.publish(known[0], payload, qos, True)
        else:
            assert self.vhost is not None
            message = Message(EXCHANGE, known[1], payload, self._properties[qos])
            self.vhost.publish(EXCHANGE, message)
        if qos == 1:
            if store.written == written and not self._unsynced:
                out = self._out
                if not out and not self._receiving:
                    self._wake()
                out += _PUBACK.pack(0x4002, packet_id)
            else:
                self._reply(p.ack(p.PUBACK, packet_id), written)
        elif qos == 2:
            self.state.awaiting_rel.add(packet_id)
            if not self.clean and self.mqtt is not None:
                self.mqtt.add_record(self.state, REL, packet_id)
            self._reply(p.ack(p.PUBREC, packet_id), written)

    def _learn_topic(self, raw: bytes) -> tuple[str, str]:
        """Check a PUBLISH topic name seen for the first time; remember it and its key."""
        try:
            topic = raw.decode()
        except UnicodeDecodeError:
            raise p.MalformedPacket("string is not valid UTF-8") from None
        if "\x00" in topic:
            raise p.MalformedPacket("string contains U+0000")
        try:
            check_topic(topic)
        except BadTopic as exc:
            raise p.MalformedPacket(str(exc)) from None
        if len(self._topics) >= TOPIC_CACHE_SIZE:
            self._topics.clear()
        known = self._topics[raw] = (topic, to_amqp(topic))
        return known

    def _reply(self, packet: bytes, written: int) -> None:
        """Send the acknowledgement of a publish once the store's fsync covers what the
        publish wrote (``written``: the store's count before it), as publisher confirms wait;
        acknowledgements keep their order (MQTT 3.1.1 4.6)."""
        store = self.broker.store
        if store.written == written and not self._unsynced:
            self.write(packet)
            return
        self._unsynced.append((store.written, packet))
        if not self._sync_waiting:
            self._sync_waiting = True
            store.when_synced(self._store_synced)

    def _store_synced(self) -> None:
        self._sync_waiting = False
        waits = self._unsynced
        if self._closed:
            waits.clear()
            return
        store = self.broker.store
        synced = store.synced
        while waits and waits[0][0] <= synced:
            self.write(waits.popleft()[1])
        if waits:
            self._sync_waiting = True
            store.when_synced(self._store_synced)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        assert self.vhost is not None and self.mqtt is not None
        properties = self._properties[qos]
        if retain:
            properties = _RETAINED_PROPERTIES[qos]
            if self.bridge:
                headers: dict[str, Any] = {QOS_HEADER: qos, PUBLISHED_RETAINED_HEADER: True}
                headers[FROM_BRIDGE_HEADER] = self.client_id
                properties = Properties(headers=headers, delivery_mode=properties.delivery_mode)
        message = Message(EXCHANGE, to_amqp(topic), payload, properties)
        if retain:
            if payload:
                kept = Properties(
                    headers={QOS_HEADER: qos, RETAIN_HEADER: True, TOPIC_HEADER: topic},
                    delivery_mode=2,
                )
                self.mqtt.retain(topic, Message(EXCHANGE, message.routing_key, payload, kept))
            else:
                self.mqtt.clear_retained(topic)
        self.vhost.publish(EXCHANGE, message)

    # -- subscriptions --------------------------------------------------------------------

    def _subscribe(self, reader: p.Reader) -> None:
        assert self.vhost is not None and self.mqtt is not None
        packet_id = reader.u16()
        wanted: list[tuple[str, int]] = []
        while reader.remaining():
            topic_filter = reader.text()
            qos = reader.byte()
            if qos > 2:
                raise p.MalformedPacket(f"SUBSCRIBE with QoS {qos}")
            wanted.append((topic_filter, qos))
        if not wanted:
            raise p.MalformedPacket("SUBSCRIBE without a topic filter")
        codes: list[int] = []
        granted: list[tuple[str, Queue]] = []
        for topic_filter, qos in wanted:
            try:
                check_filter(topic_filter)
                queue = self._bind(topic_filter, qos)
            except (BadTopic, BrokerError) as exc:
                log.warning("MQTT client '%s': subscription refused: %s", self.client_id, exc)
                codes.append(p.SUBACK_FAILURE)
                continue
            codes.append(qos)
            granted.append((topic_filter, queue))
        self.write(p.suback(packet_id, codes))
        retained = self.mqtt.retained
        for topic_filter, queue in granted:
            for topic, message in list(retained.items()):
                if matches(topic_filter, topic):
                    queue.publish(message)

    def _bind(self, topic_filter: str, qos: int) -> Queue:
        vhost = self.vhost
        assert vhost is not None and self.user is not None
        key = to_amqp(topic_filter)
        name = subscription_queue_name(self.client_id, qos)
        access = self.broker.access
        access.check(self.user.name, vhost.name, "read", "exchange", EXCHANGE)
        variables = {"client_id": self.client_id}
        access.check_topic(self.user.name, vhost.name, "read", EXCHANGE, key, variables)
        access.check(self.user.name, vhost.name, "write", "queue", name)
        queue = vhost.queues.get(name)
        if queue is None or qos not in self.consumers:  # RabbitMQ declares the queue then
            access.check(self.user.name, vhost.name, "configure", "queue", name)
        if queue is None:
            queue = vhost.declare_queue(name, durable=not self.clean)
        # a filter lives in one queue only: a new QoS moves it
        for other in range(3):
            if other != qos:
                vhost.unbind_queue(subscription_queue_name(self.client_id, other), EXCHANGE, key)
        vhost.bind(queue, EXCHANGE, key)
        if qos not in self.consumers:
            self._consume(qos, queue)
        return queue

    def _consume(self, qos: int, queue: Queue) -> None:
        consumer = self.consumers[qos] = MQTTConsumer(self, queue, qos)
        self.session.add_consumer(consumer)

    def forget_consumer(self, consumer: MQTTConsumer) -> None:
        if self.consumers.get(consumer.qos) is consumer:
            del self.consumers[consumer.qos]
        self.session.consumers.pop(consumer.tag, None)

    def _unsubscribe(self, reader: p.Reader) -> None:
        assert self.vhost is not None
        packet_id = reader.u16()
        filters = []
        while reader.remaining():
            filters.append(reader.text())
        if not filters:
            raise p.MalformedPacket("UNSUBSCRIBE without a topic filter")
        for topic_filter in filters:
            key = to_amqp(topic_filter)
            for qos in range(3):
                name = subscription_queue_name(self.client_id, qos)
                self.vhost.unbind_queue(name, EXCHANGE, key)
        self.write(p.ack(p.UNSUBACK, packet_id))

    # -- delivering -----------------------------------------------------------------------

    def _topic_out(self, routing_key: str) -> bytes:
        if len(self._topics_out) >= TOPIC_CACHE_SIZE:
            self._topics_out.clear()
        topic = self._topics_out[routing_key] = p.utf8(to_mqtt(routing_key))
        return topic

    def _packet_id(self) -> int:
        busy = self.inflight
        state = self.state
        waiting = state.awaiting_comp
        sent = state.sent or state.sent_stored
        for _ in range(65535):
            packet_id = self._next_packet_id = self._next_packet_id % 65535 + 1
            if (
                packet_id not in busy
                and packet_id not in waiting
                and (not sent or not state.packet_id_taken(packet_id))
            ):
                return packet_id
        raise RuntimeError("no free MQTT packet id")

    def _persistent_packet_id(self, queue: Queue, message: Message, entry: Entry) -> int:
        """The packet id of a QoS 2 delivery to a persistent session: the one it was sent
        with before, if it was (a reconnect must not make it look new, MQTT 3.1.1 4.4), kept
        by the store when the message is."""
        state = self.state
        position = entry.position if isinstance(entry, StoredEntry) else 0
        packet_id = state.sent.get(message.id)
        recorded = False
        if packet_id is None and position and state.sent_stored:
            packet_id = state.sent_stored.pop((queue.name, position), None)
            recorded = packet_id is not None
        if packet_id is None or packet_id in self.inflight:
            packet_id = self._packet_id()
            recorded = False
        state.sent[message.id] = packet_id
        if position and not recorded and self.mqtt is not None:
            self.mqtt.add_record(state, PUB, packet_id, queue.name, position)
        return packet_id

    def _puback(self, packet_id: int) -> None:
        found = self.inflight.get(packet_id)
        if found is None or found[1] != 1:
            return  # unknown or already settled: nothing to do
        del self.inflight[packet_id]
        delivery = self.session.unacked.pop(found[0], None)
        if delivery is not None:  # settled with the others of this read (_parse_packets)
            self._acked.append((found[0], delivery))

    def _pubrec(self, packet_id: int) -> None:
        state = self.state
        written = self.broker.store.written
        found = self.inflight.get(packet_id)
        if found is not None and found[1] == 2:
            del self.inflight[packet_id]
            state.awaiting_comp.add(packet_id)
            if not self.clean and self.mqtt is not None:
                state.sent.pop(found[2], None)
                # the message leaves its queue in the same write as the record that says
                # the client has it: after a restart PUBREL is sent again, not the message
                self.mqtt.remove_record(state, PUB, packet_id)
                self.mqtt.add_record(state, COMP, packet_id)
            self.session.settle(found[0], False, ACK)
        if packet_id in state.awaiting_comp:
            self._reply(p.ack(p.PUBREL, packet_id), written)

    # -- closing --------------------------------------------------------------------------

    def drop(self, reason: str, quiet: bool = False) -> None:
        """Close without a DISCONNECT from the client: publish its will, release the rest."""
        if self._closed:
            return
        self._closed = True
        if not quiet:
            log.warning(
                "closing MQTT connection %s (client '%s'): %s", self.name, self.client_id, reason
            )
        elif self._state == CONNECTED:
            log.info("MQTT client '%s' (%s): %s", self.client_id, self.name, reason)
        will, self.will = self.will, None
        if will is not None and self._state == CONNECTED:
            try:
                self.publish(*will)
            except Exception as exc:
                log_failure(log, f"publishing the will of MQTT client '{self.client_id}'", exc)
        self._release()
        self._wake()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self.session.close()
        self.consumers.clear()
        self.inflight.clear()
        vhost, mqtt = self.vhost, self.mqtt
        if vhost is not None and mqtt is not None and mqtt.connections.get(self.client_id) is self:
            del mqtt.connections[self.client_id]
            if self.clean:
                for qos in range(3):
                    queue = vhost.queues.get(subscription_queue_name(self.client_id, qos))
                    if queue is not None:
                        vhost.remove_queue(queue)
        self.broker.limits.connection_closed(self)
        self.broker.connections.discard(self)

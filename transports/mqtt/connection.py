"""The sans-IO MQTT 3.1.1 server connection: bytes in, broker calls, bytes out.

Publishes go to ``amq.topic`` (topics mapped as RabbitMQ's MQTT plugin maps them). Each
client's subscriptions of one QoS are the bindings of one ordinary queue,
``mqtt-subscription-<client id>qos<N>``, consumed through the core's ``Session``: QoS 1 and 2
deliveries are tracked there and settled by PUBACK (QoS 1) or PUBREC (QoS 2).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from warrenmq import Broker, Message, ProtocolConnection, Queue
from warrenmq.auth import LoginRefused, User
from warrenmq.errors import BrokerError
from warrenmq.failures import log_failure
from warrenmq.message import Properties
from warrenmq.queue import ACK, Entry
from warrenmq.session import Session, SessionConsumer
from warrenmq.vhost import VirtualHost
from warrenmq.views import ConnectionView

from . import packets as p
from .state import (
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

AWAIT_CONNECT, LOGGING_IN, CONNECTED = range(3)


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
        self.connection.deliver(self, queue, message, entry)

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


def _message_qos(message: Message) -> int:
    """The QoS a message was published with; an AMQP publish does not cap it."""
    headers = message.properties.headers
    if headers:
        qos = headers.get(QOS_HEADER)
        if isinstance(qos, int) and 0 <= qos <= 2:
            return qos
    return 2


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
        self.user: User | None = None
        self.vhost: VirtualHost | None = None
        self.mqtt: MQTTState | None = None
        self.state = SessionState()
        self.session = MQTTSession(self)
        #: subscription queue consumers by QoS
        self.consumers: dict[int, MQTTConsumer] = {}
        #: outbound packet id -> (delivery tag, QoS) of deliveries awaiting PUBACK/PUBREC
        self.inflight: dict[int, tuple[int, int]] = {}
        self._next_packet_id = 0
        #: (topic, payload, qos, retain) published if the connection drops
        self.will: tuple[str, bytes, int, bool] | None = None
        self.messages_in = self.messages_out = self.bytes_in = self.bytes_out = 0
        self._next_memory_check = MEMORY_CHECK_BYTES
        self.wakeup: Callable[[], None] | None = None
        self.transport_buffer: Callable[[], int] | None = None
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
        while start < end and not self._closed and self._state != LOGGING_IN:
            header = p.parse_fixed_header(data, start)
            if header is None:
                break
            first, length, body_start = header
            limit = (
                self.broker.settings.mqtt_max_packet_size
                if self._state == CONNECTED
                else MAX_PACKET_UNAUTHENTICATED
            )
            if body_start - start + length > limit:
                raise p.MalformedPacket(f"packet of {length} bytes exceeds the limit of {limit}")
            body_end = body_start + length
            if body_end > end:
                break
            start = body_end
            self._packet(first, p.Reader(data, body_start, body_end))
        if start:
            del data[:start]

    def _packet(self, first: int, reader: p.Reader) -> None:
        kind, flags = first >> 4, first & 0x0F
        if self._state == AWAIT_CONNECT:
            if kind != p.CONNECT or flags:
                raise p.MalformedPacket("the first packet is not CONNECT")
            self._connect(reader)
            return
        if kind == p.PUBLISH:
            self._publish(flags, reader)
        elif kind == p.PUBACK and not flags:
            self._puback(reader.u16())
        elif kind == p.PUBREC and not flags:
            self._pubrec(reader.u16())
        elif kind == p.PUBREL and flags == 2:
            packet_id = reader.u16()
            self.state.awaiting_rel.discard(packet_id)
            self.write(p.ack(p.PUBCOMP, packet_id))
        elif kind == p.PUBCOMP and not flags:
            self.state.awaiting_comp.discard(reader.u16())
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
            mqtt.sessions.pop(self.client_id, None)
            for name in names:
                queue = vhost.queues.get(name)
                if queue is not None:
                    vhost.remove_queue(queue)
            present = False
        else:
            present = self.client_id in mqtt.sessions or any(n in vhost.queues for n in names)
            self.state = mqtt.sessions.setdefault(self.client_id, SessionState())
        self._state = CONNECTED
        self.timers_changed = True
        self.write(p.connack(present, p.ACCEPTED))
        log.info(
            "accepted MQTT connection %s (client '%s', user '%s', vhost '%s', clean %s)",
            self.name, self.client_id, self.user.name, vhost.name, self.clean,
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

    def _publish(self, flags: int, reader: p.Reader) -> None:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise p.MalformedPacket("PUBLISH with QoS 3")
        topic = reader.text()
        try:
            check_topic(topic)
        except BadTopic as exc:
            raise p.MalformedPacket(str(exc)) from None
        packet_id = reader.u16() if qos else 0
        if qos and not packet_id:
            raise p.MalformedPacket("PUBLISH with packet id 0")
        payload = reader.rest()
        if len(payload) > self.broker.settings.max_message_size:
            raise p.MalformedPacket(f"payload of {len(payload)} bytes is too large")
        self.messages_in += 1
        self.has_published = True
        if qos == 2 and packet_id in self.state.awaiting_rel:
            self.write(p.ack(p.PUBREC, packet_id))  # a resend: published once already
            return
        user = self.user.name if self.user else ""
        assert self.vhost is not None
        try:
            access = self.broker.access
            access.check(user, self.vhost.name, "write", "exchange", EXCHANGE)
            if access.topic_permissions:  # on the topic in its AMQP form, as RabbitMQ
                variables = {"client_id": self.client_id}
                key = to_amqp(topic)
                access.check_topic(user, self.vhost.name, "write", EXCHANGE, key, variables)
        except BrokerError as exc:
            self.drop(exc.reply_text)
            return
        self.publish(topic, payload, qos, bool(flags & 1))
        if qos == 1:
            self.write(p.ack(p.PUBACK, packet_id))
        elif qos == 2:
            self.state.awaiting_rel.add(packet_id)
            self.write(p.ack(p.PUBREC, packet_id))

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        assert self.vhost is not None and self.mqtt is not None
        headers = {QOS_HEADER: qos}
        properties = Properties(headers=headers, delivery_mode=2 if qos else 1)
        message = Message(EXCHANGE, to_amqp(topic), payload, properties)
        if retain:
            if payload:
                kept = Properties(
                    headers={**headers, RETAIN_HEADER: True, TOPIC_HEADER: topic},
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

    def deliver(
        self, consumer: MQTTConsumer, queue: Queue, message: Message, entry: Entry | None
    ) -> None:
        qos = min(consumer.qos, _message_qos(message))
        headers = message.properties.headers
        retain = bool(headers and headers.get(RETAIN_HEADER))
        topic = to_mqtt(message.routing_key).encode()
        body = message.body
        if qos == 0:
            if entry is not None and consumer.acks:
                queue.ack(entry)  # a QoS 0 message on a QoS 1 subscription: settled at once
            self.write(p.publish_head(topic, 0, 0, retain, False, len(body)))
        else:
            assert entry is not None
            packet_id = self._packet_id()
            tag = self.session.track(queue, entry, consumer)
            self.inflight[packet_id] = (tag, qos)
            head = p.publish_head(topic, qos, packet_id, retain, entry.deliveries > 1, len(body))
            self.write(head)
        self._out += body
        self.messages_out += 1
        if len(self._out) > OUT_LIMIT and not self._out_full:
            self._out_full = True
            self.session.pause()

    def _packet_id(self) -> int:
        busy = self.inflight
        waiting = self.state.awaiting_comp
        for _ in range(65535):
            packet_id = self._next_packet_id = self._next_packet_id % 65535 + 1
            if packet_id not in busy and packet_id not in waiting:
                return packet_id
        raise RuntimeError("no free MQTT packet id")

    def _puback(self, packet_id: int) -> None:
        found = self.inflight.get(packet_id)
        if found is None or found[1] != 1:
            return  # unknown or already settled: nothing to do
        del self.inflight[packet_id]
        self.session.settle(found[0], False, ACK)

    def _pubrec(self, packet_id: int) -> None:
        found = self.inflight.get(packet_id)
        if found is not None and found[1] == 2:
            del self.inflight[packet_id]
            self.session.settle(found[0], False, ACK)
            self.state.awaiting_comp.add(packet_id)
        if packet_id in self.state.awaiting_comp:
            self.write(p.ack(p.PUBREL, packet_id))

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

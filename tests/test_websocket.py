"""MQTT and AMQP over WebSocket: paho-mqtt with ``transport="websockets"``, the `websockets`
library as a raw AMQP client (subprotocol ``amqp``), pika on the other side of amq.topic, wss
with a certificate the test makes, and a consumer that stops reading.

Set ``WARRENMQ_TEST_WS_EXTERNAL=host:port`` (RabbitMQ's Web-MQTT: ``127.0.0.1:15675``, path
``/ws``) to run the paho tests against another broker's MQTT over WebSocket; warrenmq-only
tests are skipped then. Differences from RabbitMQ 3.10 are noted where a test allows for them.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pytest
from mqtt_helpers import TIMEOUT, Client, MQTTAddress, connect_packet, publish_packet
from pamqp import commands
from pika_helpers import get_bodies, wait_until
from raw_amqp import (
    FRAME_BODY,
    PROTOCOL_HEADER,
    ConnectionClosedByPeer,
    plain_response,
    publish_frames,
    start_ok_frame,
)
from test_cli import broker_process
from tls_helpers import Certificates, make_certificates
from ws_helpers import AMQPOverWebSocket, RawWebSocket

from warrenmq import ListenerSpec
from warrenmq.access import Access
from warrenmq.broker import Settings
from warrenmq.testing import RunningBroker, running_broker
from warrenmq.tls import TLSOptions

only = pytest.mark.warrenmq_only


class Target:
    """Where the tests connect: our broker's WebSocket listener, or an external one."""

    def __init__(self, mqtt: MQTTAddress, running: RunningBroker | None = None) -> None:
        self.mqtt = mqtt
        self.running = running

    @property
    def external(self) -> bool:
        return self.running is None

    @property
    def broker(self) -> RunningBroker:
        assert self.running is not None
        return self.running


def _websocket_address(running: RunningBroker) -> tuple[str, int]:
    info = next(i for i in running.broker.listeners if i.spec.transport == "websocket")
    return info.host, info.port


def _serve(**settings: object) -> Iterator[Target]:
    external = os.environ.get("WARRENMQ_TEST_WS_EXTERNAL")
    if external:
        host, _, port = external.rpartition(":")
        address = MQTTAddress(host or "127.0.0.1", int(port), True, websocket_path="/ws")
        yield Target(address)
        return
    options: dict[str, object] = {"host": "127.0.0.1", "amqp_port": 0, "ws_port": 0}
    options.update(settings)
    with running_broker(Settings(**options)) as running:  # type: ignore[arg-type]
        host, port = _websocket_address(running)
        yield Target(MQTTAddress(host, port, websocket_path="/ws"), running)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    yield from _serve()


def connected(target: Target, clients: list[Client], client_id: str, **options: object) -> Client:
    made = Client(target.mqtt, client_id, **options)  # type: ignore[arg-type]
    clients.append(made)
    code, _ = made.connect()
    assert code == 0
    return made


def raw(target: Target, *subprotocols: str, path: str = "/ws") -> RawWebSocket:
    return RawWebSocket(target.mqtt.host, target.mqtt.port, path, subprotocols)


# -- paho-mqtt over WebSocket (also against RabbitMQ's Web-MQTT) -----------------------------


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_and_subscribe(
    target: Target, clients: list[Client], unique: str, qos: int
) -> None:
    subscriber = connected(target, clients, f"{unique}-sub")
    publisher = connected(target, clients, f"{unique}-pub")
    # RabbitMQ's MQTT plugin grants QoS 1 at most; warrenmq grants what is asked
    granted = min(qos, 1) if target.external else qos
    assert subscriber.subscribe((f"ws/{unique}/+", qos)) == [granted]
    publisher.publish(f"ws/{unique}/a", b"over websocket", qos)
    got = subscriber.next()
    assert (got.topic, got.payload, got.qos) == (f"ws/{unique}/a", b"over websocket", granted)


def test_large_message_arrives_whole(target: Target, clients: list[Client], unique: str) -> None:
    subscriber = connected(target, clients, f"{unique}-sub")
    publisher = connected(target, clients, f"{unique}-pub")
    subscriber.subscribe((f"ws/{unique}", 1))
    payload = os.urandom(300_000)  # several TCP segments, one WebSocket message each way
    publisher.publish(f"ws/{unique}", payload, 1)
    assert subscriber.next().payload == payload


def test_retained_message(target: Target, clients: list[Client], unique: str) -> None:
    topic = f"ws/{unique}/state"
    publisher = connected(target, clients, f"{unique}-pub")
    publisher.publish(topic, b"on", 1, retain=True)
    late = connected(target, clients, f"{unique}-late")
    # RabbitMQ delivers retained messages to exact-topic subscriptions only (warrenmq to
    # wildcard ones too: test_mqtt.py), so subscribe to the topic itself
    late.subscribe((topic, 1))
    got = late.next()
    assert (got.payload, got.retain) == (b"on", True)
    publisher.publish(topic, b"", 1, retain=True)  # clears it
    later = connected(target, clients, f"{unique}-later")
    later.subscribe((topic, 1))
    publisher.publish(topic, b"marker", 1)
    assert later.next().payload == b"marker"  # nothing retained came first


def test_will_on_abrupt_close(target: Target, clients: list[Client], unique: str) -> None:
    watcher = connected(target, clients, f"{unique}-watch")
    watcher.subscribe((f"ws/{unique}/will", 1))
    rude = connected(target, clients, f"{unique}-rude", will=(f"ws/{unique}/will", b"gone", 1))
    rude.drop()  # the TCP connection under the WebSocket just closes
    assert watcher.next().payload == b"gone"


@only
def test_no_will_on_disconnect(target: Target, clients: list[Client], unique: str) -> None:
    # RabbitMQ 3.10's Web-MQTT publishes the will even after a clean DISCONNECT (over TCP it
    # does not): a difference, so this one is warrenmq's only
    watcher = connected(target, clients, f"{unique}-watch")
    watcher.subscribe((f"ws/{unique}/will", 1))
    polite = connected(target, clients, f"{unique}-polite", will=(f"ws/{unique}/will", b"p", 1))
    polite.close()
    rude = connected(target, clients, f"{unique}-rude", will=(f"ws/{unique}/will", b"gone", 1))
    rude.drop()
    assert watcher.next().payload == b"gone", "the clean DISCONNECT must not publish its will"


def test_bad_password_is_refused(target: Target, unique: str) -> None:
    client = Client(target.mqtt, unique, username="guest", password="wrong")
    try:
        code, _ = client.connect()
    finally:
        client.paho.loop_stop()
    # warrenmq answers CONNACK 4 (bad user name or password; paho reports it as reason code
    # 134) and closes, as over TCP; RabbitMQ 3.10's Web-MQTT sends no CONNACK, it closes the
    # WebSocket with 1002 "unauthenticated" (paho: -1, closed before any CONNACK)
    assert code == (-1 if target.external else 134)


def test_vhost_in_the_user_name(target: Target, clients: list[Client], unique: str) -> None:
    client = connected(target, clients, unique, username="/:guest", password="guest")
    client.subscribe((f"ws/{unique}", 0))
    client.publish(f"ws/{unique}", b"vhost /", 0)
    assert client.next().payload == b"vhost /"


def test_subprotocol_mqttv31_is_accepted(target: Target, unique: str) -> None:
    link = raw(target, "mqttv3.1")
    try:
        assert (link.status, link.subprotocol) == (101, "mqttv3.1")
        link.send_binary(connect_packet(unique))
        deadline = time.monotonic() + TIMEOUT
        while len(link.received) < 4:
            link.fill(deadline)
        assert bytes(link.received[:4]) == b"\x20\x02\x00\x00"  # CONNACK, accepted
    finally:
        link.shut()


def test_packets_split_and_joined_across_messages(target: Target, unique: str) -> None:
    """A message may carry several packets, or part of one: the engine sees a stream."""
    link = raw(target, "mqtt")
    try:
        hello = connect_packet(unique) + b"\x82" + bytes([len(f"ws/{unique}") + 5]) + b"\x00\x01"
        hello += struct.pack(">H", len(f"ws/{unique}")) + f"ws/{unique}".encode() + b"\x00"
        for piece in (hello[:3], hello[3:20], hello[20:]):  # CONNECT + SUBSCRIBE, in 3 parts
            link.send_binary(piece)
        link.send_binary(publish_packet(f"ws/{unique}", b"split") * 2)  # two in one message
        deadline = time.monotonic() + TIMEOUT
        while link.received.count(b"split") < 2:
            link.fill(deadline)
        assert link.received.startswith(b"\x20\x02\x00\x00\x90\x03\x00\x01\x00")  # CONNACK, SUBACK
    finally:
        link.shut()


# -- the handshake (warrenmq's refusals) ------------------------------------------------------


@only
@pytest.mark.parametrize("offered", [(), ("stomp",)])
def test_no_known_subprotocol_is_refused(target: Target, offered: tuple[str, ...]) -> None:
    # RabbitMQ 3.10's Web-MQTT takes a client that offers no subprotocol as MQTT; 3.12 and
    # later refuse it with 400 as warrenmq does
    link = raw(target, *offered)
    try:
        assert link.status == 400
        assert "no supported subprotocol" in link.body
        assert "mqtt" in link.body and "amqp" in link.body  # what it could have asked for
    finally:
        link.shut()


def test_wrong_path_is_refused(target: Target) -> None:
    link = raw(target, "mqtt", path="/mqtt")
    try:
        assert link.status == 404
        assert target.external or "/ws" in link.body  # warrenmq names the right path
    finally:
        link.shut()


@only  # RabbitMQ 3.10 ignores it
def test_text_message_closes_the_connection(target: Target, unique: str) -> None:
    link = raw(target, "mqtt")
    try:
        link.send_text("hello")
        close = link.wait_closed()
        assert close is not None and close.code == 1003  # unsupported data
    finally:
        link.shut()


@only
def test_connections_show_the_websocket_transport(
    target: Target, clients: list[Client], unique: str
) -> None:
    connected(target, clients, unique)
    views = target.broker.call(target.broker.broker.connection_views)
    mine = [view for view in views if view.client.get("client_id") == unique]
    assert [(view.protocol, view.transport) for view in mine] == [("mqtt", "ws")]


@only
def test_handshake_timeout_and_mqtt_keepalive() -> None:
    """Timers run as over TCP: a socket that never upgrades is closed after the handshake
    timeout, an MQTT client silent for 1.5 times its keepalive is closed too."""
    with contextmanager(_serve)(handshake_timeout=0.5) as target:
        host, port = target.mqtt.host, target.mqtt.port
        silent = socket.create_connection((host, port), timeout=TIMEOUT)
        started = time.monotonic()
        assert silent.recv(100) == b""  # closed by the broker
        assert 0.4 < time.monotonic() - started < 5
        silent.close()
        link = raw(target, "mqtt")
        link.send_binary(connect_packet("keepalive", keepalive=1))
        started = time.monotonic()
        link.wait_closed()
        assert 1.4 < time.monotonic() - started < 5
        assert bytes(link.received[:4]) == b"\x20\x02\x00\x00"
        link.shut()


# -- AMQP 0-9-1 over WebSocket ------------------------------------------------------------------


def _amqp(target: Target, **options: object) -> AMQPOverWebSocket:
    client = AMQPOverWebSocket(target.mqtt.host, target.mqtt.port, **options)  # type: ignore[arg-type]
    assert client.link.subprotocol == "amqp"
    return client


def _deliveries(client: AMQPOverWebSocket, count: int, timeout: float = TIMEOUT) -> list[bytes]:
    """The bodies of the next ``count`` deliveries (each body in one frame)."""
    bodies = []
    while len(bodies) < count:
        frame_type, _, payload = client.read_raw_frame(timeout)
        if frame_type == FRAME_BODY:
            bodies.append(payload)
    return bodies


@only
def test_amqp_open_declare_publish_consume(target: Target, unique: str) -> None:
    with _amqp(target) as client:
        client.handshake()
        client.open_channel()
        client.send_frame(commands.Queue.Declare(queue=unique), 1)
        declared = client.expect(commands.Queue.DeclareOk)
        assert declared.queue == unique
        client.send_frame(commands.Confirm.Select(), 1)
        client.expect(commands.Confirm.SelectOk)
        client.send(publish_frames(1, "", unique, b"one") + publish_frames(1, "", unique, b"two"))
        client.expect(commands.Basic.Ack)
        client.send_frame(commands.Basic.Consume(queue=unique, consumer_tag="c"), 1)
        client.expect(commands.Basic.ConsumeOk)
        assert _deliveries(client, 2) == [b"one", b"two"]
        client.close_gracefully()


@only
def test_amqp_bad_login_is_refused_as_over_tcp(target: Target) -> None:
    with _amqp(target) as client:
        client.send(PROTOCOL_HEADER)
        client.expect(commands.Connection.Start)
        client.send(start_ok_frame("PLAIN", plain_response("guest", "wrong")))
        close = client.expect_connection_close()
        assert close.reply_code == 403
        assert "ACCESS_REFUSED" in close.reply_text


@only
def test_mqtt_over_websocket_meets_pika_on_amq_topic(
    target: Target, clients: list[Client], unique: str
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(target.broker.url))
    try:
        channel = connection.channel()
        channel.queue_declare(unique)
        channel.queue_bind(unique, "amq.topic", f"ws.{unique}.*")
        mqtt = connected(target, clients, f"{unique}-m")
        mqtt.publish(f"ws/{unique}/up", b"from the web", 1)
        wait_until(connection, lambda: channel.queue_declare(unique, passive=True)
                   .method.message_count == 1, "the MQTT message in the AMQP queue")  # fmt: skip
        assert get_bodies(channel, unique) == [b"from the web"]
        mqtt.subscribe((f"ws/{unique}/down", 1))
        channel.basic_publish("amq.topic", f"ws.{unique}.down", b"from pika")
        got = mqtt.next()
        assert (got.topic, got.payload) == (f"ws/{unique}/down", b"from pika")
    finally:
        connection.close()


@only
def test_amqp_over_websocket_consumes_an_mqtt_publish(
    target: Target, clients: list[Client], unique: str
) -> None:
    with _amqp(target) as client:
        client.handshake()
        client.open_channel()
        client.send_frame(commands.Queue.Declare(queue=unique), 1)
        client.expect(commands.Queue.DeclareOk)
        client.send_frame(commands.Queue.Bind(queue=unique, exchange="amq.topic",
                                              routing_key=f"ws.{unique}"), 1)  # fmt: skip
        client.expect(commands.Queue.BindOk)
        client.send_frame(commands.Basic.Consume(queue=unique, no_ack=True), 1)
        client.expect(commands.Basic.ConsumeOk)
        connected(target, clients, f"{unique}-m").publish(f"ws/{unique}", b"both ws", 1)
        assert _deliveries(client, 1) == [b"both ws"]


# -- back-pressure ------------------------------------------------------------------------------


@only
def test_a_consumer_that_stops_reading_holds_little(target: Target, unique: str) -> None:
    """An auto-ack consumer over WebSocket that stops reading: the broker stops writing to it
    once its buffers are full, the flood waits in the queue (which the memory alarm bounds),
    not in the connection; once it reads again it gets everything, and again."""
    running = target.broker
    body = b"x" * 65536
    count = 600  # about 40 MiB each flood, far above what the buffers on the way can take
    with _amqp(target) as client:
        client.handshake()
        client.open_channel()
        client.send_frame(commands.Queue.Declare(queue=unique), 1)
        client.expect(commands.Queue.DeclareOk)
        client.send_frame(commands.Basic.Consume(queue=unique, no_ack=True), 1)
        client.expect(commands.Basic.ConsumeOk)
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()

            def held() -> tuple[int, int]:
                """(bytes the WebSocket connection holds, messages waiting in the queue)"""
                engines = [c for c in running.broker.connections if c.view().transport == "ws"]
                queue = running.broker.vhosts["/"].queues[unique]
                return sum(e.buffered_bytes() for e in engines), queue.ready_count

            for _ in range(2):  # flood, drain, flood again
                for _ in range(count):
                    channel.basic_publish("", unique, body)
                buffered, waiting = running.call(held)
                assert waiting > count // 2, "the flood went to the connection, not the queue"
                assert buffered < 8 * 2**20, f"the connection holds {buffered} bytes"
                bodies = _deliveries(client, count, timeout=30)
                assert len(bodies) == count and set(bodies) == {body}
                assert running.call(held)[1] == 0
        finally:
            connection.close()


# -- wss -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@only
def test_wss_carries_mqtt_and_amqp(certificates: Certificates, unique: str) -> None:
    tls = TLSOptions(certificates.server_cert, certificates.server_key)
    listeners = [
        ListenerSpec("tcp", "amqp", "127.0.0.1", 0),
        ListenerSpec("websocket", "mqtt", "127.0.0.1", 0, {"path": "/ws"}, tls),
    ]
    with running_broker(Settings(listeners=listeners)) as running:
        host, port = _websocket_address(running)
        context = certificates.client_context(with_certificate=False)
        address = MQTTAddress(host, port, websocket_path="/ws", tls=context)
        client = Client(address, unique)
        try:
            assert client.connect() == (0, False)
            client.subscribe((f"wss/{unique}", 1))
            client.publish(f"wss/{unique}", b"encrypted", 1)
            assert client.next().payload == b"encrypted"
            views = running.call(running.broker.connection_views)
            view = next(v for v in views if v.protocol == "mqtt")
            assert view.transport == "wss"
        finally:
            client.close()
        with AMQPOverWebSocket(host, port, context=context) as amqp:
            amqp.handshake()
            amqp.open_channel()
            amqp.close_gracefully()
        plain = Client(MQTTAddress(host, port, websocket_path="/ws"), f"{unique}-plain")
        with pytest.raises(OSError):  # no upgrade without TLS
            plain.connect()


@only
def test_wss_with_client_certificates(certificates: Certificates, unique: str) -> None:
    tls = TLSOptions(
        certificates.server_cert, certificates.server_key, certificates.ca, verify_peer=True
    )
    listeners = [
        ListenerSpec("tcp", "amqp", "127.0.0.1", 0),
        ListenerSpec("websocket", "mqtt", "127.0.0.1", 0, {"path": "/ws"}, tls),
    ]
    with running_broker(Settings(listeners=listeners)) as running:
        host, port = _websocket_address(running)
        trusted = certificates.client_context()
        client = Client(MQTTAddress(host, port, websocket_path="/ws", tls=trusted), unique)
        try:
            assert client.connect() == (0, False)
        finally:
            client.close()
        for context in (
            certificates.client_context(with_certificate=False),
            certificates.client_context(stranger=True),
        ):
            # the TLS handshake fails (with TLS 1.3 the client may see it only as a close)
            with pytest.raises((ssl.SSLError, OSError, ConnectionClosedByPeer)):
                link = RawWebSocket(host, port, "/ws", ("mqtt",), context)
                link.shut()


# -- config and command line --------------------------------------------------------------------


@only
def test_config_listener_with_one_protocol_and_a_path(tmp_path: Path, unique: str) -> None:
    from warrenmq import config

    file = tmp_path / "warrenmq.toml"
    file.write_text(
        '[broker]\nstore = "memory"\n\n[[listeners]]\nport = 0\n\n'
        '[[listeners]]\ntransport = "websocket"\nprotocol = "amqp"\npath = "/amqp"\nport = 0\n'
    )
    settings = config.load(file).settings
    with running_broker(settings) as running:
        host, port = _websocket_address(running)
        refused = RawWebSocket(host, port, "/amqp", ("mqtt",))
        assert refused.status == 400 and "amqp" in refused.body
        refused.shut()
        with AMQPOverWebSocket(host, port, path="/amqp") as client:
            client.handshake()
            client.close_gracefully()


@only
def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from warrenmq import config
    from warrenmq.errors import ConfigError

    file = tmp_path / "warrenmq.toml"
    file.write_text('[[listeners]]\nprotocol = "mqtt"\npath = "/ws"\nport = 0\n')
    with pytest.raises(ConfigError, match=r"line 3: listeners\[0\]\.path: only a websocket"):
        config.load(file)
    file.write_text('[[listeners]]\ntransport = "websocket"\npath = "ws"\n')
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.path: expected a path starting"):
        config.load(file)
    file.write_text('[[listeners]]\ntransport = "websocket"\n')
    assert config.load(file).settings.listeners[0].port == 15675  # as RabbitMQ's Web-MQTT


@only
def test_ws_port_flag(unique: str) -> None:
    with broker_process("--port", "0", "--ws-port", "0", "--ws-path", "/mqtt") as (_, reader):
        line = reader.wait_for("listening for mqtt on websocket")
        port = int(line.rsplit(":", 1)[1].split()[0])
        client = Client(MQTTAddress("127.0.0.1", port, websocket_path="/mqtt"), unique)
        try:
            assert client.connect() == (0, False)
        finally:
            client.close()


# -- users, vhosts, resource alarms, churn ------------------------------------------------------


@pytest.fixture(scope="module")
def guarded() -> Iterator[Target]:
    """A user of a second vhost only, who may log in from anywhere."""
    access = Access.default()
    access.add_vhost("staging")
    access.add_user("app", "s3cret")
    access.set_permissions("app", "staging", ".*", ".*", ".*")
    yield from _serve(access=access, loopback_users=frozenset())


@only
def test_the_same_users_and_vhosts_as_over_tcp(
    guarded: Target, clients: list[Client], unique: str
) -> None:
    # MQTT: "vhost:user" as over TCP; a user without access to the default vhost is not
    # authorised (CONNACK 5, paho's 135); a wrong password is CONNACK 4 (paho's 134)
    app = connected(guarded, clients, unique, username="staging:app", password="s3cret")
    app.subscribe((f"ws/{unique}", 1))
    app.publish(f"ws/{unique}", b"in staging", 1)
    assert app.next().payload == b"in staging"
    for username, password, code in (("app", "s3cret", 135), ("staging:app", "nope", 134)):
        refused = Client(guarded.mqtt, f"{unique}-{code}", username=username, password=password)
        try:
            assert refused.connect()[0] == code
        finally:
            refused.paho.loop_stop()
    # AMQP over WebSocket: the same user and vhost, and RabbitMQ's refusal elsewhere
    with _amqp(guarded) as client:
        client.handshake(username="app", password="s3cret", vhost="staging")
        client.close_gracefully()
    with _amqp(guarded) as client:
        client.handshake(username="app", password="s3cret", open_connection=False)
        client.send_frame(commands.Connection.Open(virtual_host="/"))
        close = client.expect_connection_close()
        assert close.reply_code == 530 and "access to vhost '/' refused" in close.reply_text


@only
def test_memory_alarm_holds_a_websocket_publisher_back(unique: str) -> None:
    """Above the memory limit an MQTT publisher over WebSocket is not read (no PUBACK) until
    consumers drain the queue, as over TCP; nothing is lost."""
    settings = dict(memory_limit=1_000_000, memory_gauge=lambda: 0, memory_check_interval=0.02)
    with contextmanager(_serve)(**settings) as target:
        running = target.broker
        amqp = pika.BlockingConnection(pika.URLParameters(running.url))
        try:
            channel = amqp.channel()
            channel.queue_declare(unique)
            channel.queue_bind(unique, "amq.topic", f"{unique}.held")
            publisher = Client(target.mqtt, unique)
            assert publisher.connect() == (0, False)
            sent = [
                publisher.paho.publish(f"{unique}/held", b"x" * 150_000, qos=1) for _ in range(20)
            ]
            wait_until(
                amqp,
                lambda: running.broker.memory_alarm and not all(m.is_published() for m in sent),
                "the alarm to hold the publisher back",
                timeout=30,
            )
            bodies: list[bytes] = []
            wait_until(
                amqp,
                lambda: bodies.extend(get_bodies(channel, unique)) or len(bodies) == 20,
                "every message, once consumers drained the queue",
                timeout=60,  # paho masks what it sends in pure Python: about 1 s per MB
            )
            for message in sent:
                message.wait_for_publish(TIMEOUT)
            publisher.close()
        finally:
            amqp.close()


@only
def test_half_finished_handshakes_leave_nothing_behind(
    target: Target, clients: list[Client], unique: str
) -> None:
    """Sockets that send part of an upgrade request, or a bad one, or upgrade and send half
    a CONNECT, then go: the broker keeps serving and holds no connection (and no file
    descriptor: the broker runs in this process) for any of them."""
    host, port = target.mqtt.host, target.mqtt.port
    running = target.broker
    before = running.call(lambda: len(running.broker.connections))
    fds_before = len(os.listdir("/proc/self/fd"))
    for index in range(100):
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
        if index % 3 == 0:
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: webs")
        elif index % 3 == 1:
            sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        sock.close()
    for _ in range(50):
        link = raw(target, "mqtt")
        link.send_binary(connect_packet(unique)[:5])
        link.shut()
    client = connected(target, clients, unique)  # still serving
    client.subscribe((f"ws/{unique}", 0))

    def settled() -> bool:
        connections = running.call(lambda: len(running.broker.connections))
        # the client's socket and the broker's end of it are new; a little slack for others
        return connections == before + 1 and len(os.listdir("/proc/self/fd")) <= fds_before + 8

    deadline = time.monotonic() + TIMEOUT
    while not settled():
        assert time.monotonic() < deadline, "connections left behind"
        time.sleep(0.05)


@only
def test_shutdown_closes_websocket_connections(unique: str) -> None:
    """A stopping broker closes its WebSocket connections as its TCP ones: AMQP clients get
    connection.close 320, MQTT clients a closed connection."""
    settings = Settings(host="127.0.0.1", amqp_port=0, ws_port=0, shutdown_grace=1.0)
    with running_broker(settings) as running:
        host, port = _websocket_address(running)
        mqtt = Client(MQTTAddress(host, port, websocket_path="/ws"), unique)
        assert mqtt.connect() == (0, False)
        amqp = AMQPOverWebSocket(host, port)
        amqp.handshake()
    try:
        close = amqp.expect_connection_close()
        assert close.reply_code == 320
        assert mqtt.disconnected.wait(TIMEOUT)
    finally:
        amqp.close()
        mqtt.paho.loop_stop()

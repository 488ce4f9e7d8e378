"""MQTT 3.1.1 over TCP with paho-mqtt (and a raw socket client for bad input), and MQTT and
AMQP as one broker with pika.

Set ``WARRENMQ_TEST_MQTT_EXTERNAL=host:port`` to run the MQTT-only tests against another MQTT
broker (mosquitto, say) to check that they assert standard behaviour; tests of what only
warrenmq has (AMQP interplay, its users, its limits) carry ``warrenmq_only`` and are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
from mqtt_helpers import (
    TIMEOUT,
    Client,
    MQTTAddress,
    RawClient,
    ack_packet,
    publish_packet,
    subscribe_packet,
)
from pika_helpers import get_bodies, wait_until
from test_cli import broker_process

from warrenmq.access import Access
from warrenmq.broker import Settings
from warrenmq.testing import RunningBroker, running_broker

only = pytest.mark.warrenmq_only


@dataclass
class Target:
    mqtt: MQTTAddress
    running: RunningBroker | None = None

    @property
    def amqp_url(self) -> str:
        assert self.running is not None
        return self.running.url


def _serve(**settings: object) -> Iterator[Target]:
    external = os.environ.get("WARRENMQ_TEST_MQTT_EXTERNAL")
    if external:
        host, _, port = external.rpartition(":")
        yield Target(MQTTAddress(host or "127.0.0.1", int(port), external=True))
        return
    options: dict[str, object] = {"host": "127.0.0.1", "amqp_port": 0, "mqtt_port": 0}
    options.update(settings)
    with running_broker(Settings(**options)) as running:  # type: ignore[arg-type]
        info = next(i for i in running.broker.listeners if i.spec.protocol == "mqtt")
        yield Target(MQTTAddress(info.host, info.port), running)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    yield from _serve()


@pytest.fixture(scope="module")
def strict() -> Iterator[Target]:
    """A broker with a short handshake timeout and a small packet limit."""
    yield from _serve(handshake_timeout=0.5, mqtt_max_packet_size=1024)


@pytest.fixture
def client(target: Target, clients: list[Client], unique: str) -> Client:
    """A connected client (clean session) with a unique client id."""
    made = Client(target.mqtt, f"{unique}-c")
    assert made.connect() == (0, False)
    clients.append(made)
    return made


def connected(target: Target, clients: list[Client], client_id: str, **options: object) -> Client:
    made = Client(target.mqtt, client_id, **options)  # type: ignore[arg-type]
    clients.append(made)
    code, _ = made.connect()
    assert code == 0
    return made


def assert_next_is(client: Client, payload: bytes) -> None:
    """The next message is ``payload`` (a marker published last proves nothing came before)."""
    got = client.next()
    assert got.payload == payload, f"expected {payload!r} first, got {got!r}"


# -- CONNECT --------------------------------------------------------------------------------


@only
def test_bad_password_gets_connack_4(target: Target, unique: str) -> None:
    raw = RawClient(target.mqtt)
    # 4: bad user name or password, as RabbitMQ's MQTT plugin answers
    assert raw.connect(unique, username="guest", password="wrong") == b"\x00\x04"
    assert raw.closed_by_server()


@only
def test_vhost_user_name_form(target: Target, unique: str) -> None:
    raw = RawClient(target.mqtt)
    assert raw.connect(unique, username="/:guest", password="guest") == b"\x00\x00"
    raw.close()
    raw = RawClient(target.mqtt)
    # a vhost that does not exist: 4, as RabbitMQ's MQTT plugin (5 is for a refused vhost)
    assert raw.connect(unique, username="nowhere:guest", password="guest") == b"\x00\x04"
    assert raw.closed_by_server()


@only
def test_mqtt5_gets_unacceptable_protocol_version(target: Target, unique: str) -> None:
    raw = RawClient(target.mqtt)
    assert raw.connect(unique, level=5) == b"\x00\x01"
    assert raw.closed_by_server()


@pytest.mark.parametrize("level,name", [(0x84, "MQTT"), (0x83, "MQIsdp")])
def test_a_bridge_s_protocol_level_is_accepted(
    target: Target, unique: str, level: int, name: str
) -> None:
    """The high bit of the level says "bridge" (mosquitto's try_private): 3.1.1 and 3.1."""
    raw = RawClient(target.mqtt)
    assert raw.connect(unique, level=level, name=name) == b"\x00\x00"
    raw.close()


@only
def test_an_mqtt5_bridge_gets_unacceptable_protocol_version(target: Target, unique: str) -> None:
    raw = RawClient(target.mqtt)
    assert raw.connect(unique, level=0x85) == b"\x00\x01"
    assert raw.closed_by_server()


def test_a_bridge_is_not_sent_back_its_own_messages(
    target: Target, clients: list[Client], unique: str
) -> None:
    """No-local for a bridge (mosquitto's loop prevention); another client's come through,
    and a plain client keeps getting its own."""
    bridge = connected(target, clients, f"{unique}-bridge", bridge=True)
    plain = connected(target, clients, f"{unique}-plain")
    for client in (bridge, plain):
        assert client.subscribe((f"{unique}/#", 1)) == [1]
    bridge.publish(f"{unique}/from-bridge", b"own", qos=1)
    bridge.publish(f"{unique}/from-bridge", b"own 0", qos=0)
    plain.publish(f"{unique}/from-plain", b"other", qos=1)
    assert_next_is(bridge, b"other")
    assert [plain.next().payload for _ in range(3)] == [b"own", b"own 0", b"other"]
    assert bridge.messages.empty()


def test_a_bridge_gets_retained_publishes_with_the_retain_flag(
    target: Target, clients: list[Client], unique: str
) -> None:
    """Retain-as-published for a bridge, so that the broker behind it keeps them too; a
    plain subscriber already there gets them without the flag (MQTT 3.1.1 3.3.1.3)."""
    bridge = connected(target, clients, f"{unique}-bridge", bridge=True)
    plain = connected(target, clients, f"{unique}-plain")
    for client in (bridge, plain):
        assert client.subscribe((f"{unique}/#", 1)) == [1]
    pub = connected(target, clients, f"{unique}-pub")
    pub.publish(f"{unique}/kept", b"kept", qos=1, retain=True)
    pub.publish(f"{unique}/live", b"live", qos=1)
    got = [(m.payload, m.retain) for m in (bridge.next(), bridge.next())]
    assert got == [(b"kept", True), (b"live", False)]
    got = [(m.payload, m.retain) for m in (plain.next(), plain.next())]
    assert got == [(b"kept", False), (b"live", False)]
    pub.publish(f"{unique}/kept", b"", qos=1, retain=True)  # clears it, at the bridge's too
    assert [(m.payload, m.retain) for m in (bridge.next(), plain.next())] == [
        (b"", True),
        (b"", False),
    ]
    # a retained message reaches a new subscription like anyone's, the bridge's own too
    bridge.publish(f"{unique}/mine", b"mine", qos=1, retain=True)
    assert bridge.subscribe((f"{unique}/mine", 1)) == [1]
    got = [(m.payload, m.retain) for m in (bridge.next(),)]
    assert got == [(b"mine", True)]
    bridge.publish(f"{unique}/mine", b"", qos=1, retain=True)
    pub.publish(f"{unique}/end", b"end", qos=1)
    assert_next_is(bridge, b"end")


def test_empty_client_id_needs_a_clean_session(target: Target) -> None:
    raw = RawClient(target.mqtt)
    assert raw.connect("", clean=False) == b"\x00\x02"  # identifier rejected
    assert raw.closed_by_server()
    raw = RawClient(target.mqtt)
    assert raw.connect("", clean=True) == b"\x00\x00"
    raw.close()


@only
def test_a_client_that_never_sends_connect_is_dropped(strict: Target, target: Target) -> None:
    raw = RawClient(strict.mqtt)
    assert raw.closed_by_server(timeout=5.0)
    # and the handshake limit: a huge first packet is refused before it is read
    raw = RawClient(strict.mqtt)
    raw.send(b"\x10\xff\xff\xff\x7f")
    assert raw.closed_by_server()


@pytest.mark.parametrize(
    "first", [ack_packet(4, 1), publish_packet("a/b", b"x", qos=1, packet_id=1)]
)
def test_a_first_packet_other_than_connect_is_refused(target: Target, first: bytes) -> None:
    raw = RawClient(target.mqtt)
    raw.send(first)
    assert raw.closed_by_server(timeout=5.0)  # at once, not at the handshake timeout (10 s)


# -- subscribe and publish ------------------------------------------------------------------


def test_wildcards_and_granted_qos(target: Target, clients: list[Client], unique: str) -> None:
    sub = connected(target, clients, f"{unique}-s")
    assert sub.subscribe((f"{unique}/+/temp", 0), (f"{unique}/b/#", 1), (f"{unique}/x", 2)) == [
        0,
        1,
        2,
    ]
    pub = connected(target, clients, f"{unique}-p")
    pub.publish(f"{unique}/kitchen/temp", b"21", qos=1)
    pub.publish(f"{unique}/kitchen/humidity", b"no", qos=1)  # matches nothing
    pub.publish(f"{unique}/b/c/d", b"deep", qos=1)
    pub.publish(f"{unique}/b", b"parent", qos=1)  # "b/#" matches "b" itself
    pub.publish(f"{unique}/x", b"exact", qos=2)
    got = [sub.next() for _ in range(4)]
    assert [(m.topic, m.payload, m.qos) for m in got] == [
        (f"{unique}/kitchen/temp", b"21", 0),
        (f"{unique}/b/c/d", b"deep", 1),
        (f"{unique}/b", b"parent", 1),
        (f"{unique}/x", b"exact", 2),
    ]


def test_delivered_qos_is_the_lower_of_publish_and_subscription(
    target: Target, clients: list[Client], unique: str
) -> None:
    sub = connected(target, clients, f"{unique}-s")
    assert sub.subscribe((f"{unique}/q", 1)) == [1]
    pub = connected(target, clients, f"{unique}-p")
    for qos in (0, 1, 2):
        pub.publish(f"{unique}/q", b"%d" % qos, qos=qos)
    assert [(m.payload, m.qos) for m in (sub.next() for _ in range(3))] == [
        (b"0", 0),
        (b"1", 1),
        (b"2", 1),
    ]


def test_unsubscribe_stops_deliveries(target: Target, clients: list[Client], unique: str) -> None:
    sub = connected(target, clients, f"{unique}-s")
    sub.subscribe((f"{unique}/a", 1), (f"{unique}/marker", 1))
    sub.unsubscribe(f"{unique}/a")
    pub = connected(target, clients, f"{unique}-p")
    pub.publish(f"{unique}/a", b"gone", qos=1)
    pub.publish(f"{unique}/marker", b"marker", qos=1)
    assert_next_is(sub, b"marker")


@only  # mosquitto closes the connection instead, which MQTT 3.1.1 also allows
def test_invalid_filter_gets_a_failure_code(target: Target, unique: str) -> None:
    raw = RawClient(target.mqtt)
    assert raw.connect(unique) == b"\x00\x00"
    body = b"\x00\x07" + b"\x00\x05a/b#c\x01" + b"\x00\x03a/b\x01"
    raw.send(bytes((0x82, len(body))) + body)
    first, suback = raw.read()
    assert (first, suback) == (0x90, b"\x00\x07\x80\x01")
    raw.close()


def publish_qos2(raw: RawClient, topic: str, payload: bytes, packet_id: int) -> None:
    """The whole QoS 2 exchange: PUBLISH, PUBREC, PUBREL, PUBCOMP."""
    raw.send(publish_packet(topic, payload, qos=2, packet_id=packet_id))
    assert raw.read() == (0x50, packet_id.to_bytes(2, "big"))
    raw.send(ack_packet(6, packet_id))
    assert raw.read() == (0x70, packet_id.to_bytes(2, "big"))


def test_qos2_inbound_is_exactly_once(target: Target, clients: list[Client], unique: str) -> None:
    sub = connected(target, clients, f"{unique}-s")
    sub.subscribe((f"{unique}/q2", 2), (f"{unique}/marker", 2))
    raw = RawClient(target.mqtt)
    assert raw.connect(f"{unique}-raw") == b"\x00\x00"
    raw.send(publish_packet(f"{unique}/q2", b"once", qos=2, packet_id=7))
    assert raw.read() == (0x50, b"\x00\x07")  # PUBREC
    raw.send(publish_packet(f"{unique}/q2", b"once", qos=2, packet_id=7, dup=True))
    assert raw.read() == (0x50, b"\x00\x07")  # PUBREC again, not published again
    raw.send(ack_packet(6, 7))  # PUBREL
    assert raw.read() == (0x70, b"\x00\x07")  # PUBCOMP
    publish_qos2(raw, f"{unique}/marker", b"marker", 8)
    got = sub.next()
    assert (got.payload, got.qos) == (b"once", 2)
    assert_next_is(sub, b"marker")
    raw.close()


def test_qos2_publisher_reconnecting_between_pubrec_and_pubcomp(
    target: Target, clients: list[Client], unique: str
) -> None:
    sub = connected(target, clients, f"{unique}-s")
    sub.subscribe((f"{unique}/q2", 2), (f"{unique}/marker", 2))
    raw = RawClient(target.mqtt)
    assert raw.connect(f"{unique}-raw", clean=False) == b"\x00\x00"
    raw.send(publish_packet(f"{unique}/q2", b"once", qos=2, packet_id=9))
    assert raw.read() == (0x50, b"\x00\x09")
    raw.close()  # gone before PUBREL
    raw = RawClient(target.mqtt)
    assert raw.connect(f"{unique}-raw", clean=False) == b"\x01\x00"  # session present
    raw.send(publish_packet(f"{unique}/q2", b"once", qos=2, packet_id=9, dup=True))
    assert raw.read() == (0x50, b"\x00\x09")
    raw.send(ack_packet(6, 9))
    assert raw.read() == (0x70, b"\x00\x09")
    publish_qos2(raw, f"{unique}/marker", b"marker", 10)
    assert sub.next().payload == b"once"
    assert_next_is(sub, b"marker")
    raw.close()
    cleanup = RawClient(target.mqtt)
    cleanup.connect(f"{unique}-raw", clean=True)
    cleanup.close()


def test_unacknowledged_qos1_is_redelivered_to_a_persistent_session(
    target: Target, clients: list[Client], unique: str
) -> None:
    raw = RawClient(target.mqtt)
    assert raw.connect(f"{unique}-raw", clean=False) == b"\x00\x00"
    raw.send(subscribe_packet(1, (f"{unique}/r", 1)))
    assert raw.read() == (0x90, b"\x00\x01\x01")
    pub = connected(target, clients, f"{unique}-p")
    pub.publish(f"{unique}/r", b"keep me", qos=1)
    first, body = raw.read()
    assert first == 0x32 and body.endswith(b"keep me")  # QoS 1, not DUP; never PUBACKed
    raw.close()
    pub.publish(f"{unique}/r", b"while away", qos=1)
    again = RawClient(target.mqtt)
    assert again.connect(f"{unique}-raw", clean=False) == b"\x01\x00"
    got = [again.read() for _ in range(2)]
    assert got[0][0] == 0x3A and got[0][1].endswith(b"keep me")  # DUP set: a redelivery
    assert got[1][0] == 0x32 and got[1][1].endswith(b"while away")
    for _, body in got:
        topic_size = int.from_bytes(body[:2], "big")
        again.send(ack_packet(4, int.from_bytes(body[2 + topic_size : 4 + topic_size], "big")))
    again.close()
    cleanup = RawClient(target.mqtt)
    assert cleanup.connect(f"{unique}-raw", clean=True) == b"\x00\x00"
    cleanup.close()


def packet_id_of(publish: bytes) -> int:
    """The packet id of a QoS 1 or 2 PUBLISH body."""
    topic_size = int.from_bytes(publish[:2], "big")
    return int.from_bytes(publish[2 + topic_size : 4 + topic_size], "big")


def test_qos2_subscriber_reconnecting_between_pubrec_and_pubcomp(
    target: Target, clients: list[Client], unique: str
) -> None:
    raw = RawClient(target.mqtt)
    assert raw.connect(f"{unique}-raw", clean=False) == b"\x00\x00"
    raw.send(subscribe_packet(1, (f"{unique}/q2", 2)))
    assert raw.read() == (0x90, b"\x00\x01\x02")
    pub = connected(target, clients, f"{unique}-p")
    pub.publish(f"{unique}/q2", b"exactly once", qos=2)
    first, body = raw.read()
    assert first == 0x34 and body.endswith(b"exactly once")  # QoS 2
    packet_id = packet_id_of(body)
    raw.send(ack_packet(5, packet_id))  # PUBREC: the message is ours
    assert raw.read() == (0x62, packet_id.to_bytes(2, "big"))  # PUBREL
    raw.close()  # gone before PUBCOMP
    again = RawClient(target.mqtt)
    assert again.connect(f"{unique}-raw", clean=False) == b"\x01\x00"
    # the broker finishes the exchange: PUBREL again, and not the message again
    assert again.read() == (0x62, packet_id.to_bytes(2, "big"))
    again.send(ack_packet(7, packet_id))  # PUBCOMP
    pub.publish(f"{unique}/q2", b"marker", qos=2)
    first, body = again.read()
    assert first == 0x34 and body.endswith(b"marker")
    again.send(ack_packet(5, packet_id_of(body)))
    assert again.read()[0] == 0x62
    again.send(ack_packet(7, packet_id_of(body)))
    again.close()
    cleanup = RawClient(target.mqtt)
    assert cleanup.connect(f"{unique}-raw", clean=True) == b"\x00\x00"
    cleanup.close()


def test_persistent_session_keeps_subscriptions_and_messages(
    target: Target, clients: list[Client], unique: str
) -> None:
    sub = connected(target, clients, f"{unique}-s", clean=False)
    sub.subscribe((f"{unique}/p", 1))
    sub.close()
    pub = connected(target, clients, f"{unique}-p")
    pub.publish(f"{unique}/p", b"missed you", qos=1)
    back = Client(target.mqtt, f"{unique}-s", clean=False)
    clients.append(back)
    assert back.connect() == (0, True)
    got = back.next()
    assert (got.topic, got.payload, got.qos) == (f"{unique}/p", b"missed you", 1)
    back.close()
    fresh = Client(target.mqtt, f"{unique}-s", clean=True)
    clients.append(fresh)
    assert fresh.connect() == (0, False)  # a clean session discards the old one


def test_pingreq_gets_pingresp(target: Target, unique: str) -> None:
    raw = RawClient(target.mqtt)
    raw.connect(unique)
    raw.send(b"\xc0\x00")
    assert raw.read() == (0xD0, b"")
    raw.close()


# -- will, keepalive, takeover --------------------------------------------------------------


def test_will_on_abrupt_disconnect_only(target: Target, clients: list[Client], unique: str) -> None:
    watcher = connected(target, clients, f"{unique}-w")
    watcher.subscribe((f"{unique}/will", 1), (f"{unique}/marker", 1))
    polite = connected(target, clients, f"{unique}-a", will=(f"{unique}/will", b"polite", 1))
    polite.close()
    assert polite.disconnected.wait(TIMEOUT)
    rude = connected(target, clients, f"{unique}-b", will=(f"{unique}/will", b"rude", 1))
    rude.drop()
    got = watcher.next()
    assert (got.topic, got.payload) == (f"{unique}/will", b"rude")  # not "polite"


def test_keepalive_expiry_drops_the_client_and_sends_its_will(
    target: Target, clients: list[Client], unique: str
) -> None:
    watcher = connected(target, clients, f"{unique}-w")
    watcher.subscribe((f"{unique}/will", 0))
    raw = RawClient(target.mqtt)
    body = (
        b"\x00\x04MQTT\x04\x0e\x00\x01"
        + b"\x00"
        + bytes((len(unique) + 2,))
        + f"{unique}-k".encode()
    )
    will_topic = f"{unique}/will".encode()
    body += len(will_topic).to_bytes(2, "big") + will_topic + b"\x00\x04dead"
    raw.send(bytes((0x10, len(body))) + body)  # keepalive 1 s, will at QoS 1
    assert raw.read() == (0x20, b"\x00\x00")
    assert raw.closed_by_server(timeout=9.0)  # silent for 1.5 s
    assert watcher.next().payload == b"dead"


def test_same_client_id_takes_over(target: Target, clients: list[Client], unique: str) -> None:
    watcher = connected(target, clients, f"{unique}-w")
    watcher.subscribe((f"{unique}/will", 1))
    first = connected(target, clients, f"{unique}-same", will=(f"{unique}/will", b"taken", 1))
    second = connected(target, clients, f"{unique}-same")
    assert first.disconnected.wait(TIMEOUT)
    assert second.subscribe((f"{unique}/t", 1)) == [1]
    second.publish(f"{unique}/t", b"still here", qos=1)
    assert second.next().payload == b"still here"
    assert watcher.next().payload == b"taken"  # the first one did not DISCONNECT


# -- retained messages ----------------------------------------------------------------------


def test_retained_messages(target: Target, clients: list[Client], unique: str) -> None:
    pub = connected(target, clients, f"{unique}-p")
    pub.publish(f"{unique}/r/a", b"A", qos=1, retain=True)
    pub.publish(f"{unique}/r/b", b"B", qos=1, retain=True)
    sub = connected(target, clients, f"{unique}-s")
    sub.subscribe((f"{unique}/r/+", 1))
    got = sorted((m.topic, m.payload, m.retain) for m in (sub.next(), sub.next()))
    assert got == [(f"{unique}/r/a", b"A", True), (f"{unique}/r/b", b"B", True)]
    pub.publish(f"{unique}/r/a", b"live", qos=1)  # to a subscriber already there: no flag
    live = sub.next()
    assert (live.payload, live.retain) == (b"live", False)
    pub.publish(f"{unique}/r/a", b"", qos=1, retain=True)  # clears it
    pub.publish(f"{unique}/r/b", b"", qos=1, retain=True)
    assert [sub.next().payload for _ in range(2)] == [b"", b""]
    later = connected(target, clients, f"{unique}-l")
    later.subscribe((f"{unique}/#", 1))
    pub.publish(f"{unique}/marker", b"marker", qos=1)
    assert_next_is(later, b"marker")


# -- limits and bad input -------------------------------------------------------------------


def test_malformed_packet_drops_that_client_only(
    target: Target, clients: list[Client], unique: str
) -> None:
    bystander = connected(target, clients, f"{unique}-ok")
    bystander.subscribe((f"{unique}/t", 1))
    raw = RawClient(target.mqtt)
    raw.connect(f"{unique}-bad")
    raw.send(b"\x00\x00")  # packet type 0 is reserved
    assert raw.closed_by_server()
    raw = RawClient(target.mqtt)
    raw.connect(f"{unique}-bad2")
    raw.send(publish_packet(f"{unique}/+", b"wildcard topic"))
    assert raw.closed_by_server()
    raw = RawClient(target.mqtt)
    raw.send(b"\x10\x03\x00\x04M")  # a CONNECT whose protocol name overruns the packet
    assert raw.closed_by_server()
    bystander.publish(f"{unique}/t", b"fine", qos=1)
    assert bystander.next().payload == b"fine"


@only
def test_packet_size_limit(strict: Target, unique: str) -> None:
    raw = RawClient(strict.mqtt)
    assert raw.connect(unique) == b"\x00\x00"
    raw.send(publish_packet(f"{unique}/big", b"x" * 500))  # under 1024: fine
    raw.send(b"\xc0\x00")
    assert raw.read() == (0xD0, b"")
    raw.send(publish_packet(f"{unique}/big", b"x" * 2000))
    assert raw.closed_by_server()


# -- MQTT and AMQP are one broker -----------------------------------------------------------


@only
def test_mqtt_publish_reaches_an_amqp_queue(
    target: Target, clients: list[Client], unique: str
) -> None:
    amqp = pika.BlockingConnection(pika.URLParameters(target.amqp_url))
    try:
        channel = amqp.channel()
        channel.queue_declare(unique, auto_delete=True)
        channel.queue_bind(unique, "amq.topic", "sensors.*.temp")
        pub = connected(target, clients, f"{unique}-p")
        payload = bytes(range(256)) * 4
        pub.publish("sensors/kitchen/temp", payload, qos=1)
        method, properties, body = channel.basic_get(unique, auto_ack=True)
        assert method is not None
        assert (method.exchange, method.routing_key, body) == (
            "amq.topic",
            "sensors.kitchen.temp",
            payload,
        )
        assert properties.delivery_mode == 2  # QoS 1 is persistent, as RabbitMQ's MQTT
    finally:
        amqp.close()


@only
def test_amqp_publish_reaches_mqtt_subscribers(
    target: Target, clients: list[Client], unique: str
) -> None:
    sub = connected(target, clients, unique)
    sub.subscribe(("alarms/+/fire", 1))
    amqp = pika.BlockingConnection(pika.URLParameters(target.amqp_url))
    try:
        channel = amqp.channel()
        # each subscription is an ordinary queue that AMQP tools can see
        declared = channel.queue_declare(f"mqtt-subscription-{unique}qos1", passive=True)
        assert declared.method.consumer_count == 1
        channel.basic_publish("amq.topic", "alarms.hall.fire", b"\x00\xffhot")
    finally:
        amqp.close()
    got = sub.next()
    assert (got.topic, got.payload, got.qos) == ("alarms/hall/fire", b"\x00\xffhot", 1)


@only
def test_clean_session_queues_go_with_the_connection(
    target: Target, clients: list[Client], unique: str
) -> None:
    sub = connected(target, clients, unique)
    sub.subscribe((f"{unique}/x", 0))
    sub.close()
    assert sub.disconnected.wait(TIMEOUT)
    amqp = pika.BlockingConnection(pika.URLParameters(target.amqp_url))
    try:
        channel = amqp.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare(f"mqtt-subscription-{unique}qos0", passive=True)
        assert refused.value.reply_code == 404
    finally:
        amqp.close()


def test_a_large_payload_arrives_intact(target: Target, clients: list[Client], unique: str) -> None:
    sub = connected(target, clients, f"{unique}-s")
    sub.subscribe((f"{unique}/big", 1))
    pub = connected(target, clients, f"{unique}-p")
    payload = bytes(range(256)) * (8 * 1024 * 4)  # 8 MiB, read in many pieces
    pub.publish(f"{unique}/big", payload, qos=1)
    assert sub.next().payload == payload


def test_messages_arrive_in_order(target: Target, clients: list[Client], unique: str) -> None:
    sub = connected(target, clients, f"{unique}-s")
    sub.subscribe((f"{unique}/n", 1))
    pub = connected(target, clients, f"{unique}-p")
    for number in range(200):
        pub.paho.publish(f"{unique}/n", b"%d" % number, qos=1)
    pub.publish(f"{unique}/n", b"end", qos=1)
    got = [sub.next().payload for _ in range(201)]
    assert got == [b"%d" % n for n in range(200)] + [b"end"]


@only
def test_subscription_queue_deleted_by_amqp_comes_back_on_subscribe(
    target: Target, clients: list[Client], unique: str
) -> None:
    sub = connected(target, clients, unique)
    sub.subscribe((f"{unique}/a", 1))
    amqp = pika.BlockingConnection(pika.URLParameters(target.amqp_url))
    try:
        amqp.channel().queue_delete(f"mqtt-subscription-{unique}qos1")
    finally:
        amqp.close()
    assert sub.subscribe((f"{unique}/b", 1)) == [1]
    sub.publish(f"{unique}/a", b"old subscription, gone with its queue", qos=1)
    sub.publish(f"{unique}/b", b"new", qos=1)
    assert_next_is(sub, b"new")


# -- the command line -----------------------------------------------------------------------


@only
def test_run_with_mqtt_port_and_config_listener(tmp_path: Path, unique: str) -> None:
    with broker_process("--port", "0", "--mqtt-port", "0", "--store", "memory") as (_, log):
        port = int(log.wait_for("listening for mqtt").rsplit(":", 1)[1])
        client = Client(MQTTAddress("127.0.0.1", port), unique)
        assert client.connect() == (0, False)
        client.close()
    config = tmp_path / "warrenmq.toml"
    config.write_text(
        '[broker]\nstore = "memory"\n\n[[listeners]]\nport = 0\n\n'
        '[[listeners]]\nprotocol = "mqtt"\nport = 0\n'
    )
    with broker_process("--config", str(config)) as (_, log):
        port = int(log.wait_for("listening for mqtt").rsplit(":", 1)[1])
        client = Client(MQTTAddress("127.0.0.1", port), unique)
        assert client.connect() == (0, False)
        client.close()


@only
def test_persistent_session_survives_a_restart_with_the_disk_store(
    tmp_path: Path, unique: str
) -> None:
    """Its queue is durable and QoS 1 messages are persistent, so the disk store keeps both."""

    def settings() -> Settings:
        return Settings(host="127.0.0.1", amqp_port=0, mqtt_port=0, store="disk", data_dir=tmp_path)

    def address(running: RunningBroker) -> MQTTAddress:
        info = next(i for i in running.broker.listeners if i.spec.protocol == "mqtt")
        return MQTTAddress(info.host, info.port)

    with running_broker(settings()) as running:
        sub = Client(address(running), f"{unique}-s", clean=False)
        assert sub.connect() == (0, False)
        sub.subscribe((f"{unique}/#", 1))
        sub.close()
        pub = Client(address(running), f"{unique}-p")
        pub.connect()
        pub.publish(f"{unique}/x", b"across a restart", qos=1)
        pub.close()
    with running_broker(settings()) as running:
        back = Client(address(running), f"{unique}-s", clean=False)
        assert back.connect() == (0, True)
        got = back.next()
        assert (got.topic, got.payload, got.qos) == (f"{unique}/x", b"across a restart", 1)
        back.close()


@only
def test_retained_messages_survive_a_restart_with_the_disk_store(
    tmp_path: Path, unique: str
) -> None:
    def settings() -> Settings:
        return Settings(host="127.0.0.1", amqp_port=0, mqtt_port=0, store="disk", data_dir=tmp_path)

    def address(running: RunningBroker) -> MQTTAddress:
        info = next(i for i in running.broker.listeners if i.spec.protocol == "mqtt")
        return MQTTAddress(info.host, info.port)

    with running_broker(settings()) as running:
        pub = Client(address(running), f"{unique}-p")
        pub.connect()
        pub.publish(f"{unique}/kept", b"kept", qos=1, retain=True)
        pub.publish(f"{unique}/cleared", b"soon gone", qos=1, retain=True)
        pub.publish(f"{unique}/cleared", b"", qos=1, retain=True)
        pub.publish(f"{unique}/replaced", b"old", qos=1, retain=True)
        pub.publish(f"{unique}/replaced", b"new", qos=1, retain=True)
        pub.close()
    with running_broker(settings()) as running:
        sub = Client(address(running), f"{unique}-s")
        sub.connect()
        sub.subscribe((f"{unique}/#", 1))
        got = sorted((m.topic, m.payload, m.retain) for m in (sub.next(), sub.next()))
        assert got == [(f"{unique}/kept", b"kept", True), (f"{unique}/replaced", b"new", True)]
        sub.publish(f"{unique}/marker", b"marker", qos=1)
        assert_next_is(sub, b"marker")  # nothing for the cleared topic
        sub.close()


# -- permissions and vhosts -----------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded() -> Iterator[Target]:
    """Users with partial permissions, and a second vhost where guest may do everything."""
    access = Access.default()
    access.add_user("sub-only", "pw")
    access.set_permissions("sub-only", "/", ".*", "^mqtt-subscription-", ".*")
    access.add_user("pub-only", "pw")
    access.set_permissions("pub-only", "/", "", ".*", "")
    access.add_vhost("other")
    access.set_permissions("guest", "other", ".*", ".*", ".*")
    yield from _serve(access=access, loopback_users=frozenset())


@only
def test_publish_without_write_permission_disconnects(
    guarded: Target, clients: list[Client], unique: str
) -> None:
    client = Client(guarded.mqtt, unique, username="sub-only", password="pw")
    clients.append(client)
    assert client.connect()[0] == 0
    assert client.subscribe((f"{unique}/t", 1)) == [1]
    client.paho.publish(f"{unique}/t", b"refused", qos=1)
    assert client.disconnected.wait(TIMEOUT)


@only
def test_subscribe_without_read_permission_fails_that_filter(
    guarded: Target, clients: list[Client], unique: str
) -> None:
    client = Client(guarded.mqtt, unique, username="pub-only", password="pw")
    clients.append(client)
    assert client.connect()[0] == 0
    assert client.subscribe((f"{unique}/t", 1)) == [0x80]
    client.publish(f"{unique}/t", b"allowed", qos=1)  # PUBACKed: publishing is allowed


@only
def test_vhosts_are_separate(guarded: Target, clients: list[Client], unique: str) -> None:
    elsewhere = Client(guarded.mqtt, f"{unique}-o", username="other:guest", password="guest")
    clients.append(elsewhere)
    assert elsewhere.connect()[0] == 0
    elsewhere.subscribe((f"{unique}/t", 1))
    here = Client(guarded.mqtt, f"{unique}-h")  # anonymous: guest in the default vhost
    clients.append(here)
    assert here.connect()[0] == 0
    here.publish(f"{unique}/t", b"for /", qos=1)
    elsewhere.publish(f"{unique}/t", b"for other", qos=1)
    assert_next_is(elsewhere, b"for other")


# -- the memory alarm -----------------------------------------------------------------------


@only
def test_memory_alarm_holds_mqtt_publishers_back_and_loses_nothing(unique: str) -> None:
    """Above the limit an MQTT publisher is not read (no PUBACK) until consumers drain."""
    settings = Settings(
        host="127.0.0.1",
        amqp_port=0,
        mqtt_port=0,
        memory_limit=1_000_000,
        memory_gauge=lambda: 0,
        memory_check_interval=0.02,
    )
    with running_broker(settings) as running:
        info = next(i for i in running.broker.listeners if i.spec.protocol == "mqtt")
        amqp = pika.BlockingConnection(pika.URLParameters(running.url))
        try:
            channel = amqp.channel()
            channel.queue_declare(unique)
            channel.queue_bind(unique, "amq.topic", f"{unique}.held")
            publisher = Client(MQTTAddress(info.host, info.port), unique)
            assert publisher.connect() == (0, False)
            sent = [
                publisher.paho.publish(f"{unique}/held", b"x" * 300_000, qos=1) for _ in range(40)
            ]
            wait_until(
                amqp,
                lambda: running.broker.memory_alarm and not all(m.is_published() for m in sent),
                "the alarm to hold the publisher back",
            )
            bodies: list[bytes] = []
            wait_until(
                amqp,
                lambda: bodies.extend(get_bodies(channel, unique)) or len(bodies) == 40,
                "every message, once consumers drained the queue",
            )
            for message in sent:
                message.wait_for_publish(TIMEOUT)  # every one PUBACKed in the end
            publisher.close()
        finally:
            amqp.close()


def test_a_puback_before_a_bad_packet_still_counts(
    target: Target, clients: list[Client], unique: str
) -> None:
    """PUBACKs are settled together after each read: one followed by a malformed packet in
    the same read still settles its message (it is not sent again), the other comes back."""
    raw = RawClient(target.mqtt)
    assert raw.connect(f"{unique}-raw", clean=False) == b"\x00\x00"
    raw.send(subscribe_packet(1, (f"{unique}/a", 1)))
    assert raw.read() == (0x90, b"\x00\x01\x01")
    pub = connected(target, clients, f"{unique}-p")
    pub.publish(f"{unique}/a", b"acked", qos=1)
    pub.publish(f"{unique}/a", b"not acked", qos=1)
    first, body = raw.read()
    assert body.endswith(b"acked")
    assert raw.read()[1].endswith(b"not acked")
    raw.send(ack_packet(4, packet_id_of(body)) + b"\xf0\x00")  # PUBACK, then type 15
    assert raw.closed_by_server()
    again = RawClient(target.mqtt)
    assert again.connect(f"{unique}-raw", clean=False) == b"\x01\x00"
    first, body = again.read()
    assert first == 0x3A and body.endswith(b"not acked")  # DUP, and only this one
    again.send(ack_packet(4, packet_id_of(body)))
    pub.publish(f"{unique}/a", b"marker", qos=1)
    assert again.read()[1].endswith(b"marker")
    again.close()
    cleanup = RawClient(target.mqtt)
    assert cleanup.connect(f"{unique}-raw", clean=True) == b"\x00\x00"
    cleanup.close()


def test_qos2_deliveries_keep_their_packet_ids_across_a_reconnect(
    target: Target, clients: list[Client], unique: str
) -> None:
    """A QoS 2 PUBLISH not yet PUBREC'd is sent again with the packet id it had (MQTT 3.1.1
    4.4): a receiver that stored that id must recognise the resend."""
    raw = RawClient(target.mqtt)
    assert raw.connect(f"{unique}-raw", clean=False) == b"\x00\x00"
    raw.send(subscribe_packet(1, (f"{unique}/q2", 2)))
    assert raw.read() == (0x90, b"\x00\x01\x02")
    pub = connected(target, clients, f"{unique}-p")
    pub.publish(f"{unique}/q2", b"finished", qos=2)
    _, body = raw.read()  # one exchange finished first, so the next ids are not 1, 2
    raw.send(ack_packet(5, packet_id_of(body)))
    assert raw.read()[0] == 0x62
    raw.send(ack_packet(7, packet_id_of(body)))
    pub.publish(f"{unique}/q2", b"one", qos=2)
    pub.publish(f"{unique}/q2", b"two", qos=2)
    ids = []
    for payload in (b"one", b"two"):
        first, body = raw.read()
        assert first == 0x34 and body.endswith(payload)
        ids.append(packet_id_of(body))
    raw.close()  # neither PUBREC'd
    again = RawClient(target.mqtt)
    assert again.connect(f"{unique}-raw", clean=False) == b"\x01\x00"
    for payload, packet_id in zip((b"one", b"two"), ids, strict=True):
        first, body = again.read()
        assert first == 0x3C and body.endswith(payload)  # DUP
        assert packet_id_of(body) == packet_id
    for packet_id in ids:
        again.send(ack_packet(5, packet_id))
        assert again.read() == (0x62, packet_id.to_bytes(2, "big"))
        again.send(ack_packet(7, packet_id))
    again.close()
    cleanup = RawClient(target.mqtt)
    assert cleanup.connect(f"{unique}-raw", clean=True) == b"\x00\x00"
    cleanup.close()

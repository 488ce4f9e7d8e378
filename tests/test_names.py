"""Names as RabbitMQ takes them: queue and exchange names, routing keys and consumer tags are
any UTF-8 up to 255 bytes, and they come back to clients exactly as they were sent."""

from __future__ import annotations

import struct

import pytest
from pamqp import commands, frame
from pamqp.header import ContentHeader
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker
from pika_helpers import (
    BrokerLike,
    Collector,
    Connections,
    wait_until,
)
from raw_amqp import FRAME_BODY, FRAME_METHOD, RawAMQP, method_payload, raw_frame
from test_raw_protocol import assert_close, connected

pytestmark = pytest.mark.timeout(20)


def longest_name(unique: str) -> str:
    """A name of exactly 255 bytes of UTF-8, mostly three-byte characters."""
    name = f"{unique}-" + "队" * ((255 - len(unique) - 1) // 3)
    name += "x" * (255 - len(name.encode()))
    assert len(name.encode()) == 255
    return name


def test_utf8_names_round_trip(conns: Connections, ch: BlockingChannel, unique: str) -> None:
    queue = f"{unique}-qüeue-队列 !*?"
    exchange = f"{unique}-exchänge-交换"
    declared = ch.queue_declare(queue, exclusive=True)
    assert declared.method.queue == queue
    ch.exchange_declare(exchange, "topic", auto_delete=True)
    conns.track(exchange=exchange)
    ch.queue_bind(queue, exchange, routing_key="ключ.#")
    ch.basic_publish(exchange, "ключ.ü", b"got")
    method, _properties, body = ch.basic_get(queue, auto_ack=True)
    assert method is not None and body == b"got"
    assert (method.exchange, method.routing_key) == (exchange, "ключ.ü")

    ch.basic_publish(exchange, "ключ.ü", b"delivered")
    collector = Collector()
    tag = ch.basic_consume(queue, collector, auto_ack=True, consumer_tag="tag-标签")
    assert tag == "tag-标签"
    wait_until(ch.connection, lambda: len(collector) == 1, "the delivery")
    delivery = collector.deliveries[0].method
    assert (delivery.consumer_tag, delivery.exchange, delivery.routing_key) == (
        "tag-标签",
        exchange,
        "ключ.ü",
    )
    ch.basic_cancel(tag)
    assert ch.queue_delete(queue).method.message_count == 0


def test_names_of_255_bytes_of_utf8(ch: BlockingChannel, unique: str) -> None:
    queue = longest_name(unique)
    assert ch.queue_declare(queue, exclusive=True).method.queue == queue
    ch.basic_publish("", queue, b"longest")
    method, _properties, body = ch.basic_get(queue, auto_ack=True)
    assert method is not None and method.routing_key == queue and body == b"longest"


def test_error_naming_a_long_utf8_name_is_cut_to_255_bytes(conns: Connections, unique: str) -> None:
    """The reply text would be longer than a shortstr allows: RabbitMQ cuts it to 252 bytes and
    "..." (inside a character, so pika hands over the repr of the bytes); so does warrenmq."""
    with pytest.raises(ChannelClosedByBroker) as info:
        conns.channel().queue_declare(longest_name(unique), passive=True)
    assert info.value.reply_code == 404
    assert f"NOT_FOUND - no queue '{unique}-" in info.value.reply_text
    assert info.value.reply_text.endswith(("...", '..."'))


@pytest.mark.warrenmq_only
def test_cut_reply_text_stays_valid_utf8(conns: Connections, unique: str) -> None:
    """warrenmq cuts at a character boundary, so clients insisting on UTF-8 (pamqp) read it."""
    with pytest.raises(ChannelClosedByBroker) as info:
        conns.channel().queue_declare(longest_name(unique), passive=True)
    text = info.value.reply_text
    assert text.startswith(f"NOT_FOUND - no queue '{unique}-队队") and text.endswith("...")
    assert 253 <= len(text.encode()) <= 255


# -- basic.publish takes any bytes as exchange and routing key --------------------------------
#
# RabbitMQ checks every shortstr for UTF-8 except basic.publish's exchange and routing key:
# those are bytes, routed as they are and handed to consumers unchanged. pamqp (and so the
# raw client's frame reader) refuses them, so these tests read such frames undecoded.

BINARY = b".\xff\xfe\xc3"  # not UTF-8


def short(raw: bytes) -> bytes:
    return bytes((len(raw),)) + raw


def binary_publish(
    channel: int, exchange: bytes, routing_key: bytes, body: bytes, bits: int = 0, tail: bytes = b""
) -> bytes:
    """basic.publish (``bits``: 1 mandatory, 2 immediate) with any bytes as names, and content."""
    arguments = b"\x00\x00" + short(exchange) + short(routing_key) + bytes((bits,)) + tail
    header = ContentHeader(0, len(body), commands.Basic.Properties())
    return (
        raw_frame(FRAME_METHOD, channel, method_payload(60, 40, arguments))
        + frame.marshal(header, channel)
        + raw_frame(FRAME_BODY, channel, body)
    )


def read_shortstr(payload: bytes, offset: int) -> tuple[bytes, int]:
    end = offset + 1 + payload[offset]
    return payload[offset + 1 : end], end


#: where exchange and routing key start in the methods that carry them: (class, method) ->
#: (shortstrs, then fixed bytes before them)
ROUTED = {(60, 60): (1, 9), (60, 71): (0, 9), (60, 50): (1, 2)}  # deliver, get-ok, return


def read_routed(client: RawAMQP) -> tuple[tuple[int, int], bytes, bytes, bytes]:
    """The next deliver / get-ok / return and its content: (method, exchange, key, body)."""
    frame_type, _, payload = client.read_raw_frame()
    assert frame_type == FRAME_METHOD, payload
    method = struct.unpack_from(">HH", payload)
    assert method in ROUTED, f"expected a delivery, got {method}: {payload!r}"
    strings, fixed = ROUTED[method]
    offset = 4
    if method == (60, 50):
        offset += fixed
    for _ in range(strings):
        _, offset = read_shortstr(payload, offset)
    if method != (60, 50):
        offset += fixed
    exchange, offset = read_shortstr(payload, offset)
    routing_key, offset = read_shortstr(payload, offset)
    client.read_raw_frame()  # content header
    frame_type, _, body = client.read_raw_frame()
    assert frame_type == FRAME_BODY
    return method, exchange, routing_key, body


def test_binary_routing_key_routes_and_reaches_consumers_unchanged(
    broker: BrokerLike, unique: str
) -> None:
    key = f"bin.{unique}".encode() + BINARY
    with connected(broker) as client:
        client.open_channel(1)
        client.send_frame(commands.Queue.Declare(queue=unique, exclusive=True), 1)
        client.expect(commands.Queue.DeclareOk)
        bind = commands.Queue.Bind(
            queue=unique, exchange="amq.topic", routing_key=f"bin.{unique}.#"
        )
        client.send_frame(bind, 1)
        client.expect(commands.Queue.BindOk)
        client.send_frame(commands.Confirm.Select(), 1)
        client.expect(commands.Confirm.SelectOk)
        client.send(binary_publish(1, b"amq.topic", key, b"got"))
        client.expect(commands.Basic.Ack)
        client.send_frame(commands.Basic.Get(queue=unique, no_ack=True), 1)
        assert read_routed(client) == ((60, 71), b"amq.topic", key, b"got")

        client.send_frame(commands.Basic.Consume(queue=unique, no_ack=True), 1)
        client.expect(commands.Basic.ConsumeOk)
        client.send(binary_publish(1, b"amq.topic", key, b"delivered"))
        assert read_routed(client) == ((60, 60), b"amq.topic", key, b"delivered")
        client.expect(commands.Basic.Ack)
        client.close_gracefully()


def test_unroutable_mandatory_message_returns_with_its_binary_key(
    broker: BrokerLike, unique: str
) -> None:
    key = unique.encode() + BINARY
    with connected(broker) as client:
        client.open_channel(1)
        client.send(binary_publish(1, b"amq.direct", key, b"back", bits=1))
        assert read_routed(client) == ((60, 50), b"amq.direct", key, b"back")
        client.close_gracefully()


def test_publish_to_a_binary_exchange_name_is_not_found(broker: BrokerLike, unique: str) -> None:
    with connected(broker) as client:
        client.open_channel(1)
        client.send(binary_publish(1, f"{unique}-x".encode() + BINARY, b"k", b"lost"))
        frame_type, channel, payload = client.read_raw_frame()
        assert (frame_type, channel, payload[:4]) == (FRAME_METHOD, 1, b"\x00\x14\x00\x28")
        code = struct.unpack_from(">H", payload, 4)[0]
        text, offset = read_shortstr(payload, 6)
        assert code == 404 and text.startswith(f"NOT_FOUND - no exchange '{unique}-x".encode())
        assert struct.unpack_from(">HH", payload, offset) == (60, 40)


def test_immediate_publish_with_binary_names_is_not_implemented(
    broker: BrokerLike, unique: str
) -> None:
    """immediate=true is decoded the slow way (pamqp's classes): binary names pass there too,
    so the answer is RabbitMQ's 540, not a frame error."""
    with connected(broker) as client:
        client.open_channel(1)
        client.send(binary_publish(1, b"amq.direct", unique.encode() + BINARY, b"x", bits=2))
        close = client.expect_connection_close()
        assert_close(close, 540, "NOT_IMPLEMENTED - immediate=true", (60, 40))


@pytest.mark.warrenmq_only
def test_publish_decoded_the_slow_way_routes_binary_keys(broker: BrokerLike, unique: str) -> None:
    """A publish with a byte after its arguments skips the hot path (RabbitMQ refuses it with
    501; warrenmq, like pamqp, ignores the byte): routing is the same there."""
    key = f"bin.{unique}".encode() + BINARY
    with connected(broker) as client:
        client.open_channel(1)
        client.send_frame(commands.Queue.Declare(queue=unique, exclusive=True), 1)
        client.expect(commands.Queue.DeclareOk)
        bind = commands.Queue.Bind(queue=unique, exchange="amq.topic", routing_key="bin.#")
        client.send_frame(bind, 1)
        client.expect(commands.Queue.BindOk)
        client.send(binary_publish(1, b"amq.topic", key, b"slow", bits=1, tail=b"\x00"))
        client.send_frame(commands.Basic.Get(queue=unique, no_ack=True), 1)
        assert read_routed(client) == ((60, 71), b"amq.topic", key, b"slow")
        client.close_gracefully()


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(
            (50, 10, b"\x00\x00" + short(b"q" + BINARY) + b"\x04\x00\x00\x00\x00"), id="queue"
        ),
        pytest.param(
            (40, 10, b"\x00\x00" + short(b"x" + BINARY) + short(b"fanout") + b"\x00" + b"\x00" * 4),
            id="exchange",
        ),
        pytest.param(
            (50, 20, b"\x00\x00" + short(b"") + short(b"amq.direct") + short(BINARY) + b"\x00" * 5),
            id="binding-key",
        ),
        pytest.param(
            (60, 20, b"\x00\x00" + short(b"") + short(b"tag" + BINARY) + b"\x00" + b"\x00" * 4),
            id="consumer-tag",
        ),
    ],
)
def test_other_names_must_be_utf8(
    broker: BrokerLike, unique: str, arguments: tuple[int, int, bytes]
) -> None:
    class_id, method_id, fields = arguments
    with connected(broker) as client:
        client.open_channel(1)
        client.send(raw_frame(FRAME_METHOD, 1, method_payload(class_id, method_id, fields)))
        close = client.expect_connection_close(wait_closed=False)
        assert_close(close, 501, "FRAME_ERROR - Malformed UTF-8 in shortstr", (0, 0))

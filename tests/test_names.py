"""Names as RabbitMQ takes them: queue and exchange names, routing keys and consumer tags are
any UTF-8 up to 255 bytes, and they come back to clients exactly as they were sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker
from pika_helpers import (
    BrokerLike,
    Collector,
    Connections,
    confirmed_channel,
    open_connections,
    wait_until,
)

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def conns(broker: BrokerLike) -> Iterator[Connections]:
    with open_connections(broker) as connections:
        yield connections


@pytest.fixture
def ch(conns: Connections) -> BlockingChannel:
    return confirmed_channel(conns.open())


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

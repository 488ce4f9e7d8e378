"""kombu (pyamqp transport) against the broker: producer/consumer, SimpleQueue, ack/requeue,
topic routing, json serialization, and a server-generated consumer tag through py-amqp."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message
from kombu_helpers import drain_until
from pika_helpers import TIMEOUT, BrokerLike

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def conn(broker: BrokerLike) -> Iterator[Connection]:
    # confirm_publish: publish() returns once the broker has the message, so no races
    connection = Connection(
        broker.url.replace("amqp://", "pyamqp://"),
        connect_timeout=5,
        transport_options={"confirm_publish": True},
    )
    connection.connect()
    try:
        yield connection
    finally:
        connection.release()


@pytest.fixture
def cleanup(broker: BrokerLike) -> Iterator[list[tuple[str, str]]]:
    """Append ("queue" | "exchange", name) to have it deleted after the test."""
    names: list[tuple[str, str]] = []
    yield names
    if not names:
        return
    with Connection(broker.url.replace("amqp://", "pyamqp://")) as connection:
        channel = connection.default_channel
        for kind, name in names:
            if kind == "queue":
                channel.queue_delete(name)
            else:
                channel.exchange_delete(name)


class Received:
    """A kombu consumer callback recording (payload, message) pairs."""

    def __init__(self, ack: bool = False) -> None:
        self.ack = ack
        self.items: list[tuple[Any, Message]] = []

    def __call__(self, body: Any, message: Message) -> None:
        self.items.append((body, message))
        if self.ack:
            message.ack()

    @property
    def payloads(self) -> list[Any]:
        return [body for body, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)


def get_payloads(conn: Connection, queue: Queue) -> list[Any]:
    bound = queue(conn.default_channel)
    payloads = []
    while (message := bound.get(no_ack=True, accept=["json"])) is not None:
        payloads.append(message.payload)
    return payloads


def test_producer_publish_with_declare_and_consumer(conn: Connection, unique: str) -> None:
    exchange = Exchange(f"{unique}.ex", type="direct", auto_delete=True)
    queue = Queue(f"{unique}.q", exchange=exchange, routing_key="jobs", exclusive=True)
    producer = Producer(conn.default_channel)
    producer.publish(
        {"n": 1}, exchange=exchange, routing_key="jobs", declare=[queue], headers={"origin": "test"}
    )
    producer.publish({"n": 2}, exchange=exchange, routing_key="other-key")
    producer.publish({"n": 3}, exchange=exchange, routing_key="jobs")

    received = Received(ack=True)
    with Consumer(conn.default_channel, queues=[queue], callbacks=[received], accept=["json"]):
        drain_until(conn, lambda: len(received) == 2, "two messages")
    assert received.payloads == [{"n": 1}, {"n": 3}]
    first = received.items[0][1]
    assert first.headers == {"origin": "test"}
    assert first.delivery_info["routing_key"] == "jobs"
    assert first.delivery_info["exchange"] == f"{unique}.ex"
    assert first.delivery_info["redelivered"] is False


def test_publish_to_queue_through_default_exchange(conn: Connection, unique: str) -> None:
    queue = Queue(unique, exclusive=True)
    queue(conn.default_channel).declare()
    producer = Producer(conn.default_channel)
    producer.publish(["a", "list"], routing_key=unique)
    assert get_payloads(conn, queue) == [["a", "list"]]


def test_simple_queue_put_get(
    conn: Connection, unique: str, cleanup: list[tuple[str, str]]
) -> None:
    cleanup.extend([("queue", unique), ("exchange", unique)])
    simple = conn.SimpleQueue(unique)
    try:
        for i in range(3):
            simple.put({"i": i})
        assert simple.qsize() == 3
        got = []
        for _ in range(3):
            message = simple.get(timeout=TIMEOUT)
            got.append(message.payload)
            message.ack()
        assert got == [{"i": 0}, {"i": 1}, {"i": 2}]
        with pytest.raises(simple.Empty):
            simple.get_nowait()
        simple.put(["last"])
        message = simple.get(timeout=TIMEOUT)
        assert message.payload == ["last"]
        message.ack()
    finally:
        simple.close()


def test_message_requeue_and_reject(conn: Connection, unique: str) -> None:
    queue = Queue(unique, exclusive=True)
    queue(conn.default_channel).declare()
    producer = Producer(conn.default_channel)
    producer.publish({"m": "retry me"}, routing_key=unique)
    producer.publish({"m": "reject me"}, routing_key=unique)

    received = Received()
    with Consumer(conn.default_channel, queues=[queue], callbacks=[received], accept=["json"]):
        drain_until(conn, lambda: len(received) == 2, "first deliveries")
        (_, retry), (_, reject) = received.items
        reject.reject()
        retry.requeue()
        drain_until(conn, lambda: len(received) == 3, "the requeued message")
        body, again = received.items[2]
        assert body == {"m": "retry me"}
        assert again.delivery_info["redelivered"] is True
        again.ack()
        assert again.acknowledged
        ok = conn.default_channel.queue_declare(unique, passive=True)
        assert (ok.message_count, ok.consumer_count) == (0, 1)


def test_unacked_kombu_messages_return_when_connection_closes(
    broker: BrokerLike, unique: str, cleanup: list[tuple[str, str]]
) -> None:
    url = broker.url.replace("amqp://", "pyamqp://")
    queue = Queue(unique, auto_delete=False)
    cleanup.append(("queue", unique))
    with Connection(url) as first:
        queue(first.default_channel).declare()
        Producer(first.default_channel).publish({"k": "v"}, routing_key=unique)
        received = Received()
        with Consumer(first.default_channel, queues=[queue], callbacks=[received], accept=["json"]):
            drain_until(first, lambda: len(received) == 1, "the delivery")
    with Connection(url) as second:
        received = Received(ack=True)
        with Consumer(
            second.default_channel, queues=[queue], callbacks=[received], accept=["json"]
        ):
            drain_until(second, lambda: len(received) == 1, "the redelivery")
        assert received.payloads == [{"k": "v"}]
        assert received.items[0][1].delivery_info["redelivered"] is True


def test_topic_routing(conn: Connection, unique: str) -> None:
    exchange = Exchange(f"{unique}.topic", type="topic", auto_delete=True)
    patterns = {"star": "a.*", "hash": "a.#", "tail": "#.b"}
    queues = {
        name: Queue(f"{unique}.{name}", exchange=exchange, routing_key=pattern, exclusive=True)
        for name, pattern in patterns.items()
    }
    producer = Producer(conn.default_channel, exchange=exchange)
    producer.declare()
    for queue in queues.values():
        queue(conn.default_channel).declare()
    for key in ("a", "a.b", "a.c", "x.b", "a.b.c", "b"):
        producer.publish({"key": key}, routing_key=key)
    got = {name: [p["key"] for p in get_payloads(conn, q)] for name, q in queues.items()}
    assert got == {
        "star": ["a.b", "a.c"],
        "hash": ["a", "a.b", "a.c", "a.b.c"],
        "tail": ["a.b", "x.b", "b"],
    }


def test_json_serialization_round_trip(conn: Connection, unique: str) -> None:
    payload = {
        "text": "héllo wörld ✓",
        "int": 2**40,
        "float": 3.25,
        "none": None,
        "bools": [True, False],
        "nested": {"list": [1, "two", {"three": 3.0}], "empty": {}},
    }
    queue = Queue(unique, exclusive=True)
    queue(conn.default_channel).declare()
    Producer(conn.default_channel).publish(payload, routing_key=unique)  # json by default
    received = Received(ack=True)
    with Consumer(conn.default_channel, queues=[queue], callbacks=[received], accept=["json"]):
        drain_until(conn, lambda: len(received) == 1, "the json message")
    body, message = received.items[0]
    assert body == payload
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert json.loads(message.body) == payload


def test_passive_declare_of_missing_queue_is_channel_error(conn: Connection, unique: str) -> None:
    channel = conn.channel()
    with pytest.raises(conn.channel_errors) as info:
        Queue(unique, channel=channel).queue_declare(passive=True)
    assert info.value.reply_code == 404
    assert f"no queue '{unique}'" in info.value.reply_text
    # the connection survives a channel error
    queue = Queue(f"{unique}.ok", exclusive=True)
    queue(conn.default_channel).declare()
    Producer(conn.default_channel).publish({"still": "fine"}, routing_key=f"{unique}.ok")
    assert get_payloads(conn, queue) == [{"still": "fine"}]


def test_server_generated_consumer_tag(conn: Connection, unique: str) -> None:
    """kombu always names its consumers; ask py-amqp for a server-named one instead."""
    channel = conn.default_channel
    channel.queue_declare(unique, exclusive=True)
    deliveries: list[Any] = []
    tag = channel.basic_consume(unique, consumer_tag="", no_ack=True, callback=deliveries.append)
    assert tag.startswith("amq.ctag-")
    other = channel.basic_consume(unique, consumer_tag="", no_ack=True, callback=deliveries.append)
    assert other.startswith("amq.ctag-") and other != tag
    channel.basic_cancel(other)
    channel.basic_publish(channel.prepare_message(b"raw"), exchange="", routing_key=unique)
    drain_until(conn, lambda: len(deliveries) == 1, "a delivery")
    assert deliveries[0].body == b"raw"
    assert deliveries[0].delivery_info["consumer_tag"] == tag
    channel.basic_cancel(tag)

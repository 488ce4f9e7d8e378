"""Priority queues (``x-max-priority``): ready messages go out highest priority first, in publish
order within a priority. A message without a priority counts as 0, one above the queue's maximum
counts as the maximum (its ``priority`` property is delivered unchanged). Requeued messages go
back to their place within their priority. RabbitMQ 3.10 accepts ``x-max-priority`` from 0 to
255 (0 gives a plain FIFO queue); bad values are in test_queue_arguments.py.

Also through kombu (``Queue(..., max_priority=...)``), as kombu's own integration tests for the
py-amqp transport do it, with publisher confirms instead of their sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pika
import pytest
from kombu import Connection, Consumer, Producer, Queue
from kombu.message import Message
from kombu_helpers import drain_until
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import (
    BrokerLike,
    Collector,
    Connections,
    get_all,
    get_bodies,
    wait_for_ready_count,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0


def publish_prioritised(
    ch: BlockingChannel, queue: str, priorities: list[int | None], first: int = 0
) -> None:
    """Publish one message per priority, the body naming its position and priority."""
    for n, priority in enumerate(priorities, start=first):
        properties = pika.BasicProperties(priority=priority)
        ch.basic_publish("", queue, f"m{n}:{priority}".encode(), properties)


BACKLOG = [1, 5, 10, 0, None, 5, 20, 255, 1]
BACKLOG_ORDER = [
    b"m2:10",
    b"m6:20",
    b"m7:255",
    b"m1:5",
    b"m5:5",
    b"m0:1",
    b"m8:1",
    b"m3:0",
    b"m4:None",
]


def test_basic_get_takes_highest_priority_first(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True, arguments={"x-max-priority": 10})
    publish_prioritised(ch, unique, BACKLOG)
    messages = get_all(ch, unique)
    assert [body for _m, _p, body in messages] == BACKLOG_ORDER
    # above the maximum is treated as the maximum, but delivered as published
    assert [p.priority for _m, p, _b in messages] == [10, 20, 255, 5, 5, 1, 1, 0, None]


def test_consumer_gets_the_backlog_by_priority(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ch.queue_declare(unique, arguments={"x-max-priority": 10})
    conns.track(queue=unique)
    publish_prioritised(ch, unique, BACKLOG)
    consumer = conns.channel()
    consumer.basic_qos(prefetch_count=1)  # the order is decided as each one is sent
    got = Collector(ack=True)
    consumer.basic_consume(unique, got)
    wait_until(consumer.connection, lambda: len(got) == len(BACKLOG), "the backlog", WAIT)
    assert got.bodies == BACKLOG_ORDER


def test_prefetch_lets_a_later_higher_priority_message_overtake(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ch.queue_declare(unique, arguments={"x-max-priority": 5})
    conns.track(queue=unique)
    consumer = conns.channel()
    consumer.basic_qos(prefetch_count=1)
    got = Collector()
    consumer.basic_consume(unique, got)
    publish_prioritised(ch, unique, [None])
    wait_until(consumer.connection, lambda: len(got) == 1, "the first message", WAIT)
    publish_prioritised(ch, unique, [None, 1, None, 5], first=1)  # they wait: consumer full
    for n in range(2, 6):
        got.deliveries[-1].ack()
        wait_until(consumer.connection, lambda n=n: len(got) == n, f"delivery {n}", WAIT)
    got.deliveries[-1].ack()
    assert got.bodies == [b"m0:None", b"m4:5", b"m2:1", b"m1:None", b"m3:None"]


def test_max_priority_zero_is_a_plain_queue(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True, arguments={"x-max-priority": 0})
    publish_prioritised(ch, unique, [1, 5, 0, None, 255])
    assert get_bodies(ch, unique) == [b"m0:1", b"m1:5", b"m2:0", b"m3:None", b"m4:255"]


def test_requeued_message_goes_back_to_its_place_in_its_priority(
    ch: BlockingChannel, unique: str
) -> None:
    ch.queue_declare(unique, exclusive=True, arguments={"x-max-priority": 5})
    publish_prioritised(ch, unique, [1, 5, 1, 5])
    first, _p, first_body = ch.basic_get(unique)
    second, _p, second_body = ch.basic_get(unique)
    assert (first_body, second_body) == (b"m1:5", b"m3:5")
    ch.basic_nack(second.delivery_tag, requeue=True)
    ch.basic_nack(first.delivery_tag, requeue=True)
    wait_for_ready_count(ch, unique, 4, WAIT)
    assert get_bodies(ch, unique) == [b"m1:5", b"m3:5", b"m0:1", b"m2:1"]


def test_max_length_drops_from_the_head_highest_priority_first(
    ch: BlockingChannel, unique: str
) -> None:
    """RabbitMQ's documented behaviour: the head of a priority queue is its highest-priority
    message, and drop-head drops that one, making way for lower-priority ones."""
    ch.queue_declare(unique, exclusive=True, arguments={"x-max-priority": 10, "x-max-length": 3})
    publish_prioritised(ch, unique, [1, 5, 10, 0, 2])
    assert get_bodies(ch, unique) == [b"m4:2", b"m0:1", b"m3:0"]


# -- through kombu ----------------------------------------------------------------------------


@pytest.fixture
def kombu_conn(broker: BrokerLike) -> Iterator[Connection]:
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


def publish_with_priorities(
    conn: Connection, queue: Queue, messages: list[tuple[str, int]]
) -> None:
    producer = Producer(conn.default_channel)
    for text, priority in messages:
        producer.publish(
            {"msg": text},
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            declare=[queue],
            serializer="json",
            priority=priority,
            retry=True,
        )


def consume(conn: Connection, queue: Queue, count: int, ack: bool) -> list[Message]:
    received: list[Message] = []

    def on_message(_body: Any, message: Message) -> None:
        received.append(message)
        if ack:
            message.ack()

    with Consumer(conn, [queue], accept=["json"], callbacks=[on_message]):
        drain_until(conn, lambda: len(received) == count, f"{count} messages", WAIT)
    return received


def test_kombu_priority_publish_consume(
    kombu_conn: Connection, conns: Connections, unique: str
) -> None:
    queue = Queue(unique, routing_key=unique, max_priority=10)
    conns.track(queue=unique)
    publish_with_priorities(kombu_conn, queue, [("first", 3), ("second", 6), ("third", 3)])
    received = consume(kombu_conn, queue, 3, ack=True)
    assert [m.payload["msg"] for m in received] == ["second", "first", "third"]
    assert [m.properties["priority"] for m in received] == [6, 3, 3]


def test_kombu_priority_requeue_consume(
    kombu_conn: Connection, conns: Connections, unique: str
) -> None:
    queue = Queue(unique, routing_key=unique, max_priority=10)
    conns.track(queue=unique)
    publish_with_priorities(kombu_conn, queue, [("first", 3), ("second", 6), ("third", 3)])
    received = consume(kombu_conn, queue, 3, ack=False)
    for message in received:
        message.requeue()
    publish_with_priorities(kombu_conn, queue, [("fourth", 9)])

    received = consume(kombu_conn, queue, 4, ack=True)
    assert [m.payload["msg"] for m in received] == ["fourth", "second", "first", "third"]
    assert [m.delivery_info["redelivered"] for m in received] == [False, True, True, True]


def test_kombu_simple_queue_priority(
    kombu_conn: Connection, conns: Connections, unique: str
) -> None:
    conns.track(queue=unique, exchange=unique)  # SimpleQueue: a direct exchange of its name
    with closing(kombu_conn.SimpleQueue(unique, queue_opts={"max_priority": 10})) as simple:
        for text, priority in [("first", 1), ("second", 7), ("third", 1)]:
            simple.put({"msg": text}, priority=priority, retry=True)
        for expected in ["second", "first", "third"]:
            message = simple.get(timeout=WAIT)
            message.ack()
            assert message.payload == {"msg": expected}

"""Message TTL: the ``x-message-ttl`` queue argument and the per-message ``expiration`` property
(milliseconds, as a string); the lower of the two applies. Expired messages are never delivered
(neither by basic.get nor to a consumer) and leave the counts a passive declare reports; a TTL of
0 drops a message at once unless a consumer can take it right away. RabbitMQ 3.10 expires
messages only at the head of a queue (rabbitmq-server#2074); warrenmq also expires those behind a
longer-lived one (``warrenmq_only``).

Expiry is observed by waiting for a count to drop, never by sleeping for the TTL.
"""

from __future__ import annotations

import time

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import (
    Collector,
    Connections,
    declare_fanout_sink,
    get_all,
    get_bodies,
    publish_all,
    ready_count,
    wait_for_ready_count,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0
#: a queue/message TTL that outlives any test, to show the other, shorter one applies
LONG_TTL = 60_000
#: RabbitMQ's expiry timer may fire a millisecond or so either side of the TTL
CLOCK_SLACK = 0.02


def expiring(milliseconds: int | str) -> pika.BasicProperties:
    return pika.BasicProperties(expiration=str(milliseconds))


def test_queue_ttl_drops_ready_messages_after_the_ttl(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True, arguments={"x-message-ttl": 300})
    start = time.monotonic()
    publish_all(ch, "", unique, [b"a", b"b", b"c"])
    wait_for_ready_count(ch, unique, 0, WAIT)
    assert time.monotonic() - start >= 0.3 - CLOCK_SLACK, "expired before its TTL"
    assert ch.basic_get(unique)[0] is None


def test_expired_message_is_not_returned_by_basic_get(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True)
    start = time.monotonic()
    ch.basic_publish("", unique, b"short-lived", expiring(200))
    ch.basic_publish("", unique, b"kept")
    wait_for_ready_count(ch, unique, 1, WAIT)
    assert time.monotonic() - start >= 0.2 - CLOCK_SLACK, "expired before its TTL"
    assert get_bodies(ch, unique) == [b"kept"]


@pytest.mark.parametrize(
    ("queue_ttl", "expiration"),
    [(LONG_TTL, 200), (200, LONG_TTL)],
    ids=["message-ttl-lower", "queue-ttl-lower"],
)
def test_lower_of_queue_and_message_ttl_wins(
    ch: BlockingChannel, unique: str, queue_ttl: int, expiration: int
) -> None:
    ch.queue_declare(unique, exclusive=True, arguments={"x-message-ttl": queue_ttl})
    ch.basic_publish("", unique, b"x", expiring(expiration))
    wait_for_ready_count(ch, unique, 0, WAIT)
    assert ch.basic_get(unique)[0] is None


def test_expiration_after_every_other_property_applies(ch: BlockingChannel, unique: str) -> None:
    """The expiration is found behind the properties that precede it in the content header."""
    ch.queue_declare(unique, exclusive=True)
    full = pika.BasicProperties(
        content_type="text/plain",
        content_encoding="identity",
        headers={"nested": {"list": [1, "two"]}, "text": "x" * 300},
        delivery_mode=2,
        priority=4,
        correlation_id="c" * 255,
        reply_to="somewhere",
        expiration="200",
        message_id="id",
    )
    ch.basic_publish("", unique, b"short-lived", full)
    ch.basic_publish("", unique, b"kept", pika.BasicProperties(correlation_id="c", priority=1))
    wait_for_ready_count(ch, unique, 1, WAIT)
    assert get_bodies(ch, unique) == [b"kept"]


@pytest.mark.parametrize("where", ["queue", "message"])
def test_ttl_zero_without_consumer_drops_at_once(
    ch: BlockingChannel, unique: str, where: str
) -> None:
    """Once the publish is confirmed the message is already gone: no wait needed."""
    arguments = {"x-message-ttl": 0} if where == "queue" else None
    properties = expiring(0) if where == "message" else None
    ch.queue_declare(unique, exclusive=True, arguments=arguments)
    ch.basic_publish("", unique, b"now-or-never", properties)
    assert ready_count(ch, unique) == 0
    assert ch.basic_get(unique)[0] is None


@pytest.mark.parametrize("where", ["queue", "message"])
def test_ttl_zero_goes_to_a_waiting_consumer(
    conns: Connections, ch: BlockingChannel, unique: str, where: str
) -> None:
    arguments = {"x-message-ttl": 0} if where == "queue" else None
    properties = expiring(0) if where == "message" else None
    ch.queue_declare(unique, arguments=arguments)
    conns.track(queue=unique)
    consumer = conns.channel()
    got = Collector(ack=True)
    consumer.basic_consume(unique, got)
    ch.basic_publish("", unique, b"now-or-never", properties)
    wait_until(consumer.connection, lambda: len(got) == 1, "the TTL-0 message", WAIT)
    assert got.bodies == [b"now-or-never"]
    assert got.deliveries[0].properties.expiration == ("0" if where == "message" else None)


def test_ttl_zero_is_dropped_when_the_consumer_has_no_credit(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ch.queue_declare(unique)
    conns.track(queue=unique)
    consumer = conns.channel()
    consumer.basic_qos(prefetch_count=1)
    got = Collector()
    consumer.basic_consume(unique, got)
    ch.basic_publish("", unique, b"first")
    wait_until(consumer.connection, lambda: len(got) == 1, "the first message", WAIT)

    ch.basic_publish("", unique, b"now-or-never", expiring(0))  # consumer full: dropped
    assert ready_count(ch, unique) == 0
    got.deliveries[0].ack()
    ch.basic_publish("", unique, b"after")
    wait_until(consumer.connection, lambda: len(got) == 2, "the message after", WAIT)
    assert got.bodies == [b"first", b"after"]


def test_consumer_receives_message_with_ttl_and_its_expiration(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    """A queue TTL adds no ``expiration`` property; a message's own one is delivered as sent."""
    ch.queue_declare(unique, arguments={"x-message-ttl": LONG_TTL})
    conns.track(queue=unique)
    consumer = conns.channel()
    got = Collector(ack=True)
    consumer.basic_consume(unique, got)
    ch.basic_publish("", unique, b"queue-ttl-only")
    ch.basic_publish("", unique, b"own-ttl", expiring(5000))
    wait_until(consumer.connection, lambda: len(got) == 2, "both messages", WAIT)
    assert got.bodies == [b"queue-ttl-only", b"own-ttl"]
    assert [d.properties.expiration for d in got.deliveries] == [None, "5000"]


def test_expired_message_is_skipped_when_the_consumer_gets_credit(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ch.queue_declare(unique)
    conns.track(queue=unique)
    consumer = conns.channel()
    consumer.basic_qos(prefetch_count=1)
    got = Collector()
    consumer.basic_consume(unique, got)
    ch.basic_publish("", unique, b"m0")
    wait_until(consumer.connection, lambda: len(got) == 1, "m0", WAIT)
    ch.basic_publish("", unique, b"m1-expires", expiring(200))
    ch.basic_publish("", unique, b"m2")
    wait_for_ready_count(ch, unique, 1, WAIT)  # m1 expired at the head while m0 was unacked

    got.deliveries[0].ack()
    wait_until(consumer.connection, lambda: len(got) == 2, "the next message", WAIT)
    assert got.bodies == [b"m0", b"m2"]


def test_requeued_message_past_its_ttl_is_dead_lettered_as_expired(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    """A message held unacked past its TTL expires as soon as it is requeued."""
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    ch.queue_declare(
        unique, exclusive=True, arguments={"x-message-ttl": 300, "x-dead-letter-exchange": dlx}
    )
    publish_all(ch, "", unique, [b"held", b"waiting"])
    held, _properties, _body = ch.basic_get(unique)
    assert held is not None
    wait_for_ready_count(ch, dlx, 1, WAIT)  # "waiting" expired; "held" is older still

    ch.basic_nack(held.delivery_tag, requeue=True)
    wait_for_ready_count(ch, dlx, 2, WAIT)
    assert ready_count(ch, unique) == 0
    dead = get_all(ch, dlx)
    assert [body for _method, _properties, body in dead] == [b"waiting", b"held"]
    assert [p.headers["x-death"][0]["reason"] for _m, p, _b in dead] == ["expired", "expired"]


@pytest.mark.warrenmq_only
@pytest.mark.parametrize("long_ttl_from", ["queue", "message"])
def test_short_ttl_behind_a_long_one_expires_on_time(
    conns: Connections, ch: BlockingChannel, unique: str, long_ttl_from: str
) -> None:
    """RabbitMQ only expires the head of a queue, so a short-lived message waits behind a
    long-lived one (rabbitmq-server#2074); warrenmq dead-letters it within about a second of its
    expiry (the wait allows more for a loaded machine)."""
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    arguments: dict[str, object] = {"x-dead-letter-exchange": dlx}
    if long_ttl_from == "queue":
        arguments["x-message-ttl"] = LONG_TTL
    ch.queue_declare(unique, exclusive=True, arguments=arguments)
    long_lived = expiring(LONG_TTL) if long_ttl_from == "message" else None
    ch.basic_publish("", unique, b"long", long_lived)
    ch.basic_publish("", unique, b"short", expiring(200))
    wait_for_ready_count(ch, dlx, 1, 2.5)
    assert ready_count(ch, unique) == 1
    [(_method, properties, body)] = get_all(ch, dlx)
    assert body == b"short"
    [death] = properties.headers["x-death"]
    assert (death["reason"], death["queue"], death["original-expiration"]) == (
        "expired",
        unique,
        "200",
    )
    assert get_bodies(ch, unique) == [b"long"]


@pytest.mark.warrenmq_only
def test_short_ttl_behind_a_long_one_leaves_the_count(ch: BlockingChannel, unique: str) -> None:
    """Without a dead-letter exchange the expired message just leaves the ready count."""
    ch.queue_declare(unique, exclusive=True)
    ch.basic_publish("", unique, b"long", expiring(LONG_TTL))
    ch.basic_publish("", unique, b"short", expiring(200))
    ch.basic_publish("", unique, b"forever")
    wait_for_ready_count(ch, unique, 2, 2.5)
    assert get_bodies(ch, unique) == [b"long", b"forever"]

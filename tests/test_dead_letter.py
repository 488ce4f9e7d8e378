"""Dead-lettering (``x-dead-letter-exchange``, ``x-dead-letter-routing-key``): messages rejected
or nacked with requeue=false, expired, or dropped/refused by a length limit are republished to
the queue's dead-letter exchange, with RabbitMQ 3.10's headers:

- ``x-death``: an array of tables, one per (queue, reason), the latest death first. Each table has
  ``count`` (long), ``reason`` (``rejected`` | ``expired`` | ``maxlen``), ``queue``, ``time``
  (timestamp, seconds), ``exchange`` and ``routing-keys`` (the publish routing key then the CC
  keys; BCC never shows) of the message as it was published to that queue, plus
  ``original-expiration`` if it had a per-message TTL. A death for a (queue, reason) already
  listed increments that table's count (keeping its exchange and routing keys) and moves it first.
- ``x-first-death-reason`` / ``-queue`` / ``-exchange``: set at the first death, never changed.
- the ``expiration`` property is removed; a dead-letter routing key replaces the routing key and
  drops the CC header.

With three or more tables, RabbitMQ 3.10-3.12 also reverse the order of the older tables at each
death (rabbit_dead_letter:group_by_queue_and_reason/1 folds into a reversed list; 3.13's message
containers keep them most recent first). The tests assert only what both agree on: the latest
first, and the exact order of two tables.

Cycles: a message dead-lettered back to a queue it died in earlier is dropped, unless one of the
deaths since then was a rejection (a client decided; a retry loop is legitimate).
"""

from __future__ import annotations

import datetime
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import (
    Connections,
    declare_fanout_sink,
    get_all,
    get_bodies,
    ready_count,
    settle,
    wait_for_ready_count,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0
TTL = 200  # milliseconds, for the queues messages expire from


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def deaths(properties: pika.BasicProperties) -> list[dict[str, Any]]:
    """The x-death tables, each without its ``time``, which is checked to be a recent timestamp
    (a datetime with the pika client)."""
    tables = []
    for table in properties.headers["x-death"]:
        table = dict(table)
        when = table.pop("time")
        assert isinstance(when, datetime.datetime), f"time is {when!r}, not a timestamp"
        assert abs(when - utc_now()) < datetime.timedelta(minutes=1)
        tables.append(table)
    return tables


def first_death(properties: pika.BasicProperties) -> tuple[str, str, str]:
    headers = properties.headers
    return (
        headers["x-first-death-reason"],
        headers["x-first-death-queue"],
        headers["x-first-death-exchange"],
    )


def get_one(ch: BlockingChannel, queue: str) -> tuple[pika.spec.Basic.GetOk, pika.BasicProperties]:
    """basic.get (to be settled by the caller), waiting for a message to arrive."""
    got: list[tuple[Any, Any, bytes]] = []

    def arrived() -> bool:
        got[:] = [ch.basic_get(queue)]
        return got[0][0] is not None

    wait_until(ch.connection, arrived, f"a message in {queue}", WAIT)
    method, properties, _body = got[0]
    return method, properties


# -- rejection --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["basic.reject", "basic.nack", "basic.nack multiple"])
def test_rejected_message_is_dead_lettered_with_x_death(
    conns: Connections, ch: BlockingChannel, unique: str, how: str
) -> None:
    exchange = f"{unique}-topic"
    ch.exchange_declare(exchange, "topic")
    conns.track(exchange=exchange)
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    ch.queue_declare(unique, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(unique, exchange, "orig.*")
    properties = pika.BasicProperties(
        headers={"CC": ["orig.cc"], "BCC": ["bcc.nowhere"], "app": "kept"},
        message_id="id-1",
        content_type="text/plain",
        delivery_mode=2,
        priority=3,
    )
    start = utc_now().replace(microsecond=0)
    ch.basic_publish(exchange, "orig.key", b"payload", properties)
    method, _properties, _body = ch.basic_get(unique)
    assert method is not None
    if how == "basic.reject":
        ch.basic_reject(method.delivery_tag, requeue=False)
    else:
        ch.basic_nack(method.delivery_tag, multiple=how.endswith("multiple"), requeue=False)

    wait_for_ready_count(ch, dlx, 1, WAIT)
    [(dead_method, dead, body)] = get_all(ch, dlx)
    end = utc_now()
    assert body == b"payload"
    assert (dead_method.exchange, dead_method.routing_key) == (dlx, "orig.key")
    assert not dead_method.redelivered
    [table] = dead.headers["x-death"]
    assert start <= table["time"] <= end
    assert deaths(dead) == [
        {
            "count": 1,
            "reason": "rejected",
            "queue": unique,
            "exchange": exchange,
            "routing-keys": ["orig.key", "orig.cc"],
        }
    ]
    assert first_death(dead) == ("rejected", unique, exchange)
    assert dead.headers["CC"] == ["orig.cc"]
    assert dead.headers["app"] == "kept"
    assert "BCC" not in dead.headers
    assert (dead.message_id, dead.content_type, dead.delivery_mode, dead.priority) == (
        "id-1",
        "text/plain",
        2,
        3,
    )


def test_nack_multiple_dead_letters_in_order(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    ch.queue_declare(unique, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    for n in range(4):
        ch.basic_publish("", unique, f"m{n}".encode())
    tags = [ch.basic_get(unique)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[-1], multiple=True, requeue=False)
    wait_for_ready_count(ch, dlx, 3, WAIT)
    assert get_bodies(ch, dlx) == [b"m0", b"m1", b"m2"]
    assert get_bodies(ch, unique) == [b"m3"]


def test_alike_messages_each_get_their_own_history(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    """Alike messages dead-lettered in the same second (a letter's encoding is shared between
    them) still each name their own queue and routing key, and each counts one death."""
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    queues = [f"{unique}-a", f"{unique}-b"]
    for queue in queues:
        ch.queue_declare(queue, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    properties = pika.BasicProperties(headers={"app": "kept"}, message_id="same")
    sent = [(queue, round_) for round_ in range(2) for queue in queues]
    for queue, _round in sent:
        ch.basic_publish("", queue, b"alike", properties)
    for queue, _round in sent:
        method, _properties, _body = ch.basic_get(queue)
        ch.basic_reject(method.delivery_tag, requeue=False)
    wait_for_ready_count(ch, dlx, len(sent), WAIT)
    letters = get_all(ch, dlx)
    assert [(method.routing_key, deaths(dead)) for method, dead, _body in letters] == [
        (
            queue,
            [
                {
                    "count": 1,
                    "reason": "rejected",
                    "queue": queue,
                    "exchange": "",
                    "routing-keys": [queue],
                }
            ],
        )
        for queue, _round in sent
    ]
    assert all(dead.headers["app"] == "kept" for _method, dead, _body in letters)


def test_requeued_message_is_not_dead_lettered(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    ch.queue_declare(unique, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", unique, b"again")
    method, _properties, _body = ch.basic_get(unique)
    ch.basic_nack(method.delivery_tag, requeue=True)
    wait_for_ready_count(ch, unique, 1, WAIT)
    assert ready_count(ch, dlx) == 0
    method, properties, body = ch.basic_get(unique, auto_ack=True)
    assert (body, method.redelivered, properties.headers) == (b"again", True, None)


def test_dead_letter_routing_key_replaces_the_key_and_drops_cc(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    ch.queue_declare(
        unique,
        exclusive=True,
        arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead.key"},
    )
    ch.basic_publish("", unique, b"x", pika.BasicProperties(headers={"CC": ["elsewhere"]}))
    method, _properties, _body = ch.basic_get(unique)
    ch.basic_reject(method.delivery_tag, requeue=False)
    wait_for_ready_count(ch, dlx, 1, WAIT)
    [(dead_method, dead, _body)] = get_all(ch, dlx)
    assert dead_method.routing_key == "dead.key"
    assert "CC" not in dead.headers
    assert deaths(dead)[0]["routing-keys"] == [unique, "elsewhere"]


def test_dead_letter_routing_key_through_the_default_exchange(
    ch: BlockingChannel, unique: str
) -> None:
    """``x-dead-letter-exchange: ""`` is the default exchange: the key names the target queue."""
    target = f"{unique}-target"
    ch.queue_declare(target, exclusive=True)
    ch.queue_declare(
        unique,
        exclusive=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": target},
    )
    ch.basic_publish("", unique, b"x")
    method, _properties, _body = ch.basic_get(unique)
    ch.basic_reject(method.delivery_tag, requeue=False)
    wait_for_ready_count(ch, target, 1, WAIT)
    [(dead_method, dead, _body)] = get_all(ch, target)
    assert (dead_method.exchange, dead_method.routing_key) == ("", target)
    assert first_death(dead) == ("rejected", unique, "")


def test_dead_lettering_to_a_missing_exchange_drops_silently(
    ch: BlockingChannel, unique: str
) -> None:
    ch.queue_declare(
        unique, exclusive=True, arguments={"x-dead-letter-exchange": f"{unique}-missing"}
    )
    ch.basic_publish("", unique, b"lost")
    method, _properties, _body = ch.basic_get(unique)
    ch.basic_reject(method.delivery_tag, requeue=False)
    assert ready_count(ch, unique) == 0  # a round trip after the reject: the channel is fine
    assert ch.is_open
    ch.basic_publish("", unique, b"next")
    assert get_bodies(ch, unique) == [b"next"]


# -- expiry -----------------------------------------------------------------------------------


def test_expired_message_keeps_its_ttl_as_original_expiration(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    ch.queue_declare(unique, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", unique, b"x", pika.BasicProperties(expiration=str(TTL)))
    wait_for_ready_count(ch, dlx, 1, WAIT)
    [(_method, dead, _body)] = get_all(ch, dlx)
    assert dead.expiration is None
    assert deaths(dead) == [
        {
            "count": 1,
            "reason": "expired",
            "queue": unique,
            "exchange": "",
            "routing-keys": [unique],
            "original-expiration": str(TTL),
        }
    ]
    assert first_death(dead) == ("expired", unique, "")


def test_queue_ttl_expiry_has_no_original_expiration(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    ch.queue_declare(
        unique, exclusive=True, arguments={"x-dead-letter-exchange": dlx, "x-message-ttl": TTL}
    )
    for n in range(3):
        ch.basic_publish("", unique, f"m{n}".encode())
    wait_for_ready_count(ch, dlx, 3, WAIT)
    dead = get_all(ch, dlx)
    assert [body for _m, _p, body in dead] == [b"m0", b"m1", b"m2"]
    for _method, properties, _body in dead:
        assert properties.expiration is None
        assert deaths(properties) == [
            {
                "count": 1,
                "reason": "expired",
                "queue": unique,
                "exchange": "",
                "routing-keys": [unique],
            }
        ]


# -- repeated deaths and cycles ---------------------------------------------------------------


def test_repeated_rejection_increments_the_count_and_keeps_the_first_details(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    """A retry loop: the queue dead-letters back to itself through a second exchange. The
    table's exchange and routing keys stay those of the first death."""
    source, retry = f"{unique}-source", f"{unique}-retry"
    for exchange in (source, retry):
        ch.exchange_declare(exchange, "direct")
        conns.track(exchange=exchange)
    ch.queue_declare(
        unique,
        exclusive=True,
        arguments={"x-dead-letter-exchange": retry, "x-dead-letter-routing-key": "again"},
    )
    ch.queue_bind(unique, source, "first")
    ch.queue_bind(unique, retry, "again")
    ch.basic_publish(source, "first", b"x", pika.BasicProperties(expiration="60000"))

    seen = []
    for _ in range(3):
        method, properties = get_one(ch, unique)
        seen.append((method.exchange, method.routing_key, properties.expiration))
        ch.basic_reject(method.delivery_tag, requeue=False)
    method, properties = get_one(ch, unique)
    assert seen == [(source, "first", "60000"), (retry, "again", None), (retry, "again", None)]
    assert deaths(properties) == [
        {
            "count": 3,
            "reason": "rejected",
            "queue": unique,
            "exchange": source,
            "routing-keys": ["first"],
            "original-expiration": "60000",
        }
    ]
    assert first_death(properties) == ("rejected", unique, source)


def cycle_queue(
    conns: Connections, ch: BlockingChannel, name: str, observer: str, ttl: int | None
) -> None:
    """A queue dead-lettering to the fanout exchange ``name``-dlx, which also feeds the observer
    queue, so every dead-lettering shows up there even when the cycle drops the message."""
    exchange = f"{name}-dlx"
    ch.exchange_declare(exchange, "fanout")
    conns.track(exchange=exchange)
    arguments: dict[str, object] = {"x-dead-letter-exchange": exchange}
    if ttl is not None:
        arguments["x-message-ttl"] = ttl
    ch.queue_declare(name, exclusive=True, arguments=arguments)
    ch.queue_bind(observer, exchange)


def observed(ch: BlockingChannel, observer: str) -> list[list[tuple[str, str, int]]]:
    return [
        [(t["queue"], t["reason"], t["count"]) for t in deaths(properties)]
        for _method, properties, _body in get_all(ch, observer)
    ]


def assert_dropped(ch: BlockingChannel, queues: list[str], observer: str, seen: int) -> None:
    """Something that must NOT happen: the message coming back. Had it come back to one of the
    queues, it would expire again within a TTL and show up in the observer once more."""
    settle(ch.connection, 2 * TTL / 1000)
    assert [ready_count(ch, queue) for queue in queues] == [0] * len(queues)
    assert ready_count(ch, observer) == seen


def test_expiry_cycle_through_two_queues_is_dropped(
    ch: BlockingChannel, conns: Connections, unique: str
) -> None:
    observer = f"{unique}-observer"
    ch.queue_declare(observer, exclusive=True)
    first, second = f"{unique}-1", f"{unique}-2"
    cycle_queue(conns, ch, first, observer, TTL)
    cycle_queue(conns, ch, second, observer, TTL)
    ch.queue_bind(second, f"{first}-dlx")
    ch.queue_bind(first, f"{second}-dlx")
    ch.basic_publish("", first, b"round")

    wait_for_ready_count(ch, observer, 2, WAIT)
    assert_dropped(ch, [first, second], observer, 2)
    assert observed(ch, observer) == [
        [(first, "expired", 1)],
        [(second, "expired", 1), (first, "expired", 1)],  # back to `first` would be a cycle
    ]


def test_rejection_breaks_the_cycle_and_the_message_goes_round(
    ch: BlockingChannel, conns: Connections, unique: str
) -> None:
    observer = f"{unique}-observer"
    ch.queue_declare(observer, exclusive=True)
    first, second = f"{unique}-1", f"{unique}-2"
    cycle_queue(conns, ch, first, observer, TTL)
    cycle_queue(conns, ch, second, observer, None)
    ch.queue_bind(second, f"{first}-dlx")
    ch.queue_bind(first, f"{second}-dlx")
    ch.basic_publish("", first, b"round")

    method, properties = get_one(ch, second)  # expired from `first`
    assert first_death(properties) == ("expired", first, "")
    ch.basic_reject(method.delivery_tag, requeue=False)  # back to `first`, expires again
    method, properties = get_one(ch, second)
    assert [(t["queue"], t["reason"], t["count"]) for t in deaths(properties)] == [
        (first, "expired", 2),
        (second, "rejected", 1),
    ]
    assert first_death(properties) == ("expired", first, "")
    ch.basic_ack(method.delivery_tag)
    assert observed(ch, observer) == [
        [(first, "expired", 1)],
        [(second, "rejected", 1), (first, "expired", 1)],
        [(first, "expired", 2), (second, "rejected", 1)],
    ]


def test_self_cycle_goes_round_on_rejection_and_drops_on_expiry(
    ch: BlockingChannel, conns: Connections, unique: str
) -> None:
    observer = f"{unique}-observer"
    ch.queue_declare(observer, exclusive=True)
    cycle_queue(conns, ch, unique, observer, TTL)
    ch.queue_bind(unique, f"{unique}-dlx")
    ch.basic_publish("", unique, b"retry")
    for _ in range(2):
        method, _properties = get_one(ch, unique)
        ch.basic_reject(method.delivery_tag, requeue=False)  # straight back in
    wait_for_ready_count(ch, observer, 3, WAIT)  # the third: expired, then dropped
    assert_dropped(ch, [unique], observer, 3)
    assert observed(ch, observer) == [
        [(unique, "rejected", 1)],
        [(unique, "rejected", 2)],
        [(unique, "expired", 1), (unique, "rejected", 2)],
    ]


def test_deaths_in_three_queues_list_the_latest_first(ch: BlockingChannel, unique: str) -> None:
    """a expires into b, b rejects into c, c rejects into d. RabbitMQ 3.10 lists d's message's
    deaths as [c, a, b] (it reverses the older tables), 3.13 as [c, b, a]: only the first table
    and the set of tables are asserted."""
    a, b, c, d = (f"{unique}-{name}" for name in "abcd")
    ch.queue_declare(d, exclusive=True)
    for queue, target, ttl in ((c, d, None), (b, c, None), (a, b, TTL)):
        arguments: dict[str, object] = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": target,
        }
        if ttl is not None:
            arguments["x-message-ttl"] = ttl
        ch.queue_declare(queue, exclusive=True, arguments=arguments)
    ch.basic_publish("", a, b"x")
    for queue in (b, c):
        method, _properties = get_one(ch, queue)
        ch.basic_reject(method.delivery_tag, requeue=False)
    _method, properties = get_one(ch, d)
    tables = [(t["queue"], t["reason"], t["count"]) for t in deaths(properties)]
    assert tables[0] == (c, "rejected", 1)
    assert sorted(tables) == sorted([(a, "expired", 1), (b, "rejected", 1), (c, "rejected", 1)])
    assert first_death(properties) == ("expired", a, "")

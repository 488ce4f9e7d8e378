"""Queue length limits: ``x-max-length`` (messages) and ``x-max-length-bytes`` (total body bytes,
properties and headers not counted), whichever is reached first, with ``x-overflow``:

- ``drop-head`` (the default): the oldest ready messages are dropped, dead-lettered with reason
  ``maxlen`` if the queue has a dead-letter exchange; the publish is confirmed.
- ``reject-publish``: the new message is refused (basic.nack under publisher confirms, silently
  dropped without) and never dead-lettered.
- ``reject-publish-dlx``: refused as above, and dead-lettered with reason ``maxlen``.

Only ready messages count: those delivered and not yet acknowledged do not.
"""

from __future__ import annotations

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import NackError
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


def confirmed(ch: BlockingChannel, queue: str, body: bytes, **properties: object) -> bool:
    """Publish through the default exchange; True if the broker acked it, False if it nacked."""
    try:
        ch.basic_publish("", queue, body, pika.BasicProperties(**properties))
    except NackError:
        return False
    return True


def assert_nothing_dead_lettered(ch: BlockingChannel, dlx: str) -> None:
    """A marker published to the dead-letter exchange after the refused message is the only thing
    there: anything dead-lettered by the refusal would have arrived before it."""
    ch.basic_publish(dlx, "", b"marker")
    wait_for_ready_count(ch, dlx, 1, WAIT)
    assert get_bodies(ch, dlx) == [b"marker"]


@pytest.mark.parametrize("overflow", [None, "drop-head"])
def test_max_length_drops_the_oldest(
    ch: BlockingChannel, unique: str, overflow: str | None
) -> None:
    arguments: dict[str, object] = {"x-max-length": 3}
    if overflow:
        arguments["x-overflow"] = overflow
    ch.queue_declare(unique, exclusive=True, arguments=arguments)
    assert all(confirmed(ch, unique, f"m{i}".encode()) for i in range(5))
    assert ready_count(ch, unique) == 3
    assert get_bodies(ch, unique) == [b"m2", b"m3", b"m4"]


def test_max_length_bytes_drops_the_oldest(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True, arguments={"x-max-length-bytes": 10})
    publish_all(ch, "", unique, [b"aaaa", b"bbbb", b"cccc", b"dddd"])  # 12 bytes > 10 twice
    assert get_bodies(ch, unique) == [b"cccc", b"dddd"]

    assert confirmed(ch, unique, b"x" * 11)  # over the limit on its own: dropped at once
    assert ready_count(ch, unique) == 0


def test_max_length_bytes_counts_bodies_only(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True, arguments={"x-max-length-bytes": 10})
    assert confirmed(ch, unique, b"x" * 10)
    assert confirmed(ch, unique, b"", headers={"big": "h" * 1000}, message_id="m" * 100)
    assert get_bodies(ch, unique) == [b"x" * 10, b""]


def test_the_first_limit_reached_applies(ch: BlockingChannel, unique: str) -> None:
    ch.queue_declare(unique, exclusive=True, arguments={"x-max-length": 3, "x-max-length-bytes": 5})
    publish_all(ch, "", unique, [b"aaaa", b"b", b"c"])  # 6 bytes: the byte limit drops aaaa
    assert ready_count(ch, unique) == 2
    publish_all(ch, "", unique, [b"d", b"e"])  # 4 messages: the length limit drops b
    assert get_bodies(ch, unique) == [b"c", b"d", b"e"]


def test_drop_head_dead_letters_with_reason_maxlen(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    ch.queue_declare(
        unique, exclusive=True, arguments={"x-max-length": 1, "x-dead-letter-exchange": dlx}
    )
    assert all(confirmed(ch, unique, f"m{i}".encode()) for i in range(3))
    wait_for_ready_count(ch, dlx, 2, WAIT)
    dead = get_all(ch, dlx)
    assert [body for _m, _p, body in dead] == [b"m0", b"m1"]
    for _method, properties, _body in dead:
        [death] = properties.headers["x-death"]
        assert (death["reason"], death["queue"], death["count"]) == ("maxlen", unique, 1)
        assert properties.headers["x-first-death-reason"] == "maxlen"
    assert get_bodies(ch, unique) == [b"m2"]


@pytest.mark.parametrize("limit", ["x-max-length", "x-max-length-bytes"])
def test_reject_publish_nacks_and_does_not_dead_letter(
    conns: Connections, ch: BlockingChannel, unique: str, limit: str
) -> None:
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    arguments = {limit: 2, "x-overflow": "reject-publish", "x-dead-letter-exchange": dlx}
    ch.queue_declare(unique, exclusive=True, arguments=arguments)
    assert confirmed(ch, unique, b"1")
    assert confirmed(ch, unique, b"2")
    assert not confirmed(ch, unique, b"3")
    assert ch.is_open
    assert ready_count(ch, unique) == 2
    assert_nothing_dead_lettered(ch, dlx)
    assert get_bodies(ch, unique) == [b"1", b"2"]


def test_reject_publish_by_bytes_counts_the_new_body(ch: BlockingChannel, unique: str) -> None:
    """The message is refused if the bytes ready plus its own body would exceed the limit."""
    ch.queue_declare(
        unique,
        exclusive=True,
        arguments={"x-max-length-bytes": 10, "x-overflow": "reject-publish"},
    )
    assert not confirmed(ch, unique, b"x" * 11)
    assert confirmed(ch, unique, b"x" * 10)
    assert confirmed(ch, unique, b"")
    assert not confirmed(ch, unique, b"y")
    assert get_bodies(ch, unique) == [b"x" * 10, b""]


def test_reject_publish_dlx_nacks_and_dead_letters(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    arguments = {
        "x-max-length": 1,
        "x-overflow": "reject-publish-dlx",
        "x-dead-letter-exchange": dlx,
    }
    ch.queue_declare(unique, exclusive=True, arguments=arguments)
    assert confirmed(ch, unique, b"kept")
    assert not confirmed(ch, unique, b"refused", message_id="r1")
    wait_for_ready_count(ch, dlx, 1, WAIT)
    [(method, properties, body)] = get_all(ch, dlx)
    assert (body, properties.message_id, method.routing_key) == (b"refused", "r1", unique)
    [death] = properties.headers["x-death"]
    assert (death["reason"], death["queue"], death["exchange"]) == ("maxlen", unique, "")
    assert get_bodies(ch, unique) == [b"kept"]


def test_reject_publish_without_confirms_drops_silently(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    ch.queue_declare(
        unique, exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    plain = ch.connection.channel()
    publish_all(plain, "", unique, [b"kept", b"dropped", b"dropped too"])
    assert get_bodies(plain, unique) == [b"kept"]  # after the publishes: same channel
    assert plain.is_open


def test_reject_publish_nacks_when_any_queue_is_full(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    """The other queues the message was routed to still get it."""
    exchange = f"{unique}-fanout"
    ch.exchange_declare(exchange, "fanout")
    conns.track(exchange=exchange)
    full, free = f"{unique}-full", f"{unique}-free"
    ch.queue_declare(
        full, exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    ch.queue_declare(free, exclusive=True)
    for queue in (full, free):
        ch.queue_bind(queue, exchange)
    ch.basic_publish(exchange, "", b"first")
    with pytest.raises(NackError):
        ch.basic_publish(exchange, "", b"second")
    assert get_bodies(ch, full) == [b"first"]
    assert get_bodies(ch, free) == [b"first", b"second"]


@pytest.mark.parametrize("overflow", ["drop-head", "reject-publish"])
def test_unacked_messages_do_not_count(ch: BlockingChannel, unique: str, overflow: str) -> None:
    ch.queue_declare(unique, exclusive=True, arguments={"x-max-length": 2, "x-overflow": overflow})
    publish_all(ch, "", unique, [b"m0", b"m1"])
    held = [ch.basic_get(unique)[0] for _ in range(2)]  # delivered, not acked
    assert confirmed(ch, unique, b"m2")
    assert confirmed(ch, unique, b"m3")
    assert ready_count(ch, unique) == 2

    if overflow == "drop-head":
        assert confirmed(ch, unique, b"m4")
        expected = [b"m3", b"m4"]
    else:
        assert not confirmed(ch, unique, b"m4")
        expected = [b"m2", b"m3"]
    for method in held:
        assert method is not None
        ch.basic_ack(method.delivery_tag)
    assert get_bodies(ch, unique) == expected


@pytest.mark.parametrize("overflow", ["drop-head", "reject-publish"])
def test_requeue_past_the_limit(
    conns: Connections, ch: BlockingChannel, unique: str, overflow: str
) -> None:
    """Requeued messages go back to the head; with drop-head the queue then drops (and
    dead-letters) from the head down to the limit, so the requeued ones go. reject-publish only
    refuses publishes: requeues may take the queue past its limit."""
    dlx = declare_fanout_sink(conns, ch, f"{unique}-dlx")
    arguments = {"x-max-length": 2, "x-overflow": overflow, "x-dead-letter-exchange": dlx}
    ch.queue_declare(unique, exclusive=True, arguments=arguments)
    publish_all(ch, "", unique, [b"m0", b"m1"])
    held = [ch.basic_get(unique)[0] for _ in range(2)]
    publish_all(ch, "", unique, [b"m2", b"m3"])
    for method in reversed(held):
        assert method is not None
        ch.basic_nack(method.delivery_tag, requeue=True)

    if overflow == "drop-head":
        wait_for_ready_count(ch, dlx, 2, WAIT)
        dead = get_all(ch, dlx)
        assert sorted(body for _m, _p, body in dead) == [b"m0", b"m1"]
        assert {p.headers["x-death"][0]["reason"] for _m, p, _b in dead} == {"maxlen"}
        assert get_bodies(ch, unique) == [b"m2", b"m3"]
    else:
        wait_for_ready_count(ch, unique, 4, WAIT)
        assert_nothing_dead_lettered(ch, dlx)
        assert get_bodies(ch, unique) == [b"m0", b"m1", b"m2", b"m3"]


@pytest.mark.parametrize("overflow", ["drop-head", "reject-publish"])
def test_max_length_zero(
    conns: Connections, ch: BlockingChannel, unique: str, overflow: str
) -> None:
    """With x-max-length 0, drop-head still hands a message to a consumer that can take it at
    once (and drops it otherwise); reject-publish refuses every message, consumer or not."""
    ch.queue_declare(unique, arguments={"x-max-length": 0, "x-overflow": overflow})
    conns.track(queue=unique)
    accepted = overflow == "drop-head"
    assert confirmed(ch, unique, b"nobody waiting") is accepted
    assert ready_count(ch, unique) == 0

    consumer = conns.channel()
    got = Collector(ack=True)
    consumer.basic_consume(unique, got)
    assert confirmed(ch, unique, b"consumer waiting") is accepted
    if accepted:
        wait_until(consumer.connection, lambda: len(got) == 1, "the delivery", WAIT)
        assert got.bodies == [b"consumer waiting"]
    else:
        assert ready_count(ch, unique) == 0

"""Queues through pika: declare variants, exclusivity, auto-delete, purge, delete, and messages
settled through basic.get / ack / nack / reject / recover."""

from __future__ import annotations

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import (
    Collector,
    Connections,
    channel_closed,
    confirmed_channel,
    get_bodies,
    publish_all,
    queue_exists,
    ready_count,
    wait_for_queue_gone,
    wait_until,
)

pytestmark = pytest.mark.timeout(20)


def exclusive_queue(ch: BlockingChannel, name: str, bodies: list[bytes] | None = None) -> str:
    ch.queue_declare(name, exclusive=True)
    publish_all(ch, "", name, bodies or [])
    return name


def get(ch: BlockingChannel, queue: str) -> tuple[pika.spec.Basic.GetOk, bytes]:
    method, _properties, body = ch.basic_get(queue, auto_ack=False)
    assert method is not None, f"queue {queue} unexpectedly empty"
    return method, body


# --- declare ---------------------------------------------------------------------------------


def test_passive_declare_missing_queue_is_404(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    with channel_closed(404, "NOT_FOUND", f"no queue '{unique}' in vhost '/'"):
        ch.queue_declare(unique, passive=True)


def test_declare_ok_reports_name_and_counts(ch: BlockingChannel, unique: str) -> None:
    ok = ch.queue_declare(unique, exclusive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (unique, 0, 0)
    publish_all(ch, "", unique, [b"1", b"2", b"3"])
    ok = ch.queue_declare(unique, exclusive=True).method
    assert (ok.message_count, ok.consumer_count) == (3, 0)
    ok = ch.queue_declare(unique, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (3, 0)

    consumers = f"{unique}.consumed"
    ch.queue_declare(consumers, exclusive=True)
    ch.basic_consume(consumers, Collector(), auto_ack=True)
    ch.basic_consume(consumers, Collector(), auto_ack=True)
    ok = ch.queue_declare(consumers, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (0, 2)


def test_declare_ok_message_count_excludes_unacked(ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique, [b"1", b"2", b"3"])
    get(ch, unique)
    assert ready_count(ch, unique) == 2


def test_durable_queue(conns: Connections, ch: BlockingChannel, unique: str) -> None:
    conns.track(queue=unique)
    ok = ch.queue_declare(unique, durable=True).method
    assert ok.queue == unique
    ch.queue_declare(unique, durable=True)  # equivalent redeclare
    other = conns.channel()  # a durable, non-exclusive queue is visible to everyone
    ch.basic_publish("", unique, b"m", pika.BasicProperties(delivery_mode=2))
    assert get_bodies(other, unique) == [b"m"]


def test_server_named_queue(ch: BlockingChannel) -> None:
    first = ch.queue_declare("", exclusive=True).method
    second = ch.queue_declare("", exclusive=True).method
    assert first.queue.startswith("amq.gen-")
    assert second.queue.startswith("amq.gen-")
    assert first.queue != second.queue
    assert (first.message_count, first.consumer_count) == (0, 0)
    ch.basic_publish("", first.queue, b"to the generated name")
    assert get_bodies(ch, first.queue) == [b"to the generated name"]


# --- exclusive -------------------------------------------------------------------------------


def test_exclusive_queue_locked_to_its_connection(conns: Connections, unique: str) -> None:
    owner = conns.channel()
    owner.queue_declare(unique, exclusive=True)
    other = conns.open()
    lock = f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{unique}'"
    with channel_closed(405, lock):
        other.channel().queue_declare(unique, passive=True)
    with channel_closed(405, lock):
        other.channel().queue_declare(unique, exclusive=True)
    with channel_closed(405, lock):
        other.channel().basic_consume(unique, Collector())
    with channel_closed(405, lock):
        other.channel().queue_purge(unique)
    with channel_closed(405, lock):
        other.channel().queue_delete(unique)
    # a second channel of the owning connection may use it
    owner.connection.channel().queue_declare(unique, passive=True)


def test_exclusive_queue_deleted_when_owner_closes(conns: Connections, unique: str) -> None:
    owner = conns.open()
    owner.channel().queue_declare(unique, exclusive=True)
    watcher = conns.open()
    assert queue_exists(owner, unique)
    owner.close()
    wait_for_queue_gone(watcher, unique)
    ch = watcher.channel()  # the name is free again
    ch.queue_declare(unique, exclusive=True)


# --- auto-delete -----------------------------------------------------------------------------


def test_auto_delete_queue_deleted_when_last_consumer_cancels(
    conns: Connections, unique: str
) -> None:
    ch = conns.channel()
    conns.track(queue=unique)
    ch.queue_declare(unique, auto_delete=True)
    assert queue_exists(ch.connection, unique)  # never consumed: stays
    tag1 = ch.basic_consume(unique, Collector(), auto_ack=True)
    tag2 = ch.basic_consume(unique, Collector(), auto_ack=True)
    ch.basic_cancel(tag1)
    assert queue_exists(ch.connection, unique)  # one consumer left
    ch.basic_cancel(tag2)
    wait_for_queue_gone(ch.connection, unique)


def test_auto_delete_queue_deleted_when_consumer_channel_closes(
    conns: Connections, unique: str
) -> None:
    ch = conns.channel()
    conns.track(queue=unique)
    ch.queue_declare(unique, auto_delete=True)
    ch.basic_consume(unique, Collector(), auto_ack=True)
    ch.close()
    watcher = conns.open()
    wait_for_queue_gone(watcher, unique)


# --- bind / unbind ---------------------------------------------------------------------------


def test_bind_and_unbind(ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique)
    ch.queue_bind(unique, "amq.direct", routing_key=unique)
    ch.queue_bind(unique, "amq.topic", routing_key=f"{unique}.#")
    ch.basic_publish("amq.direct", unique, b"direct")
    ch.basic_publish("amq.topic", f"{unique}.x.y", b"topic")
    ch.basic_publish("amq.direct", f"{unique}.x", b"unbound key")
    assert get_bodies(ch, unique) == [b"direct", b"topic"]
    ch.queue_unbind(unique, "amq.direct", routing_key=unique)
    ch.basic_publish("amq.direct", unique, b"after unbind")
    ch.basic_publish("amq.topic", f"{unique}.z", b"topic still bound")
    assert get_bodies(ch, unique) == [b"topic still bound"]


def test_unbind_of_missing_binding_is_ok(ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique)
    ch.queue_unbind(unique, "amq.direct", routing_key="never-bound")
    assert ch.is_open


@pytest.mark.parametrize("missing", ["queue", "exchange", "both"])
def test_unbind_naming_what_no_longer_exists_is_ok(
    ch: BlockingChannel, unique: str, missing: str
) -> None:
    """As RabbitMQ: what is gone has no binding left to remove, so unbind-ok (aio-pika's RPC
    pattern unbinds its auto-deleted reply queue when it closes)."""
    queue = f"{unique}-gone" if missing in ("queue", "both") else exclusive_queue(ch, unique)
    exchange = f"{unique}-gone-x" if missing in ("exchange", "both") else "amq.direct"
    ch.queue_unbind(queue, exchange, routing_key="k")
    assert ch.is_open
    with channel_closed(404, f"NOT_FOUND - no queue '{unique}-gone' in vhost '/'"):
        ch.queue_bind(f"{unique}-gone", "amq.direct", routing_key="k")  # bind still checks


def test_unbind_of_another_connections_exclusive_queue_is_locked_if_bound(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    exclusive_queue(ch, unique)
    ch.queue_bind(unique, "amq.direct", routing_key="bound")
    other = conns.channel()
    other.queue_unbind(unique, "amq.direct", routing_key="never-bound")  # nothing to remove
    with channel_closed(405, "RESOURCE_LOCKED", f"locked queue '{unique}'"):
        other.queue_unbind(unique, "amq.direct", routing_key="bound")
    ch.basic_publish("amq.direct", "bound", b"still bound")
    assert get_bodies(ch, unique) == [b"still bound"]


# --- purge / delete --------------------------------------------------------------------------


def test_purge_returns_count_and_spares_unacked(ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique, [b"1", b"2", b"3", b"4"])
    unacked, body = get(ch, unique)
    assert body == b"1"
    assert ch.queue_purge(unique).method.message_count == 3
    assert ready_count(ch, unique) == 0
    assert ch.queue_purge(unique).method.message_count == 0
    ch.basic_reject(unacked.delivery_tag, requeue=True)
    assert get_bodies(ch, unique) == [b"1"]


def test_delete_returns_message_count(conns: Connections, ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique, [b"1", b"2"])
    assert ch.queue_delete(unique).method.message_count == 2
    assert not queue_exists(ch.connection, unique)
    # deleting a queue that does not exist is not an error
    assert ch.queue_delete(unique).method.message_count == 0


def test_delete_if_unused(ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique, [b"m"])
    tag = ch.basic_consume(unique, Collector())
    with channel_closed(406, "PRECONDITION_FAILED", f"queue '{unique}' in vhost '/' in use"):
        ch.queue_delete(unique, if_unused=True)
    assert tag
    ch = ch.connection.channel()

    # the consumer went with its channel (and its delivery back to the queue)
    def settled() -> bool:
        ok = ch.queue_declare(unique, passive=True).method
        return (ok.consumer_count, ok.message_count) == (0, 1)

    wait_until(ch.connection, settled, "consumer of the closed channel to go")
    ok = ch.queue_delete(unique, if_unused=True)
    assert ok.method.message_count == 1  # the unacked delivery went back when the channel closed
    assert not queue_exists(ch.connection, unique)


def test_delete_if_empty(ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique, [b"m"])
    with channel_closed(406, "PRECONDITION_FAILED", f"queue '{unique}' in vhost '/' not empty"):
        ch.queue_delete(unique, if_empty=True)
    ch = ch.connection.channel()
    assert get_bodies(ch, unique) == [b"m"]
    ch.queue_delete(unique, if_empty=True)
    assert not queue_exists(ch.connection, unique)


def test_deleting_consumed_queue_cancels_consumer(conns: Connections, unique: str) -> None:
    consumer = conns.channel()
    consumer.queue_declare(unique, exclusive=True)
    cancels: list[pika.spec.Basic.Cancel] = []
    consumer.add_on_cancel_callback(lambda frame: cancels.append(frame.method))
    tag = consumer.basic_consume(unique, Collector(), auto_ack=True)
    consumer.connection.channel().queue_delete(unique)
    wait_until(consumer.connection, lambda: bool(cancels), "server-sent basic.cancel")
    assert [cancel.consumer_tag for cancel in cancels] == [tag]
    assert consumer.is_open
    assert consumer.consumer_tags == []


# --- basic.get -------------------------------------------------------------------------------


def test_basic_get_and_get_empty(ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique)
    ch.basic_publish(
        "", unique, b"1", pika.BasicProperties(content_type="text/plain", headers={"h": "v"})
    )
    ch.basic_publish("", unique, b"2")
    method, properties, body = ch.basic_get(unique, auto_ack=True)
    assert body == b"1"
    assert method.message_count == 1  # messages left behind
    assert method.routing_key == unique
    assert method.exchange == ""
    assert method.redelivered is False
    assert properties.content_type == "text/plain"
    assert properties.headers == {"h": "v"}
    method, _, body = ch.basic_get(unique, auto_ack=True)
    assert (body, method.message_count) == (b"2", 0)
    assert ch.basic_get(unique, auto_ack=True) == (None, None, None)


# --- ack / nack / reject / recover -----------------------------------------------------------


def test_ack_multiple(ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique, [str(i).encode() for i in range(5)])
    tags = [get(ch, unique)[0].delivery_tag for _ in range(5)]
    ch.basic_ack(tags[2], multiple=True)  # settles 0, 1, 2
    ch.basic_recover(requeue=True)  # 3 and 4 go back
    bodies = []
    for _ in range(2):
        method, body = get(ch, unique)
        assert method.redelivered is True
        bodies.append(body)
        ch.basic_ack(method.delivery_tag)
    assert bodies == [b"3", b"4"]
    assert ch.basic_get(unique) == (None, None, None)


def test_nack_multiple_requeue_keeps_order_and_flags_redelivered(
    ch: BlockingChannel, unique: str
) -> None:
    exclusive_queue(ch, unique, [b"a", b"b", b"c", b"d"])
    tags = [get(ch, unique)[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[-1], multiple=True, requeue=True)
    got = []
    for _ in range(4):
        method, body = get(ch, unique)
        got.append((body, method.redelivered))
    assert got == [(b"a", True), (b"b", True), (b"c", True), (b"d", False)]


def test_nack_without_requeue_drops(ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique, [b"a", b"b", b"c"])
    get(ch, unique)
    second, _ = get(ch, unique)
    ch.basic_nack(second.delivery_tag, multiple=True, requeue=False)  # drops a and b
    ch.basic_recover(requeue=True)  # nothing unacked is left to come back
    assert get_bodies(ch, unique) == [b"c"]


def test_reject(ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique, [b"keep", b"drop"])
    keep, _ = get(ch, unique)
    drop, _ = get(ch, unique)
    ch.basic_reject(drop.delivery_tag, requeue=False)
    ch.basic_reject(keep.delivery_tag, requeue=True)
    method, _properties, body = ch.basic_get(unique, auto_ack=True)
    assert (body, method.redelivered) == (b"keep", True)
    assert ch.basic_get(unique) == (None, None, None)


def test_recover_requeues_unacked(ch: BlockingChannel, unique: str) -> None:
    exclusive_queue(ch, unique, [b"1", b"2", b"3"])
    acked, _ = get(ch, unique)
    get(ch, unique)
    get(ch, unique)
    ch.basic_ack(acked.delivery_tag)
    assert ready_count(ch, unique) == 0
    ch.basic_recover(requeue=True)
    assert ready_count(ch, unique) == 2
    got = []
    for _ in range(2):
        method, body = get(ch, unique)
        got.append((body, method.redelivered))
    assert got == [(b"2", True), (b"3", True)]


def test_auto_ack_get_is_not_requeued(conns: Connections, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    exclusive_queue(ch, unique, [b"1", b"2"])
    assert ch.basic_get(unique, auto_ack=True)[2] == b"1"
    ch.basic_recover(requeue=True)
    other = ch.connection.channel()
    assert get_bodies(other, unique) == [b"2"]


def test_unacked_get_requeued_when_channel_closes(conns: Connections, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    exclusive_queue(ch, unique, [b"1", b"2"])
    get(ch, unique)
    get(ch, unique)
    ch.close()
    other = ch.connection.channel()
    wait_until(other.connection, lambda: ready_count(other, unique) == 2, "requeue on close")
    got = []
    while (frame := other.basic_get(unique, auto_ack=True))[0] is not None:
        got.append((frame[2], frame[0].redelivered))
    assert got == [(b"1", True), (b"2", True)]

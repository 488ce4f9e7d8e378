"""Consumers and publishing through pika: qos, consume flags, cancel, dispatch across consumers,
requeue of unsettled deliveries (channel close, connection close, killed process), mandatory
returns, publisher confirms and transactions."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pika
import pytest
from pika.exceptions import UnroutableError
from pika_helpers import (
    TIMEOUT,
    BrokerLike,
    Collector,
    Connections,
    channel_closed,
    confirmed_channel,
    get_bodies,
    publish_all,
    queue_exists,
    ready_count,
    settle,
    wait_until,
)

pytestmark = pytest.mark.timeout(20)


def numbered(n: int) -> list[bytes]:
    return [f"m{i}".encode() for i in range(n)]


def shared_queue(conns: Connections, name: str, arguments: dict[str, Any] | None = None) -> str:
    """A non-exclusive queue (several connections use it), deleted at teardown."""
    conns.track(queue=name)
    conns.channel().queue_declare(name, arguments=arguments)
    return name


# --- qos -------------------------------------------------------------------------------------


def test_prefetch_per_consumer_limits_unacked(conns: Connections, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique, exclusive=True)
    publish_all(ch, "", unique, numbered(10))
    ch.basic_qos(prefetch_count=3)
    got = Collector()
    ch.basic_consume(unique, got)
    conn = ch.connection
    wait_until(conn, lambda: len(got) == 3, "first 3 deliveries")
    settle(conn)
    assert got.bodies == numbered(3)
    assert ready_count(ch, unique) == 7
    got.deliveries[0].ack()
    wait_until(conn, lambda: len(got) == 4, "one more delivery after one ack")
    settle(conn)
    assert len(got) == 4
    got.deliveries[-1].ack(multiple=True)  # settles 1, 2, 3
    wait_until(conn, lambda: len(got) == 7, "three more after a multiple ack")
    settle(conn)
    assert len(got) == 7
    assert ready_count(ch, unique) == 3
    got.deliveries[-1].ack(multiple=True)
    wait_until(conn, lambda: len(got) == 10, "the rest")
    assert got.bodies == numbered(10)
    assert all(not delivery.redelivered for delivery in got.deliveries)


def test_prefetch_per_consumer_applies_to_each_consumer(conns: Connections, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique, exclusive=True)
    publish_all(ch, "", unique, numbered(10))
    ch.basic_qos(prefetch_count=2, global_qos=False)
    first, second = Collector(), Collector()
    ch.basic_consume(unique, first)
    ch.basic_consume(unique, second)
    wait_until(ch.connection, lambda: len(first) + len(second) == 4, "2 deliveries each")
    settle(ch.connection)
    assert (len(first), len(second)) == (2, 2)
    assert ready_count(ch, unique) == 6


def test_prefetch_global_is_shared_by_the_channel(conns: Connections, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    queues = [f"{unique}.a", f"{unique}.b"]
    for queue in queues:
        ch.queue_declare(queue, exclusive=True)
        publish_all(ch, "", queue, numbered(5))
    ch.basic_qos(prefetch_count=3, global_qos=True)
    collectors = [Collector(), Collector()]
    for queue, collector in zip(queues, collectors, strict=True):
        ch.basic_consume(queue, collector)

    def total() -> int:
        return sum(len(collector) for collector in collectors)

    wait_until(ch.connection, lambda: total() == 3, "3 deliveries across the channel")
    settle(ch.connection)
    assert total() == 3
    assert sum(ready_count(ch, queue) for queue in queues) == 7
    delivered = next(collector for collector in collectors if len(collector))
    delivered.deliveries[0].ack()
    wait_until(ch.connection, lambda: total() == 4, "one more delivery after one ack")
    settle(ch.connection)
    assert total() == 4


# --- consume flags, tags, cancel -------------------------------------------------------------


def test_consume_no_ack(conns: Connections, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique, exclusive=True)
    publish_all(ch, "", unique, numbered(5))
    ch.basic_qos(prefetch_count=1)  # ignored for no-ack consumers
    got = Collector()
    ch.basic_consume(unique, got, auto_ack=True)
    wait_until(ch.connection, lambda: len(got) == 5, "5 no-ack deliveries")
    assert got.bodies == numbered(5)
    ch.close()  # nothing to requeue
    other = ch.connection.channel()
    wait_until(
        other.connection,
        lambda: other.queue_declare(unique, passive=True).method.consumer_count == 0,
        "consumer gone with its channel",
    )
    assert ready_count(other, unique) == 0


def test_consumer_tag_is_echoed(conns: Connections, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique, exclusive=True)
    got = Collector()
    tag = ch.basic_consume(unique, got, auto_ack=True, consumer_tag=f"{unique}-tag")
    assert tag == f"{unique}-tag"
    ch.basic_publish("", unique, b"m")
    wait_until(ch.connection, lambda: len(got) == 1, "a delivery")
    assert got.deliveries[0].method.consumer_tag == tag
    assert got.deliveries[0].method.routing_key == unique
    assert got.deliveries[0].method.exchange == ""


def test_exclusive_consumer_refuses_others(conns: Connections, unique: str) -> None:
    queue = shared_queue(conns, unique)
    owner = conns.channel()
    owner.basic_consume(queue, Collector(), exclusive=True)
    text = f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"
    with channel_closed(403, text):
        conns.channel().basic_consume(queue, Collector())
    with channel_closed(403, text):
        owner.connection.channel().basic_consume(queue, Collector())  # same connection too


def test_exclusive_consume_refused_when_queue_has_consumers(
    conns: Connections, unique: str
) -> None:
    queue = shared_queue(conns, unique)
    conns.channel().basic_consume(queue, Collector())
    with channel_closed(403, f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"):
        conns.channel().basic_consume(queue, Collector(), exclusive=True)


def test_cancel_stops_deliveries(conns: Connections, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique, exclusive=True)
    got = Collector(ack=True)
    tag = ch.basic_consume(unique, got)
    publish_all(ch, "", unique, [b"before1", b"before2"])
    wait_until(ch.connection, lambda: len(got) == 2, "deliveries before cancel")
    ch.basic_cancel(tag)
    assert ch.consumer_tags == []
    publish_all(ch, "", unique, [b"after1", b"after2"])
    ok = ch.queue_declare(unique, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (2, 0)
    assert got.bodies == [b"before1", b"before2"]


def test_cancel_keeps_unacked_deliveries_ackable(conns: Connections, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique, exclusive=True)
    publish_all(ch, "", unique, [b"1", b"2"])
    got = Collector()
    tag = ch.basic_consume(unique, got)
    wait_until(ch.connection, lambda: len(got) == 2, "two deliveries")
    ch.basic_cancel(tag)
    got.deliveries[1].ack(multiple=True)
    ch.close()
    other = ch.connection.channel()
    assert ready_count(other, unique) == 0


# --- dispatch across consumers ---------------------------------------------------------------

ROUND_ROBIN_ARGS = [
    pytest.param(None, id="default"),
    pytest.param(
        {"x-dispatch": "round-robin"}, id="x-dispatch=round-robin", marks=pytest.mark.warrenmq_only
    ),
]


@pytest.mark.parametrize("arguments", ROUND_ROBIN_ARGS)
def test_round_robin_exact_alternation(
    conns: Connections, unique: str, arguments: dict[str, Any] | None
) -> None:
    queue = shared_queue(conns, unique, arguments)
    consumer_conn = conns.open()
    collectors = [Collector(ack=True) for _ in range(3)]
    for collector in collectors:
        consumer_conn.channel().basic_consume(queue, collector)
    publisher = confirmed_channel(conns.open())
    publish_all(publisher, "", queue, numbered(30))

    wait_until(consumer_conn, lambda: sum(map(len, collectors)) == 30, "all 30 deliveries")
    for i, collector in enumerate(collectors):
        assert collector.bodies == numbered(30)[i::3], f"consumer {i}"


FAIRNESS_ARGS = [
    pytest.param(None, id="default"),
    pytest.param({"x-dispatch": "fair"}, id="x-dispatch=fair", marks=pytest.mark.warrenmq_only),
]


@pytest.mark.parametrize("arguments", FAIRNESS_ARGS)
def test_slow_consumer_gets_fewer_with_prefetch_1(
    conns: Connections, unique: str, arguments: dict[str, Any] | None
) -> None:
    queue = shared_queue(conns, unique, arguments)
    consumer_conn = conns.open()
    slow_ch, fast_ch = consumer_conn.channel(), consumer_conn.channel()
    slow_ch.basic_qos(prefetch_count=1)
    fast_ch.basic_qos(prefetch_count=1)
    slow, fast = Collector(), Collector(ack=True)  # slow acks only when told to below
    slow_ch.basic_consume(queue, slow)
    fast_ch.basic_consume(queue, fast)
    publisher = confirmed_channel(conns.open())
    publish_all(publisher, "", queue, numbered(40))

    slow_acked = 0
    deadline = time.monotonic() + TIMEOUT
    while len(slow) + len(fast) < 40:
        assert time.monotonic() < deadline, f"stuck: slow {len(slow)}, fast {len(fast)}"
        # "tell" the slow consumer to ack once for every 10 messages the fast one handled
        if len(fast) >= 10 * (slow_acked + 1) and len(slow) > slow_acked:
            slow.deliveries[slow_acked].ack()
            slow_acked += 1
        consumer_conn.process_data_events(time_limit=0.02)

    assert sorted(slow.bodies + fast.bodies) == sorted(numbered(40))
    assert 1 <= len(slow) <= 5
    assert len(fast) >= 35
    slow.deliveries[-1].ack(multiple=True)
    assert ready_count(publisher, queue) == 0


@pytest.mark.warrenmq_only
def test_unknown_dispatch_policy_refused(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    conns.track(queue=unique)
    with channel_closed(406, "PRECONDITION_FAILED", "x-dispatch", "no-such-policy"):
        ch.queue_declare(unique, arguments={"x-dispatch": "no-such-policy"})
    assert not queue_exists(ch.connection, unique)


def test_message_waits_for_a_consumer(conns: Connections, unique: str) -> None:
    queue = shared_queue(conns, unique)
    publisher = confirmed_channel(conns.open())
    publisher.basic_publish("", queue, b"waiting", pika.BasicProperties(message_id="id-1"))
    publisher.connection.close()
    consumer = conns.channel()
    got = Collector(ack=True)
    consumer.basic_consume(queue, got)
    wait_until(consumer.connection, lambda: len(got) == 1, "the waiting message")
    assert got.bodies == [b"waiting"]
    assert got.deliveries[0].properties.message_id == "id-1"
    assert got.deliveries[0].redelivered is False


@pytest.mark.parametrize("close", ["channel", "connection"])
def test_unacked_requeued_to_another_consumer_on_close(
    conns: Connections, unique: str, close: str
) -> None:
    queue = shared_queue(conns, unique)
    first_ch = conns.channel()
    first = Collector()
    first_ch.basic_consume(queue, first)
    publisher = confirmed_channel(conns.open())
    publish_all(publisher, "", queue, numbered(3))
    wait_until(first_ch.connection, lambda: len(first) == 3, "first consumer's deliveries")
    first.deliveries[0].ack()

    second_ch = conns.channel()
    second = Collector(ack=True)
    second_ch.basic_consume(queue, second)
    if close == "channel":
        first_ch.close()
    else:
        first_ch.connection.close()
    wait_until(second_ch.connection, lambda: len(second) == 2, "requeued deliveries")
    assert second.bodies == [b"m1", b"m2"]
    assert all(delivery.redelivered for delivery in second.deliveries)


KILLED_CONSUMER = textwrap.dedent(
    """
    import sys
    import pika

    url, queue, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    received = []

    def on_message(channel, method, properties, body):
        received.append(body)
        if len(received) == expected:
            print("received " + ",".join(b.decode() for b in received), flush=True)

    channel.basic_consume(queue, on_message, auto_ack=False)
    channel.start_consuming()
    """
)


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    buffer = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not buffer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                pytest.fail(f"no line from the consumer process in {timeout}s; got {buffer!r}")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                pytest.fail(f"consumer process exited ({proc.wait()}) after {buffer!r}")
            buffer += chunk
    return buffer.decode().strip()


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_killed_consumer_process_messages_redelivered(
    broker: BrokerLike, conns: Connections, unique: str
) -> None:
    queue = shared_queue(conns, unique)
    publisher = confirmed_channel(conns.open())
    publish_all(publisher, "", queue, numbered(4))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CONSUMER, broker.url, queue, "4"],
        stdout=subprocess.PIPE,
    )
    try:
        assert read_line(proc, timeout=10) == "received m0,m1,m2,m3"
        ok = publisher.queue_declare(queue, passive=True).method
        assert (ok.message_count, ok.consumer_count) == (0, 1)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()

    consumer = conns.channel()
    got = Collector(ack=True)
    consumer.basic_consume(queue, got)
    wait_until(consumer.connection, lambda: len(got) == 4, "redelivery after the kill")
    assert got.bodies == numbered(4)
    assert all(delivery.redelivered for delivery in got.deliveries)


# --- mandatory / returns ---------------------------------------------------------------------


def test_mandatory_unroutable_with_confirms_raises(conns: Connections, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    with pytest.raises(UnroutableError) as info:
        ch.basic_publish("amq.direct", f"{unique}.nowhere", b"lost", mandatory=True)
    [returned] = info.value.messages
    assert returned.method.reply_code == 312
    assert returned.method.reply_text == "NO_ROUTE"
    assert returned.method.exchange == "amq.direct"
    assert returned.method.routing_key == f"{unique}.nowhere"
    assert returned.body == b"lost"
    # the channel stays usable
    ch.queue_declare(unique, exclusive=True)
    ch.basic_publish("", unique, b"routable", mandatory=True)
    assert get_bodies(ch, unique) == [b"routable"]


def test_mandatory_return_callback(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    returns: list[tuple[pika.spec.Basic.Return, pika.BasicProperties, bytes]] = []
    ch.add_on_return_callback(
        lambda _ch, method, props, body: returns.append((method, props, body))
    )
    ch.queue_declare(unique, exclusive=True)
    ch.basic_publish("", unique, b"routed", mandatory=True)
    ch.basic_publish(
        "amq.topic",
        f"{unique}.x",
        b"returned",
        pika.BasicProperties(headers={"k": "v"}),
        mandatory=True,
    )
    ch.basic_publish("amq.topic", f"{unique}.y", b"dropped silently", mandatory=False)
    wait_until(ch.connection, lambda: len(returns) == 1, "basic.return")
    method, props, body = returns[0]
    assert (method.reply_code, method.reply_text) == (312, "NO_ROUTE")
    assert (method.exchange, method.routing_key) == ("amq.topic", f"{unique}.x")
    assert body == b"returned"
    assert props.headers == {"k": "v"}
    assert get_bodies(ch, unique) == [b"routed"]
    settle(ch.connection)
    assert len(returns) == 1


# --- confirms --------------------------------------------------------------------------------


def test_publisher_confirms(conns: Connections, unique: str) -> None:
    ch = confirmed_channel(conns.open())
    ch.queue_declare(unique, exclusive=True)
    publish_all(ch, "", unique, numbered(20))  # each call returns once acked
    ch.basic_publish("amq.direct", f"{unique}.unroutable", b"acked anyway")
    assert ready_count(ch, unique) == 20
    assert get_bodies(ch, unique) == numbered(20)


def test_confirm_publish_to_missing_exchange_closes_channel(
    conns: Connections, unique: str
) -> None:
    ch = confirmed_channel(conns.open())
    with channel_closed(404, f"NOT_FOUND - no exchange '{unique}' in vhost '/'"):
        ch.basic_publish(unique, "k", b"m")


# --- transactions ----------------------------------------------------------------------------


def test_tx_commit_makes_publishes_visible(conns: Connections, unique: str) -> None:
    queue = shared_queue(conns, unique)
    tx = conns.channel()
    observer = conns.channel()
    tx.tx_select()
    publish_all(tx, "", queue, [b"1", b"2"])
    assert ready_count(tx, queue) == 0  # a round trip on the tx channel: the publishes arrived
    assert ready_count(observer, queue) == 0
    tx.tx_commit()
    assert ready_count(observer, queue) == 2
    tx.basic_publish("", queue, b"3")
    tx.tx_commit()
    assert get_bodies(observer, queue) == [b"1", b"2", b"3"]


def test_tx_rollback_discards_publishes(conns: Connections, unique: str) -> None:
    queue = shared_queue(conns, unique)
    tx = conns.channel()
    tx.tx_select()
    publish_all(tx, "", queue, [b"discarded1", b"discarded2"])
    tx.tx_rollback()
    tx.tx_commit()
    assert ready_count(tx, queue) == 0
    tx.basic_publish("", queue, b"kept")
    tx.tx_commit()
    assert get_bodies(conns.channel(), queue) == [b"kept"]


def test_tx_acks_take_effect_on_commit(conns: Connections, unique: str) -> None:
    queue = shared_queue(conns, unique)
    publish_all(confirmed_channel(conns.open()), "", queue, [b"1", b"2", b"3"])
    tx = conns.channel()
    tx.tx_select()
    tags = []
    for _ in range(3):
        method, _props, _body = tx.basic_get(queue, auto_ack=False)
        tags.append(method.delivery_tag)
    tx.basic_ack(tags[0])
    tx.tx_rollback()  # the ack is forgotten; the message stays unacked
    tx.basic_ack(tags[1])
    tx.tx_commit()  # only this ack happens
    tx.close()  # the two still unacked go back
    observer = conns.channel()
    wait_until(observer.connection, lambda: ready_count(observer, queue) == 2, "requeue on close")
    got = []
    while (frame := observer.basic_get(queue, auto_ack=True))[0] is not None:
        got.append((frame[2], frame[0].redelivered))
    assert got == [(b"1", True), (b"3", True)]


def test_tx_commit_without_select_is_an_error(conns: Connections) -> None:
    ch = conns.channel()
    with channel_closed(406, "PRECONDITION_FAILED", "channel is not transactional"):
        ch.tx_commit()


def test_reject_inside_a_transaction_waits_for_commit(conns: Connections, unique: str) -> None:
    ch = conns.channel()
    ch.queue_declare(unique, exclusive=True)
    ch.basic_publish("", unique, b"job")
    ch.tx_select()
    method, _, _ = ch.basic_get(unique)
    assert method is not None
    ch.basic_reject(method.delivery_tag, requeue=True)
    assert ch.queue_declare(unique, passive=True).method.message_count == 0
    ch.tx_commit()
    assert ch.queue_declare(unique, passive=True).method.message_count == 1
    again, _, body = ch.basic_get(unique, auto_ack=True)
    assert again is not None and again.redelivered and body == b"job"


def test_rollback_forgets_a_reject_and_the_delivery_stays_unacked(
    conns: Connections, unique: str
) -> None:
    ch = conns.channel()
    ch.queue_declare(unique, exclusive=True)
    ch.basic_publish("", unique, b"job")
    ch.tx_select()
    method, _, _ = ch.basic_get(unique)
    assert method is not None
    ch.basic_reject(method.delivery_tag, requeue=True)
    ch.tx_rollback()
    assert ch.queue_declare(unique, passive=True).method.message_count == 0
    ch.basic_ack(method.delivery_tag)  # still ours to ack: no 406
    ch.tx_commit()
    assert ch.queue_declare(unique, passive=True).method.message_count == 0

"""The example package warrenmq-delayed-message (examples/delayed-message), installed with pip
and driven from pika: delays honoured in order of due time (also at 10,000 messages a second),
delays beyond RabbitMQ's 2^32 ms, persistent messages across a restart, and RabbitMQ's errors.

Each test runs its own broker: ``running_broker``, whose exchanges' schedules a test can look
at, or a ``warrenmq run`` process for the tests under load. How late messages are released is a
speed figure: the benchmark measures it (``python -m bench --scenario delayed``), not the tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pika
import pytest
from example_plugins import broker_process
from pamqp import commands
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import (
    Collector,
    channel_closed,
    connect,
    connection_closed,
    ready_count,
    settle,
    wait_until,
)
from raw_amqp import RawAMQP, publish_frames

from warrenmq import Settings
from warrenmq.testing import RunningBroker, running_broker

pytestmark = [pytest.mark.warrenmq_only, pytest.mark.usefixtures("example_plugins")]

DELAYED = {"x-delayed-type": "direct"}


@pytest.fixture
def running() -> Iterator[RunningBroker]:
    with running_broker() as running:
        yield running


def _router(running: RunningBroker, exchange: str) -> Any:
    return running.broker.vhosts["/"].exchanges[exchange].router


def _delayed(delay: Any, **extra: Any) -> pika.BasicProperties:
    return pika.BasicProperties(headers={"x-delay": delay}, **extra)


def _raw_delayed(delay: int) -> commands.Basic.Properties:
    return commands.Basic.Properties(headers={"x-delay": delay})


def _topology(channel: BlockingChannel, durable: bool = False) -> None:
    """Exchange ``delayed`` (direct underneath) -> queue ``later`` with key ``k``."""
    channel.exchange_declare("delayed", "x-delayed-message", durable=durable, arguments=DELAYED)
    channel.queue_declare("later", durable=durable)
    channel.queue_bind("later", "delayed", routing_key="k")


def test_messages_arrive_after_their_delay_in_order_of_due_time(running: RunningBroker) -> None:
    connection = connect(running)
    channel = connection.channel()
    channel.confirm_delivery()
    _topology(channel)
    arrivals: list[tuple[bytes, float, Any]] = []

    def on_message(ch: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        arrivals.append((body, time.monotonic(), (properties.headers or {}).get("x-delay")))

    channel.basic_consume("later", on_message, auto_ack=True)
    published = {}
    for delay in (600, 200, 400):
        published[delay] = time.monotonic()
        channel.basic_publish("delayed", "k", b"%d" % delay, _delayed(delay), mandatory=True)
    channel.basic_publish("delayed", "k", b"now")  # no x-delay: routed at once
    wait_until(connection, lambda: len(arrivals) == 4, "four deliveries", timeout=5)
    assert [body for body, _, _ in arrivals] == [b"now", b"200", b"400", b"600"]
    for body, arrived, header in arrivals[1:]:
        delay = int(body)
        assert arrived - published[delay] >= delay / 1000, f"{body!r} came early"
        assert header == -delay, "delivered with x-delay swapped to minus the delay"
    assert arrivals[0][2] is None
    connection.close()


@pytest.mark.parametrize("delay", [2**32 + 5000, 2**63 - 1])
def test_delays_beyond_two_to_the_32_ms_are_held(running: RunningBroker, delay: int) -> None:
    """RabbitMQ's plugin routes such a message at once; here it waits for its due time."""
    connection = connect(running)
    channel = connection.channel()
    channel.confirm_delivery()
    _topology(channel)
    before = time.time()
    channel.basic_publish("delayed", "k", b"much later", _delayed(delay))
    assert ready_count(channel, "later") == 0
    schedule = _router(running, "delayed").schedule
    assert len(schedule) == 1
    (held,) = schedule.held()
    assert held.due_wall >= before + delay / 1000
    channel.basic_publish("delayed", "k", b"soon", _delayed(50))
    wait_until(connection, lambda: ready_count(channel, "later") == 1, "the short delay")
    assert len(schedule) == 1, "the long one still waits"
    connection.close()


@pytest.mark.parametrize(
    ("header", "held"),
    [
        ("300", True),
        (Decimal("300.9"), True),
        (0, False),
        (-5, False),
        ("soon", False),
        (True, False),
    ],
)
def test_x_delay_values_as_rabbitmq_reads_them(
    running: RunningBroker, header: Any, held: bool
) -> None:
    connection = connect(running)
    channel = connection.channel()
    channel.confirm_delivery()
    _topology(channel)
    channel.basic_publish("delayed", "k", b"m", _delayed(header))
    assert ready_count(channel, "later") == (0 if held else 1)
    assert len(_router(running, "delayed").schedule) == (1 if held else 0)
    connection.close()


#: messages a second in the load test, for this long (seconds), this many to a socket write
RATE = 10_000
BURST = 0.5
BATCH = 50
#: arrival may precede publish time + delay by this much (s) for clock granularity alone
CLOCK_TOLERANCE = 0.001
#: a message due this much (s) before another, by the test's clock, must arrive first: the
#: allowance for the broker reading one message later after its publish than the other
ORDER_SLACK = 0.2


def _spread_delay(n: int) -> int:
    """50-500 ms; consecutive messages far apart, so due order is not publish order."""
    return 50 + n * 7919 % 451


def _due_order_problems(
    arrivals: list[int], published: list[float], delays: list[int]
) -> list[str]:
    """How ``arrivals`` (sequence numbers in arrival order) break due-time order.

    Exactly: a message published before another with an equal or shorter delay falls due
    first whenever the broker reads them (in order), so must arrive first. Within
    ``ORDER_SLACK``: one due earlier by publish time + delay arrives first.
    """
    problems = []
    highest = [-1] * (max(delays) + 1)  # per delay: highest sequence number arrived so far
    latest_due = -1.0
    for seq in arrivals:
        delay = delays[seq]
        overtaken_by = max(highest[delay:])
        if overtaken_by > seq:
            problems.append(
                f"{seq} ({delay} ms) came after {overtaken_by} ({delays[overtaken_by]} ms), "
                "published later with a delay no shorter"
            )
        highest[delay] = max(highest[delay], seq)
        due = published[seq] + delay / 1000
        if due < latest_due - ORDER_SLACK:
            problems.append(f"{seq} came {1000 * (latest_due - due):.0f} ms after its due order")
        latest_due = max(latest_due, due)
    return problems


def test_at_10000_messages_a_second_each_arrives_once_none_early_in_due_order() -> None:
    """Half a second at 10,000 messages a second, each due 50-500 ms after it is published, so
    that messages fall due while the broker is still taking publishes. How late they arrive is
    a speed figure, measured by the benchmark (``python -m bench --scenario delayed``)."""
    total = int(RATE * BURST)
    delays = [_spread_delay(n) for n in range(total)]
    batches = [
        b"".join(
            publish_frames(1, "delayed", "k", b"%d" % n, properties=_raw_delayed(delays[n]))
            for n in range(first, min(first + BATCH, total))
        )
        for first in range(0, total, BATCH)
    ]
    published = [0.0] * total
    arrivals: list[tuple[int, float]] = []

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        arrivals.append((int(body), time.monotonic()))

    with broker_process() as (_, _, port):
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        _topology(channel)
        channel.basic_consume("later", on_message, auto_ack=True)
        with RawAMQP("127.0.0.1", port) as publisher:
            # a raw socket and frames made beforehand: publishing costs the test little
            publisher.handshake()
            publisher.open_channel(1)
            start = time.monotonic()
            for index, data in enumerate(batches):
                first = index * BATCH
                while (ahead := start + first / RATE - time.monotonic()) > 0:
                    connection.process_data_events(time_limit=ahead)  # consume meanwhile
                now = time.monotonic()
                for n in range(first, min(first + BATCH, total)):
                    published[n] = now
                publisher.send(data)
            wait_until(connection, lambda: len(arrivals) >= total, "every message", timeout=30)
            settle(connection)
        connection.close()
    order = [seq for seq, _ in arrivals]
    assert sorted(order) == list(range(total)), "each message delivered exactly once"
    early = [
        (seq, at - published[seq])
        for seq, at in arrivals
        if at < published[seq] + delays[seq] / 1000 - CLOCK_TOLERANCE
    ]
    assert not early, f"{len(early)} arrived before their due time, as (seq, s after publish): " + (
        ", ".join(f"({seq}, {after:.3f} for {delays[seq]} ms)" for seq, after in early[:5])
    )
    problems = _due_order_problems(order, published, delays)
    assert not problems, f"{len(problems)} out of due-time order: " + "; ".join(problems[:5])


def test_messages_due_2_ms_apart_each_arrive_none_early_in_order() -> None:
    """300 messages due 2 ms apart, so that nearly each needs a timer wake of its own (the
    broker arms one timer, for the earliest): every one arrives, in order, none early, whatever
    the resolution of the event loop's clock. What a wake costs the broker in CPU is measured
    by the benchmark's timer phase."""
    count = 300
    arrivals: list[tuple[int, float]] = []

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        arrivals.append((int(body), time.monotonic()))

    with broker_process() as (_, _, port):
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        _topology(channel)
        channel.basic_consume("later", on_message, auto_ack=True)
        published = []
        for n in range(count):
            published.append(time.monotonic())
            channel.basic_publish("delayed", "k", b"%d" % n, _delayed(100 + 2 * n))
        wait_until(connection, lambda: len(arrivals) >= count, "every message", timeout=10)
        settle(connection)
        connection.close()
    assert [seq for seq, _ in arrivals] == list(range(count)), "once each, in due-time order"
    early = [
        seq
        for seq, at in arrivals
        if at < published[seq] + (100 + 2 * seq) / 1000 - CLOCK_TOLERANCE
    ]
    assert not early, f"arrived before their due time: {early[:10]}"


def test_a_delayed_mandatory_message_is_not_returned_and_dropped_if_unroutable_at_due_time(
    running: RunningBroker,
) -> None:
    connection = connect(running)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.exchange_declare("delayed", "x-delayed-message", arguments=DELAYED)
    returned: list[bytes] = []
    channel.add_on_return_callback(lambda ch, method, props, body: returned.append(body))
    channel.basic_publish("delayed", "nowhere", b"m", _delayed(100), mandatory=True)
    schedule = _router(running, "delayed").schedule
    wait_until(connection, lambda: schedule.lateness.released == 1, "the due time")
    settle(connection)
    assert returned == []
    connection.close()


def test_deleting_the_exchange_drops_its_held_messages(running: RunningBroker) -> None:
    connection = connect(running)
    channel = connection.channel()
    channel.confirm_delivery()
    _topology(channel)
    channel.basic_publish("delayed", "k", b"m", _delayed(100))
    schedule = _router(running, "delayed").schedule
    channel.exchange_delete("delayed")
    assert len(schedule) == 0
    assert len(running.broker.timers) == 0, "its timer is cancelled"
    connection.close()


def test_held_messages_count_against_the_memory_alarm(running: RunningBroker) -> None:
    connection = connect(running)
    channel = connection.channel()
    channel.confirm_delivery()
    _topology(channel)
    broker = running.broker
    before = broker.accounted_memory()
    for _ in range(4):
        channel.basic_publish("delayed", "k", b"x" * 1_000_000, _delayed(60_000))
    assert broker.accounted_memory() - before >= 4_000_000
    channel.exchange_delete("delayed")
    assert broker.accounted_memory() - before < 1_000_000
    connection.close()


def test_routing_by_the_underlying_type_at_due_time(running: RunningBroker) -> None:
    """A topic underneath; a binding added after the publish still gets the message."""
    connection = connect(running)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.exchange_declare("delayed", "x-delayed-message", arguments={"x-delayed-type": "topic"})
    channel.queue_declare("eu")
    channel.basic_publish("delayed", "orders.eu.new", b"m", _delayed(200))
    channel.queue_bind("eu", "delayed", routing_key="orders.eu.*")
    wait_until(connection, lambda: ready_count(channel, "eu") == 1, "the due time")
    connection.close()


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({}, "'x-delayed-type' must be an existing exchange type"),
        ({"x-delayed-type": "x-delayed-message"}, "can't be used for 'x-delayed-type'"),
        ({"x-delayed-type": "x-consistent-hash", "hash-property": "type"}, "Unsupported property"),
    ],
)
def test_bad_arguments_are_refused(
    running: RunningBroker, arguments: dict[str, Any], error: str
) -> None:
    connection = connect(running)
    with channel_closed(406, error):
        connection.channel().exchange_declare("delayed", "x-delayed-message", arguments=arguments)
    assert "delayed" not in running.broker.vhosts["/"].exchanges
    connection.close()


def test_an_unknown_delayed_type_is_an_unknown_exchange_type(running: RunningBroker) -> None:
    connection = connect(running)
    with connection_closed(503, "unknown exchange type 'nope'"):
        connection.channel().exchange_declare(
            "delayed", "x-delayed-message", arguments={"x-delayed-type": "nope"}
        )


def test_bindings_are_checked_by_the_underlying_type(running: RunningBroker) -> None:
    connection = connect(running)
    channel = connection.channel()
    channel.exchange_declare(
        "delayed", "x-delayed-message", arguments={"x-delayed-type": "x-consistent-hash"}
    )
    channel.queue_declare("q")
    with channel_closed(406, "The binding key must be an integer"):
        channel.queue_bind("q", "delayed", routing_key="heavy")
    connection.close()


# -- across a restart, through the store ---------------------------------------------------------


def _settings(data_dir: Path, store: str = "disk") -> Settings:
    return Settings(host="127.0.0.1", amqp_port=0, data_dir=data_dir, store=store)


def _kept_segments(data_dir: Path) -> list[Path]:
    """The segment files of the store's plugin logs (``logs/<id>/``), where held messages go."""
    return sorted(data_dir.glob("logs/*/*.seg"))


def _kept_bytes(data_dir: Path) -> bytes:
    return b"".join(segment.read_bytes() for segment in _kept_segments(data_dir))


def test_persistent_messages_survive_a_restart(tmp_path: Path) -> None:
    persistent = pika.BasicProperties(headers={"x-delay": 1500}, delivery_mode=2)
    transient = pika.BasicProperties(headers={"x-delay": 1500}, delivery_mode=1)
    with running_broker(_settings(tmp_path)) as first:
        connection = connect(first)
        channel = connection.channel()
        channel.confirm_delivery()
        _topology(channel, durable=True)
        published = time.monotonic()
        channel.basic_publish("delayed", "k", b"transient", transient)
        channel.basic_publish("delayed", "k", b"persistent", persistent)
        connection.close()
    with running_broker(_settings(tmp_path)) as second:
        connection = connect(second)
        channel = connection.channel()
        _topology(channel, durable=True)  # restored by the store; declaring again is harmless
        received = Collector()
        channel.basic_consume("later", received, auto_ack=True)
        wait_until(connection, lambda: len(received) == 1, "the persistent message", 5)
        assert time.monotonic() - published >= 1.5, "not before its due time"
        assert received.bodies == [b"persistent"], "the transient one was not kept"
        assert received.deliveries[0].properties.headers == {"x-delay": -1500}
        assert received.deliveries[0].properties.delivery_mode == 2
        connection.close()
    with running_broker(_settings(tmp_path)) as third:
        connection = connect(third)
        _topology(connection.channel(), durable=True)
        assert len(_router(third, "delayed").schedule) == 0, "released once, not again"
        connection.close()


def test_a_kept_message_keeps_its_per_message_ttl(tmp_path: Path) -> None:
    """Released after a restart, a message published with ``expiration`` still expires in its
    queue (here dead-lettered to ``expired``)."""
    with running_broker(_settings(tmp_path)) as first:
        connection = connect(first)
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare("delayed", "x-delayed-message", durable=True, arguments=DELAYED)
        channel.queue_declare("expired", durable=True)
        dead_letters = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "expired"}
        channel.queue_declare("later", durable=True, arguments=dead_letters)
        channel.queue_bind("later", "delayed", routing_key="k")
        properties = _delayed(200, delivery_mode=2, expiration="100")
        channel.basic_publish("delayed", "k", b"short-lived", properties)
        connection.close()
    with running_broker(_settings(tmp_path)) as second:
        connection = connect(second)
        channel = connection.channel()
        wait_until(connection, lambda: ready_count(channel, "expired") == 1, "its expiry")
        method, properties, body = channel.basic_get("expired", auto_ack=True)
        assert body == b"short-lived"
        assert properties.headers["x-death"][0]["reason"] == "expired"
        connection.close()


def test_with_the_disk_store_the_exchange_comes_back_with_its_messages(tmp_path: Path) -> None:
    """The disk store restores the durable delayed exchange, its binding and the durable
    queue at start: the held message is released with no client declaring anything."""
    persistent = pika.BasicProperties(headers={"x-delay": 1000}, delivery_mode=2)
    with running_broker(_settings(tmp_path)) as first:
        connection = connect(first)
        channel = connection.channel()
        channel.confirm_delivery()
        _topology(channel, durable=True)
        channel.basic_publish("delayed", "k", b"held", persistent)
        connection.close()
    with running_broker(_settings(tmp_path)) as second:
        connection = connect(second)
        channel = connection.channel()
        received = Collector()
        channel.basic_consume("later", received, auto_ack=True)  # declared by no one
        wait_until(connection, lambda: len(received) == 1, "the held message", 5)
        assert received.bodies == [b"held"]
        connection.close()


def test_a_confirm_comes_after_the_store_has_the_message_and_transient_ones_are_not_written(
    tmp_path: Path,
) -> None:
    with running_broker(_settings(tmp_path)) as running:
        connection = connect(running)
        channel = connection.channel()
        channel.confirm_delivery()
        _topology(channel, durable=True)
        for n in range(10):
            body = b"persistent-%03d" % n
            channel.basic_publish("delayed", "k", body, _delayed(60_000, delivery_mode=2))
            assert body in _kept_bytes(tmp_path), "written before basic.ack"
        channel.basic_publish("delayed", "k", b"transient-one", _delayed(60_000, delivery_mode=1))
        channel.basic_publish("delayed", "k", b"persistent-end", _delayed(60_000, delivery_mode=2))
        assert b"persistent-end" in _kept_bytes(tmp_path)
        assert b"transient-one" not in _kept_bytes(tmp_path)
        assert len(_router(running, "delayed").schedule) == 12, "all held, kept or not"
        connection.close()


def test_with_the_memory_store_nothing_is_kept(tmp_path: Path) -> None:
    with running_broker(_settings(tmp_path, store="memory")) as first:
        connection = connect(first)
        channel = connection.channel()
        channel.confirm_delivery()
        _topology(channel, durable=True)
        channel.basic_publish("delayed", "k", b"m", _delayed(60_000, delivery_mode=2))
        assert len(_router(first, "delayed").schedule) == 1
        connection.close()
    assert list(tmp_path.iterdir()) == [], "nothing written to the data directory"
    with running_broker(_settings(tmp_path, store="memory")) as second:
        connection = connect(second)
        _topology(connection.channel(), durable=True)
        assert len(_router(second, "delayed").schedule) == 0
        connection.close()


def test_a_message_due_while_the_broker_was_down_waits_for_a_binding(tmp_path: Path) -> None:
    """An exchange with no binding at the restart holds what fell due until it has one."""
    with running_broker(_settings(tmp_path)) as first:
        connection = connect(first)
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare("delayed", "x-delayed-message", durable=True, arguments=DELAYED)
        channel.basic_publish("delayed", "k", b"overdue", _delayed(100, delivery_mode=2))
        due = time.monotonic() + 0.1
        connection.close()
    while time.monotonic() < due:  # the broker is down when the message falls due
        time.sleep(due - time.monotonic())
    with running_broker(_settings(tmp_path)) as second:
        connection = connect(second)
        channel = connection.channel()
        assert len(_router(second, "delayed").schedule) == 1, "held until a binding exists"
        channel.queue_declare("later", durable=True)
        channel.queue_bind("later", "delayed", routing_key="k")
        wait_until(connection, lambda: ready_count(channel, "later") == 1, "the overdue message")
        assert channel.basic_get("later", auto_ack=True)[2] == b"overdue"
        connection.close()


def test_deleting_a_durable_exchange_deletes_its_kept_messages(tmp_path: Path) -> None:
    with running_broker(_settings(tmp_path)) as running:
        connection = connect(running)
        channel = connection.channel()
        channel.confirm_delivery()
        _topology(channel, durable=True)
        channel.basic_publish("delayed", "k", b"m", _delayed(60_000, delivery_mode=2))
        assert len(_kept_segments(tmp_path)) == 1
        channel.exchange_delete("delayed")
        wait_until(connection, lambda: not list(tmp_path.glob("logs/*")), "the log's removal")
        connection.close()
    with running_broker(_settings(tmp_path)) as again:
        connection = connect(again)
        _topology(connection.channel(), durable=True)
        assert len(_router(again, "delayed").schedule) == 0, "the old messages are gone"
        connection.close()


def test_after_kill_9_every_confirmed_message_is_released_once_at_its_due_time(
    tmp_path: Path,
) -> None:
    """Confirmed, then ``kill -9``: one message released before the crash is not released again,
    one that fell due while the broker was down is released at once after the start, and one
    due later at its due time."""
    data_dir = ("--data-dir", str(tmp_path), "--log-level", "info")
    delays = {b"before": 100, b"during": 2000, b"after": 4000}
    with broker_process(*data_dir) as (process, _, port):
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        channel.confirm_delivery()
        _topology(channel, durable=True)
        channel.queue_declare("sync", durable=True)
        published = time.monotonic()
        for body, delay in delays.items():
            channel.basic_publish("delayed", "k", body, _delayed(delay, delivery_mode=2))
        received = Collector(ack=True)
        channel.basic_consume("later", received)
        wait_until(connection, lambda: len(received) == 1, "the first release")
        # one more confirmed write: the store has written everything queued before it
        channel.basic_publish("", "sync", b"sync", pika.BasicProperties(delivery_mode=2))
        process.kill()
        process.wait(10)
    assert received.bodies == [b"before"]
    while time.monotonic() < published + 2.0:  # "during" falls due while the broker is down
        time.sleep(published + 2.0 - time.monotonic())
    with broker_process(*data_dir) as (_, log, port):
        started = time.monotonic()
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        arrivals: dict[bytes, float] = {}

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            assert body not in arrivals, f"{body!r} released twice"
            arrivals[body] = time.monotonic()
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume("later", on_message)  # restored by the store
        wait_until(connection, lambda: len(arrivals) == 2, "the two held messages", 10)
        assert list(arrivals) == [b"during", b"after"]
        assert arrivals[b"during"] - started < 1.5, "the overdue one at once"
        assert arrivals[b"after"] - published >= 4.0, "the other one not before its due time"
        assert ready_count(channel, "later") == 0, "nothing more: b'before' was not released again"
        connection.close()
    assert "exchange 'delayed' in vhost '/': 2 delayed messages back from the store" in log.finish()
    assert "released 2 delayed messages" in log.text
    assert "0 held (0 kept for the restart)" in log.text

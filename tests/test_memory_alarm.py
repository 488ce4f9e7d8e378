"""The memory alarm goes by memory the broker accounts for (messages held, buffers): above the
limit publishers are blocked (connection.blocked), nothing is lost and consumers keep working;
once consumers drain the queues it clears, even if resident memory stays high (CPython rarely
hands freed memory back). Resident memory is a second guard only."""

from __future__ import annotations

import pika
from pika_helpers import ready_count, wait_until

from warrenmq import Settings
from warrenmq.testing import running_broker

LIMIT = 1_000_000
WAIT = 10.0
BIG = b"x" * 300_000


class Gauge:
    """The resident-memory reading the broker sees, set by the test."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def __call__(self) -> int:
        return self.value


def _settings(gauge: Gauge) -> Settings:
    return Settings(amqp_port=0, memory_limit=LIMIT, memory_gauge=gauge, memory_check_interval=0.02)


def _watch(publisher: pika.BlockingConnection) -> list[str]:
    events: list[str] = []
    publisher.add_on_connection_blocked_callback(
        lambda _conn, frame: events.append(f"blocked:{frame.method.reason}")
    )
    publisher.add_on_connection_unblocked_callback(lambda _conn, _frame: events.append("unblocked"))
    return events


def test_messages_held_block_publishers_until_consumers_drain_them() -> None:
    gauge = Gauge(0)
    with running_broker(_settings(gauge)) as running:
        params = pika.URLParameters(running.url)
        publisher = pika.BlockingConnection(params)
        observer = pika.BlockingConnection(params)
        try:
            events = _watch(publisher)
            pub = publisher.channel()
            obs = observer.channel()
            obs.queue_declare("work")
            for _ in range(4):  # 1.2 MB held against a 1 MB limit
                pub.basic_publish("", "work", BIG)
            wait_until(publisher, lambda: bool(events), "connection.blocked", WAIT)
            assert events == ["blocked:low on memory"]
            assert ready_count(obs, "work") == 4
            for n in range(10):
                pub.basic_publish("", "work", f"during {n}".encode())
            publisher.process_data_events(time_limit=0.1)
            # the broker does not read the blocked publisher; consumers carry on
            assert ready_count(obs, "work") == 4
            for _ in range(4):
                method, _, body = obs.basic_get("work", auto_ack=True)
                assert method is not None and body == BIG

            gauge.value = 10 * LIMIT  # resident memory stays high after the drain
            wait_until(publisher, lambda: events[-1] == "unblocked", "connection.unblocked", WAIT)
            wait_until(observer, lambda: ready_count(obs, "work") == 10, "the held messages", WAIT)
            bodies = []
            while (got := obs.basic_get("work", auto_ack=True))[0] is not None:
                bodies.append(got[2])
            assert bodies == [f"during {n}".encode() for n in range(10)]
        finally:
            publisher.close()
            observer.close()


def test_unacknowledged_messages_count_too() -> None:
    with running_broker(_settings(Gauge(0))) as running:
        params = pika.URLParameters(running.url)
        publisher = pika.BlockingConnection(params)
        consumer = pika.BlockingConnection(params)
        try:
            events = _watch(publisher)
            pub = publisher.channel()
            sub = consumer.channel()
            sub.queue_declare("held")
            received: list[int] = []
            sub.basic_consume(
                "held", lambda ch, method, _p, _b: received.append(method.delivery_tag)
            )
            for _ in range(4):
                pub.basic_publish("", "held", BIG)
            wait_until(consumer, lambda: len(received) == 4, "four deliveries", WAIT)
            wait_until(publisher, lambda: bool(events), "connection.blocked", WAIT)
            sub.basic_ack(0, multiple=True)
            wait_until(publisher, lambda: events[-1] == "unblocked", "connection.unblocked", WAIT)
        finally:
            publisher.close()
            consumer.close()


def test_resident_memory_guards_when_accounted_memory_is_substantial() -> None:
    gauge = Gauge(2 * LIMIT)  # resident far over the limit: something the accounting misses
    with running_broker(_settings(gauge)) as running:
        params = pika.URLParameters(running.url)
        publisher = pika.BlockingConnection(params)
        observer = pika.BlockingConnection(params)
        try:
            events = _watch(publisher)
            pub = publisher.channel()
            obs = observer.channel()
            obs.queue_declare("guard")
            pub.basic_publish("", "guard", b"small")
            wait_until(publisher, lambda: ready_count(obs, "guard") == 1, "a small message", WAIT)
            assert events == [], "a little held memory with high resident memory is no alarm"
            for _ in range(2):  # 600 KB held: over half the limit
                pub.basic_publish("", "guard", BIG)
            wait_until(publisher, lambda: bool(events), "connection.blocked", WAIT)
            obs.queue_purge("guard")
            wait_until(publisher, lambda: events[-1] == "unblocked", "connection.unblocked", WAIT)
        finally:
            publisher.close()
            observer.close()

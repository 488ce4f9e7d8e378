"""Above the memory limit publishers are blocked (connection.blocked), nothing is lost, and
consumers keep working; below it they are unblocked and what they sent arrives."""

from __future__ import annotations

import pika
from pika_helpers import ready_count, wait_until

from warrenmq import Settings
from warrenmq.testing import running_broker

LIMIT = 1_000_000
WAIT = 10.0


class Gauge:
    """The memory reading the broker sees, set by the test."""

    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        return self.value


def test_publisher_is_blocked_and_unblocked_without_losing_messages() -> None:
    gauge = Gauge()
    settings = Settings(
        amqp_port=0, memory_limit=LIMIT, memory_gauge=gauge, memory_check_interval=0.02
    )
    with running_broker(settings) as running:
        params = pika.URLParameters(running.url)
        publisher = pika.BlockingConnection(params)
        observer = pika.BlockingConnection(params)
        try:
            events: list[str] = []
            publisher.add_on_connection_blocked_callback(
                lambda _conn, frame: events.append(f"blocked:{frame.method.reason}")
            )
            publisher.add_on_connection_unblocked_callback(
                lambda _conn, _frame: events.append("unblocked")
            )
            pub = publisher.channel()
            obs = observer.channel()
            obs.queue_declare("work")
            for n in range(5):
                pub.basic_publish("", "work", f"before {n}".encode())
            wait_until(publisher, lambda: ready_count(obs, "work") == 5, "the five messages", WAIT)

            gauge.value = LIMIT + 1  # over the limit
            wait_until(publisher, lambda: bool(events), "connection.blocked", WAIT)
            assert events == ["blocked:low on memory"]
            for n in range(10):
                pub.basic_publish("", "work", f"during {n}".encode())
            publisher.process_data_events(time_limit=0.1)
            # the broker does not read the blocked publisher; consumers carry on (a connection
            # that publishes during the alarm would be blocked too, as in RabbitMQ)
            assert ready_count(obs, "work") == 5
            method, _, body = obs.basic_get("work", auto_ack=True)
            assert method is not None and body == b"before 0"

            gauge.value = 0  # memory freed
            wait_until(publisher, lambda: events[-1] == "unblocked", "connection.unblocked", WAIT)
            wait_until(
                observer, lambda: ready_count(obs, "work") == 4 + 10, "the held messages", WAIT
            )
            bodies = []
            while (got := obs.basic_get("work", auto_ack=True))[0] is not None:
                bodies.append(got[2])
            assert bodies[-10:] == [f"during {n}".encode() for n in range(10)]
        finally:
            publisher.close()
            observer.close()

"""One faulty consumer never harms the publisher or the other queues.

A plugin attaches a consumer that raises on every delivery to one queue of a fanout. A pika
publisher with confirms sees its publishes confirmed, the other queue's pika consumer gets every
message, the faulty consumer is detached, and its queue keeps the messages for the next consumer.
"""

from __future__ import annotations

from typing import Any

import pika
import pytest
from pika_helpers import connection_parameters, ready_count, wait_until

import warrenmq
from warrenmq import Consumer, Entry, Message, Queue
from warrenmq.testing import running_broker

pytestmark = pytest.mark.warrenmq_only


class Exploding(Consumer):
    """A consumer whose delivery always raises (a plugin's bug)."""

    def __init__(self) -> None:
        self.tag = "exploding"
        self.attempts = 0
        self.failures: list[BaseException] = []

    def has_credit(self) -> bool:
        return True

    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        self.attempts += 1
        raise RuntimeError("a bug in a consumer plugin")

    def failed(self, queue: Queue, error: BaseException) -> None:
        self.failures.append(error)


class TrapPlugin:
    """Declares a fanout with two queues at startup and attaches the exploding consumer."""

    consumer = Exploding()

    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_startup(broker: Any) -> None:
        vhost = broker.vhosts["/"]
        vhost.declare_exchange("spread", "fanout")
        for name in ("trapped", "healthy"):
            vhost.bind(vhost.declare_queue(name), "spread", "")
        vhost.queues["trapped"].add_consumer(TrapPlugin.consumer)


def test_a_consumer_that_raises_costs_nobody_else_anything() -> None:
    with running_broker(plugins=[TrapPlugin]) as running:
        publisher = pika.BlockingConnection(connection_parameters(running))
        consumer = pika.BlockingConnection(connection_parameters(running))
        try:
            pub = publisher.channel()
            pub.confirm_delivery()  # an unconfirmed publish would raise here
            sub = consumer.channel()
            received: list[bytes] = []
            sub.basic_consume("healthy", lambda ch, m, p, body: received.append(body), True)
            for n in range(5):
                pub.basic_publish("spread", "", f"m{n}".encode())
            wait_until(consumer, lambda: len(received) == 5, "the healthy queue's messages")
            assert received == [f"m{n}".encode() for n in range(5)]
            trap = TrapPlugin.consumer
            assert trap.attempts == 1 and len(trap.failures) == 1, "detached after one failure"
            trapped = running.broker.vhosts["/"].queues["trapped"]
            assert trap not in trapped.consumers
            assert ready_count(pub, "trapped") == 5, "the faulty consumer's queue lost nothing"
            method, _, body = pub.basic_get("trapped", auto_ack=True)
            assert method is not None and body == b"m0" and not method.redelivered
            assert publisher.is_open and consumer.is_open
        finally:
            publisher.close()
            consumer.close()

"""channel.flow from the client: active=false stops deliveries on that channel (messages wait
in the queue), active=true resumes them. This is AMQP 0-9-1's channel.flow; RabbitMQ refuses
active=false with 540 NOT_IMPLEMENTED, so the test is warrenmq-only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pytest

WAIT = 5.0


def _wait(connection: pika.BlockingConnection, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        connection.process_data_events(time_limit=0.02)


@pytest.mark.warrenmq_only
def test_flow_off_holds_deliveries_and_flow_on_resumes(broker: Any, unique: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        consuming = connection.channel()
        other = connection.channel()
        other.queue_declare(unique, exclusive=True)
        got: list[bytes] = []
        consuming.basic_consume(unique, lambda _c, _m, _p, body: got.append(body), auto_ack=True)
        other.basic_publish("", unique, b"first")
        _wait(connection, lambda: got == [b"first"])

        assert consuming.flow(False) is False
        for n in range(3):
            other.basic_publish("", unique, f"held {n}".encode())
        _wait(
            connection, lambda: other.queue_declare(unique, passive=True).method.message_count == 3
        )
        assert got == [b"first"]

        assert consuming.flow(True) is True
        _wait(connection, lambda: len(got) == 4)
        assert got[1:] == [f"held {n}".encode() for n in range(3)]
    finally:
        connection.close()

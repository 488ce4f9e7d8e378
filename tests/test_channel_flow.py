"""channel.flow from the client: active=false stops deliveries on that channel (messages wait
in the queue), active=true resumes them. This is AMQP 0-9-1's channel.flow; RabbitMQ refuses
active=false with 540 NOT_IMPLEMENTED, so the test is warrenmq-only."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from pika_helpers import wait_until

WAIT = 5.0


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
        wait_until(connection, lambda: got == [b"first"], "the first delivery", WAIT)

        assert consuming.flow(False) is False
        for n in range(3):
            other.basic_publish("", unique, f"held {n}".encode())
        wait_until(
            connection,
            lambda: other.queue_declare(unique, passive=True).method.message_count == 3,
            "three held messages in the queue",
            WAIT,
        )
        assert got == [b"first"]

        assert consuming.flow(True) is True
        wait_until(connection, lambda: len(got) == 4, "the held messages", WAIT)
        assert got[1:] == [f"held {n}".encode() for n in range(3)]
    finally:
        connection.close()

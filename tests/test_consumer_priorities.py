"""Consumer priorities (``x-priority``): higher-priority consumers get messages while they have
credit; lower ones only get what they cannot take. Equal priorities share round-robin."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from pika_helpers import wait_until

WAIT = 5.0


@pytest.mark.parametrize("dispatch", [None, "fair"])
def test_high_priority_consumer_is_served_first(
    broker: Any, unique: str, dispatch: str | None
) -> None:
    if dispatch is not None and broker.external:
        pytest.skip("x-dispatch is a warrenmq queue argument")
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        channel = connection.channel()
        arguments = {"x-dispatch": dispatch} if dispatch else None
        channel.queue_declare(unique, exclusive=True, arguments=arguments)
        got: dict[str, list[tuple[int, bytes]]] = {"high": [], "low": []}

        def collector(name: str) -> Any:
            return lambda _ch, method, _p, body: got[name].append((method.delivery_tag, body))

        channel.basic_qos(prefetch_count=2)
        channel.basic_consume(unique, collector("high"), arguments={"x-priority": 10})
        channel.basic_qos(prefetch_count=10)
        channel.basic_consume(unique, collector("low"), arguments={"x-priority": 0})
        for n in range(5):
            channel.basic_publish("", unique, f"m{n}".encode())
        wait_until(
            connection, lambda: len(got["high"]) + len(got["low"]) == 5, "all five deliveries", WAIT
        )
        assert [body for _, body in got["high"]] == [b"m0", b"m1"]
        assert [body for _, body in got["low"]] == [b"m2", b"m3", b"m4"]

        channel.basic_ack(got["high"][0][0])  # the high-priority consumer has credit again
        channel.basic_publish("", unique, b"m5")
        wait_until(
            connection, lambda: len(got["high"]) == 3, "m5 for the high-priority consumer", WAIT
        )
        assert got["high"][-1][1] == b"m5"
        assert len(got["low"]) == 3
    finally:
        connection.close()


def test_equal_priorities_alternate(broker: Any, unique: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        channel = connection.channel()
        channel.queue_declare(unique, exclusive=True)
        got: list[str] = []
        for name, priority in (("a", 5), ("b", 5), ("low", 1)):
            channel.basic_consume(
                unique,
                lambda _ch, _m, _p, _b, name=name: got.append(name),
                auto_ack=True,
                arguments={"x-priority": priority},
            )
        for n in range(6):
            channel.basic_publish("", unique, f"m{n}".encode())
        wait_until(connection, lambda: len(got) == 6, "six deliveries", WAIT)
        assert got == ["a", "b", "a", "b", "a", "b"]
    finally:
        connection.close()

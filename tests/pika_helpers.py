"""Shared helpers for the pika functional tests: real connections, condition waits, no sleeps.

Every wait here polls the connection (``process_data_events``) until a condition holds or a
deadline passes, then fails with a message naming what was awaited.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Protocol

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError, ChannelClosedByBroker, ConnectionClosedByBroker

#: how long any single wait may take before the test fails
TIMEOUT = 3.0


class BrokerLike(Protocol):
    @property
    def url(self) -> str: ...


def connection_parameters(broker: BrokerLike) -> pika.URLParameters:
    params = pika.URLParameters(broker.url)
    params.connection_attempts = 1
    params.socket_timeout = 5.0
    params.stack_timeout = 5.0
    params.blocked_connection_timeout = 5.0
    return params


def connect(broker: BrokerLike) -> pika.BlockingConnection:
    return pika.BlockingConnection(connection_parameters(broker))


class Connections:
    """Opens pika connections on demand and closes all of them at teardown."""

    def __init__(self, broker: BrokerLike) -> None:
        self.broker = broker
        self.opened: list[pika.BlockingConnection] = []
        self.exchanges: list[str] = []
        self.queues: list[str] = []

    def track(self, *, exchange: str | None = None, queue: str | None = None) -> None:
        """Delete this exchange/queue at teardown (so a shared broker does not fill up)."""
        if exchange is not None:
            self.exchanges.append(exchange)
        if queue is not None:
            self.queues.append(queue)

    def open(self) -> pika.BlockingConnection:
        connection = connect(self.broker)
        self.opened.append(connection)
        return connection

    def channel(self) -> BlockingChannel:
        """A channel on a fresh connection (``channel.connection`` reaches the connection)."""
        return self.open().channel()

    def close_all(self) -> None:
        for connection in self.opened:
            if connection.is_open:
                with suppress(AMQPError):
                    connection.close()
        if self.exchanges or self.queues:
            self._delete_tracked()

    def _delete_tracked(self) -> None:
        connection = connect(self.broker)
        try:
            for queue in self.queues:
                with suppress(ChannelClosedByBroker):
                    connection.channel().queue_delete(queue)
            for exchange in self.exchanges:
                with suppress(ChannelClosedByBroker):
                    connection.channel().exchange_delete(exchange)
        finally:
            connection.close()


@contextmanager
def open_connections(broker: BrokerLike) -> Iterator[Connections]:
    connections = Connections(broker)
    try:
        yield connections
    finally:
        connections.close_all()


@dataclass
class Delivery:
    channel: BlockingChannel
    method: pika.spec.Basic.Deliver
    properties: pika.BasicProperties
    body: bytes

    @property
    def delivery_tag(self) -> int:
        return int(self.method.delivery_tag)

    @property
    def redelivered(self) -> bool:
        return bool(self.method.redelivered)

    def ack(self, multiple: bool = False) -> None:
        self.channel.basic_ack(self.delivery_tag, multiple=multiple)


class Collector:
    """An ``on_message_callback`` recording every delivery; acks at once if ``ack`` is set."""

    def __init__(self, ack: bool = False) -> None:
        self.ack = ack
        self.deliveries: list[Delivery] = []

    def __call__(
        self,
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        self.deliveries.append(Delivery(channel, method, properties, body))
        if self.ack:
            channel.basic_ack(method.delivery_tag)

    @property
    def bodies(self) -> list[bytes]:
        return [delivery.body for delivery in self.deliveries]

    def __len__(self) -> int:
        return len(self.deliveries)


def wait_until(
    connections: pika.BlockingConnection | Sequence[pika.BlockingConnection],
    condition: Callable[[], bool],
    what: str,
    timeout: float = TIMEOUT,
) -> None:
    """Process I/O on ``connections`` until ``condition()`` holds; fail after ``timeout``."""
    if isinstance(connections, pika.BlockingConnection):
        connections = [connections]
    slice_ = 0.05 / len(connections)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        for connection in connections:
            connection.process_data_events(time_limit=slice_)


def settle(
    connections: pika.BlockingConnection | Sequence[pika.BlockingConnection],
    duration: float = 0.2,
) -> None:
    """Process I/O for a short while, to give a wrong extra delivery the chance to show up.

    Used only after a positive wait has already succeeded, to check nothing *more* arrives.
    """
    if isinstance(connections, pika.BlockingConnection):
        connections = [connections]
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        for connection in connections:
            connection.process_data_events(time_limit=0.02)


def confirmed_channel(connection: pika.BlockingConnection) -> BlockingChannel:
    """A channel in confirm mode: once ``basic_publish`` returns, the message is enqueued."""
    channel = connection.channel()
    channel.confirm_delivery()
    return channel


def publish_all(
    channel: BlockingChannel,
    exchange: str,
    routing_key: str,
    bodies: Sequence[bytes | str],
) -> None:
    for body in bodies:
        channel.basic_publish(exchange, routing_key, body)


def ready_count(channel: BlockingChannel, queue: str) -> int:
    """Messages ready for delivery (not counting unacked ones), via a passive declare."""
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def get_bodies(channel: BlockingChannel, queue: str) -> list[bytes]:
    """Empty ``queue`` with ``basic_get`` (auto-ack) and return the bodies in order."""
    bodies: list[bytes] = []
    while True:
        method, _properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def assert_reply(
    exc: ChannelClosedByBroker | ConnectionClosedByBroker, code: int, *fragments: str
) -> None:
    assert exc.reply_code == code, f"expected {code}, got {exc.reply_code} {exc.reply_text!r}"
    for fragment in fragments:
        assert fragment in exc.reply_text, f"{fragment!r} not in {exc.reply_text!r}"


@contextmanager
def channel_closed(code: int, *fragments: str) -> Iterator[None]:
    """Expect the block to end with the broker closing the channel with ``code``."""
    with pytest.raises(ChannelClosedByBroker) as info:
        yield
    assert_reply(info.value, code, *fragments)


@contextmanager
def connection_closed(code: int, *fragments: str) -> Iterator[None]:
    """Expect the block to end with the broker closing the connection with ``code``."""
    with pytest.raises(ConnectionClosedByBroker) as info:
        yield
    assert_reply(info.value, code, *fragments)


def queue_exists(connection: pika.BlockingConnection, queue: str) -> bool:
    """Passive-declare on a throwaway channel: True if it exists, False on 404."""
    channel = connection.channel()
    try:
        channel.queue_declare(queue, passive=True)
    except ChannelClosedByBroker as exc:
        assert_reply(exc, 404, "NOT_FOUND")
        return False
    channel.close()
    return True


def exchange_exists(connection: pika.BlockingConnection, exchange: str) -> bool:
    channel = connection.channel()
    try:
        channel.exchange_declare(exchange, passive=True)
    except ChannelClosedByBroker as exc:
        assert_reply(exc, 404, "NOT_FOUND")
        return False
    channel.close()
    return True


def wait_for_queue_gone(connection: pika.BlockingConnection, queue: str) -> None:
    """Not for a queue deleted by its ``x-expires``: each passive declare renews its lease."""
    wait_until(connection, lambda: not queue_exists(connection, queue), f"queue {queue} deleted")


def wait_for_exchange_gone(connection: pika.BlockingConnection, exchange: str) -> None:
    wait_until(
        connection, lambda: not exchange_exists(connection, exchange), f"exchange {exchange} gone"
    )


def wait_for_ready_count(
    channel: BlockingChannel, queue: str, count: int, timeout: float = TIMEOUT
) -> None:
    """Poll a passive declare on ``channel`` until ``queue`` holds ``count`` ready messages.

    Not for queues with ``x-expires``: a passive declare renews their lease (as in RabbitMQ).
    """
    wait_until(
        channel.connection,
        lambda: ready_count(channel, queue) == count,
        f"{count} ready message(s) in {queue}",
        timeout,
    )


def get_all(
    channel: BlockingChannel, queue: str
) -> list[tuple[pika.spec.Basic.GetOk, pika.BasicProperties, bytes]]:
    """Empty ``queue`` with ``basic_get`` (auto-ack) and return every message in order."""
    messages = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return messages
        messages.append((method, properties, body))


def declare_fanout_sink(connections: Connections, channel: BlockingChannel, name: str) -> str:
    """A fanout exchange ``name`` bound to an exclusive queue of the same name, e.g. to serve as
    a queue's ``x-dead-letter-exchange``; the exchange is deleted at teardown. Returns ``name``."""
    channel.exchange_declare(name, "fanout")
    connections.track(exchange=name)
    channel.queue_declare(name, exclusive=True)
    channel.queue_bind(name, name)
    return name

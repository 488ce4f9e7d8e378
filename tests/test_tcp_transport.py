"""The TCP transport keeps serving every other connection when one connection's protocol
engine fails: a real broker, a test protocol wrapping the AMQP engine, real pika clients."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from pika.exceptions import AMQPConnectionError
from pika_helpers import Collector, confirmed_channel, connection_parameters, wait_until

import warrenmq
from warrenmq import ListenerSpec, Protocol, ProtocolConnection, Settings
from warrenmq.testing import RunningBroker, running_broker

#: a client with one of these connection names gets an engine that raises on POISON
FAILS_WRITING = "fails-writing"
FAILS_READING = "fails-reading"
POISON = b"poison-pill"


class PoisonedConnection(ProtocolConnection):
    """The AMQP engine, except for a client named ``FAILS_WRITING`` (``data_to_send`` raises
    once the output carries ``POISON``) or ``FAILS_READING`` (``receive_data`` raises after
    handling input that carries it): bugs in an engine, as far as the transport knows."""

    def __init__(self, inner: ProtocolConnection) -> None:
        self.inner = inner
        self.fails = ""
        inner.wakeup = self._wakeup

    def _wakeup(self) -> None:
        if self.wakeup is not None:
            self.wakeup()

    def receive_data(self, data: bytes) -> None:
        for name in (FAILS_WRITING, FAILS_READING):
            if name.encode() in data:  # the client's connection.start-ok
                self.fails = name
        self.inner.receive_data(data)
        if self.fails == FAILS_READING and POISON in data:
            raise RuntimeError("engine bug: choked on the poison pill")

    def data_to_send(self) -> bytes | bytearray:
        data = self.inner.data_to_send()
        if self.fails == FAILS_WRITING and POISON in data:
            raise RuntimeError("engine bug: cannot encode the poison pill")
        return data

    @property
    def closed(self) -> bool:
        return self.inner.closed

    @property  # type: ignore[override]
    def timers_changed(self) -> bool:
        return self.inner.timers_changed

    @timers_changed.setter
    def timers_changed(self, value: bool) -> None:
        self.inner.timers_changed = value

    @property  # type: ignore[override]
    def reading_paused(self) -> bool:
        return self.inner.reading_paused

    def connection_lost(self) -> None:
        self.inner.connection_lost()

    def tick(self, now: float) -> float | None:
        return self.inner.tick(now)

    def shutdown(self, reason: str) -> None:
        self.inner.shutdown(reason)

    def resource_alarm(self, alarms: frozenset[str]) -> None:
        self.inner.resource_alarm(alarms)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class PoisonedAMQP(Protocol):
    name = "poisoned-amqp"

    def create_connection(
        self, broker: warrenmq.Broker, peer: tuple[str, int] | None, *, transport_name: str
    ) -> ProtocolConnection:
        inner = broker.protocol("amqp").create_connection(
            broker, peer, transport_name=transport_name
        )
        return PoisonedConnection(inner)


class PoisonedAMQPPlugin:
    @staticmethod
    @warrenmq.hookimpl
    def warrenmq_register_protocols(registry: Any) -> None:
        registry.add(PoisonedAMQP)


@pytest.fixture
def poisoned_broker() -> Iterator[RunningBroker]:
    listener = ListenerSpec("tcp", PoisonedAMQP.name, "127.0.0.1", 0)
    with running_broker(Settings(listeners=[listener]), plugins=[PoisonedAMQPPlugin]) as running:
        yield running


def _connect(broker: RunningBroker, name: str) -> pika.BlockingConnection:
    params = connection_parameters(broker)
    params.client_properties = {"connection_name": name}
    return pika.BlockingConnection(params)


def _wait_closed_by_broker(connection: pika.BlockingConnection) -> None:
    deadline = time.monotonic() + 5
    with pytest.raises(AMQPConnectionError):
        while time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.05)


def _engine_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The transport's error records, as a user reads them in the log."""
    return [
        f"{record.getMessage()}: {record.exc_info[1]}"
        for record in caplog.records
        if record.name == "warrenmq.tcp" and record.exc_info
    ]


def test_an_engine_failing_on_output_closes_only_its_own_connection(
    poisoned_broker: RunningBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="warrenmq.tcp")
    faulty = _connect(poisoned_broker, FAILS_WRITING)
    consumer = _connect(poisoned_broker, "consumer")
    publisher = _connect(poisoned_broker, "publisher")
    try:
        setup = publisher.channel()
        setup.exchange_declare("everyone", exchange_type="fanout")
        for queue in ("faulty-q", "good-q"):
            setup.queue_declare(queue)
            setup.queue_bind(queue, "everyone")
        faulty_got, good_got = Collector(), Collector(ack=True)
        faulty.channel().basic_consume("faulty-q", faulty_got)
        consumer.channel().basic_consume("good-q", good_got)

        channel = confirmed_channel(publisher)
        channel.basic_publish("everyone", "", b"before")
        wait_until([faulty, consumer], lambda: len(faulty_got) == len(good_got) == 1, "before")

        # both consumers' connections have output after this one read of the publisher's
        channel.basic_publish("everyone", "", POISON)
        for n in range(3):
            channel.basic_publish("", "good-q", b"after-%d" % n)

        wait_until(consumer, lambda: len(good_got) == 5, "every message for the good consumer")
        assert good_got.bodies == [b"before", POISON, b"after-0", b"after-1", b"after-2"]
        assert publisher.is_open
        _wait_closed_by_broker(faulty)
        assert faulty_got.bodies == [b"before"]
    finally:
        for connection in (faulty, consumer, publisher):
            if connection.is_open:
                connection.close()
    [failure] = _engine_failures(caplog)
    assert "protocol engine failed while writing; closing it" in failure
    assert "cannot encode the poison pill" in failure


def test_an_engine_failing_on_input_closes_only_its_own_connection(
    poisoned_broker: RunningBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="warrenmq.tcp")
    faulty = _connect(poisoned_broker, FAILS_READING)
    consumer = _connect(poisoned_broker, "consumer")
    try:
        consuming = consumer.channel()
        consuming.queue_declare("good-q")
        good_got = Collector(ack=True)
        consuming.basic_consume("good-q", good_got)

        # the engine routes this to the consumer's connection, then raises
        faulty.channel().basic_publish("", "good-q", POISON)
        wait_until(consumer, lambda: len(good_got) == 1, "the message routed before the failure")
        assert good_got.bodies == [POISON]
        _wait_closed_by_broker(faulty)
        assert consumer.is_open
    finally:
        for connection in (faulty, consumer):
            if connection.is_open:
                connection.close()
    [failure] = _engine_failures(caplog)
    assert "protocol engine failed while reading; closing it" in failure
    assert "choked on the poison pill" in failure

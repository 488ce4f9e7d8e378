"""The disk alarm (RabbitMQ's ``disk_free_limit``): while the filesystem of a disk store's data
directory has less free space than the limit, publishers get connection.blocked and are not
read; consumers carry on; publishing resumes once space returns. It blocks exactly as the
memory alarm does, and with both on, publishers stay blocked until both have cleared.

The free-space reading is ``Settings.disk_free_gauge``: here a value the test sets (the
protocol is real, only the disk's answer is chosen), and in one test the real ``statvfs``."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ConnectionClosedByBroker
from pika_helpers import Collector, connect, get_bodies, ready_count, settle, wait_until

from warrenmq import Settings
from warrenmq.memory import physical_memory
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only

LIMIT = 50_000_000
WAIT = 10.0
PERSISTENT = pika.BasicProperties(delivery_mode=2)


class DiskGauge:
    """Free bytes the broker reads for a directory, set by the test; records what it read."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.paths: set[Path] = set()

    def __call__(self, path: Path) -> int:
        self.paths.add(path)
        return self.free


def _settings(data_dir: Path, gauge: Callable[[Path], int | None], **extra: object) -> Settings:
    return Settings(
        amqp_port=0,
        store="disk",
        data_dir=data_dir,
        disk_free_limit=LIMIT,
        disk_free_gauge=gauge,
        disk_check_interval=0.02,
        **extra,  # type: ignore[arg-type]
    )


def _watch(connection: pika.BlockingConnection) -> list[str]:
    """The connection.blocked (with its reason) and unblocked that ``connection`` receives."""
    events: list[str] = []
    connection.add_on_connection_blocked_callback(
        lambda _conn, frame: events.append(f"blocked:{frame.method.reason}")
    )
    connection.add_on_connection_unblocked_callback(lambda _conn, _f: events.append("unblocked"))
    return events


@contextmanager
def _publisher(running: RunningBroker) -> Iterator[tuple[BlockingChannel, list[str]]]:
    """A publishing channel and its connection's blocked / unblocked events; the connection
    is closed at the end, which needs it unblocked (a blocked connection is not read)."""
    connection = connect(running)
    events = _watch(connection)
    try:
        yield connection.channel(), events
    finally:
        connection.close()


def _publish(channel: BlockingChannel, queue: str, *bodies: str) -> None:
    for body in bodies:
        channel.basic_publish("", queue, body.encode(), PERSISTENT)


def test_low_disk_blocks_publishers_until_space_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="warrenmq")
    gauge = DiskGauge(free=10 * LIMIT)
    with running_broker(_settings(tmp_path, gauge)) as running:
        consumer = connect(running)
        try:
            with _publisher(running) as (pub, events):
                sub = consumer.channel()
                sub.queue_declare("jobs", durable=True)
                _publish(pub, "jobs", "a", "b", "c")
                wait_until(consumer, lambda: ready_count(sub, "jobs") == 3, "three messages")
                assert events == []
                assert gauge.paths == {tmp_path}, "the data directory's filesystem is read"

                gauge.free = LIMIT - 1
                wait_until(pub.connection, lambda: bool(events), "connection.blocked", WAIT)
                assert events == ["blocked:low on disk"]
                assert "disk alarm: 50 MB free on the filesystem of" in caplog.text
                assert running.broker.disk_alarm and not running.broker.memory_alarm

                _publish(pub, "jobs", *(f"during {n}" for n in range(5)))
                pub.connection.process_data_events(time_limit=0.1)
                # consumers keep consuming (a connection that never published is not blocked)
                received = Collector(ack=True)
                sub.basic_consume("jobs", received)
                wait_until(consumer, lambda: len(received) == 3, "the queued messages")
                assert received.bodies == [b"a", b"b", b"c"]
                settle(consumer)
                # the blocked publisher is not read: nothing it sent meanwhile has arrived
                assert len(received) == 3
                assert events == ["blocked:low on disk"]

                gauge.free = LIMIT
                wait_until(
                    pub.connection, lambda: events[-1] == "unblocked", "connection.unblocked", WAIT
                )
                wait_until(consumer, lambda: len(received) == 8, "the held messages", WAIT)
                assert received.bodies[3:] == [f"during {n}".encode() for n in range(5)]
                assert events == ["blocked:low on disk", "unblocked"]
                assert "disk alarm cleared: 50 MB free, limit 50 MB" in caplog.text
                assert not running.broker.alarms
        finally:
            consumer.close()


def test_publishers_stay_blocked_until_both_alarms_clear(tmp_path: Path) -> None:
    gauge = DiskGauge(free=10 * LIMIT)
    settings = _settings(
        tmp_path, gauge, memory_limit=1_000_000, memory_gauge=lambda: 0, memory_check_interval=0.02
    )
    big = b"x" * 300_000
    with running_broker(settings) as running:
        broker = running.broker
        observer = connect(running)
        try:
            with _publisher(running) as (pub, events):
                obs = observer.channel()
                obs.queue_declare("work")
                obs.queue_declare("side")
                for _ in range(4):  # 1.2 MB held against a 1 MB memory limit
                    pub.basic_publish("", "work", big)
                wait_until(pub.connection, lambda: bool(events), "connection.blocked", WAIT)
                assert events == ["blocked:low on memory"]

                gauge.free = LIMIT - 1
                wait_until(pub.connection, lambda: broker.disk_alarm, "the disk alarm", WAIT)
                assert events == ["blocked:low on memory"], "one connection.blocked, not two"
                _publish(pub, "work", "held 1", "held 2")
                pub.connection.process_data_events(time_limit=0.1)
                with _publisher(running) as (late, late_events):
                    # its first publish (taken or not: it is blocked on it) goes elsewhere
                    late.basic_publish("", "side", b"late")
                    wait_until(late.connection, lambda: bool(late_events), "blocked", WAIT)
                    assert late_events == ["blocked:low on disk & memory"]

                    for _ in range(4):  # draining the queue clears the memory alarm...
                        method, _, body = obs.basic_get("work", auto_ack=True)
                        assert method is not None and body == big
                    wait_until(observer, lambda: not broker.memory_alarm, "memory alarm off", WAIT)
                    settle([pub.connection, late.connection, observer])
                    # ...but the disk alarm keeps both publishers blocked and unread
                    assert events == ["blocked:low on memory"]
                    assert late_events == ["blocked:low on disk & memory"]
                    assert ready_count(obs, "work") == 0

                    gauge.free = 10 * LIMIT
                    wait_until(
                        [pub.connection, late.connection],
                        lambda: events[-1:] == late_events[-1:] == ["unblocked"],
                        "connection.unblocked on both",
                        WAIT,
                    )
                    wait_until(observer, lambda: ready_count(obs, "work") == 2, "held messages")
                    assert get_bodies(obs, "work") == [b"held 1", b"held 2"]
                    wait_until(observer, lambda: ready_count(obs, "side") == 1, "the late one")
                    assert not broker.alarms
        finally:
            observer.close()


@pytest.mark.parametrize("form", ["absolute", "relative"])
def test_a_limit_above_the_real_free_space_blocks_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    """The default gauge: ``statvfs`` of the data directory, no test hook."""
    caplog.set_level(logging.INFO, logger="warrenmq")
    above = shutil.disk_usage(tmp_path).free + 10**12  # a terabyte more than is free
    total = physical_memory()
    assert total is not None
    limit: dict[str, object] = (
        {"disk_free_limit": above}
        if form == "absolute"
        else {"disk_free_limit_relative": above / total}
    )
    settings = Settings(amqp_port=0, store="disk", data_dir=tmp_path, shutdown_grace=0.2, **limit)  # type: ignore[arg-type]
    with running_broker(settings) as running:
        assert running.broker.disk_alarm  # read before the broker listened
        observer = connect(running)
        publisher = connect(running)
        events = _watch(publisher)
        obs = observer.channel()
        obs.queue_declare("full", durable=True)
        pub = publisher.channel()
        # a connection is blocked when it publishes: the frames it sent in the same read
        # may be taken, then it is not read
        _publish(pub, "full", "first")
        wait_until(publisher, lambda: bool(events), "connection.blocked", WAIT)
        assert events == ["blocked:low on disk"]
        _publish(pub, "full", "second", "third")
        settle([publisher, observer])
        assert get_bodies(obs, "full") in ([], [b"first"])
        observer.close()
    # the blocked publisher is not read, so it cannot close itself: the broker's shutdown did
    with pytest.raises(ConnectionClosedByBroker):
        publisher.process_data_events(time_limit=WAIT)
    assert f"on the filesystem of {tmp_path}, limit " in caplog.text
    assert "blocking publishers" in caplog.text


@pytest.mark.parametrize("case", ["memory store", "limit 0"])
def test_no_disk_alarm_without_a_disk_store_or_with_limit_zero(tmp_path: Path, case: str) -> None:
    gauge = DiskGauge(free=0)  # a full disk, if anyone asked
    settings = _settings(tmp_path, gauge)
    if case == "memory store":
        settings.store = "memory"
    else:
        settings.disk_free_limit = 0
    with running_broker(settings) as running:
        with _publisher(running) as (pub, events):
            pub.queue_declare("fine")
            _publish(pub, "fine", "one", "two")
            wait_until(pub.connection, lambda: ready_count(pub, "fine") == 2, "two messages")
            assert events == []
        assert gauge.paths == set()
        assert running.broker.alarms == set()


def test_an_unreadable_free_space_is_logged_once_and_blocks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="warrenmq")
    readings: list[int | None] = [None]
    calls: list[Path] = []

    def gauge(path: Path) -> int | None:
        calls.append(path)
        if readings[-1] is None:
            raise OSError("statvfs: no such device")  # a gauge that fails is not fatal
        return readings[-1]

    settings = _settings(tmp_path, gauge)
    with running_broker(settings) as running, _publisher(running) as (pub, events):
        pub.queue_declare("q")
        _publish(pub, "q", "one")
        wait_until(pub.connection, lambda: ready_count(pub, "q") == 1, "a message")
        wait_until(pub.connection, lambda: len(calls) >= 5, "five checks", WAIT)
        assert events == []
        assert caplog.text.count("cannot read the free space of") == 1
        assert "(OSError: statvfs: no such device); the alarm stays off" in caplog.text

        readings.append(LIMIT - 1)  # readable again, and low
        wait_until(pub.connection, lambda: bool(events), "connection.blocked", WAIT)
        assert events == ["blocked:low on disk"]
        assert "readable again" in caplog.text
        readings.append(LIMIT)
        wait_until(pub.connection, lambda: events[-1] == "unblocked", "unblocked", WAIT)

"""Flow control that holds, in both directions, checked from real sockets.

- A publisher blocked by the memory alarm that goes away is noticed and released.
- A backlog is delivered to a consumer only as fast as its socket takes it.
- A client that never reads what the broker sends it stops being read.
- Flood, drain, flood again: the alarm blocks, clears and blocks again, and resident memory does
  not keep growing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pika
import pytest
from line_reader import LineReader
from pamqp import commands
from pika_helpers import ready_count, wait_until
from raw_amqp import RawAMQP, publish_frames

from warrenmq import Settings
from warrenmq.testing import running_broker

pytestmark = pytest.mark.warrenmq_only

WAIT = 10.0


def eventually(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def _queue(running: object, name: str) -> object:
    return running.broker.vhosts["/"].queues[name]  # type: ignore[attr-defined]


def test_a_blocked_publisher_that_goes_away_is_released() -> None:
    settings = Settings(
        amqp_port=0, memory_limit=1_000_000, memory_gauge=lambda: 0, memory_check_interval=0.02
    )
    with running_broker(settings) as running:
        broker = running.broker
        observer = pika.BlockingConnection(pika.URLParameters(running.url))
        try:
            observer.channel().queue_declare("held")
            raw = RawAMQP(running.host, running.port)
            raw.handshake()
            raw.open_channel()
            raw.send(publish_frames(1, "", "held", b"x" * 1_200_000, raw.frame_max))
            eventually(lambda: broker.memory_alarm, "the memory alarm")
            for _ in range(20):  # more while blocked: these wait unread in the socket
                raw.send(publish_frames(1, "", "held", b"y" * 10_000, raw.frame_max))
            assert len(broker.connections) == 2
            raw.close()  # goes away without connection.close, while not being read
            eventually(lambda: len(broker.connections) == 1, "the blocked publisher's release")
        finally:
            observer.close()


def test_a_publisher_in_the_middle_of_a_message_is_paused_too() -> None:
    """The content being assembled counts, and its sender is not read while the alarm is on:
    a 20 MB body does not get into the broker past the 1 MB limit (plus read granularity)."""
    settings = Settings(
        amqp_port=0, memory_limit=1_000_000, memory_gauge=lambda: 0, memory_check_interval=0.02
    )
    with running_broker(settings) as running:
        broker = running.broker
        with RawAMQP(running.host, running.port) as raw:
            raw.handshake()
            raw.open_channel()
            engine = next(iter(broker.connections))
            frames = publish_frames(1, "", "nowhere", b"z" * 20_000_000, raw.frame_max)
            raw.sock.settimeout(0.5)
            sent = 0
            try:
                while sent < len(frames):
                    sent += raw.sock.send(frames[sent : sent + 65536])
            except (TimeoutError, OSError):
                pass  # the broker stopped reading in the middle of the body
            assert sent < len(frames), "the whole 20 MB body was read despite the alarm"
            assert broker.memory_alarm and engine.reading_paused
            assert engine.buffered_bytes() < 8 * 2**20, engine.buffered_bytes()


def test_a_backlog_goes_to_a_consumer_only_as_fast_as_its_socket_takes_it() -> None:
    with running_broker(Settings(amqp_port=0, memory_high_watermark=0)) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        try:
            channel = connection.channel()
            channel.queue_declare("backlog")
            body = b"b" * 100_000
            for _ in range(500):  # 50 MB waiting
                channel.basic_publish("", "backlog", body)
            wait_until(connection, lambda: ready_count(channel, "backlog") == 500, "the backlog")
            queue = _queue(running, "backlog")
            with RawAMQP(running.host, running.port) as raw:
                raw.handshake()
                raw.open_channel()
                raw.send_frame(commands.Basic.Consume(queue="backlog", no_ack=True), 1)
                raw.expect(commands.Basic.ConsumeOk)
                # the consumer reads nothing more: deliveries stop once its buffers are full
                engine = next(
                    c
                    for c in running.broker.connections
                    if any(session.consumers for session in c.view().sessions)
                )
                eventually(lambda: engine.write_paused, "the consumer's socket to back up")
                time.sleep(0.2)  # a moment for any delivery that would still go out
                held = engine.buffered_bytes()
                assert held < 16 * 2**20, f"{held} bytes buffered for one non-reading consumer"
                assert queue.ready_count > 300, "most of the backlog stays in the queue"
                # reading resumes the flow
                drained = 0
                deadline = time.monotonic() + WAIT
                while queue.ready_count and time.monotonic() < deadline:
                    drained += len(raw.sock.recv(1 << 20))
                assert queue.ready_count == 0, "reading the socket delivers the whole backlog"
        finally:
            connection.close()


def test_a_client_that_never_reads_stops_being_read_and_is_released() -> None:
    with running_broker(Settings(amqp_port=0, memory_high_watermark=0)) as running:
        broker = running.broker
        with RawAMQP(running.host, running.port) as raw:
            raw.handshake()
            raw.open_channel()
            raw.sock.setsockopt(__import__("socket").SOL_SOCKET, 8, 1 << 16)  # small SO_RCVBUF
            engine = next(iter(broker.connections))
            unroutable = publish_frames(1, "", "no-such-queue", b"r" * 50_000, mandatory=True)
            raw.sock.settimeout(0.5)
            sent = 0
            try:
                # every publish comes back as basic.return, which this client never reads
                for _ in range(2000):
                    raw.sock.sendall(unroutable)
                    sent += 1
            except (TimeoutError, OSError):
                pass  # the broker stopped reading us: our send buffer filled
            assert sent < 2000, "the broker kept reading a client that reads nothing"
            assert engine.reading_paused
            assert engine.buffered_bytes() < 16 * 2**20
        eventually(lambda: not broker.connections, "the connection's release after it closed")


# -- flood, drain, flood again: a broker process, watched from outside ---------------------------


def _resident(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def _broker_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "warrenmq", "run", "--port", "0", "--store", "memory", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = LineReader(process.stderr)
    try:
        line = reader.wait_for("listening for amqp", 20.0)
        found = re.search(r":(\d+)\s*$", line)
        assert found, line
        yield process, int(found.group(1))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_flood_drain_flood_again() -> None:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    fraction = 64 * 2**20 / total  # an alarm at 64 MiB held
    with _broker_process("--memory-high-watermark", f"{fraction:.9f}") as (process, port):
        params = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
        publisher = pika.BlockingConnection(params)
        consumer = pika.BlockingConnection(params)
        try:
            events: list[str] = []
            publisher.add_on_connection_blocked_callback(lambda *_: events.append("blocked"))
            publisher.add_on_connection_unblocked_callback(lambda *_: events.append("unblocked"))
            pub = publisher.channel()
            sub = consumer.channel()
            sub.queue_declare("flood")
            body = b"f" * 32_000
            peaks = []
            for round_ in range(2):
                sent = 0
                # flood until blocked (checking after each publish: once the broker stops
                # reading, a publish would wait for socket space that never comes)
                while "blocked" not in events[-1:] and sent < 5000:
                    pub.basic_publish("", "flood", body)
                    sent += 1
                    publisher.process_data_events(time_limit=0)
                wait_until(publisher, lambda: events[-1:] == ["blocked"], "blocked", WAIT)
                peaks.append(_resident(process.pid))
                assert sent < 5000, f"round {round_}: never blocked after {sent} messages"
                sub.queue_purge("flood")  # drain
                wait_until(publisher, lambda: events[-1:] == ["unblocked"], "unblocked", WAIT)
            assert peaks[1] < peaks[0] * 1.5 + 32 * 2**20, f"resident grew: {peaks}"
        finally:
            publisher.close()
            consumer.close()

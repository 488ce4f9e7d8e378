"""Thousands of connections opened and killed, many in the middle of their handshake, some
reset abruptly: afterwards the broker still serves a pika client and holds no more
connections, file descriptors or memory than before.

The broker runs in this process (``running_broker``), so its connection table and the
process's descriptors (``/proc/self/fd``) can be read directly; every client socket of the
test is closed before the descriptors are counted. A short handshake timeout makes the
broker drop the half-finished handshakes the test leaves open.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pika
import pytest
from pamqp import commands, frame
from raw_amqp import PROTOCOL_HEADER, RawAMQP, plain_response, start_ok_frame

from warrenmq import Settings
from warrenmq.memory import resident_memory
from warrenmq.testing import RunningBroker, running_broker
from warrenmq.transports.amqp import AMQPConnection

pytestmark = pytest.mark.warrenmq_only

#: connections per kind of misbehaviour (six kinds)
PER_KIND = 500
#: sockets open at once
BATCH = 200
HANDSHAKE_TIMEOUT = 1.0
#: resident memory the churn may leave behind (CPython keeps freed memory in its arenas)
RESIDENT_SLACK = 48 * 2**20


def descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def live_engines() -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if isinstance(thing, AMQPConnection))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset instead of a FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.fixture(scope="module")
def churned() -> Iterator[RunningBroker]:
    settings = Settings(host="127.0.0.1", amqp_port=0, handshake_timeout=HANDSHAKE_TIMEOUT)
    with running_broker(settings) as running:
        yield running


def _connect(running: RunningBroker) -> socket.socket:
    sock = socket.create_connection((running.host, running.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_some(sock: socket.socket) -> None:
    """Wait for the broker's first reply (connection.start), so the handshake really began."""
    assert sock.recv(4096), "the broker closed the connection at once"


def _silent(running: RunningBroker, sock: socket.socket) -> None:
    pass


def _partial_header(running: RunningBroker, sock: socket.socket) -> None:
    sock.sendall(PROTOCOL_HEADER[:3])


def _header_only(running: RunningBroker, sock: socket.socket) -> None:
    sock.sendall(PROTOCOL_HEADER)
    _read_some(sock)


def _after_start_ok(running: RunningBroker, sock: socket.socket) -> None:
    sock.sendall(PROTOCOL_HEADER)
    _read_some(sock)
    sock.sendall(start_ok_frame("PLAIN", plain_response("guest", "guest")))


def _garbage(running: RunningBroker, sock: socket.socket) -> None:
    sock.sendall(PROTOCOL_HEADER + os.urandom(64))


def _opened_with_work(running: RunningBroker, sock: socket.socket) -> None:
    """A whole handshake, a channel, an exclusive queue, a consumer and an unacked message."""
    sock.sendall(PROTOCOL_HEADER)
    _read_some(sock)
    sock.sendall(start_ok_frame("PLAIN", plain_response("guest", "guest")))
    sock.sendall(
        frame.marshal(commands.Connection.TuneOk(channel_max=16, frame_max=131072), 0)
        + frame.marshal(commands.Connection.Open(), 0)
        + frame.marshal(commands.Channel.Open(), 1)
        + frame.marshal(commands.Queue.Declare(queue="", exclusive=True), 1)
        + frame.marshal(commands.Basic.Consume(queue=""), 1)
        + frame.marshal(commands.Basic.Publish(exchange="amq.fanout"), 1)
    )


KINDS = [
    _silent,
    _partial_header,
    _header_only,
    _after_start_ok,
    _garbage,
    _opened_with_work,
]


def _churn(running: RunningBroker, kind: Callable[[RunningBroker, socket.socket], None]) -> None:
    """PER_KIND connections of one kind, BATCH at a time; each batch half reset, half closed,
    except that a quarter of the silent ones are left for the handshake timeout to end."""
    left_open: list[socket.socket] = []
    for start in range(0, PER_KIND, BATCH):
        batch = [_connect(running) for _ in range(min(BATCH, PER_KIND - start))]
        for n, sock in enumerate(batch):
            kind(running, sock)
            if kind is _silent and n % 4 == 0:
                left_open.append(sock)
            elif n % 2:
                reset(sock)
            else:
                sock.close()
    for sock in left_open:  # the broker drops them after its handshake timeout
        sock.settimeout(HANDSHAKE_TIMEOUT + 5)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b"", "a half-finished handshake got an answer"
        sock.close()


def _round_trip(running: RunningBroker) -> None:
    params = pika.URLParameters(running.url)
    params.socket_timeout = 5
    with pika.BlockingConnection(params) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, b"still serving")
        received: list[bytes] = []
        channel.basic_consume(queue, lambda ch, m, p, body: received.append(body), auto_ack=True)
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.05)
        assert received == [b"still serving"]


def test_churn_leaks_no_connections_descriptors_or_memory(churned: RunningBroker) -> None:
    broker = churned.broker
    _round_trip(churned)  # warm up: imports, caches, the first allocations
    wait_for(lambda: not broker.connections, "the warm-up connection to be released")
    fds_before = descriptors()
    engines_before = live_engines()
    resident_before = resident_memory() or 0
    accounted_before = broker.accounted_memory()

    started = time.monotonic()
    for kind in KINDS:
        _churn(churned, kind)
    with RawAMQP(churned.host, churned.port, timeout=5) as client:  # one more, clean
        client.handshake()
        client.close_gracefully()
    churn_time = time.monotonic() - started

    wait_for(lambda: not broker.connections, "the broker to release every connection")
    _round_trip(churned)
    wait_for(lambda: not broker.connections, "the check's connection to be released")
    wait_for(
        lambda: descriptors() <= fds_before,
        f"descriptors to return to {fds_before} (now {descriptors()})",
    )
    assert live_engines() <= engines_before, "connection engines outlived their sockets"
    assert broker.limits.connection_count() == 0
    assert broker.accounted_memory() <= accounted_before
    assert sum(len(vhost.queues) for vhost in broker.vhosts.values()) == 0  # exclusive: gone
    resident_after = resident_memory() or 0
    assert resident_after - resident_before < RESIDENT_SLACK, (
        f"resident memory grew by {(resident_after - resident_before) / 2**20:.0f} MiB over "
        f"{len(KINDS) * PER_KIND} connections in {churn_time:.1f} s"
    )

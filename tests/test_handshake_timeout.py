"""A client that never finishes its handshake is dropped after ``Settings.handshake_timeout``
(RabbitMQ's ``handshake_timeout``, 10 s by default), wherever it stops; as RabbitMQ, the socket
is simply closed. The broker under test uses a short timeout, so these tests are warrenmq-only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from pamqp import commands
from raw_amqp import (
    PROTOCOL_HEADER,
    ConnectionClosedByPeer,
    RawAMQP,
    plain_response,
    start_ok_frame,
)

from warrenmq import Settings
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only

TIMEOUT = 0.5


@pytest.fixture(scope="module")
def quick() -> Iterator[RunningBroker]:
    settings = Settings(host="127.0.0.1", amqp_port=0, handshake_timeout=TIMEOUT, heartbeat=0)
    with running_broker(settings) as running:
        yield running


def _stop_after(client: RawAMQP, step: str) -> None:
    if step == "nothing":
        return
    if step == "part-of-header":
        client.send(PROTOCOL_HEADER[:5])
        return
    client.send(PROTOCOL_HEADER)
    client.expect(commands.Connection.Start)
    if step == "header":
        return
    client.send(start_ok_frame("PLAIN", plain_response("guest", "guest")))
    tune = client.expect(commands.Connection.Tune)
    assert isinstance(tune, commands.Connection.Tune)
    if step == "start-ok":
        return
    client.send_frame(commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))


@pytest.mark.parametrize("step", ["nothing", "part-of-header", "header", "start-ok", "tune-ok"])
def test_unfinished_handshake_is_closed_after_the_timeout(quick: RunningBroker, step: str) -> None:
    with RawAMQP(quick.host, quick.port, timeout=10) as client:
        started = time.monotonic()
        _stop_after(client, step)
        with pytest.raises(ConnectionClosedByPeer):
            while True:  # nothing more than what the handshake step already read may arrive
                _, value = client.read_frame(timeout=10)
                pytest.fail(f"unexpected frame from the broker: {value!r}")
        elapsed = time.monotonic() - started
    assert TIMEOUT <= elapsed < TIMEOUT + 2, elapsed
    deadline = time.monotonic() + 5
    while quick.broker.connections and time.monotonic() < deadline:
        time.sleep(0.01)  # the broker thread releases the connection right after closing it
    assert not quick.broker.connections


def test_dribbling_the_handshake_does_not_extend_the_timeout(quick: RunningBroker) -> None:
    """The deadline runs from the connection, not from the last byte: a client sending its
    protocol header a byte at a time, slower than the timeout, is still dropped in time."""
    with RawAMQP(quick.host, quick.port, timeout=10) as client:
        started = time.monotonic()
        with pytest.raises((OSError, ConnectionClosedByPeer)):  # closed, or reset
            for byte in PROTOCOL_HEADER[:-1]:  # never the whole header
                client.send(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    _, value = client.read_frame(timeout=TIMEOUT / 2)
                    pytest.fail(f"the broker answered an unfinished header: {value!r}")
            client.read_frame(timeout=10)  # nothing but the close may come
        elapsed = time.monotonic() - started
    # the dribble alone takes 7 * TIMEOUT / 2: a deadline moved by each byte would end later
    assert elapsed < 7 * TIMEOUT / 2, elapsed


def test_a_finished_handshake_is_not_timed_out(quick: RunningBroker) -> None:
    with RawAMQP(quick.host, quick.port, timeout=10) as client:
        client.handshake()
        client.open_channel(1)
        with pytest.raises(TimeoutError):
            client.read_frame(timeout=3 * TIMEOUT)  # silence: the connection stays
        client.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
        assert isinstance(client.expect(commands.Queue.DeclareOk), commands.Queue.DeclareOk)
        client.close_gracefully()


def test_default_handshake_timeout_is_rabbitmqs() -> None:
    assert Settings().handshake_timeout == 10.0

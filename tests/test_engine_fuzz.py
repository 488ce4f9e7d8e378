"""Hostile input never reaches an internal error.

Two fuzzers drive the sans-IO AMQP engine directly. The first replays valid methods in random
order, truncated and corrupt payloads, split at random points, from a fixed seed. The second is
hypothesis: random bytes, every method of pamqp's definitions with random arguments (field
tables included), content frames, valid frames with mutated bytes, interleaved on several
channels, at any handshake stage, split at random points.

Whatever comes in, the engine either answers it or closes with a protocol error: it never
raises, never logs an internal error, never takes long over one read, only ever sends
well-formed frames, never replies 541 INTERNAL_ERROR, and releases everything once the
connection is gone; a fresh connection to the same broker still works.

The budget is fixed (a set number of derandomized examples), so CI time and results are the
same on every run; ``WARRENMQ_FUZZ_EXAMPLES=N`` hunts longer, with new examples each run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pamqp import commands, encode, frame
from pamqp.base import Frame as MethodFrame
from pamqp.header import ContentHeader, ProtocolHeader
from raw_amqp import RawAMQP

from warrenmq import Broker, Settings
from warrenmq.testing import RunningBroker, running_broker
from warrenmq.transports.amqp import AMQPConnection
from warrenmq.transports.amqp.connection import CHANNEL_HANDLERS

#: pamqp warns when it decodes deprecated methods (basic.recover-async)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: a longer hunt, given this many examples, draws new ones on every run
HUNT = os.environ.get("WARRENMQ_FUZZ_EXAMPLES")
EXAMPLES = int(HUNT or "300")
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not HUNT,
    database=None,
    deadline=None,  # a hang is caught per read below, not by hypothesis' timing
    suppress_health_check=list(HealthCheck),
)
#: one read may take this long at most (the engine is sans-IO: no waiting of any kind)
READ_BUDGET = 2.0
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = b"\xce"

METHODS: list[type[MethodFrame]] = sorted(
    commands.INDEX_MAPPING.values(), key=lambda method: method.index
)
#: methods on channels (not connection.*), including ones only a server may send
CHANNEL_METHODS = [method for method in METHODS if method.index >> 16 != 10]
#: what a client may send on a channel (publish has its own strategy, with content)
CLIENT_METHODS = [commands.Channel.Open] + [
    method for method in CHANNEL_HANDLERS if method is not commands.Basic.Publish
]
#: names that make random methods meet each other (declared, bound, consumed, deleted)
NAMES = ["", "fz", "fy", "fx", "amq.direct", "amq.topic", "amq.gen-x", "amq.rabbitmq.reply-to"]
ARGUMENT_KEYS = [
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-queue-type",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-dispatch",
    "x-match",
    "x-priority",
    "alternate-exchange",
    "CC",
    "BCC",
]

# -- a seeded random walk through valid and broken frames --------------------------------------

VALID = [
    commands.Queue.Declare(queue="fz"),
    commands.Basic.Consume(queue="fz"),
    commands.Basic.Qos(prefetch_count=2),
    commands.Basic.Get(queue="fz"),
    commands.Exchange.Declare(exchange="fx", exchange_type="topic"),
    commands.Queue.Bind(queue="fz", exchange="fx", routing_key="#"),
    commands.Basic.Publish(exchange="fx", routing_key="a"),
    commands.Basic.Ack(delivery_tag=1),
    commands.Basic.Nack(delivery_tag=0, multiple=True),
    commands.Basic.Reject(delivery_tag=2, requeue=True),
    commands.Tx.Select(),
    commands.Tx.Commit(),
    commands.Tx.Rollback(),
    commands.Confirm.Select(),
    commands.Basic.Recover(requeue=True),
    commands.Channel.Flow(active=False),
    commands.Channel.Flow(active=True),
    commands.Basic.Cancel(consumer_tag="x"),
    commands.Queue.Purge(queue="fz"),
    commands.Queue.Delete(queue="fz"),
    commands.Exchange.Delete(exchange="fx"),
    commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0),
    commands.Channel.CloseOk(),
    commands.Channel.Open(),
]


def _open(broker: Broker, n: int) -> AMQPConnection:
    connection = AMQPConnection(broker, ("127.0.0.1", 10000 + n))
    start_ok = commands.Connection.StartOk(
        client_properties={"capabilities": {"consumer_cancel_notify": True}},
        mechanism="PLAIN",
        response="\0guest\0guest",
    )
    tune_ok = commands.Connection.TuneOk(channel_max=10, frame_max=131072, heartbeat=0)
    for data in (
        ProtocolHeader().marshal(),
        frame.marshal(start_ok, 0),
        frame.marshal(tune_ok, 0),
        frame.marshal(commands.Connection.Open(), 0),
        frame.marshal(commands.Channel.Open(), 1),
    ):
        connection.receive_data(data)
    connection.data_to_send()
    assert not connection.closed
    return connection


def _random_frame(rng: random.Random) -> bytes:
    channel = rng.choice([1, 1, 1, 2, 0, 3])
    draw = rng.random()
    if draw < 0.5:
        return frame.marshal(rng.choice(VALID), channel)
    if draw < 0.6:
        header = struct.pack(">HHQH", 60, 0, rng.randint(0, 5), 0)
        return struct.pack(">BHI", 2, channel, len(header)) + header + b"\xce"
    if draw < 0.7:
        size = rng.randint(0, 5)
        return struct.pack(">BHI", 3, channel, size) + bytes(size) + b"\xce"
    if draw < 0.85:
        index = rng.choice(list(commands.INDEX_MAPPING))
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
        return struct.pack(">BHII", 1, channel, 4 + len(junk), index) + junk + b"\xce"
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 30)))


def test_random_input_never_causes_an_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(20261125)
    broker = Broker(Settings(amqp_port=0))
    with caplog.at_level(logging.WARNING, logger="warrenmq"):
        for n in range(400):
            connection = _open(broker, n)
            for _ in range(30):
                data = _random_frame(rng)
                if rng.random() < 0.3:
                    cut = rng.randint(0, len(data))
                    connection.receive_data(data[:cut])
                    connection.receive_data(data[cut:])
                else:
                    connection.receive_data(data)
                connection.data_to_send()
                if connection.closed:
                    break
            connection.connection_lost()
    internal = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert internal == []
    assert not broker.connections  # every connection released its resources
    for queue in broker.vhosts["/"].queues.values():
        assert not queue.consumers  # no consumer outlived its connection


# -- strategies ------------------------------------------------------------------------------

short_strings = st.one_of(
    st.sampled_from(NAMES),
    st.text(max_size=12).filter(lambda text: len(text.encode()) < 256),
)
field_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(width=32, allow_nan=False, allow_infinity=False),
        st.sampled_from(["", "fz", "fx", "reject-publish", "drop-head", "all", "any", "lazy"]),
        st.text(max_size=12),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=6), children, max_size=3),
    ),
    max_leaves=8,
)
tables = st.dictionaries(
    st.one_of(st.sampled_from(ARGUMENT_KEYS), st.text(max_size=8)), field_values, max_size=4
)
VALUES_BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "bit": st.booleans(),
    "octet": st.integers(0, 2**8 - 1),
    "short": st.one_of(st.integers(0, 8), st.integers(0, 2**16 - 1)),
    "long": st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1)),
    "longlong": st.one_of(st.integers(0, 8), st.integers(0, 2**64 - 1)),
    "shortstr": short_strings,
    "longstr": st.text(max_size=20),
    "table": st.one_of(st.none(), tables),
    "timestamp": st.integers(0, 2**32),
}


def _arguments(method: type[MethodFrame]) -> list[tuple[str, str]]:
    """(name, AMQP type) of a method's arguments, in wire order."""
    return [(name, method.amqp_type(name)) for name in method.__slots__]


def _encode_arguments(values: list[tuple[str, Any]]) -> bytes:
    """The wire form of method arguments, as pamqp marshals them but without its validation
    (which would refuse the hostile values this test wants to send)."""
    out: list[bytes] = []
    bits, offset = -1, 0
    for data_type, value in values:
        if data_type == "bit":
            if bits < 0 or offset == 8:
                if bits >= 0:
                    out.append(encode.octet(bits))
                bits, offset = 0, 0
            bits = encode.bit(value, bits, offset)
            offset += 1
            continue
        if bits >= 0:
            out.append(encode.octet(bits))
            bits = -1
        if data_type == "table" and value is None:
            value = {}
        if data_type == "longlong":  # pamqp encodes it signed; delivery tags are unsigned
            out.append(struct.pack(">Q", value))
        else:
            out.append(encode.by_type(value, data_type))
    if bits >= 0:
        out.append(encode.octet(bits))
    return b"".join(out)


def _frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + FRAME_END


#: argument values likely to mean something to the broker, drawn most of the time
LIKELY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "ticket": st.just(0),
    "exchange_type": st.sampled_from(["direct", "topic", "fanout", "headers", "x-nope"]),
    "prefetch_size": st.just(0),
}


def _argument_value(draw: st.DrawFn, name: str, kind: str) -> Any:
    likely = LIKELY_VALUES.get(name)
    if likely is not None and draw(st.integers(0, 9)):
        return draw(likely)
    return draw(VALUES_BY_TYPE[kind])


@st.composite
def method_frames(draw: st.DrawFn, channel: int, methods: list[type[MethodFrame]]) -> bytes:
    method = draw(st.sampled_from(methods))
    values = [(kind, _argument_value(draw, name, kind)) for name, kind in _arguments(method)]
    payload = struct.pack(">I", method.index) + _encode_arguments(values)
    return _frame(1, channel, payload)


@st.composite
def content_headers(draw: st.DrawFn, channel: int) -> bytes:
    class_id = draw(st.sampled_from([60, 60, 60, 0, 50]))
    size = draw(st.one_of(st.integers(0, 12), st.integers(0, 2**64 - 1)))
    properties = commands.Basic.Properties(
        headers=draw(st.one_of(st.none(), tables)),
        expiration=draw(st.one_of(st.none(), st.sampled_from(["0", "10", "-1", "soon"]))),
        priority=draw(st.one_of(st.none(), st.integers(0, 255))),
        user_id=draw(st.one_of(st.none(), st.sampled_from(["guest", "other"]))),
        reply_to=draw(st.one_of(st.none(), st.sampled_from(NAMES))),
    )
    payload = ContentHeader(0, size, properties).marshal()
    return _frame(2, channel, struct.pack(">H", class_id) + payload[2:])


@st.composite
def publishes(draw: st.DrawFn, channel: int) -> bytes:
    """basic.publish, a content header and a body, all valid: the engine's fast path."""
    exchange = draw(st.sampled_from(["", "fx", "amq.topic", "none"]))
    key = draw(st.sampled_from(["fz", "fy", "a.b", ""]))
    body = draw(st.binary(max_size=20))
    method = _frame(1, channel, struct.pack(">I", commands.Basic.Publish.index))
    method = _frame(
        1,
        channel,
        struct.pack(">I", commands.Basic.Publish.index)
        + _encode_arguments(
            [("short", 0), ("shortstr", exchange), ("shortstr", key), ("bit", draw(st.booleans()))]
            + [("bit", False)]
        ),
    )
    header = _frame(2, channel, struct.pack(">HHQH", 60, 0, len(body), 0))
    return method + header + (_frame(3, channel, body) if body else b"")


@st.composite
def mutated(draw: st.DrawFn, frames: bytes) -> bytes:
    """``frames`` with a few bytes overwritten, inserted or cut out."""
    data = bytearray(frames)
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["set", "insert", "delete"]))
        if how == "set":
            data[at] = draw(st.integers(0, 255))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[at : at + draw(st.integers(1, 4))]
    return bytes(data)


@st.composite
def client_operations(draw: st.DrawFn) -> bytes:
    """What a client may send on channels 1 to 3, with random arguments: the connection
    lives on, so the arguments reach the broker's checks (channel errors, not framing)."""
    channel = draw(st.sampled_from([1, 1, 1, 2, 3]))
    if draw(st.integers(0, 3)):
        return draw(method_frames(channel, CLIENT_METHODS))
    return draw(publishes(channel))


@st.composite
def operations(draw: st.DrawFn) -> bytes:
    channel = draw(st.sampled_from([1, 1, 1, 1, 1, 2, 3, 0, 65535]))
    kind = draw(st.sampled_from(["method"] * 12 + ["publish"] * 5 + ["header", "body"]))
    if kind == "method":
        methods = CHANNEL_METHODS if draw(st.integers(0, 4)) else METHODS
        data = draw(method_frames(channel, methods))
    elif kind == "publish":
        data = draw(publishes(channel))
    elif kind == "header":
        data = draw(content_headers(channel))
    else:
        data = _frame(3, channel, draw(st.binary(max_size=12)))
    roll = draw(st.integers(0, 19))
    if roll in (0, 1):
        return draw(mutated(data))
    if roll == 2:
        return draw(st.binary(min_size=1, max_size=24))
    if roll == 3:
        return _frame(8, channel, b"")  # a heartbeat, on a channel where it may be wrong
    return data


# -- driving the engine ----------------------------------------------------------------------

STAGES = ["nothing", "header", "start-ok", "tune-ok", "open", "channel", "channel"]
#: the stage where channels 1, 2 and 3 are open
CHANNELS = "channels"


def _handshake(stage: str) -> list[bytes]:
    steps = [
        ProtocolHeader().marshal(),
        frame.marshal(
            commands.Connection.StartOk(
                client_properties={
                    "capabilities": {"consumer_cancel_notify": True, "connection.blocked": True}
                },
                mechanism="PLAIN",
                response="\0guest\0guest",
            ),
            0,
        ),
        frame.marshal(commands.Connection.TuneOk(channel_max=8, frame_max=8192, heartbeat=0), 0),
        frame.marshal(commands.Connection.Open(), 0),
        frame.marshal(commands.Channel.Open(), 1),
    ]
    if stage == CHANNELS:
        return [*steps, *(frame.marshal(commands.Channel.Open(), n) for n in (2, 3))]
    return steps[: STAGES.index(stage)] if stage != "channel" else steps


@dataclass
class Driven:
    """A connection fed from a test, with everything it sent back."""

    broker: Broker
    connection: AMQPConnection
    output: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> None:
        started = time.monotonic()
        self.connection.receive_data(data)
        took = time.monotonic() - started
        assert took < READ_BUDGET, f"one read of {len(data)} bytes took {took:.1f} s"
        self.output += self.connection.data_to_send()
        self.connection.tick(time.monotonic())
        self.output += self.connection.data_to_send()


def _split(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    start = 0
    for point in points:
        yield data[start:point]
        start = point
    yield data[start:]


def _server_frames(output: bytes | bytearray) -> Iterator[tuple[int, int, bytes]]:
    """The broker's output as (type, channel, payload), asserting every frame is well formed."""
    data = bytes(output)
    if data.startswith(b"AMQP"):
        data = data[8:]
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 8, f"a truncated frame: {data[pos:]!r}"
        frame_type, channel, size = struct.unpack_from(">BHI", data, pos)
        end = pos + 7 + size
        assert frame_type in (1, 2, 3, 8), f"frame type {frame_type}"
        assert data[end : end + 1] == FRAME_END, "a frame without its end marker"
        yield frame_type, channel, data[pos + 7 : end]
        pos = end + 1


def _check_output(output: bytes | bytearray) -> None:
    """Every method the broker sent decodes; closes carry a protocol error, never 541."""
    for frame_type, channel, payload in _server_frames(output):
        if frame_type != 1:
            continue
        _, _, method = frame.unmarshal(
            struct.pack(">BHI", 1, channel, len(payload)) + payload + FRAME_END
        )
        if isinstance(method, commands.Connection.Close | commands.Channel.Close):
            assert method.reply_code != 541, method.reply_text  # an internal error
            assert 300 <= (method.reply_code or 0) < 600, method.reply_code
            event(f"{method.name} {method.reply_code}")  # --hypothesis-show-statistics
        else:
            event("answered")


def _still_serves(broker: Broker) -> None:
    """A new connection to the same broker can declare, publish and get a message."""
    driven = Driven(broker, AMQPConnection(broker, ("127.0.0.1", 1)))
    for data in _handshake("channel"):
        driven.feed(data)
    driven.feed(frame.marshal(commands.Queue.Declare(queue="", exclusive=True), 1))
    frames = list(_server_frames(driven.output))
    declare_ok = frame.unmarshal(_frame(1, 1, frames[-1][2]))[2]
    assert isinstance(declare_ok, commands.Queue.DeclareOk), declare_ok
    queue = str(declare_ok.queue)
    driven.feed(
        frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1)
        + _frame(2, 1, struct.pack(">HHQH", 60, 0, 5, 0))
        + _frame(3, 1, b"alive")
        + frame.marshal(commands.Basic.Get(queue=queue, no_ack=True), 1)
    )
    assert driven.output.endswith(_frame(3, 1, b"alive")), "the health check's get failed"
    driven.connection.connection_lost()


def _run(
    stage: str, chunks: list[bytes], cuts: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker(Settings(amqp_port=0, frame_max=8192))
    driven = Driven(broker, AMQPConnection(broker, ("127.0.0.1", 10000)))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="warrenmq"):
        for data in _handshake(stage):
            driven.feed(data)
        for piece in _split(b"".join(chunks), cuts):
            driven.feed(piece)
            if driven.connection.closed:
                break
        driven.connection.connection_lost()
        _check_output(driven.output)
        internal = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert internal == []
        assert not broker.connections, "a connection outlived connection_lost"
        assert broker.limits.connection_count() == 0
        for vhost in broker.vhosts.values():
            for queue in vhost.queues.values():
                assert not queue.consumers, f"a consumer of {queue.name} outlived its connection"
                assert queue.unacked_count == 0, f"{queue.name} kept unacked messages"
        _still_serves(broker)


@FUZZ
@given(
    stage=st.sampled_from(STAGES),
    chunks=st.lists(operations(), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_frames_with_random_arguments_get_a_reply_or_a_protocol_error(
    stage: str, chunks: list[bytes], cuts: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    _run(stage, chunks, cuts, caplog)


@FUZZ
@given(
    chunks=st.lists(client_operations(), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_client_methods_with_random_arguments_on_several_channels(
    chunks: list[bytes], cuts: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    _run(CHANNELS, chunks, cuts, caplog)


@FUZZ
@given(
    stage=st.sampled_from(STAGES),
    junk=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=6),
)
def test_random_bytes_get_a_protocol_error(
    stage: str, junk: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    _run(stage, junk, [], caplog)


# -- the same over TCP, through the transport ------------------------------------------------


@pytest.fixture(scope="module")
def tcp_broker() -> Iterator[RunningBroker]:
    settings = Settings(host="127.0.0.1", amqp_port=0, frame_max=8192, handshake_timeout=5)
    with running_broker(settings) as running:
        yield running


def _wait_released(broker: Broker) -> None:
    deadline = time.monotonic() + 5
    while broker.connections:
        assert time.monotonic() < deadline, f"{len(broker.connections)} connection(s) stuck"
        time.sleep(0.005)


def test_hostile_clients_over_tcp_leave_the_broker_serving(
    tcp_broker: RunningBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Hostile bytes through a real socket and the TCP transport, the client then closing or
    resetting the connection: the broker logs no internal error, serves the next client, and
    in the end holds no connection and no more descriptors than before."""
    broker = tcp_broker.broker
    descriptors = len(os.listdir("/proc/self/fd"))

    @settings(FUZZ, max_examples=max(EXAMPLES // 3, 20))
    @given(
        stage=st.sampled_from(STAGES),
        chunks=st.lists(operations(), min_size=1, max_size=20),
        reset=st.booleans(),
    )
    def hostile_client(stage: str, chunks: list[bytes], reset: bool) -> None:
        sock = socket.create_connection((tcp_broker.host, tcp_broker.port), timeout=5)
        with contextlib.suppress(OSError):  # the broker may close first
            for data in [*_handshake(stage), *chunks]:
                sock.sendall(data)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        with RawAMQP(tcp_broker.host, tcp_broker.port, timeout=5) as client:
            client.handshake()
            client.open_channel(1)
            client.close_gracefully()

    with caplog.at_level(logging.ERROR, logger="warrenmq"):
        hostile_client()
        _wait_released(broker)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    deadline = time.monotonic() + 5
    while len(os.listdir("/proc/self/fd")) > descriptors:  # the last close may still be under way
        assert time.monotonic() < deadline, "the broker kept descriptors of closed connections"
        time.sleep(0.01)

"""Unit tests of the sans-IO AMQP engine: bytes in, bytes out, no sockets.

Every scenario is a script of steps (bytes fed to one of several engines that share one
broker, or a lost connection). In the style of h11's tests, each script runs with its input
fed (a) whole, (b) byte by byte, and (c) with trailing bytes of the connection's next frame
appended (either the first 3 bytes of it, or all of it but its frame-end octet). The engine
must produce exactly the same bytes on every connection after every step in every mode.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from pamqp import commands, frame
from pamqp.header import ContentHeader, ProtocolHeader
from pamqp.heartbeat import Heartbeat

import warrenmq
from warrenmq.transports.amqp.connection import AMQPConnection

PROTOCOL_HEADER = ProtocolHeader().marshal()
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8

MODES = ("whole", "bytewise", "trailing-head", "trailing-almost")

CLIENT_PROPERTIES: dict[str, Any] = {
    "product": "warrenmq-engine-tests",
    "capabilities": {
        "authentication_failure_close": True,
        "basic.nack": True,
        "consumer_cancel_notify": True,
        "publisher_confirms": True,
    },
}

PROPERTIES = commands.Basic.Properties(
    content_type="application/json",
    delivery_mode=2,
    headers={"trace": "abc", "n": 7},
    message_id="m-1",
    priority=3,
)


# -- frame builders -----------------------------------------------------------------------


def method(channel: int, value: Any) -> bytes:
    return frame.marshal(value, channel)


def raw_frame(frame_type: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


def start_ok(username: str = "guest", password: str = "guest") -> bytes:
    return method(
        0,
        commands.Connection.StartOk(
            client_properties=CLIENT_PROPERTIES,
            mechanism="PLAIN",
            response=f"\0{username}\0{password}",
            locale="en_US",
        ),
    )


def tune_ok(heartbeat: int = 0, frame_max: int = 131072) -> bytes:
    return method(
        0, commands.Connection.TuneOk(channel_max=2047, frame_max=frame_max, heartbeat=heartbeat)
    )


def connection_open() -> bytes:
    return method(0, commands.Connection.Open(virtual_host="/"))


def channel_open(channel: int = 1) -> bytes:
    return method(channel, commands.Channel.Open())


def queue_declare(name: str, channel: int = 1) -> bytes:
    return method(channel, commands.Queue.Declare(queue=name))


def consume(queue: str, tag: str, channel: int = 1, no_ack: bool = False) -> bytes:
    return method(channel, commands.Basic.Consume(queue=queue, consumer_tag=tag, no_ack=no_ack))


def content_header(body_size: int, properties: commands.Basic.Properties | None = None) -> bytes:
    """The content header frame's payload, as the publisher sends it."""
    return ContentHeader(0, body_size, properties or PROPERTIES).marshal()


def publish(
    routing_key: str,
    body: bytes,
    *,
    channel: int = 1,
    exchange: str = "",
    properties: commands.Basic.Properties | None = None,
    body_frame_size: int | None = None,
) -> bytes:
    """Basic.Publish + content header + body frames (``body_frame_size`` bytes each)."""
    out = method(channel, commands.Basic.Publish(exchange=exchange, routing_key=routing_key))
    out += raw_frame(FRAME_HEADER, channel, content_header(len(body), properties))
    size = body_frame_size or len(body) or 1
    for start in range(0, len(body), size):
        out += raw_frame(FRAME_BODY, channel, body[start : start + size])
    return out


# -- output parsing -----------------------------------------------------------------------


def raw_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """(frame type, channel, payload) of every frame in ``data``; fails on a partial frame."""
    frames = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] == b"AMQP":
            frames.append((0, 0, bytes(data[pos : pos + 8])))
            pos += 8
            continue
        frame_type, channel, size = struct.unpack_from(">BHI", data, pos)
        end = pos + 7 + size
        assert end < len(data), f"partial frame in output at {pos}"
        assert data[end] == 0xCE, f"bad frame end at {end}"
        frames.append((frame_type, channel, bytes(data[pos + 7 : end])))
        pos = end + 1
    return frames


def parse(data: bytes) -> list[tuple[int, Any]]:
    """Every frame in ``data`` decoded by pamqp, as (channel, frame object)."""
    frames: list[tuple[int, Any]] = []
    pos = 0
    while pos < len(data):
        consumed, channel, value = frame.unmarshal(bytes(data[pos:]))
        frames.append((channel, value))
        pos += consumed
    return frames


def only(data: bytes, kind: type) -> Any:
    """The single frame in ``data``, which must be of ``kind``."""
    frames = parse(data)
    assert len(frames) == 1, f"expected one {kind.__name__}, got {frames}"
    assert isinstance(frames[0][1], kind), f"expected {kind.__name__}, got {frames[0][1]!r}"
    return frames[0][1]


@dataclass
class Content:
    """A Basic.Deliver / Basic.GetOk / Basic.Return with its raw header and joined body."""

    channel: int
    method: Any
    header: bytes
    body: bytes
    body_frames: int


def contents(data: bytes) -> list[Content]:
    """Group the frames of ``data`` into content-carrying methods; no other frame allowed."""
    raw = raw_frames(data)
    decoded = parse(data)
    out: list[Content] = []
    i = 0
    while i < len(raw):
        channel, value = decoded[i]
        assert isinstance(value, commands.Basic.Deliver | commands.Basic.GetOk), value
        assert raw[i + 1][0] == FRAME_HEADER, "content header must follow"
        header = raw[i + 1][2]
        size = int.from_bytes(header[4:12], "big")
        j = i + 2
        body = b""
        while len(body) < size:
            assert raw[j][0] == FRAME_BODY and raw[j][1] == channel
            body += raw[j][2]
            j += 1
        assert len(body) == size
        out.append(Content(channel, value, header, body, j - i - 2))
        i = j
    return out


# -- scripts and the runner ----------------------------------------------------------------


@dataclass(frozen=True)
class Feed:
    """Bytes from the client of engine ``conn``."""

    conn: int
    data: bytes


@dataclass(frozen=True)
class Lost:
    """The byte stream of engine ``conn`` is gone."""

    conn: int


Step = Feed | Lost


@dataclass
class Transcript:
    #: after each step: what each engine had to send
    outputs: list[tuple[bytes, ...]]
    closed: tuple[bool, ...]
    ready: dict[str, int]
    broker: warrenmq.Broker
    engines: list[AMQPConnection]

    def out(self, step: int, conn: int = 0) -> bytes:
        return self.outputs[step][conn]


def handshake(conn: int = 0, heartbeat: int = 0, frame_max: int = 131072) -> list[Step]:
    return [
        Feed(conn, PROTOCOL_HEADER),
        Feed(conn, start_ok()),
        Feed(conn, tune_ok(heartbeat, frame_max)),
        Feed(conn, connection_open()),
    ]


def opened(conn: int = 0, queue: str = "q") -> list[Step]:
    """Handshake, channel 1 open and ``queue`` declared (6 steps)."""
    return [*handshake(conn), Feed(conn, channel_open()), Feed(conn, queue_declare(queue))]


def _first_frame_length(data: bytes) -> int:
    if data.startswith(b"AMQP"):
        return 8
    (size,) = struct.unpack_from(">I", data, 3)
    return 8 + size


def _next_feed(steps: Sequence[Step], index: int) -> Feed | None:
    conn = steps[index].conn
    for step in steps[index + 1 :]:
        if step.conn != conn:
            continue
        return step if isinstance(step, Feed) else None
    return None


def run_script(
    steps: Sequence[Step],
    mode: str = "whole",
    connections: int = 1,
    settings: warrenmq.Settings | None = None,
) -> Transcript:
    broker = warrenmq.Broker(settings or warrenmq.Settings(amqp_port=0))
    engines = [AMQPConnection(broker, ("127.0.0.1", 5000 + i)) for i in range(connections)]
    #: bytes of an engine's next Feed already fed as trailing bytes
    held: dict[int, bytes] = {}
    outputs: list[tuple[bytes, ...]] = []
    for index, step in enumerate(steps):
        engine = engines[step.conn]
        if isinstance(step, Lost):
            held.pop(step.conn, None)
            engine.connection_lost()
        else:
            already = held.pop(step.conn, b"")
            assert step.data.startswith(already)
            chunk = step.data[len(already) :]
            following = _next_feed(steps, index) if mode.startswith("trailing") else None
            if following is not None:
                size = 3 if mode == "trailing-head" else _first_frame_length(following.data) - 1
                extra = following.data[: min(size, len(following.data) - 1)]
                held[step.conn] = extra
                chunk += extra
            if mode == "bytewise":
                for i in range(len(chunk)):
                    engine.receive_data(chunk[i : i + 1])
            elif chunk:  # b"" would mean end of stream
                engine.receive_data(chunk)
        outputs.append(tuple(bytes(e.data_to_send()) for e in engines))
    ready = {name: queue.ready_count for name, queue in broker.vhosts["/"].queues.items()}
    return Transcript(outputs, tuple(e.closed for e in engines), ready, broker, engines)


def run_checked(
    steps: Sequence[Step],
    mode: str,
    connections: int = 1,
    settings: warrenmq.Settings | None = None,
) -> Transcript:
    """Run in ``mode`` and check the transcript equals the one of whole-input feeding."""
    got = run_script(steps, mode, connections, settings)
    if mode == "whole":
        return got
    reference = run_script(steps, "whole", connections, settings)
    for index, (expected, actual) in enumerate(zip(reference.outputs, got.outputs, strict=True)):
        for conn, (want, have) in enumerate(zip(expected, actual, strict=True)):
            assert raw_frames(have) == raw_frames(want), f"step {index}, engine {conn} ({mode})"
    assert got.closed == reference.closed
    assert got.ready == reference.ready
    return got


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- handshake ----------------------------------------------------------------------------


def test_handshake(mode: str) -> None:
    t = run_checked(handshake(), mode)

    start = only(t.out(0), commands.Connection.Start)
    assert (start.version_major, start.version_minor) == (0, 9)
    assert "PLAIN" in start.mechanisms.split()
    assert "en_US" in start.locales.split()
    props = start.server_properties
    assert props["product"] == "warrenmq"
    capabilities = props["capabilities"]
    for capability in (
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ):
        assert capabilities[capability] is True, capability

    tune = only(t.out(1), commands.Connection.Tune)
    assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)
    assert t.out(2) == b"", "tune-ok has no reply"
    only(t.out(3), commands.Connection.OpenOk)
    assert t.closed == (False,)


def test_pipelined_handshake_replies_in_one_output() -> None:
    separate = run_script(handshake())
    together = run_script([Feed(0, b"".join(s.data for s in handshake() if isinstance(s, Feed)))])
    assert together.out(0) == b"".join(out[0] for out in separate.outputs)


def test_amqp_0_9_header_is_accepted() -> None:
    t = run_script([Feed(0, b"AMQP\x01\x01\x00\x09")])
    only(t.out(0), commands.Connection.Start)


def test_wrong_password_is_refused_with_403(mode: str) -> None:
    steps: list[Step] = [Feed(0, PROTOCOL_HEADER), Feed(0, start_ok("guest", "wrong"))]
    t = run_checked(steps, mode)
    close = only(t.out(1), commands.Connection.Close)
    assert close.reply_code == 403
    assert "ACCESS_REFUSED" in close.reply_text
    assert t.closed == (True,)


@pytest.mark.parametrize(
    "header",
    [
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"AMQP\x00\x00\x08\x00",
        b"AMQP\x01\x01\x00\x0a",
        b"AMQP\x00\x00\x09\x02",
        b"\x00" * 8,
    ],
)
def test_wrong_protocol_header_gets_server_header_and_close(mode: str, header: bytes) -> None:
    t = run_checked([Feed(0, header), Feed(0, start_ok())], mode)
    assert t.out(0) == PROTOCOL_HEADER
    reply = only(t.out(0), ProtocolHeader)
    assert (reply.major_version, reply.minor_version, reply.revision) == (0, 9, 1)
    assert t.closed == (True,)
    assert t.out(1) == b"", "nothing is read after a bad header"
    assert t.engines[0] not in t.broker.connections


# -- channels, queues, publish, get -------------------------------------------------------


def test_channel_open_and_queue_declare(mode: str) -> None:
    t = run_checked(opened(queue="jobs"), mode)
    only(t.out(4), commands.Channel.OpenOk)
    ok = only(t.out(5), commands.Queue.DeclareOk)
    assert (ok.queue, ok.message_count, ok.consumer_count) == ("jobs", 0, 0)
    assert "jobs" in t.broker.vhosts["/"].queues


def test_publish_split_body_then_get_returns_the_same_bytes(mode: str) -> None:
    body = bytes(range(256)) * 12  # 3072 bytes, sent as 6 body frames of 512
    steps = [
        *opened(),
        Feed(0, publish("q", body, body_frame_size=512)),
        Feed(0, method(1, commands.Basic.Get(queue="q", no_ack=True))),
        Feed(0, method(1, commands.Basic.Get(queue="q", no_ack=True))),
    ]
    t = run_checked(steps, mode)
    assert t.out(6) == b"", "a publish without confirms has no reply"
    [got] = contents(t.out(7))
    assert isinstance(got.method, commands.Basic.GetOk)
    assert (got.method.delivery_tag, got.method.redelivered) == (1, False)
    assert (got.method.exchange, got.method.routing_key, got.method.message_count) == ("", "q", 0)
    assert got.header == content_header(len(body)), "the publisher's header bytes, as they were"
    assert got.body == body
    only(t.out(8), commands.Basic.GetEmpty)


def test_get_resplits_a_large_body_at_the_negotiated_frame_max(mode: str) -> None:
    body = b"0123456789" * 1000  # 10,000 bytes; frame_max 4096 allows 4088 per body frame
    steps = [
        *handshake(frame_max=4096),
        Feed(0, channel_open()),
        Feed(0, queue_declare("q")),
        Feed(0, publish("q", body, body_frame_size=4000)),
        Feed(0, method(1, commands.Basic.Get(queue="q", no_ack=False))),
    ]
    t = run_checked(steps, mode)
    [got] = contents(t.out(7))
    assert got.body == body
    assert got.body_frames == 3
    assert all(len(p) <= 4088 for kind, _, p in raw_frames(t.out(7)) if kind == FRAME_BODY)


def test_empty_body_publish_has_no_body_frames(mode: str) -> None:
    steps = [
        *opened(),
        Feed(0, publish("q", b"")),
        Feed(0, method(1, commands.Basic.Get(queue="q", no_ack=True))),
    ]
    t = run_checked(steps, mode)
    [got] = contents(t.out(7))
    assert (got.body, got.body_frames) == (b"", 0)
    assert got.header == content_header(0)


def test_publish_split_at_every_offset() -> None:
    """Two reads, split anywhere in method, header or body frames: the same outcome."""
    body = b"abcdefghij" * 3
    data = publish("q", body, body_frame_size=12)
    prefix = [*opened(), Feed(0, method(1, commands.Confirm.Select()))]
    get = Feed(0, method(1, commands.Basic.Get(queue="q", no_ack=True)))
    for offset in range(1, len(data)):
        steps = [*prefix, Feed(0, data[:offset]), Feed(0, data[offset:]), get]
        t = run_script(steps)
        assert t.out(7) == b"", offset
        ack = only(t.out(8), commands.Basic.Ack)
        assert (ack.delivery_tag, ack.multiple) == (1, False)
        [got] = contents(t.out(9))
        assert (got.header, got.body) == (content_header(len(body)), body), offset


# -- consuming ------------------------------------------------------------------------------


def test_consume_delivers_with_the_publishers_header_bytes(mode: str) -> None:
    other = commands.Basic.Properties(correlation_id="c-2", headers={"x": 1.5})
    steps = [
        *opened(),
        Feed(0, consume("q", "ctag")),
        Feed(
            0, publish("q", b"first", body_frame_size=2) + publish("q", b"second", properties=other)
        ),
        Feed(0, method(1, commands.Basic.Ack(delivery_tag=2, multiple=True))),
    ]
    t = run_checked(steps, mode)
    ok = only(t.out(6), commands.Basic.ConsumeOk)
    assert ok.consumer_tag == "ctag"
    first, second = contents(t.out(7))
    for number, (got, body, props) in enumerate(
        ((first, b"first", PROPERTIES), (second, b"second", other)), start=1
    ):
        assert isinstance(got.method, commands.Basic.Deliver)
        assert got.channel == 1
        assert got.method.consumer_tag == "ctag"
        assert got.method.delivery_tag == number
        assert got.method.redelivered is False
        assert (got.method.exchange, got.method.routing_key) == ("", "q")
        assert got.header == content_header(len(body), props)
        assert got.body == body
    assert t.out(8) == b"", "basic.ack has no reply"
    assert not t.engines[0].channels[1].unacked


def test_two_consumers_on_two_engines_take_turns(mode: str) -> None:
    steps = [
        *opened(0),
        Feed(0, consume("q", "a")),
        *opened(1),
        Feed(1, consume("q", "b")),
        *handshake(2),
        Feed(2, channel_open()),
        Feed(2, b"".join(publish("q", f"m{i}".encode()) for i in range(1, 7))),
    ]
    t = run_checked(steps, mode, connections=3)
    last = len(steps) - 1
    assert t.out(last, 2) == b"", "deliveries never appear on the publisher's engine"
    for conn, tag, bodies in ((0, "a", [b"m1", b"m3", b"m5"]), (1, "b", [b"m2", b"m4", b"m6"])):
        got = contents(t.out(last, conn))
        assert [c.body for c in got] == bodies
        assert [c.method.consumer_tag for c in got] == [tag] * 3
        assert [c.method.delivery_tag for c in got] == [1, 2, 3]


def test_connection_lost_requeues_unacked_to_another_consumer(mode: str) -> None:
    steps = [
        *opened(0),
        Feed(0, consume("q", "a")),
        *opened(1),
        Feed(1, publish("q", b"one") + publish("q", b"two")),
        Feed(1, method(1, commands.Basic.Consume(queue="q", consumer_tag="b"))),
        Lost(0),
    ]
    t = run_checked(steps, mode, connections=2)
    delivered = contents(t.out(13, 0))
    assert [c.body for c in delivered] == [b"one", b"two"]
    assert t.out(13, 1) == b""
    only(t.out(14, 1), commands.Basic.ConsumeOk)
    assert t.out(15, 0) == b""
    again = contents(t.out(15, 1))
    assert [c.body for c in again] == [b"one", b"two"]
    assert [c.method.redelivered for c in again] == [True, True]
    assert [c.method.consumer_tag for c in again] == ["b", "b"]
    assert [c.header for c in again] == [content_header(3), content_header(3)]
    assert t.closed == (True, False)
    assert t.engines[0] not in t.broker.connections


# -- publisher confirms -----------------------------------------------------------------------


def _confirm_steps() -> list[Step]:
    return [
        *handshake(),
        Feed(0, channel_open()),
        Feed(0, queue_declare("q")),
        Feed(0, method(1, commands.Confirm.Select())),
        Feed(0, b"".join(publish("q", b"x%d" % i) for i in range(5))),
        Feed(0, publish("nowhere", b"unroutable")),
        Feed(0, publish("q", b"y", body_frame_size=1) * 3),
    ]


@pytest.mark.parametrize("chunking", ["whole", "trailing-head", "trailing-almost"])
def test_confirms_one_multiple_ack_per_chunk(chunking: str) -> None:
    t = run_checked(_confirm_steps(), chunking)
    only(t.out(6), commands.Confirm.SelectOk)
    acks = [only(t.out(step), commands.Basic.Ack) for step in (7, 8, 9)]
    assert [(a.delivery_tag, a.multiple) for a in acks] == [(5, True), (6, False), (9, True)]
    assert t.ready == {"q": 8}


def test_confirms_fed_byte_by_byte_ack_each_publish() -> None:
    t = run_script(_confirm_steps(), "bytewise")
    acks = [parse(t.out(step)) for step in (7, 8, 9)]
    assert [[(f.delivery_tag, f.multiple) for _, f in step] for step in acks] == [
        [(1, False), (2, False), (3, False), (4, False), (5, False)],
        [(6, False)],
        [(7, False), (8, False), (9, False)],
    ]


# -- errors and closing ---------------------------------------------------------------------


FRAME_ERRORS = {
    "frame-end": raw_frame(FRAME_METHOD, 1, b"\x00\x14\x00\x0a\x00", end=0x00),
    "frame-type": raw_frame(9, 1, b"abc"),
    # its head alone is the error, so it is never "all but the last byte" of a whole frame
    "too-large": struct.pack(">BHI", FRAME_BODY, 1, 10**6) + b"\x00" * 16,
}


@pytest.mark.parametrize(
    ("bad", "chunking"),
    [
        pytest.param(FRAME_ERRORS[name], chunking, id=f"{name}-{chunking}")
        for name in FRAME_ERRORS
        for chunking in MODES
        if not (name == "too-large" and chunking == "trailing-almost")
    ],
)
def test_frame_error_closes_the_connection_with_501(bad: bytes, chunking: str) -> None:
    steps = [*handshake(), Feed(0, channel_open()), Feed(0, bad), Feed(0, channel_open(2))]
    t = run_checked(steps, chunking)
    close = only(t.out(5), commands.Connection.Close)
    assert close.reply_code == 501
    assert "FRAME_ERROR" in close.reply_text
    assert t.closed == (True,)
    assert t.out(6) == b"", "nothing is parsed after a framing error"


def test_client_close_gets_close_ok(mode: str) -> None:
    steps = [
        *opened(),
        Feed(0, method(0, commands.Connection.Close(200, "bye", 0, 0))),
    ]
    t = run_checked(steps, mode)
    only(t.out(6), commands.Connection.CloseOk)
    assert t.closed == (True,)


def test_content_header_without_publish_is_unexpected_frame(mode: str) -> None:
    steps = [*opened(), Feed(0, raw_frame(FRAME_HEADER, 1, content_header(1)))]
    t = run_checked(steps, mode)
    close = only(t.out(6), commands.Connection.Close)
    assert close.reply_code == 505


def test_content_interleaved_with_other_channels_and_heartbeats(mode: str) -> None:
    one = publish("q", b"from channel one", body_frame_size=5)
    two = publish("q", b"from channel two", channel=2)
    frames = raw_frames(one)
    head = b"".join(raw_frame(*f) for f in frames[:2])  # publish + header of channel 1
    rest = b"".join(raw_frame(*f) for f in frames[2:])  # its body frames
    steps = [
        *opened(),
        Feed(0, channel_open(2)),
        Feed(0, head + HEARTBEAT + two + HEARTBEAT + rest),
        Feed(0, method(1, commands.Basic.Get(queue="q", no_ack=True))),
        Feed(0, method(1, commands.Basic.Get(queue="q", no_ack=True))),
    ]
    t = run_checked(steps, mode)
    assert t.out(7) == b""
    assert [c.body for c in contents(t.out(8)) + contents(t.out(9))] == [
        b"from channel two",
        b"from channel one",
    ]


def test_message_larger_than_max_message_size_is_refused(mode: str) -> None:
    settings = warrenmq.Settings(amqp_port=0, max_message_size=100)
    steps = [
        *opened(),
        Feed(0, publish("q", b"x" * 200)),  # one body frame: within frame_max, over the limit
    ]
    t = run_checked(steps, mode, settings=settings)
    close = only(t.out(6), commands.Channel.Close)
    assert close.reply_code == 406
    assert "max size" in close.reply_text
    assert t.ready == {"q": 0}


# -- heartbeats (a fake clock) ----------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    # the time module's own attribute (the compiled build binds the module at import)
    monkeypatch.setattr(time, "monotonic", fake.monotonic)
    return fake


def _open_engine(heartbeat: int) -> tuple[warrenmq.Broker, AMQPConnection]:
    broker = warrenmq.Broker(warrenmq.Settings(amqp_port=0))
    engine = AMQPConnection(broker, ("127.0.0.1", 5000))
    for step in handshake(heartbeat=heartbeat):
        assert isinstance(step, Feed)
        engine.receive_data(step.data)
    engine.data_to_send()
    return broker, engine


def test_heartbeat_sent_after_half_the_interval_of_silence(clock: FakeClock) -> None:
    _, engine = _open_engine(heartbeat=10)
    clock.now = 1004.9
    assert engine.tick(clock.now) == pytest.approx(1005.0)
    assert engine.data_to_send() == b""
    clock.now = 1005.0
    engine.tick(clock.now)
    out = bytes(engine.data_to_send())
    assert out == HEARTBEAT
    assert isinstance(only(out, Heartbeat), Heartbeat)
    assert engine.closed is False


def test_output_postpones_the_heartbeat(clock: FakeClock) -> None:
    _, engine = _open_engine(heartbeat=10)
    clock.now = 1004.0
    engine.receive_data(channel_open())  # a reply goes out at 1004
    only(bytes(engine.data_to_send()), commands.Channel.OpenOk)
    clock.now = 1008.9
    engine.tick(clock.now)
    assert engine.data_to_send() == b""
    clock.now = 1009.0
    engine.tick(clock.now)
    assert engine.data_to_send() == HEARTBEAT


def test_closed_after_two_missed_heartbeat_intervals(clock: FakeClock) -> None:
    broker, engine = _open_engine(heartbeat=10)
    for now in (1005.0, 1010.0, 1012.0, 1015.0, 1020.0, 1025.0, 1030.0):
        clock.now = now
        if now == 1012.0:
            engine.receive_data(HEARTBEAT)  # the client is last heard of at 1012
            assert engine.data_to_send() == b""
            continue
        engine.tick(now)
        assert engine.data_to_send() == HEARTBEAT, now
        assert engine.closed is False
    clock.now = 1032.0
    engine.tick(clock.now)
    assert engine.closed is False
    clock.now = 1032.1
    assert engine.tick(clock.now) is None
    assert engine.closed is True
    assert engine not in broker.connections


def test_silent_client_closed_after_two_intervals(clock: FakeClock) -> None:
    _, engine = _open_engine(heartbeat=5)
    clock.now = 1010.0
    engine.tick(clock.now)
    assert engine.closed is False
    clock.now = 1010.01
    engine.tick(clock.now)
    assert engine.closed is True


def test_heartbeat_zero_disables_timers(clock: FakeClock) -> None:
    _, engine = _open_engine(heartbeat=0)
    clock.now = 1_000_000.0
    assert engine.tick(clock.now) is None
    assert engine.data_to_send() == b""
    assert engine.closed is False

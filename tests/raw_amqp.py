"""A tiny synchronous AMQP 0-9-1 client over a plain socket, for protocol-abuse tests.

It does the handshake with pamqp's marshalling and then lets a test send arbitrary bytes and read
the server's frames with a deadline. Nothing here retries or sleeps: every read waits on the
socket with a timeout and fails loudly when the deadline passes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from pamqp import commands, encode, frame
from pamqp.base import Frame as MethodFrame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader, ProtocolHeader
from pamqp.heartbeat import Heartbeat

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE

AnyFrame = MethodFrame | ContentBody | ContentHeader | ProtocolHeader | Heartbeat

CLIENT_CAPABILITIES: dict[str, Any] = {
    "authentication_failure_close": True,
    "basic.nack": True,
    "connection.blocked": True,
    "consumer_cancel_notify": True,
    "publisher_confirms": True,
}


class ConnectionClosedByPeer(Exception):
    """The server closed the TCP connection (EOF or reset)."""

    def __init__(self, message: str, received: bytes = b"") -> None:
        super().__init__(message)
        self.received = received


def raw_frame(frame_type: int, channel: int, payload: bytes, end: int = FRAME_END) -> bytes:
    """Frame bytes built by hand, so a test can break any part of them."""
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


def method_payload(class_id: int, method_id: int, arguments: bytes = b"") -> bytes:
    return struct.pack(">HH", class_id, method_id) + arguments


def shortstr(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">B", len(data)) + data


def longstr(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def nested_field_table(depth: int, array: bool = False) -> bytes:
    """An encoded field table nesting ``depth`` containers in all: tables in tables, or (with
    ``array``) one table holding arrays in arrays. The innermost container is empty."""
    value = struct.pack(">I", 0)
    for level in range(depth - 1, 0, -1):  # wrap ``value`` in the container at ``level``
        key = b"\x01a" if level == 1 or not array else b""
        entry = key + (b"A" if array else b"F") + value
        value = struct.pack(">I", len(entry)) + entry
    return value


def plain_response(username: str, password: str) -> bytes:
    return b"\x00" + username.encode() + b"\x00" + password.encode()


def amqplain_response(username: str, password: str) -> bytes:
    """AMQPLAIN: a field table of LOGIN and PASSWORD *without* the table's 4-byte length."""
    return encode.field_table({"LOGIN": username, "PASSWORD": password})[4:]


def start_ok_frame(
    mechanism: str,
    response: bytes,
    client_properties: dict[str, Any] | None = None,
    locale: str = "en_US",
) -> bytes:
    """Connection.StartOk by hand: pamqp insists the response be ``str``, SASL wants bytes."""
    props = client_properties
    if props is None:
        props = {"product": "warrenmq-raw-tests", "capabilities": dict(CLIENT_CAPABILITIES)}
    arguments = encode.field_table(props) + shortstr(mechanism) + longstr(response)
    arguments += shortstr(locale)
    return raw_frame(FRAME_METHOD, 0, method_payload(10, 11, arguments))


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    frame_max: int = 131072,
    mandatory: bool = False,
    properties: commands.Basic.Properties | None = None,
) -> bytes:
    """Basic.Publish + content header + body frames split at ``frame_max``, as bytes."""
    out = [
        frame.marshal(
            commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
            channel,
        ),
        frame.marshal(
            ContentHeader(0, len(body), properties or commands.Basic.Properties()), channel
        ),
    ]
    chunk = frame_max - 8
    out.extend(
        raw_frame(FRAME_BODY, channel, body[i : i + chunk]) for i in range(0, len(body), chunk)
    )
    return b"".join(out)


@dataclass
class RawAMQP:
    """One TCP connection to the broker. Use as a context manager; it always closes the socket."""

    host: str
    port: int
    timeout: float = 5.0
    sock: socket.socket = field(init=False)
    buffer: bytearray = field(init=False, default_factory=bytearray)
    start: commands.Connection.Start | None = field(init=False, default=None)
    tune: commands.Connection.Tune | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __enter__(self) -> RawAMQP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- sending -------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, value: AnyFrame, channel: int = 0) -> None:
        self.send(frame.marshal(value, channel))

    # -- receiving -----------------------------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"no complete frame within the deadline; have {bytes(self.buffer)!r}"
            )
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError(
                f"no complete frame within the deadline; have {bytes(self.buffer)!r}"
            ) from None
        except ConnectionResetError as exc:
            raise ConnectionClosedByPeer("connection reset", bytes(self.buffer)) from exc
        if not chunk:
            raise ConnectionClosedByPeer("server closed the connection", bytes(self.buffer))
        self.buffer += chunk

    def read_frame(self, timeout: float | None = None) -> tuple[int, AnyFrame]:
        """The next frame as ``(channel, frame)``; the server's protocol header counts as one."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if self.buffer[:4] == b"AMQP" and len(self.buffer) >= 8:
                header = bytes(self.buffer[:8])
                del self.buffer[:8]
                return 0, ProtocolHeader(header[5], header[6], header[7])
            if len(self.buffer) >= 7 and self.buffer[:4] != b"AMQP":
                size = struct.unpack(">I", self.buffer[3:7])[0]
                if len(self.buffer) >= 8 + size:
                    consumed, channel, value = frame.unmarshal(bytes(self.buffer[: 8 + size]))
                    del self.buffer[:consumed]
                    return channel, value
            self._fill(deadline)

    def read_raw_frame(self, timeout: float | None = None) -> tuple[int, int, bytes]:
        """The next frame undecoded, as ``(frame type, channel, payload)`` (pamqp refuses
        shortstrs that are not UTF-8, which RabbitMQ sends for binary routing keys)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buffer) >= 7:
                frame_type, channel, size = struct.unpack(">BHI", self.buffer[:7])
                if len(self.buffer) >= 8 + size:
                    payload = bytes(self.buffer[7 : 7 + size])
                    del self.buffer[: 8 + size]
                    return frame_type, channel, payload
            self._fill(deadline)

    def read_method(self, timeout: float | None = None) -> tuple[int, MethodFrame]:
        """The next method frame, skipping heartbeats."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            channel, value = self.read_frame(max(0.001, deadline - time.monotonic()))
            if isinstance(value, Heartbeat):
                continue
            assert isinstance(value, MethodFrame), f"expected a method frame, got {value!r}"
            return channel, value

    def expect(self, kind: type[MethodFrame], timeout: float | None = None) -> MethodFrame:
        channel, value = self.read_method(timeout)
        assert isinstance(value, kind), f"expected {kind.__name__}, got {value!r} on ch {channel}"
        return value

    def read_all_until_eof(self, timeout: float | None = None) -> bytes:
        """Every byte the server sends until it closes the socket (raises on timeout)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                self._fill(deadline)
            except ConnectionClosedByPeer:
                data = bytes(self.buffer)
                self.buffer.clear()
                return data

    def expect_connection_close(
        self, timeout: float | None = None, wait_closed: bool = True
    ) -> commands.Connection.Close:
        """Wait for Connection.Close on channel 0 and answer CloseOk.

        With ``wait_closed`` also assert that the server then closes the socket.
        """
        channel, value = self.read_method(timeout)
        assert channel == 0 and isinstance(value, commands.Connection.Close), (
            f"expected Connection.Close on channel 0, got {value!r} on channel {channel}"
        )
        # the server may already have gone; the Close is what matters
        with contextlib.suppress(OSError):
            self.send_frame(commands.Connection.CloseOk())
        if wait_closed:
            self.wait_closed(timeout)
        return value

    def wait_closed(self, timeout: float | None = None) -> None:
        """Assert the server closes the TCP connection within the timeout (ignoring any data)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                self._fill(deadline)
            except ConnectionClosedByPeer:
                return
            self.buffer.clear()

    # -- handshake -----------------------------------------------------------------------------

    def handshake(
        self,
        username: str = "guest",
        password: str = "guest",
        vhost: str = "/",
        mechanism: str = "PLAIN",
        heartbeat: int = 0,
        frame_max: int | None = None,
        channel_max: int | None = None,
        open_connection: bool = True,
    ) -> None:
        """Protocol header, Start/StartOk, Tune/TuneOk and (unless told not to) Connection.Open.

        ``frame_max``/``channel_max`` default to whatever the server proposes.
        """
        self.send(PROTOCOL_HEADER)
        start = self.expect(commands.Connection.Start)
        assert isinstance(start, commands.Connection.Start)
        self.start = start
        if mechanism == "AMQPLAIN":
            response = amqplain_response(username, password)
        else:
            response = plain_response(username, password)
        self.send(start_ok_frame(mechanism, response))
        tune = self.expect(commands.Connection.Tune)
        assert isinstance(tune, commands.Connection.Tune)
        self.tune = tune
        self.send_frame(
            commands.Connection.TuneOk(
                channel_max=tune.channel_max if channel_max is None else channel_max,
                frame_max=tune.frame_max if frame_max is None else frame_max,
                heartbeat=heartbeat,
            )
        )
        if open_connection:
            self.send_frame(commands.Connection.Open(virtual_host=vhost))
            self.expect(commands.Connection.OpenOk)

    @property
    def frame_max(self) -> int:
        assert self.tune is not None
        return self.tune.frame_max

    def open_channel(self, channel: int = 1) -> None:
        self.send_frame(commands.Channel.Open(), channel)
        ch, value = self.read_method()
        assert ch == channel and isinstance(value, commands.Channel.OpenOk), (ch, value)

    def close_gracefully(self) -> None:
        self.send_frame(
            commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
        )
        self.expect(commands.Connection.CloseOk)
        self.close()

"""A minimal AMQP 0-9-1 client connection on an asyncio Protocol (one channel, number 1).

The cold path (handshake, declarations, RPCs) is encoded and decoded with pamqp. The hot path
is hand-written: frames are parsed in place from the read buffer, Basic.Deliver (with its
content frames) is handed to ``on_deliver`` and Basic.Ack/Nack confirms to ``on_confirm``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

from pamqp import commands, frame
from pamqp.base import Frame
from pamqp.common import FieldTable
from pamqp.header import ProtocolHeader

from bench import wire

CHANNEL = 1
FRAME_MAX = 131072
CONNECT_TIMEOUT = 10.0
RPC_TIMEOUT = 30.0

# on_deliver(buffer, method frame start, method frame end index, buffer length) -> next position,
# or -1 when the content frames have not all arrived yet.
DeliverHook = Callable[[bytearray, int, int, int], int]
ConfirmHook = Callable[[int, bool, bool], None]  # (delivery tag, multiple, nack)


class BrokerError(Exception):
    """The broker closed the channel or connection, or the connection dropped."""

    def __init__(self, message: str, reply_code: int | None = None) -> None:
        super().__init__(message)
        self.reply_code = reply_code  # of the broker's Channel.Close or Connection.Close


@dataclass(frozen=True)
class BrokerURL:
    """Parsed ``amqp://user:password@host:port/vhost``, or ``mqtt://[user:password@]host:port``
    for the MQTT scenarios (no user name: the broker's anonymous login)."""

    host: str
    port: int
    user: str
    password: str
    vhost: str
    scheme: str = "amqp"

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        parts = urlsplit(url)
        if parts.scheme == "mqtt":
            return cls(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 1883,
                user=unquote(parts.username or ""),
                password=unquote(parts.password or ""),
                vhost="-",
                scheme="mqtt",
            )
        if parts.scheme != "amqp":
            raise ValueError(f"not an amqp:// or mqtt:// URL: {url}")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5672,
            user=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=unquote(path) if path else "/",
        )


class Connection(asyncio.Protocol):
    """One AMQP connection with a single channel; see the module docstring."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.error: BaseException | None = None
        self.blocked = False
        self.frame_max = FRAME_MAX
        self.writable = asyncio.Event()
        self.writable.set()
        self.on_deliver: DeliverHook = self._unexpected_deliver
        self.on_confirm: ConfirmHook = self._unexpected_confirm
        self.after_read: Callable[[], None] | None = None
        self.on_failure: Callable[[BaseException], None] | None = None
        self._buf = bytearray()
        self._waiters: deque[tuple[asyncio.Future[Frame], Frame | None]] = deque()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, url: BrokerURL) -> Connection:
        """Connect, authenticate (PLAIN), tune, open the vhost and channel 1."""
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(cls, url.host, url.port), CONNECT_TIMEOUT
        )
        try:
            await asyncio.wait_for(conn._handshake(url), CONNECT_TIMEOUT)
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _handshake(self, url: BrokerURL) -> None:
        start = self._expect(None)
        assert self.transport is not None
        self.transport.write(ProtocolHeader().marshal())
        await start
        props: FieldTable = {
            "product": "warrenmq-bench",
            "capabilities": {
                "publisher_confirms": True,
                "basic.nack": True,
                "consumer_cancel_notify": True,
                "connection.blocked": True,
                "authentication_failure_close": True,
            },
        }
        tune = await self.call(
            commands.Connection.StartOk(
                client_properties=props,
                mechanism="PLAIN",
                response=f"\0{url.user}\0{url.password}",
            ),
            channel=0,
        )
        if not isinstance(tune, commands.Connection.Tune):
            raise BrokerError(f"expected Connection.Tune, got {tune.name}")
        self.frame_max = min(tune.frame_max or FRAME_MAX, FRAME_MAX)
        self.send(
            commands.Connection.TuneOk(
                channel_max=tune.channel_max or 1, frame_max=self.frame_max, heartbeat=0
            ),
            channel=0,
        )
        await self.call(commands.Connection.Open(virtual_host=url.vhost), channel=0)
        await self.call(commands.Channel.Open())

    async def close(self) -> None:
        """Close politely (Connection.Close / Close-Ok), then drop the socket."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.error is None:
            close = commands.Connection.Close(
                reply_code=200, reply_text="bye", class_id=0, method_id=0
            )
            with contextlib.suppress(BrokerError, TimeoutError):
                await asyncio.wait_for(self.call(close, channel=0), 5.0)
        self._closing = True
        self.transport.close()

    def abort(self) -> None:
        """Drop the socket without a handshake."""
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- cold path: RPCs -------------------------------------------------------------------

    def send(self, method: Frame, channel: int = CHANNEL) -> None:
        """Send one method frame (no reply expected)."""
        if self.error is not None:
            raise self.error
        assert self.transport is not None
        self.transport.write(frame.marshal(method, channel))

    def call(self, method: Frame, channel: int = CHANNEL) -> asyncio.Future[Frame]:
        """Send a synchronous method; the future resolves to its reply (calls pipeline)."""
        if self.error is not None:
            raise self.error
        fut = self._expect(method)
        self.send(method, channel)
        return fut

    def call_many(self, methods: list[Frame]) -> list[asyncio.Future[Frame]]:
        """Pipeline many synchronous methods on channel 1 in one write; futures in order."""
        if self.error is not None:
            raise self.error
        assert self.transport is not None
        futures = [self._expect(m) for m in methods]
        self.transport.write(b"".join(frame.marshal(m, CHANNEL) for m in methods))
        return futures

    async def rpc(self, method: Frame, channel: int = CHANNEL) -> Frame:
        """Send a synchronous method and wait for its reply."""
        return await asyncio.wait_for(self.call(method, channel), RPC_TIMEOUT)

    def _expect(self, request: Frame | None) -> asyncio.Future[Frame]:
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiters.append((fut, request))
        return fut

    def _on_method(self, channel: int, raw: bytes) -> None:
        _, _, method = frame.unmarshal(raw)
        if not isinstance(method, Frame):
            self.fail(BrokerError(f"expected a method frame, got {type(method).__name__}"))
            return
        if isinstance(method, commands.Connection.Close | commands.Channel.Close):
            reply = (
                commands.Connection.CloseOk()
                if isinstance(method, commands.Connection.Close)
                else commands.Channel.CloseOk()
            )
            self.send(reply, channel)
            self.fail(
                BrokerError(
                    f"broker closed the {method.name.split('.')[0].lower()}: "
                    f"{method.reply_code} {method.reply_text}",
                    method.reply_code,
                )
            )
        elif isinstance(method, commands.Connection.Blocked):
            self.blocked = True
            print(f"warning: broker blocked the connection: {method.reason}", file=sys.stderr)
        elif isinstance(method, commands.Connection.Unblocked):
            self.blocked = False
        elif isinstance(method, commands.Basic.Cancel):
            self.fail(BrokerError("the broker cancelled the consumer"))
        elif isinstance(method, commands.Basic.Return):
            self.fail(BrokerError(f"message returned: {method.reply_code} {method.reply_text}"))
        elif not self._waiters:
            self.fail(BrokerError(f"unexpected {method.name}"))
        else:
            fut, request = self._waiters.popleft()
            expected = request.valid_responses if request is not None else None
            if expected and method.name not in expected:
                assert request is not None
                self.fail(BrokerError(f"expected a reply to {request.name}, got {method.name}"))
                return
            if not fut.done():
                fut.set_result(method)

    def fail(self, exc: BaseException) -> None:
        """Record a fatal error, fail every pending RPC and drop the connection."""
        if self.error is not None:
            return
        self.error = exc
        while self._waiters:
            fut, _ = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # whoever awaits it still gets it; nobody else needs a log
        self.writable.set()
        if self.on_failure is not None:
            self.on_failure(exc)
        if self.transport is not None and not self.transport.is_closing():
            self._closing = True
            self.transport.close()

    def _unexpected_deliver(self, buf: bytearray, pos: int, end: int, size: int) -> int:
        self.fail(BrokerError("unexpected Basic.Deliver"))
        return size

    def _unexpected_confirm(self, tag: int, multiple: bool, nack: bool) -> None:
        self.fail(BrokerError("unexpected Basic.Ack/Nack from the broker"))

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.set_write_buffer_limits(high=1 << 20)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closing:
            self.fail(BrokerError(f"connection lost: {exc}" if exc else "connection closed"))

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        n = len(buf)
        pos = 0
        unpack_head = wire.FRAME_HEAD.unpack_from
        unpack_id = wire.METHOD_ID.unpack_from
        while n - pos > wire.HEAD_SIZE:
            ftype, channel, size = unpack_head(buf, pos)
            end = pos + wire.HEAD_SIZE + size  # index of the frame-end octet
            if end >= n:
                break
            if buf[end] != wire.FRAME_END:
                self.fail(BrokerError("malformed frame (bad frame-end octet)"))
                return
            if ftype == wire.FRAME_METHOD:
                method_id = unpack_id(buf, pos + 7)[0]
                if method_id == wire.BASIC_DELIVER:
                    nxt = self.on_deliver(buf, pos, end, n)
                    if nxt < 0:
                        break
                    pos = nxt
                    continue
                if method_id == wire.BASIC_ACK or method_id == wire.BASIC_NACK:
                    tag, flags = wire.TAG_FLAGS.unpack_from(buf, pos + 11)
                    self.on_confirm(tag, bool(flags & 1), method_id == wire.BASIC_NACK)
                else:
                    self._on_method(channel, bytes(buf[pos : end + 1]))
                    if self.error is not None:
                        return
            elif ftype == wire.FRAME_HEARTBEAT:
                cast(asyncio.Transport, self.transport).write(
                    wire.HEARTBEAT
                )  # we ask for none; answer one if sent
            else:
                self.fail(BrokerError(f"unexpected frame type {ftype}"))
                return
            pos = end + 1
        del buf[:pos]
        if self.after_read is not None:
            self.after_read()

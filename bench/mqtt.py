"""A lean MQTT 3.1.1 load generator: raw sockets and pre-encoded packets (as ``wire`` does for
AMQP), so that the client is not what limits the broker.

One connection publishes numbered, timestamped messages to one topic at QoS 0 or 1 (counting
PUBACKs); each subscriber connection subscribes to that topic at the same QoS, checks every
sequence number and acknowledges QoS 1 deliveries (one write per socket read). At most
``window`` messages are published and not yet received by the slowest subscriber.
"""

from __future__ import annotations

import asyncio
import struct
from array import array
from collections.abc import Callable
from time import perf_counter_ns
from typing import cast

from bench import peers
from bench.amqp import BrokerURL
from bench.wire import STAMP

CONNACK, PUBLISH, PUBACK, SUBACK = 2, 3, 4, 9
_U16 = struct.Struct(">H")
#: packet id, then the body's stamp (sequence number, send time)
_ID_STAMP = struct.Struct(">HQQ")
#: a PUBACK per packet id, built once (index 0 unused)
PUBACKS = [bytes((PUBACK << 4, 2)) + _U16.pack(i) for i in range(65536)]
MAX_WINDOW = 65_000  # packet ids in flight must stay below 65,535


class MQTTError(Exception):
    """The broker refused or broke the MQTT exchange."""


def _length(size: int) -> bytes:
    out = bytearray()
    while True:
        byte, size = size % 128, size // 128
        out.append(byte | 0x80 if size else byte)
        if not size:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return _U16.pack(len(raw)) + raw


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _length(len(body)) + body


def connect_packet(client_id: str, user: str, password: str) -> bytes:
    flags = 0x02  # clean session
    tail = b""
    if user:
        flags |= 0xC0
        tail = _string(user) + _string(password)
    body = _string("MQTT") + bytes((4, flags)) + _U16.pack(60) + _string(client_id) + tail
    return packet(CONNECT_FIRST, body)


CONNECT_FIRST = 0x10
DISCONNECT = b"\xe0\x00"


class PublishTemplate:
    """A batch of pre-encoded PUBLISH packets; rendering stamps sequence numbers, the time
    and (QoS 1) packet ids into a copy."""

    def __init__(self, topic: str, qos: int, body_size: int, batch: int) -> None:
        if body_size < STAMP.size:
            raise ValueError(f"body size must be at least {STAMP.size} bytes")
        self.qos = qos
        self.batch = batch
        variable = _string(topic) + (b"\x00\x00" if qos else b"")
        one = packet(PUBLISH << 4 | qos << 1, variable + bytes(body_size))
        self.size = len(one)
        #: where the packet id (QoS 1) or the stamp (QoS 0) of the first message is
        self.offset = len(one) - body_size - (2 if qos else 0)
        self._template = one * batch

    def render(self, first_seq: int, count: int, now_ns: int) -> bytearray:
        size = self.size
        buf = bytearray(self._template[: size * count])
        offsets = range(self.offset, size * count, size)
        if self.qos:
            pack = _ID_STAMP.pack_into
            for seq, offset in zip(range(first_seq, first_seq + count), offsets, strict=True):
                pack(buf, offset, seq % 65535 + 1, seq, now_ns)
        else:
            pack = STAMP.pack_into
            for seq, offset in zip(range(first_seq, first_seq + count), offsets, strict=True):
                pack(buf, offset, seq, now_ns)
        return buf


class Connection(asyncio.Protocol):
    """One MQTT connection: CONNECT/SUBSCRIBE with replies awaited, then PUBLISH (received
    ones handed to ``on_publish`` in bulk) and PUBACK (counted)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.error: BaseException | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self._buf = bytearray()
        self._replies: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        #: received PUBLISH packets: (buffer, [(first byte, body start, body end), ...])
        self.on_publish: Callable[[bytearray, list[tuple[int, int, int]]], None] | None = None
        self.pubacks = 0
        self.on_failure: Callable[[BaseException], None] | None = None
        self.on_progress: Callable[[], None] | None = None

    @classmethod
    async def open(cls, url: BrokerURL, client_id: str) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, url.host, url.port)
        assert conn.transport is not None
        conn.transport.write(connect_packet(client_id, url.user, url.password))
        first, body = await conn.reply()
        if first >> 4 != CONNACK or len(body) != 2:
            raise MQTTError(f"expected CONNACK, got packet type {first >> 4}")
        if body[1]:
            raise MQTTError(f"CONNECT refused with return code {body[1]}")
        return conn

    async def reply(self, timeout: float = 10.0) -> tuple[int, bytes]:
        if self.error is not None:
            raise self.error
        return await asyncio.wait_for(self._replies.get(), timeout)

    async def subscribe(self, topic: str, qos: int) -> None:
        assert self.transport is not None
        self.transport.write(packet(0x82, _U16.pack(1) + _string(topic) + bytes((qos,))))
        first, body = await self.reply()
        if first >> 4 != SUBACK or body[2:] != bytes((qos,)):
            raise MQTTError(f"SUBSCRIBE {topic} at QoS {qos}: got {first:#x} {body.hex()}")

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        if self.error is None:
            self.fail(MQTTError(f"connection lost{f': {exc}' if exc else ''}"))

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
            if self.on_failure is not None:
                self.on_failure(error)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        n = len(buf)
        pos = 0
        publishes: list[tuple[int, int, int]] = []
        pubacks = 0
        while n - pos >= 2:
            first = buf[pos]
            size = buf[pos + 1]
            start = pos + 2
            if size & 0x80:  # a longer remaining length
                size &= 0x7F
                shift, complete = 7, False
                while start < n:
                    byte = buf[start]
                    start += 1
                    size |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        complete = True
                        break
                if not complete:
                    break
            end = start + size
            if end > n:
                break
            kind = first >> 4
            if kind == PUBLISH:
                publishes.append((first, start, end))
            elif kind == PUBACK:
                pubacks += 1
            else:
                self._replies.put_nowait((first, bytes(buf[start:end])))
            pos = end
        if publishes and self.on_publish is not None:
            self.on_publish(buf, publishes)
        if pos:
            del buf[:pos]
        if pubacks:
            self.pubacks += pubacks
        if self.on_progress is not None:
            self.on_progress()


class Subscriber:
    """Counts each sequence number it receives, records latency, PUBACKs QoS 1 deliveries."""

    def __init__(self, conn: Connection, name: str, capacity: int) -> None:
        self.conn = conn
        self.queue = name  # for the report's problem lines
        self.received = 0
        self.malformed = 0
        self.seen = bytearray(capacity)
        self.latencies = array("q")
        conn.on_publish = self._publish

    def _publish(self, buf: bytearray, packets: list[tuple[int, int, int]]) -> None:
        now = perf_counter_ns()
        seen, latencies = self.seen, self.latencies
        unpack = STAMP.unpack_from
        acks: list[int] = []
        for first, start, end in packets:
            body = start + 2 + (buf[start] << 8 | buf[start + 1])
            if first & 6:
                acks.append(buf[body] << 8 | buf[body + 1])
                body += 2
            if end - body < STAMP.size:
                self.malformed += 1
                continue
            seq, sent_ns = unpack(buf, body)
            latencies.append(now - sent_ns)
            try:
                seen[seq] += 1
            except IndexError:
                if seq >= 1 << 31:
                    self.malformed += 1
                else:
                    seen.extend(bytes(max(seq + 1, 2 * len(seen)) - len(seen)))
                    seen[seq] += 1
            except ValueError:
                pass  # seen 255 times already
        self.received += len(packets)
        if acks and self.conn.transport is not None:
            self.conn.transport.write(b"".join(map(PUBACKS.__getitem__, acks)))


class Publisher(peers.Publisher):
    """``peers.Publisher``'s loop (batches, window, pacing) on an MQTT connection; QoS 1
    publishes count as confirmed when PUBACKed."""

    @property
    def confirmed(self) -> int:
        return cast(Connection, self.conn).pubacks

"""Hand-written AMQP 0-9-1 frames for the hot paths: publish, ack, deliver and confirm."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from pamqp.commands import Basic
from pamqp.header import ContentHeader

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE

FRAME_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
METHOD_ID = struct.Struct(">I")  # class id << 16 | method id
U64 = struct.Struct(">Q")
TAG_FLAGS = struct.Struct(">QB")  # Basic.Ack/Nack arguments: delivery tag, bit flags
STAMP = struct.Struct(">QQ")  # first 16 body bytes: sequence number, send time (perf_counter_ns)
I32 = struct.Struct(">i")

BASIC_PUBLISH = 60 << 16 | 40
BASIC_DELIVER = 60 << 16 | 60
BASIC_ACK = 60 << 16 | 80
BASIC_NACK = 60 << 16 | 120

HEAD_SIZE = FRAME_HEAD.size  # 7 bytes before every frame payload
CONTENT_HEADER_SIZE = 14  # class, weight, body size, property flags (no properties)
#: an ``x-delay`` header value that pamqp encodes as a 32-bit integer (field type ``I``): its
#: four bytes are found in the encoded template and overwritten with each message's delay
_DELAY_MARK = 0x5EADBEEF
_DELAY_FIELD = b"\x07x-delayI" + I32.pack(_DELAY_MARK)


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"short string too long: {value!r}")
    return bytes((len(raw),)) + raw


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    """One complete frame: header, payload, frame-end octet."""
    return FRAME_HEAD.pack(frame_type, channel, len(payload)) + payload + bytes((FRAME_END,))


def publish(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    frame_max: int,
    properties: Basic.Properties | None = None,
) -> tuple[bytes, int]:
    """Basic.Publish method frame + content header + body frame(s).

    Returns the bytes and the offset of the body's first byte in them.
    """
    method = (
        METHOD_ID.pack(BASIC_PUBLISH)
        + b"\x00\x00"  # reserved-1 (ticket)
        + _shortstr(exchange)
        + _shortstr(routing_key)
        + b"\x00"  # mandatory=0, immediate=0
    )
    if properties is None:
        content_header = struct.pack(">HHQH", 60, 0, len(body), 0)
    else:
        content_header = ContentHeader(0, len(body), properties).marshal()
    head = frame(FRAME_METHOD, channel, method) + frame(FRAME_HEADER, channel, content_header)
    chunk = frame_max - HEAD_SIZE - 1
    bodies = [frame(FRAME_BODY, channel, body[i : i + chunk]) for i in range(0, len(body), chunk)]
    return head + b"".join(bodies), len(head) + HEAD_SIZE


HEARTBEAT = frame(FRAME_HEARTBEAT, 0, b"")


def basic_ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """Basic.Ack method frame."""
    return frame(
        FRAME_METHOD,
        channel,
        METHOD_ID.pack(BASIC_ACK) + TAG_FLAGS.pack(delivery_tag, 1 if multiple else 0),
    )


class PublishTemplate:
    """A batch of pre-encoded publishes; rendering only stamps sequence numbers and the time.

    Within a batch, message ``i`` has routing key ``routing_keys[i % len(routing_keys)]`` and
    properties ``properties[i % len(properties)]`` (``None``: no properties); every batch
    starts again at ``i = 0``. With ``x_delay``, every message also gets a header ``x-delay``
    (32-bit integer, ms): ``x_delay(sequence number)``, packed in at rendering.
    """

    def __init__(
        self,
        channel: int,
        exchange: str,
        routing_keys: list[str],
        body_size: int,
        batch: int,
        frame_max: int,
        properties: Sequence[Basic.Properties | None] = (None,),
        x_delay: Callable[[int], int] | None = None,
    ) -> None:
        if body_size < STAMP.size:
            raise ValueError(f"body size must be at least {STAMP.size} bytes")
        if x_delay is not None:
            properties = [_with_delay_mark(p) for p in properties]
        body = bytes(body_size)
        messages = [
            publish(
                channel,
                exchange,
                routing_keys[i % len(routing_keys)],
                body,
                frame_max,
                properties[i % len(properties)],
            )
            for i in range(batch)
        ]
        self.batch = batch
        self._x_delay = x_delay
        self._stamps: list[int] = []  # where each message's stamp goes
        self._delays: list[int] = []  # where each message's x-delay value goes (with x_delay)
        self._ends: list[int] = []  # where each message ends
        size = 0
        for encoded, stamp_offset in messages:
            self._stamps.append(size + stamp_offset)
            if x_delay is not None:
                self._delays.append(size + encoded.index(_DELAY_FIELD) + len(_DELAY_FIELD) - 4)
            size += len(encoded)
            self._ends.append(size)
        self._template = memoryview(b"".join(encoded for encoded, _ in messages))

    def render(self, first_seq: int, count: int, now_ns: int) -> bytearray:
        """Bytes for ``count`` publishes numbered from ``first_seq``, all stamped ``now_ns``."""
        buf = bytearray(self._template[: self._ends[count - 1]])
        pack_into = STAMP.pack_into
        seqs = range(first_seq, first_seq + count)
        for seq, offset in zip(seqs, self._stamps, strict=False):
            pack_into(buf, offset, seq, now_ns)
        if self._x_delay is not None:
            x_delay, pack_delay = self._x_delay, I32.pack_into
            for seq, offset in zip(seqs, self._delays, strict=False):
                pack_delay(buf, offset, x_delay(seq))
        return buf


def _with_delay_mark(properties: Basic.Properties | None) -> Basic.Properties:
    """``properties`` (or none) with the ``x-delay`` header's placeholder value."""
    if properties is None:
        return Basic.Properties(headers={"x-delay": _DELAY_MARK})
    fields: dict[str, Any] = dict(properties)
    fields["headers"] = {**(properties.headers or {}), "x-delay": _DELAY_MARK}
    return Basic.Properties(**fields)

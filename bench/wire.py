"""Hand-written AMQP 0-9-1 frames for the hot paths: publish, ack, deliver and confirm."""

from __future__ import annotations

import struct

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

BASIC_PUBLISH = 60 << 16 | 40
BASIC_DELIVER = 60 << 16 | 60
BASIC_ACK = 60 << 16 | 80
BASIC_NACK = 60 << 16 | 120

HEAD_SIZE = FRAME_HEAD.size  # 7 bytes before every frame payload
CONTENT_HEADER_SIZE = 14  # class, weight, body size, property flags (no properties)


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"short string too long: {value!r}")
    return bytes((len(raw),)) + raw


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    """One complete frame: header, payload, frame-end octet."""
    return FRAME_HEAD.pack(frame_type, channel, len(payload)) + payload + bytes((FRAME_END,))


def publish(
    channel: int, exchange: str, routing_key: str, body: bytes, frame_max: int
) -> tuple[bytes, int]:
    """Basic.Publish method frame + content header (no properties) + body frame(s).

    Returns the bytes and the offset of the body's first byte in them.
    """
    method = (
        METHOD_ID.pack(BASIC_PUBLISH)
        + b"\x00\x00"  # reserved-1 (ticket)
        + _shortstr(exchange)
        + _shortstr(routing_key)
        + b"\x00"  # mandatory=0, immediate=0
    )
    head = frame(FRAME_METHOD, channel, method) + frame(
        FRAME_HEADER, channel, struct.pack(">HHQH", 60, 0, len(body), 0)
    )
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

    Routing keys rotate through ``routing_keys`` (which must all have the same length, so every
    message has the same size and the stamp sits at a fixed stride).
    """

    def __init__(
        self,
        channel: int,
        exchange: str,
        routing_keys: list[str],
        body_size: int,
        batch: int,
        frame_max: int,
    ) -> None:
        if body_size < STAMP.size:
            raise ValueError(f"body size must be at least {STAMP.size} bytes")
        encoded = [
            publish(channel, exchange, key, bytes(body_size), frame_max) for key in routing_keys
        ]
        if len({len(m) for m, _ in encoded}) != 1:
            raise ValueError("routing keys must all have the same length")
        self.batch = batch
        self.stride = len(encoded[0][0])
        self.stamp_offset = encoded[0][1]
        self._template = memoryview(b"".join(encoded[i % len(encoded)][0] for i in range(batch)))

    def render(self, first_seq: int, count: int, now_ns: int) -> bytearray:
        """Bytes for ``count`` publishes numbered from ``first_seq``, all stamped ``now_ns``."""
        buf = bytearray(self._template[: count * self.stride])
        pack_into = STAMP.pack_into
        offset = self.stamp_offset
        stride = self.stride
        for seq in range(first_seq, first_seq + count):
            pack_into(buf, offset, seq, now_ns)
            offset += stride
        return buf

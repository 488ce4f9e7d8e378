"""AMQP 0-9-1 wire constants and the hand-written encoders of the hot path.

Everything cold (handshake, declares) goes through pamqp; publish, deliver and ack are
packed here with ``struct`` because they run once per message.
"""

from __future__ import annotations

import struct

from pamqp import commands, frame
from pamqp.base import Frame

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
#: AMQP 0-9's header; RabbitMQ speaks 0-9-1 to it
PROTOCOL_HEADER_0_9 = b"AMQP\x01\x01\x00\x09"

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
#: frame type, channel, size + frame-end: the bytes a frame adds around its payload
FRAME_OVERHEAD = 8
#: the smallest frame_max a peer may negotiate (AMQP frame-min-size)
FRAME_MIN_SIZE = 4096

FRAME_HEAD = struct.Struct(">BHI")
METHOD_ID = struct.Struct(">HH")
TAG_REDELIVERED = struct.Struct(">QB")
TAG_BITS = struct.Struct(">QB")
SHORT = struct.Struct(">H")
LONG = struct.Struct(">I")

HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"

# class ids
CONNECTION = 10
CHANNEL = 20
EXCHANGE = 40
QUEUE = 50
BASIC = 60
CONFIRM = 85
TX = 90

#: (class, method) of the hot-path methods
BASIC_PUBLISH = (BASIC, 40)
BASIC_DELIVER_PREFIX = METHOD_ID.pack(BASIC, 60)
BASIC_GET_OK_PREFIX = METHOD_ID.pack(BASIC, 71)
BASIC_RETURN_PREFIX = METHOD_ID.pack(BASIC, 50)
BASIC_ACK_PREFIX = METHOD_ID.pack(BASIC, 80)
BASIC_NACK_PREFIX = METHOD_ID.pack(BASIC, 120)

#: bit of ``user-id`` in the basic property flags (checked without decoding properties)
USER_ID_FLAG = 0x0010
#: bit of ``expiration`` (0x0100) within the first property-flags byte
EXPIRATION_FLAG_HIGH = 0x01
#: bit of ``reply-to`` (0x0200) within the first property-flags byte
REPLY_TO_FLAG_HIGH = 0x02


def short_string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return bytes((len(raw),)) + raw


def method_frame(channel: int, method: Frame) -> bytes:
    """A method frame for a pamqp method object (cold path)."""
    return frame.marshal(method, channel)


def basic_ack_frame(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    return (
        FRAME_HEAD.pack(FRAME_METHOD, channel, 13)
        + BASIC_ACK_PREFIX
        + TAG_BITS.pack(delivery_tag, 1 if multiple else 0)
        + FRAME_END_BYTE
    )


def basic_nack_frame(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """basic.nack (requeue=false) for a publish the broker refused."""
    return (
        FRAME_HEAD.pack(FRAME_METHOD, channel, 13)
        + BASIC_NACK_PREFIX
        + TAG_BITS.pack(delivery_tag, 1 if multiple else 0)
        + FRAME_END_BYTE
    )


def content_frames(out: bytearray, channel: int, header: bytes, body: bytes, max_body: int) -> None:
    """Append a content header frame and the body frames (split at ``max_body``) to ``out``."""
    out += FRAME_HEAD.pack(FRAME_HEADER, channel, len(header))
    out += header
    out += FRAME_END_BYTE
    size = len(body)
    if not size:
        return
    if size <= max_body:
        out += FRAME_HEAD.pack(FRAME_BODY, channel, size)
        out += body
        out += FRAME_END_BYTE
        return
    view = memoryview(body)
    for start in range(0, size, max_body):
        piece = view[start : start + max_body]
        out += FRAME_HEAD.pack(FRAME_BODY, channel, len(piece))
        out += piece
        out += FRAME_END_BYTE


def decode_method(payload: bytes) -> Frame:
    """Decode a method frame's payload (class id onwards) with pamqp."""
    return frame._unmarshal_method_frame(payload)


__all__ = ["commands"]

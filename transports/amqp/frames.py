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


def _method_frame(channel: int, class_id: int, method_id: int, arguments: bytes) -> bytes:
    return (
        FRAME_HEAD.pack(FRAME_METHOD, channel, 4 + len(arguments))
        + METHOD_ID.pack(class_id, method_id)
        + arguments
        + FRAME_END_BYTE
    )


def queue_declare_ok_frame(channel: int, queue: str, messages: int, consumers: int) -> bytes:
    """queue.declare-ok, encoded here: pamqp's DeclareOk refuses names outside
    ``[a-zA-Z0-9-_.:@#,/+ ]``, and AMQP names are any UTF-8 up to 255 bytes."""
    return _method_frame(
        channel, QUEUE, 11, short_string(queue) + LONG.pack(messages) + LONG.pack(consumers)
    )


def printable(text: str) -> str:
    """``text`` as valid UTF-8: bytes of a binary name (kept as surrogate escapes) as ``\\xNN``."""
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode()
        return raw.decode("utf-8", "backslashreplace")


def reply_text(text: str) -> bytes:
    """A close's reply text as a shortstr's bytes: valid UTF-8 of at most 255 bytes, cut like
    RabbitMQ's (252 bytes and "...") but at a character boundary, so that clients insisting
    on UTF-8 (pamqp-based ones) can read it."""
    raw = printable(text).encode()
    if len(raw) <= 255:
        return raw
    return raw[:252].decode("utf-8", "ignore").encode() + b"..."


def close_frame(channel: int, code: int, text: str, class_id: int, method_id: int) -> bytes:
    """connection.close on channel 0, channel.close on any other."""
    arguments = (
        SHORT.pack(code) + short_string(reply_text(text)) + METHOD_ID.pack(class_id, method_id)
    )
    if channel == 0:
        return _method_frame(0, CONNECTION, 50, arguments)
    return _method_frame(channel, CHANNEL, 40, arguments)


def basic_ack_frame(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    return (
        FRAME_HEAD.pack(FRAME_METHOD, channel, 13)
        + BASIC_ACK_PREFIX
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

"""AMQP 0-9-1 wire constants, the hand-written encoders of the hot path, and the decoder of
method frames.

Everything cold (handshake, declares) goes through pamqp's method classes and value codecs;
publish, deliver and ack are packed here with ``struct`` because they run once per message.
Method arguments are read here (with pamqp's value decoders) so that hostile field tables are
refused before pamqp's recursive decoder sees them.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Final

from pamqp import commands, decode, frame
from pamqp.base import Frame

PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"
#: AMQP 0-9's header; RabbitMQ speaks 0-9-1 to it
PROTOCOL_HEADER_0_9: Final = b"AMQP\x01\x01\x00\x09"

FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
FRAME_END_BYTE: Final = b"\xce"
#: frame type, channel, size + frame-end: the bytes a frame adds around its payload
FRAME_OVERHEAD: Final = 8
#: the smallest frame_max a peer may negotiate (AMQP frame-min-size)
FRAME_MIN_SIZE: Final = 4096

FRAME_HEAD: Final = struct.Struct(">BHI")
METHOD_ID: Final = struct.Struct(">HH")
TAG_REDELIVERED: Final = struct.Struct(">QB")
#: a frame's end octet followed by the next frame's head (deliveries write them together)
END_AND_HEAD: Final = struct.Struct(">BBHI")
TAG_BITS: Final = struct.Struct(">QB")
SHORT: Final = struct.Struct(">H")
LONG: Final = struct.Struct(">I")

HEARTBEAT_FRAME: Final = b"\x08\x00\x00\x00\x00\x00\x00\xce"

# class ids
CONNECTION: Final = 10
CHANNEL: Final = 20
EXCHANGE: Final = 40
QUEUE: Final = 50
BASIC: Final = 60
CONFIRM: Final = 85
TX: Final = 90

#: (class, method) of the hot-path methods
BASIC_PUBLISH: Final = (BASIC, 40)
BASIC_PUBLISH_INDEX: Final = BASIC << 16 | 40
BASIC_ACK_INDEX: Final = BASIC << 16 | 80
BASIC_DELIVER_PREFIX: Final = METHOD_ID.pack(BASIC, 60)
BASIC_GET_OK_PREFIX: Final = METHOD_ID.pack(BASIC, 71)
BASIC_RETURN_PREFIX: Final = METHOD_ID.pack(BASIC, 50)
BASIC_ACK_PREFIX: Final = METHOD_ID.pack(BASIC, 80)
BASIC_NACK_PREFIX: Final = METHOD_ID.pack(BASIC, 120)

#: bit of ``user-id`` in the basic property flags (checked without decoding properties)
USER_ID_FLAG: Final = 0x0010
#: bit of ``expiration`` (0x0100) within the first property-flags byte
EXPIRATION_FLAG_HIGH: Final = 0x01
#: bit of ``reply-to`` (0x0200) within the first property-flags byte
REPLY_TO_FLAG_HIGH: Final = 0x02
#: bit of ``headers`` (0x2000) within the first property-flags byte
HEADERS_FLAG_HIGH: Final = 0x20


def short_string(value: str | bytes) -> bytes:
    """A shortstr; a binary name kept with surrogate escapes (see ``binary_name``) gets its
    bytes back."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return bytes((len(raw),)) + raw


def binary_name(raw: bytes) -> str:
    """A name that need not be UTF-8 (basic.publish's exchange and routing key, which RabbitMQ
    takes as bytes) as a str that encodes back to the same bytes: invalid bytes become
    surrogate escapes, so routing compares them exactly and deliveries carry them unchanged."""
    return raw.decode("utf-8", "surrogateescape")


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
    body_frames(out, channel, body, max_body)


def body_frames(out: bytearray, channel: int, body: bytes, max_body: int) -> None:
    """Append ``body`` to ``out`` as body frames of at most ``max_body`` bytes (none if empty)."""
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


# -- decoding method frames (cold path) ----------------------------------------------------

#: deepest nesting of field tables and arrays taken from a client. RabbitMQ sets no limit, but
#: pamqp decodes recursively (two Python frames a level, against a limit of ~1000): deeper
#: input is refused before pamqp sees it, as a frame error.
MAX_NESTING = 100

#: field value tags of a fixed size (as pamqp reads them), and the size
_FIXED_SIZE = {
    **dict.fromkeys(b"tbB", 1),
    **dict.fromkeys(b"su", 2),
    **dict.fromkeys(b"Iif", 4),
    **dict.fromkeys(b"lLdT", 8),
    ord("D"): 5,
    ord("V"): 0,
    0: 0,  # void too, for pamqp
}
#: tags of values with a 4-byte length prefix, of containers among them, and of tables
_LONG_VALUES = frozenset(b"SxAF")
_CONTAINERS = frozenset(b"AF")
_TABLE = ord("F")


class MethodDecodeError(ValueError):
    """A method frame that does not decode: an unknown method (503 COMMAND_INVALID) or
    arguments that do not fit its definition (501 FRAME_ERROR)."""

    #: whether the close names the method (RabbitMQ does, except for bad UTF-8)
    names_method: ClassVar[bool] = True


class MalformedUTF8(MethodDecodeError):
    names_method: ClassVar[bool] = False


def check_nesting(data: bytes, offset: int) -> None:
    """Raise MethodDecodeError if the field table at ``offset`` nests tables or arrays more
    than MAX_NESTING deep. Iterative, so any depth is measured safely; malformed input is
    left for pamqp to report."""
    try:
        end = offset + 4 + LONG.unpack_from(data, offset)[0]
        pos, in_table = offset + 4, True
        outer: list[tuple[int, bool]] = []  # (end, in_table) of the enclosing containers
        while True:
            if pos >= end:
                if not outer:
                    return
                pos = end
                end, in_table = outer.pop()
                continue
            if in_table:
                pos += 1 + data[pos]  # the key
            tag = data[pos]
            pos += 1
            size = _FIXED_SIZE.get(tag)
            if size is not None:
                pos += size
            elif tag not in _LONG_VALUES:
                return  # unknown type
            elif tag not in _CONTAINERS:
                pos += 4 + LONG.unpack_from(data, pos)[0]
            else:
                if len(outer) + 2 > MAX_NESTING:
                    raise MethodDecodeError(
                        f"field tables and arrays nested deeper than {MAX_NESTING} levels"
                    )
                outer.append((end, in_table))
                end, in_table = pos + 4 + LONG.unpack_from(data, pos)[0], tag == _TABLE
                pos += 4
    except (IndexError, struct.error):
        return


def headers_too_deep(header: bytes) -> bool:
    """Whether the ``headers`` property of a content header (class, weight, size, flags,
    properties) nests deeper than MAX_NESTING: it comes after content-type and -encoding."""
    flags = SHORT.unpack_from(header, 12)[0]
    if not flags & 0x2000:
        return False
    offset = 14
    try:
        for flag in (0x8000, 0x4000):  # content-type, content-encoding: shortstrs
            if flags & flag:
                offset += 1 + header[offset]
        check_nesting(header, offset)
    except IndexError:
        return False
    except MethodDecodeError:
        return True
    return False


def _decode_short_string(data: bytes, offset: int, binary: bool) -> tuple[str, int]:
    end = offset + 1 + data[offset]
    if end > len(data):
        raise MethodDecodeError("shortstr runs past the end of the frame")
    raw = data[offset + 1 : end]
    if binary:
        return binary_name(raw), end
    try:
        return raw.decode(), end
    except UnicodeDecodeError:
        raise MalformedUTF8("Malformed UTF-8 in shortstr") from None


def decode_method(payload: bytes) -> Frame:
    """Decode a method frame's payload (class id onwards) into a pamqp method object.

    The arguments are read here, with pamqp's decoders for their values, so that field tables
    can be checked for depth first (``check_nesting``), errors say what is wrong, and
    basic.publish's names may be any bytes (as in RabbitMQ, which checks every other shortstr
    for UTF-8). Raises MethodDecodeError for an unknown method or for arguments that do not
    decode.
    """
    index = LONG.unpack_from(payload)[0]
    method_class = commands.INDEX_MAPPING.get(index)
    if method_class is None:
        raise MethodDecodeError(f"unknown method class {index >> 16} method {index & 0xFFFF}")
    method = method_class()
    binary = index == BASIC_PUBLISH_INDEX
    offset, bit = 4, -1  # bit: position in payload[offset] while reading a run of bits
    try:
        for name in method.__slots__:
            kind = method.amqp_type(name)
            value: Any
            if kind == "bit":
                if bit == 8:
                    offset, bit = offset + 1, 0
                elif bit < 0:
                    bit = 0
                value = bool(payload[offset] >> bit & 1)
                bit += 1
            else:
                if bit >= 0:
                    offset, bit = offset + 1, -1
                if kind == "shortstr":
                    value, offset = _decode_short_string(payload, offset, binary)
                else:
                    if kind == "table":
                        check_nesting(payload, offset)
                    used, value = decode.by_type(payload[offset:], kind)
                    offset += used
            setattr(method, name, value)
    except MethodDecodeError:
        raise
    except (IndexError, ValueError, struct.error) as exc:
        raise MethodDecodeError(f"cannot decode {method.name} arguments: {exc}") from None
    except RecursionError:  # check_nesting missed a way to nest: still a clean refusal
        raise MethodDecodeError("field tables and arrays nested too deep") from None
    return method


__all__ = ["commands"]

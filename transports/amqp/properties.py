"""AMQP 0-9-1 basic properties <-> the core's neutral ``Properties``.

The content-header payload (class id, weight, body size, property flags, property list) is
what the core keeps as a message's encoding. Decoding is hand-written for the plain fields
(a header exchange or a priority queue reads them per message); field tables go through pamqp.
"""

from __future__ import annotations

import datetime
import struct
from typing import Any, Final

from pamqp import decode, encode

from warrenmq.errors import FrameError, SyntaxError_
from warrenmq.message import Message, Properties, PropertiesCodec, register_codec

_HEAD: Final = struct.Struct(">HHQH")
_LONG: Final = struct.Struct(">I")
_LONGLONG: Final = struct.Struct(">Q")

#: (flag bit, field, kind) in wire order
_FIELDS: Final = (
    (0x8000, "content_type", "s"),
    (0x4000, "content_encoding", "s"),
    (0x2000, "headers", "t"),
    (0x1000, "delivery_mode", "o"),
    (0x0800, "priority", "o"),
    (0x0400, "correlation_id", "s"),
    (0x0200, "reply_to", "s"),
    (0x0100, "expiration", "s"),
    (0x0080, "message_id", "s"),
    (0x0040, "timestamp", "T"),
    (0x0020, "type", "s"),
    (0x0010, "user_id", "s"),
    (0x0008, "app_id", "s"),
    (0x0004, "cluster_id", "s"),
)


def decode_properties(payload: bytes) -> Properties:
    """Properties of a content-header payload (from the class id on)."""
    try:
        flags = _HEAD.unpack_from(payload)[3]
        if flags & 0x0001:
            raise SyntaxError_("continued property flags are not supported")
        pos = _HEAD.size
        props = Properties()
        for bit, name, kind in _FIELDS:
            if not flags & bit:
                continue
            if kind == "s":
                end = pos + 1 + payload[pos]
                if end > len(payload):
                    raise IndexError
                value: Any = payload[pos + 1 : end].decode("utf-8", "surrogateescape")
                pos = end
            elif kind == "o":
                value = payload[pos]
                pos += 1
            elif kind == "T":
                value = _LONGLONG.unpack_from(payload, pos)[0]
                pos += 8
            else:
                size = _LONG.unpack_from(payload, pos)[0]
                if pos + 4 + size > len(payload):
                    raise IndexError
                _, value = decode.field_table(payload[pos : pos + 4 + size])
                pos += 4 + size
            setattr(props, name, value)
        return props
    except SyntaxError_:
        raise
    except RecursionError:
        raise FrameError("message headers nested too deep to decode") from None
    except (IndexError, struct.error, ValueError, TypeError) as exc:
        raise SyntaxError_(f"cannot decode content header properties: {exc}") from None
    except Exception as exc:  # pamqp raises assorted errors for bad tables
        raise SyntaxError_(f"cannot decode content header properties: {exc}") from None


_I32: Final = struct.Struct(">i")
_I64: Final = struct.Struct(">q")
_F64: Final = struct.Struct(">d")


def _table_value(value: Any) -> bytes:
    """One field value with its type tag (AMQP 0-9-1 as RabbitMQ reads it)."""
    kind = type(value)
    if kind is str:
        raw = value.encode("utf-8", "surrogateescape")
        return b"S" + _LONG.pack(len(raw)) + raw
    if kind is int:
        if -(2**31) <= value < 2**31:
            return b"I" + _I32.pack(value)
        return b"l" + _I64.pack(value)
    if kind is bool:
        return b"t\x01" if value else b"t\x00"
    if kind is dict:
        return b"F" + encode_table(value)
    if kind is list:
        items = b"".join([_table_value(item) for item in value])
        return b"A" + _LONG.pack(len(items)) + items
    if kind is datetime.datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return b"T" + _LONGLONG.pack(int(value.timestamp()))
    if kind is float:
        return b"d" + _F64.pack(value)
    if kind is bytes or kind is bytearray:
        return b"x" + _LONG.pack(len(value)) + bytes(value)
    if value is None:
        return b"V"
    return encode.encode_table_value(value)  # the rarer types, as pamqp encodes them


def encode_table(table: dict[str, Any]) -> bytes:
    """A field table, hand-written for the dead-letter path (pamqp's is several times slower)."""
    parts = []
    for key, value in table.items():
        raw = key.encode("utf-8", "surrogateescape")[:128]
        parts.append(bytes((len(raw),)) + raw + _table_value(value))
    body = b"".join(parts)
    return _LONG.pack(len(body)) + body


def _short(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > 255:
        raw = raw[:255]
    return bytes((len(raw),)) + raw


def encode_properties(props: Properties, body_size: int) -> bytes:
    """A content-header payload for ``props`` and a body of ``body_size`` bytes."""
    flags = 0
    parts: list[bytes] = []
    for bit, name, kind in _FIELDS:
        value = getattr(props, name)
        if value is None:
            continue
        flags |= bit
        if kind == "s":
            parts.append(_short(str(value)))
        elif kind == "o":
            parts.append(bytes((int(value) & 0xFF,)))
        elif kind == "T":
            if isinstance(value, datetime.datetime):
                value = int(value.timestamp())
            parts.append(_LONGLONG.pack(int(value)))
        else:
            parts.append(encode_table(value))
    return _HEAD.pack(60, 0, body_size, flags) + b"".join(parts)


class AMQPPropertiesCodec(PropertiesCodec):
    name = "amqp-0-9-1"

    def decode(self, encoded: bytes) -> Properties:
        return decode_properties(encoded)

    def encode(self, properties: Properties, body_size: int) -> bytes:
        return encode_properties(properties, body_size)

    def delivery_mode(self, encoded: bytes) -> int | None:
        """The one byte, found by skipping the fields before it (``_start_of``)."""
        try:
            if not encoded[12] & 0x10:
                return None
            return encoded[_start_of(encoded, 0x10)]
        except (IndexError, struct.error):
            return self.decode(encoded).delivery_mode  # raises the decoding error

    def priority(self, encoded: bytes) -> int | None:
        """The priority alone (a priority queue needs it per message), as ``delivery_mode``."""
        try:
            if not encoded[13] & 0x01:  # no continued flags
                if not encoded[12] & 0x08:
                    return None
                return encoded[_start_of(encoded, 0x08)]
        except (IndexError, struct.error):
            pass
        return self.decode(encoded).priority  # raises the decoding error if malformed

    def expiration(self, encoded: bytes) -> str | None:
        """The expiration alone (a TTL queue needs it per message), as ``delivery_mode``."""
        try:
            if not encoded[13] & 0x01:  # no continued flags
                if not encoded[12] & 0x01:
                    return None
                pos = _start_of(encoded, 0x01)
                end = pos + 1 + encoded[pos]
                if end <= len(encoded):
                    return encoded[pos + 1 : end].decode("utf-8", "surrogateescape")
        except (IndexError, struct.error):
            pass
        return self.decode(encoded).expiration  # raises the decoding error if malformed


def _start_of(encoded: bytes, field: int) -> int:
    """Where the property flagged ``field`` (a bit of the first flag byte) starts in an encoded
    content header: the properties before it skipped by their lengths, without decoding them.
    Raises IndexError or struct.error on a header too short for its flags."""
    high = encoded[12]
    pos = 14
    if field < 0x80 and high & 0x80:  # content-type
        pos += 1 + encoded[pos]
    if field < 0x40 and high & 0x40:  # content-encoding
        pos += 1 + encoded[pos]
    if field < 0x20 and high & 0x20:  # headers
        pos += 4 + _LONG.unpack_from(encoded, pos)[0]
    if field < 0x10 and high & 0x10:  # delivery-mode
        pos += 1
    if field < 0x08 and high & 0x08:  # priority
        pos += 1
    if field < 0x04 and high & 0x04:  # correlation-id
        pos += 1 + encoded[pos]
    if field < 0x02 and high & 0x02:  # reply-to
        pos += 1 + encoded[pos]
    return pos


#: the one instance (messages compare codecs by identity)
AMQP_CODEC: Final = AMQPPropertiesCodec()
register_codec(AMQP_CODEC)


def sender_selected_keys(message: Message) -> list[str]:
    """RabbitMQ's sender-selected distribution: the ``CC`` and ``BCC`` headers name more
    routing keys. ``BCC`` is removed from the message (its receivers must not see it)."""
    headers = message.properties.headers or {}
    keys: list[str] = []
    for name in ("CC", "BCC"):
        value = headers.get(name)
        if isinstance(value, list):
            keys += [
                key.decode(errors="replace") if isinstance(key, bytes) else key
                for key in value
                if isinstance(key, str | bytes)
            ]
    if "BCC" in headers:
        properties = message.properties.copy()
        assert properties.headers is not None
        del properties.headers["BCC"]
        message.with_properties(properties)
    return keys

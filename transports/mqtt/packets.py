"""MQTT 3.1.1 packet encoding and decoding (the fixed header, strings, the packets a server
sends). Nothing here holds state."""

from __future__ import annotations

import struct

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = range(8, 15)

#: CONNACK return codes
ACCEPTED = 0
UNACCEPTABLE_PROTOCOL_VERSION = 1
IDENTIFIER_REJECTED = 2
SERVER_UNAVAILABLE = 3
BAD_USERNAME_OR_PASSWORD = 4
NOT_AUTHORIZED = 5

#: the largest remaining length the four-byte encoding can express
MAX_REMAINING_LENGTH = 268_435_455
SUBACK_FAILURE = 0x80

_U16 = struct.Struct(">H")
PINGRESP_PACKET = b"\xd0\x00"


class MalformedPacket(Exception):
    """The client broke the protocol: the connection is closed (MQTT has no error reply)."""


def parse_fixed_header(data: bytes | bytearray, start: int) -> tuple[int, int, int] | None:
    """(first byte, remaining length, offset of the variable header) of the packet at
    ``start``, or None if the header is not complete yet."""
    end = len(data)
    if start >= end:
        return None
    multiplier, length, index = 1, 0, start + 1
    for _ in range(4):
        if index >= end:
            return None
        byte = data[index]
        index += 1
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return data[start], length, index
        multiplier *= 128
    raise MalformedPacket("remaining length longer than four bytes")


def remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + remaining_length(len(body)) + body


def u16(value: int) -> bytes:
    return _U16.pack(value)


def utf8(text: str) -> bytes:
    data = text.encode()
    return _U16.pack(len(data)) + data


class Reader:
    """Reads the fields of one packet's body; any overrun is a ``MalformedPacket``."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes | bytearray, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def byte(self) -> int:
        if self.pos >= self.end:
            raise MalformedPacket("packet too short")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        if self.pos + 2 > self.end:
            raise MalformedPacket("packet too short")
        (value,) = _U16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(value)

    def binary(self) -> bytes:
        size = self.u16()
        if self.pos + size > self.end:
            raise MalformedPacket("string longer than the packet")
        value = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return value

    def text(self) -> str:
        raw = self.binary()
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise MalformedPacket("string is not valid UTF-8") from None
        if "\x00" in text:
            raise MalformedPacket("string contains U+0000")
        return text

    def rest(self) -> bytes:
        value = bytes(memoryview(self.data)[self.pos : self.end])
        self.pos = self.end
        return value


def connack(session_present: bool, code: int) -> bytes:
    return bytes((CONNACK << 4, 2, 1 if session_present else 0, code))


def ack(kind: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0b0010) or PUBCOMP, UNSUBACK."""
    flags = 2 if kind == PUBREL else 0
    return bytes((kind << 4 | flags, 2)) + _U16.pack(packet_id)


def suback(packet_id: int, codes: list[int]) -> bytes:
    return packet(SUBACK << 4, _U16.pack(packet_id) + bytes(codes))

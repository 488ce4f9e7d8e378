"""The record format of segment and ack files, and reading them back after any crash.

A file starts with an 8-byte magic. A record is ``length`` (u32), ``crc32`` of the payload (u32)
and the payload. A message record's payload is a fixed head (seq, wall-clock expiry, lengths),
the properties codec's name, exchange, routing key, the encoded properties and the body. An
ack record's payload is the queue positions (u64 each) acknowledged in one write.

Reading never trusts a file: a record cut short at the end (a torn write) ends the file; a
record whose checksum does not match is skipped with a warning naming the file and offset,
and reading goes on after it (or at the next record that checks out, if the length itself
is damaged).
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from warrenmq.message import CODECS

if TYPE_CHECKING:
    from warrenmq import Message

log = logging.getLogger("warrenmq.disk_store")

SEGMENT_MAGIC = b"WMQSEG1\n"
ACK_MAGIC = b"WMQACK1\n"
MAGIC_SIZE = 8
RECORD_HEAD = struct.Struct("<II")
#: seq, expiry (seconds since the epoch, 0: none), codec name, exchange, routing key, properties
MESSAGE_HEAD = struct.Struct("<QdBHHI")
SEQ = struct.Struct("<Q")
#: the largest payload believed (a message is at most 128 MiB by default; ample margin)
MAX_PAYLOAD = 1 << 30


def encode_message(
    seq: int, expires: float, codec: str, exchange: str, routing_key: str, properties: bytes
) -> bytes:
    """A message record without its body: the caller writes the body right after it (the
    checksum covers both), so the body is never copied into a joined buffer first."""
    codec_raw = codec.encode()
    exchange_raw = exchange.encode("utf-8", "surrogateescape")
    key_raw = routing_key.encode("utf-8", "surrogateescape")
    head = MESSAGE_HEAD.pack(
        seq, expires, len(codec_raw), len(exchange_raw), len(key_raw), len(properties)
    )
    return b"".join((head, codec_raw, exchange_raw, key_raw, properties))


def record_size(message: Message) -> int:
    """The bytes of ``message``'s record, as ``QueueLog.append`` writes it."""
    codec, encoded = message.codec, message.encoded
    if codec is None or encoded is None:  # properties made by the broker (dead-lettering)
        codec = next(iter(CODECS.values()))
        encoded = message.encoded_for(codec)
    return (
        RECORD_HEAD.size
        + MESSAGE_HEAD.size
        + len(codec.name.encode())
        + len(message.exchange.encode("utf-8", "surrogateescape"))
        + len(message.routing_key.encode("utf-8", "surrogateescape"))
        + len(encoded)
        + len(message.body)
    )


def frame(payload_head: bytes, body: bytes) -> bytes:
    """The record head for a payload of ``payload_head`` followed by ``body``."""
    crc = zlib.crc32(body, zlib.crc32(payload_head))
    return RECORD_HEAD.pack(len(payload_head) + len(body), crc)


def decode_message(
    payload: memoryview, names: dict[bytes, tuple[str, str, str]]
) -> tuple[int, float, str, str, str, bytes, bytes]:
    """(seq, expires, codec, exchange, routing key, properties, body) of a message record.
    ``names`` caches decoded (codec, exchange, routing key) by their bytes: a queue's
    messages mostly share them."""
    seq, expires, codec_len, exchange_len, key_len, props_len = MESSAGE_HEAD.unpack_from(payload)
    pos = MESSAGE_HEAD.size
    end = pos + codec_len + exchange_len + key_len
    raw = bytes(payload[pos:end])
    decoded = names.get(raw)
    if decoded is None:
        exchange_at = codec_len + exchange_len
        decoded = names[raw] = (
            raw[:codec_len].decode(),
            raw[codec_len:exchange_at].decode("utf-8", "surrogateescape"),
            raw[exchange_at:].decode("utf-8", "surrogateescape"),
        )
    properties = bytes(payload[end : end + props_len])
    pos = end + props_len
    if pos > len(payload):
        raise ValueError("message record shorter than its own lengths")
    return seq, expires, *decoded, properties, bytes(payload[pos:])


def record_seq(payload: memoryview) -> int:
    return int(SEQ.unpack_from(payload)[0])


def ack_record(seqs: bytes | bytearray) -> bytes:
    return RECORD_HEAD.pack(len(seqs), zlib.crc32(seqs)) + seqs


def ack_seqs(payload: memoryview) -> Iterator[int]:
    for (seq,) in SEQ.iter_unpack(payload[: len(payload) // 8 * 8]):
        yield seq


def _checks_out(data: memoryview, pos: int) -> int:
    """The end of a whole, intact record at ``pos``, or 0."""
    if len(data) - pos < RECORD_HEAD.size:
        return 0
    length, crc = RECORD_HEAD.unpack_from(data, pos)
    end = pos + RECORD_HEAD.size + length
    if length == 0 or length > MAX_PAYLOAD or end > len(data):
        return 0
    if zlib.crc32(data[pos + RECORD_HEAD.size : end]) != crc:
        return 0
    return end


def scan(path: Path, data: bytes) -> tuple[list[tuple[int, memoryview]], int]:
    """The intact records of a file's contents as (offset, payload), and where the last one
    ends (what follows is a torn tail, to be cut before appending)."""
    view = memoryview(data)
    records: list[tuple[int, memoryview]] = []
    pos = valid_end = MAGIC_SIZE
    size = len(data)
    while pos < size:
        end = _checks_out(view, pos)
        if end:
            records.append((pos, view[pos + RECORD_HEAD.size : end]))
            pos = valid_end = end
            continue
        following = _resync(view, pos + 1)
        if following is None:
            log.warning(
                "%s: incomplete record at offset %d (a write cut short), %d bytes ignored",
                path,
                pos,
                size - pos,
            )
            break
        log.warning(
            "%s: corrupt record at offset %d skipped (%d bytes); reading on at offset %d",
            path,
            pos,
            following - pos,
            following,
        )
        pos = following
    return records, valid_end


def _resync(view: memoryview, start: int) -> int | None:
    """The offset of the next intact record after damage, or None."""
    for pos in range(start, len(view) - RECORD_HEAD.size):
        if _checks_out(view, pos):
            return pos
    return None

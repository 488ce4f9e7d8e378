"""One durable queue's persistent messages: append-only segment files with ack files.

A queue's directory holds numbered segments: ``N.seg`` (message records in queue order) and
``N.ack`` (the positions acknowledged among them). Messages go to the head segment until it
passes ``SEGMENT_BYTES``; a fresh head is started at every broker start, so no file is ever
appended to after a crash. A segment whose messages are all gone is deleted (both files); one
mostly gone is compacted (its live records copied to a new file that atomically replaces it).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from warrenmq import Message
from warrenmq.message import CODECS
from warrenmq.queue import READY, StoredEntry
from warrenmq.store import MessageLog

from .records import (
    ACK_MAGIC,
    MAGIC_SIZE,
    RECORD_HEAD,
    SEGMENT_MAGIC,
    SEQ,
    ack_seqs,
    decode_message,
    encode_message,
    frame,
    record_seq,
    scan,
)
from .writer import Handle, Writer, fsync_dir

if TYPE_CHECKING:
    from . import DiskStore

log = logging.getLogger("warrenmq.disk_store")
_new_entry = object.__new__

#: a head segment this large is closed and a new one started
SEGMENT_BYTES = 4 * 1024 * 1024
#: compact a closed segment once fewer than 1 in COMPACT_RATIO of its records are live ...
COMPACT_RATIO = 4
#: ... and it held at least this many records
COMPACT_MIN_RECORDS = 64


class Segment:
    """One segment of a queue: its two files and the live entries written to it.

    ``live`` holds the entries in memory; a message paged out by its queue (past the queue's
    memory budget) has no entry object, so ``count`` says how many are live in all, and
    ``removed`` which positions left (a compaction keeps the records not in it).
    """

    __slots__ = ("number", "seg", "ack", "size", "records", "live", "count", "removed")

    def __init__(self, directory: Path, number: int) -> None:
        self.number = number
        self.seg = Handle(directory / f"{number:08d}.seg", SEGMENT_MAGIC)
        self.ack = Handle(directory / f"{number:08d}.ack", ACK_MAGIC)
        self.size = MAGIC_SIZE
        #: records in the file (live or not), for the compaction threshold
        self.records = 0
        self.live: dict[int, StoredEntry] = {}
        #: live messages, in memory (``live``) or paged out
        self.count = 0
        #: positions written here that left the queue
        self.removed: set[int] = set()

    def delete(self) -> None:
        self.seg.delete()
        self.ack.delete()

    def __repr__(self) -> str:
        return f"Segment({self.seg.path}, live={self.count}/{self.records})"


@dataclass
class Found:
    """What recovery read back for one queue."""

    #: the segments that still hold messages
    segments: list[Segment] = field(default_factory=list)
    #: those messages, in queue (publish) order
    entries: list[StoredEntry] = field(default_factory=list)
    #: the highest segment number and message position in the files (never used again)
    highest_segment: int = 0
    highest_position: int = 0


class QueueLog(MessageLog):
    """The ``MessageLog`` of one durable queue of a ``DiskStore``."""

    def __init__(
        self,
        store: DiskStore,
        directory: Path,
        found: Found,
    ) -> None:
        self.store = store
        self.writer: Writer = store.writer
        self.directory = directory
        self.segments = {segment.number: segment for segment in found.segments}
        self._next = found.highest_segment + 1
        self.head: Segment | None = None
        self._recovered = found.entries
        #: the position given to the last message appended
        self._position = found.highest_position
        #: positions of paged-out messages delivered before (for a clean shutdown's record)
        self._paged_delivered: set[int] = set()
        self.closed = False

    def recovered(self) -> list[StoredEntry]:
        entries, self._recovered = self._recovered, []
        return entries

    def append(self, entry: StoredEntry) -> None:
        if self.closed:
            entry.segment = None
            return
        message = entry.message
        codec, encoded = message.codec, message.encoded
        if codec is None or encoded is None:  # properties made by the broker (dead-lettering)
            codec = next(iter(CODECS.values()))
            encoded = message.encoded_for(codec)
        expires = 0.0
        if entry.expires_at:
            expires = time.time() + max(0.0, entry.expires_at - time.monotonic())
        position = entry.position = self._position = self._position + 1
        head = encode_message(
            position, expires, codec.name, message.exchange, message.routing_key, encoded
        )
        body = message.body
        segment = self.head
        if segment is None or segment.size >= SEGMENT_BYTES:
            segment = self._new_head()
        self.writer.write(segment.seg, frame(head, body) + head, body)
        segment.size += RECORD_HEAD.size + len(head) + len(body)
        segment.records += 1
        segment.count += 1
        segment.live[position] = entry
        entry.segment = segment
        self.store.written += 1

    def remove(self, entry: StoredEntry) -> None:
        segment = entry.segment
        if segment is None or self.closed:
            return
        entry.segment = None
        del segment.live[entry.position]
        self._removed(segment, entry.position)

    def _removed(self, segment: Segment, position: int) -> None:
        segment.count -= 1
        segment.removed.add(position)
        if segment is not self.head:
            if not segment.count:
                self._drop(segment)
                return
            if (
                segment.records >= COMPACT_MIN_RECORDS
                and segment.count * COMPACT_RATIO < segment.records
                and segment is not next(iter(self.segments.values()))
            ):
                # not the oldest segment: a queue drained in order acks it to the end soon
                # (compacting it on the way would read and write it again and again)
                self._compact(segment)
        self.writer.ack(segment.ack, SEQ.pack(position))

    def page_out(self, entry: StoredEntry) -> int | None:
        segment = entry.segment
        if segment is None or self.closed:
            return None
        entry.segment = None
        live = segment.live
        del live[entry.position]
        if not live:
            segment.live = {}  # a dict keeps its size when emptied: 4 MiB of small messages
        if entry.deliveries:
            self._paged_delivered.add(entry.position)
        return int(segment.number)

    def page_in(self, entry: StoredEntry, key: int) -> None:
        segment = self.segments.get(key)
        if segment is None or self.closed:
            entry.segment = None
            return
        entry.segment = segment
        segment.live[entry.position] = entry
        self._paged_delivered.discard(entry.position)

    def remove_paged(self, key: int, position: int) -> None:
        segment = self.segments.get(key)
        if segment is None or self.closed:
            return
        self._paged_delivered.discard(position)
        self._removed(segment, position)

    def _new_head(self) -> Segment:
        old = self.head
        if old is not None:
            self.writer.later(old.seg.close)  # never appended to again
            if not old.count:
                self._drop(old)
        segment = self.head = Segment(self.directory, self._next)
        self._next += 1
        self.segments[segment.number] = segment
        return segment

    def _drop(self, segment: Segment) -> None:
        self.segments.pop(segment.number, None)
        if segment is self.head:
            self.head = None
        self.writer.later(segment.delete)

    def _compact(self, segment: Segment) -> None:
        drop = frozenset(segment.removed)
        segment.records = segment.count
        path = segment.seg.path
        self.writer.later(lambda: compact(path, drop))

    def close(self, delete: bool) -> None:
        """The queue is gone (``delete``: with its files) or the broker stops."""
        self.closed = True
        segments = list(self.segments.values())

        def finish() -> None:
            for segment in segments:
                segment.seg.close()
                segment.ack.close()
            if delete:
                shutil.rmtree(self.directory, ignore_errors=True)

        self.writer.later(finish)

    def delivered_positions(self) -> list[int]:
        """Positions of the messages delivered at least once (for a clean shutdown)."""
        return [
            position
            for segment in self.segments.values()
            for position, entry in segment.live.items()
            if entry.deliveries
        ] + sorted(self._paged_delivered)


def compact(path: Path, drop: frozenset[int]) -> None:
    """Rewrite a closed segment without the records in ``drop`` (worker thread)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    records, _ = scan(path, data)
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as out:
        out.write(SEGMENT_MAGIC)
        for offset, payload in records:
            if record_seq(payload) not in drop:
                out.write(data[offset : offset + RECORD_HEAD.size + len(payload)])
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)


def recover_queue(
    directory: Path, delivered: set[int] | None, progress: Callable[[int], None] | None = None
) -> Found:
    """Read a queue's segments back (worker thread at start).
    ``delivered``: the positions a clean shutdown recorded as delivered; None after a crash,
    when every message may have been delivered. ``progress`` is told of the messages found
    after each segment."""
    found = Found()
    segments, entries = found.segments, found.entries
    seen: set[int] = set()
    names: dict[bytes, tuple[str, str, str]] = {}
    now_wall, now = time.time(), time.monotonic()
    for leftover in directory.glob("*.tmp"):  # a compaction cut short: the original stands
        leftover.unlink()
    numbers = sorted(int(path.stem) for path in directory.glob("*.seg") if path.stem.isdigit())
    for number in numbers:
        segment = Segment(directory, number)
        path = segment.seg.path
        data = path.read_bytes()
        if data[:MAGIC_SIZE] != SEGMENT_MAGIC:
            if len(data) > MAGIC_SIZE or SEGMENT_MAGIC[: len(data)] != data:
                log.warning("%s: not a segment file (bad magic), set aside as .bad", path)
                path.rename(path.with_suffix(".bad"))
            else:
                segment.delete()  # created but cut short before its first record
            continue
        acked = _read_acks(segment.ack.path)
        records, _ = scan(path, data)
        segment.records = len(records)
        for offset, payload in records:
            try:
                seq, expires, codec_name, exchange, key, encoded, body = decode_message(
                    payload, names
                )
            except (ValueError, UnicodeDecodeError) as exc:
                log.warning("%s: unreadable message at offset %d skipped: %s", path, offset, exc)
                continue
            found.highest_position = max(found.highest_position, seq)
            if seq in acked:
                segment.removed.add(seq)  # a compaction leaves it out
                continue
            if seq in seen:
                continue
            codec = CODECS.get(codec_name)
            if codec is None:
                log.warning(
                    "%s: message at offset %d skipped: its properties are in the unknown "
                    "encoding '%s' (a protocol plugin not loaded?)",
                    path,
                    offset,
                    codec_name,
                )
                continue
            seen.add(seq)
            message = Message(exchange, key, body, None, encoded, codec)
            entry = _new_entry(StoredEntry)  # StoredEntry(...) without its two __init__ frames
            entry.message = message
            entry.seq = 0
            entry.deliveries = 1 if delivered is None or seq in delivered else 0
            entry.expires_at = now + max(0.0, expires - now_wall) if expires else 0.0
            entry.state = READY
            entry.position = seq
            entry.segment = segment
            segment.live[seq] = entry
            entries.append(entry)
        segment.count = len(segment.live)
        if segment.live:
            segments.append(segment)
        else:
            segment.delete()
        if progress is not None:
            progress(len(segment.live))
    entries.sort(key=lambda entry: entry.position)
    found.highest_segment = max(numbers, default=0)
    return found


def _read_acks(path: Path) -> set[int]:
    """The positions an ack file records; a torn tail is cut so appends follow valid data."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return set()
    if data[:MAGIC_SIZE] != ACK_MAGIC:
        log.warning("%s: not an ack file (bad magic), starting it again", path)
        path.unlink()
        return set()
    records, valid_end = scan(path, data)
    # fsynced now, torn tail cut or not: the acks read here must not vanish later (positions
    # after the last live message are used again by the queue from this start on)
    with open(path, "r+b") as file:
        if valid_end < len(data):
            file.truncate(valid_end)
        os.fsync(file.fileno())
    acked: set[int] = set()
    for _, payload in records:
        acked.update(ack_seqs(payload))
    return acked

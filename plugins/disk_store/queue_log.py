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
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from warrenmq.message import CODECS
from warrenmq.queue import StoredEntry
from warrenmq.store import MessageLog, StoredRun

from .records import (
    ACK_MAGIC,
    MAGIC_SIZE,
    MESSAGE_HEAD,
    RECORD_HEAD,
    SEGMENT_MAGIC,
    SEQ,
    ack_seqs,
    encode_message,
    frame,
    record_seq,
    record_size,
    scan,
)
from .runs import RUN_BYTES, RUN_MESSAGES, Delivered, SegmentRun
from .writer import Handle, Writer, fsync_dir

if TYPE_CHECKING:
    from . import DiskStore

log = logging.getLogger("warrenmq.disk_store")

#: a head segment this large is closed and a new one started
SEGMENT_BYTES = 4 * 1024 * 1024
#: compact a closed segment once fewer than 1 in COMPACT_RATIO of its records are live ...
COMPACT_RATIO = 4
#: ... and it held at least this many records
COMPACT_MIN_RECORDS = 64


class Segment:
    """One segment of a queue: its two files and the live entries written to it.

    ``live`` holds the entries in memory by position (``live[i]`` is at ``base + i``, None
    once gone: 8 bytes a message, where a dict took about 40) and ``offsets`` where their
    records are in the file (4 bytes each, not an int object per entry); a message paged out
    by its queue (past the queue's memory budget) has no entry object, so ``count`` says how
    many are live in all, and ``removed`` which positions left (a compaction keeps the
    records not in it).
    """

    __slots__ = (
        "number",
        "seg",
        "ack",
        "size",
        "records",
        "live",
        "base",
        "offsets",
        "resident",
        "count",
        "removed",
        "refs",
        "dense",
    )

    def __init__(self, directory: Path, number: int) -> None:
        self.number = number
        self.seg = Handle(directory / f"{number:08d}.seg", SEGMENT_MAGIC)
        self.ack = Handle(directory / f"{number:08d}.ack", ACK_MAGIC)
        self.size = MAGIC_SIZE
        #: records in the file (live or not), for the compaction threshold
        self.records = 0
        self.live: list[StoredEntry | None] = []
        #: the position of ``live[0]``
        self.base = 0
        #: the file offset of each record in ``live`` (0: not known, never a record's)
        self.offsets = array("I")
        #: entries in ``live``
        self.resident = 0
        #: live messages, in memory (``live``) or paged out
        self.count = 0
        #: positions written here that left the queue
        self.removed: set[int] = set()
        #: live messages in runs (``SegmentRun``) that point into it: no compaction meanwhile
        self.refs = 0
        #: written by this process and never compacted: its records are every position from
        #: its first on, at the offsets their entries say (runs may point into it)
        self.dense = False

    def put(self, position: int, entry: StoredEntry, offset: int) -> None:
        """``entry`` (at ``offset`` in the file, 0: not known) is in memory."""
        live, offsets = self.live, self.offsets
        if not live:
            self.base = position
        index = position - self.base
        if index < 0:  # before the first one in memory (read back out of order)
            live[0:0] = [None] * -index
            offsets[0:0] = array("I", bytes(4 * -index))
            self.base = position
            index = 0
        if index >= len(live):
            gap = index - len(live)
            if gap:
                live += [None] * gap
                offsets.frombytes(bytes(4 * gap))
            live.append(entry)
            offsets.append(offset)
        else:
            live[index] = entry
            offsets[index] = offset
        self.resident += 1

    def take(self, position: int) -> None:
        """The entry at ``position`` leaves memory (or the queue)."""
        self.live[position - self.base] = None
        self.resident -= 1
        if not self.resident:  # a list keeps its size when emptied: 4 MiB of small messages
            self.live = []
            self.offsets = array("I")

    def offset(self, position: int) -> int:
        """Where the record of the entry at ``position`` (in memory) is; 0: not known."""
        return self.offsets[position - self.base]

    def entries(self) -> list[StoredEntry]:
        """Its entries in memory."""
        return [entry for entry in self.live if entry is not None]

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
    #: those messages, in queue (publish) order, as runs left in the segment files
    runs: list[SegmentRun] = field(default_factory=list)
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
        self._runs = found.runs
        for run in self._runs:
            run.log = self
        #: the runs handed to the queue and not read yet (for a clean shutdown's record of
        #: deliveries)
        self.runs_out: set[SegmentRun] = set()
        #: the position given to the last message appended
        self._position = found.highest_position
        #: positions of paged-out messages delivered before (for a clean shutdown's record)
        self._paged_delivered: set[int] = set()
        self.closed = False
        #: the encoded properties of the last message appended (see ``append``)
        self._encoded = b""

    def recovered(self) -> list[StoredEntry]:
        """Every message found, read into memory (a plugin's log; a queue asks for runs)."""
        entries: list[StoredEntry] = []
        for run in self.recovered_runs():
            entries += run.read()
        return entries

    def recovered_runs(self) -> list[StoredRun]:
        runs, self._runs = self._runs, []
        self.runs_out = set(runs)
        return list(runs)

    def append(self, entry: StoredEntry) -> None:
        if self.closed:
            entry.segment = None
            return
        message = entry.message
        codec, encoded = message.codec, message.encoded
        if codec is None or encoded is None:  # properties made by the broker (dead-lettering)
            codec = next(iter(CODECS.values()))
            encoded = message.encoded_for(codec)
        elif encoded == self._encoded:  # one copy for a run of messages published alike
            encoded = message.encoded = self._encoded
        else:
            self._encoded = encoded
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
        segment.put(position, entry, segment.size)
        segment.size += RECORD_HEAD.size + len(head) + len(body)
        segment.records += 1
        segment.count += 1
        entry.segment = segment
        self.store.written += 1

    def remove(self, entry: StoredEntry) -> None:
        segment = entry.segment
        if segment is None or self.closed:
            return
        entry.segment = None
        segment.take(entry.position)
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
                and not segment.refs  # recovered runs point into it: its offsets must hold
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
        segment.take(entry.position)
        if entry.deliveries:
            self._paged_delivered.add(entry.position)
        return int(segment.number)

    def page_in(self, entry: StoredEntry, key: int) -> None:
        segment = self.segments.get(key)
        if segment is None or self.closed:
            entry.segment = None
            return
        entry.segment = segment
        segment.put(entry.position, entry, 0)  # its record's offset is not known here
        self._paged_delivered.discard(entry.position)

    def written(self, entry: StoredEntry) -> bool:
        segment = entry.segment
        if segment is None or not segment.dense:
            return True
        offset = segment.offset(entry.position)
        # not known: read back from a page file, so written long before
        return not offset or offset + record_size(entry.message) <= MAGIC_SIZE + segment.seg.synced

    def page_out_run(self, entries: list[StoredEntry]) -> SegmentRun | None:  # type: ignore[override]
        """A run pointing at the entries' records, if they are consecutive records of one
        dense segment, already written (the writer may still hold the newest)."""
        first, last = entries[0], entries[-1]
        segment = first.segment
        if self.closed or segment is None or not segment.dense:
            return None
        base = first.position
        records = last.position - base + 1
        if records > len(entries):  # some left the queue meanwhile, or wait elsewhere
            indexes = set(range(records))
            previous = base - 1
            for entry in entries:
                if entry.segment is not segment or entry.position <= previous:
                    return None
                previous = entry.position
                indexes.discard(previous - base)
            skip: set[int] | None = indexes
        elif records == len(entries) and all(entry.segment is segment for entry in entries):
            skip = None
        else:
            return None
        start, end = segment.offset(base), segment.offset(last.position)
        if not start or not end:  # read back from a page file: where they are is not known
            return None
        end += record_size(last.message)
        if end > MAGIC_SIZE + segment.seg.synced:
            return None
        run = SegmentRun(segment, start)
        run.log = self
        run.length = end - start
        run.records = records
        run.skip = skip
        run.first, run.last, run.base = base, last.position, base
        delivered: set[int] = set()
        deadline = 0.0
        size = 0
        for entry in entries:
            position = entry.position
            if entry.deliveries:
                delivered.add(position)
            if entry.expires_at and (not deadline or entry.expires_at < deadline):
                deadline = entry.expires_at
            size += len(entry.message.body)
            entry.segment = None
            segment.take(position)
        run.delivered = (
            True if len(delivered) == len(entries) else delivered if delivered else False
        )
        run.count, run.size, run.deadline = len(entries), size, deadline
        segment.refs += len(entries)
        self.runs_out.add(run)
        return run

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
        segment.dense = True
        self._next += 1
        self.segments[segment.number] = segment
        return segment

    def _drop(self, segment: Segment) -> None:
        self.segments.pop(segment.number, None)
        if segment is self.head:
            self.head = None
        self.writer.later(segment.delete)

    def _compact(self, segment: Segment) -> None:
        segment.dense = False  # records move: offsets of entries in memory no longer hold
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

    def delivered_positions(self) -> list[int | list[int]]:
        """Positions of the messages delivered at least once (for a clean shutdown); a
        recovered run not read since gives a range ``[first, last]``."""
        positions: list[int | list[int]] = [
            entry.position
            for segment in self.segments.values()
            for entry in segment.entries()
            if entry.deliveries
        ]
        positions += sorted(self._paged_delivered)
        for run in self.runs_out:
            if run.count:
                positions += run.delivered_positions()
        return positions


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
    directory: Path,
    delivered: Delivered | None,
    progress: Callable[[int], None] | None = None,
) -> Found:
    """Read a queue's segments back (worker thread at start): the record heads only, cut into
    runs (see runs.py); no message is built and no body kept.
    ``delivered``: the positions a clean shutdown recorded as delivered; None after a crash,
    when every message may have been delivered. ``progress`` is told of the messages found
    after each segment."""
    found = Found()
    segments, runs = found.segments, found.runs
    codecs: dict[bytes, bool] = {}
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
        del data
        segment.records = len(records)
        run: SegmentRun | None = None
        live = 0
        for offset, payload in records:
            size = RECORD_HEAD.size + len(payload)
            if (
                run is None
                or run.offset + run.length != offset  # damage in between: read no further
                or run.records >= RUN_MESSAGES
                or run.length >= RUN_BYTES
            ):
                if run is not None and run.count:
                    runs.append(run)
                run = SegmentRun(segment, offset)
            seq, expires, body = _head(payload, codecs, path, offset)
            if seq is None or seq <= found.highest_position or seq in acked:
                # positions only grow through the files: one not above the highest is a copy
                if seq is not None and seq in acked:
                    segment.removed.add(seq)  # a compaction leaves it out
                    found.highest_position = max(found.highest_position, seq)
                run.add(size, False, seq)
                continue
            found.highest_position = seq
            run.add(size, True, seq)
            was = delivered is None or seq in delivered
            if not run.count:
                run.first = seq
                run.delivered = was
            elif isinstance(run.delivered, set):
                if was:
                    run.delivered.add(seq)
            elif run.delivered is not was:  # neither all nor none: by position from now on
                run.delivered = set(range(run.first, seq)) if run.delivered else set()
                if was:
                    run.delivered.add(seq)
            run.last = seq
            live += 1
            run.count += 1
            run.size += body
            if expires:
                deadline = now + max(0.0, expires - now_wall)
                if not run.deadline or deadline < run.deadline:
                    run.deadline = deadline
        if run is not None and run.count:
            runs.append(run)
        segment.count = segment.refs = live
        if live:
            segments.append(segment)
        else:
            segment.delete()
        if progress is not None:
            progress(live)
    found.highest_segment = max(numbers, default=0)
    return found


def _head(
    payload: memoryview, codecs: dict[bytes, bool], path: Path, offset: int
) -> tuple[int | None, float, int]:
    """(position, wall-clock expiry, body length) of a message record; position None: the
    record is unreadable or in an unknown properties encoding (warned, skipped)."""
    try:
        seq, expires, cl, el, kl, pl = MESSAGE_HEAD.unpack_from(payload)
    except struct.error:
        log.warning("%s: unreadable message at offset %d skipped: too short", path, offset)
        return None, 0.0, 0
    start = MESSAGE_HEAD.size
    body = len(payload) - start - cl - el - kl - pl
    if body < 0:
        log.warning(
            "%s: unreadable message at offset %d skipped: message record shorter than its "
            "own lengths",
            path,
            offset,
        )
        return None, 0.0, 0
    raw = bytes(payload[start : start + cl])
    known = codecs.get(raw)
    if known is None:
        try:
            known = codecs[raw] = raw.decode() in CODECS
        except UnicodeDecodeError:
            known = codecs[raw] = False
    if not known:
        log.warning(
            "%s: message at offset %d skipped: its properties are in the unknown "
            "encoding '%s' (a protocol plugin not loaded?)",
            path,
            offset,
            raw.decode(errors="replace"),
        )
        return None, 0.0, 0
    return seq, expires, body


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

"""Messages left in their segment files: runs a queue reads when it drains to them.

At start, recovery reads the record heads of every segment (position, expiry, lengths) but
builds no message: it cuts a segment's intact records into runs (``SegmentRun``: offset,
length, how many records, which of them are not in the queue any more), a few fields per run
of up to ``RUN_MESSAGES`` messages or ``RUN_BYTES`` bytes. A queue reads runs into memory up
to its budget (``split`` cuts the run the budget ends in) and holds the rest as they are; the
bodies stay on disk until the queue reaches them. While the broker runs, a queue past its
budget pages persistent messages out the same way (``QueueLog.page_out_run``): a run that
points at their records, instead of a second copy in a page file.

A priority queue holds one FIFO per priority level: ``by_priority`` cuts a recovered run into
one run per level present, each reading only its own records of the byte range (a byte per
record says whose it is), so the levels' runs drain independently, in publish order each.

A segment that runs point into is never compacted (a compaction moves its records); it is not
deleted before its runs are read or dropped either, as their messages count as live in it.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from warrenmq import Message
from warrenmq.message import CODECS, PropertiesCodec
from warrenmq.queue import READY, StoredEntry
from warrenmq.store import StoredRun

from .records import MESSAGE_HEAD, RECORD_HEAD, decode_message

if TYPE_CHECKING:
    from .queue_log import QueueLog, Segment

log = logging.getLogger("warrenmq.disk_store")

#: a run is at most this many bytes of records ...
RUN_BYTES = 1024 * 1024
#: ... and this many records
RUN_MESSAGES = 4096


class Delivered:
    """Positions delivered before a clean shutdown: single ones and inclusive ranges (a run
    not read since the start before records its positions as one range)."""

    __slots__ = ("single", "starts", "ends")

    def __init__(self, items: Iterable[int | list[int]] = ()) -> None:
        self.single: set[int] = set()
        ranges: list[tuple[int, int]] = []
        for item in items:
            if isinstance(item, int):
                self.single.add(item)
            else:
                ranges.append((int(item[0]), int(item[1])))
        ranges.sort()
        self.starts = [first for first, _ in ranges]
        self.ends = [last for _, last in ranges]

    def __contains__(self, position: object) -> bool:
        if not isinstance(position, int):
            return False
        if position in self.single:
            return True
        at = bisect.bisect_right(self.starts, position) - 1
        return at >= 0 and position <= self.ends[at]


class SegmentRun(StoredRun):
    """Consecutive records of one segment, some of them messages still in the queue."""

    __slots__ = (
        "log",
        "segment",
        "offset",
        "length",
        "records",
        "count",
        "size",
        "deadline",
        "skip",
        "delivered",
        "first",
        "last",
        "base",
        "done",
        "levels",
        "level",
    )

    def __init__(self, segment: Segment, offset: int) -> None:
        self.log: QueueLog | None = None
        self.segment = segment
        self.offset = offset
        self.length = 0
        #: records in the byte range, live or not
        self.records = 0
        self.count = 0
        self.size = 0
        self.deadline = 0.0
        #: indexes (in the run) of records whose message is not in the queue
        self.skip: set[int] | None = None
        #: True: every message was delivered before; else the positions that were
        self.delivered: bool | set[int] = False
        #: the first and last positions of its live messages
        self.first = self.last = 0
        #: the position of record ``i`` is ``base + i`` for every record of the run; 0: not
        #: so (``drop`` then reads the records for their positions)
        self.base = 0
        self.done = False
        #: a run of one priority level (``by_priority``): the level of each record of the
        #: byte range, and this run's; its messages are the records of its level only
        self.levels: bytes | memoryview | None = None
        self.level = 0

    def _own(self, index: int) -> bool:
        """Record ``index`` is a message of this run (still in the queue, of its level)."""
        if self.skip is not None and index in self.skip:
            return False
        return self.levels is None or self.levels[index] == self.level

    def add(self, size: int, live: bool, position: int | None) -> int:
        """One more record of ``size`` bytes at ``position`` (None: unreadable); return its
        index in the run."""
        index = self.records
        if not index and position is not None:
            self.base = position
        elif self.base and position != self.base + index:
            self.base = 0
        self.records += 1
        self.length += size
        if not live:
            if self.skip is None:
                self.skip = set()
            self.skip.add(index)
        return index

    def _payloads(self) -> Iterator[tuple[int, int, memoryview]]:
        """(index, offset, payload) of the records still in the queue (reads the run's
        records, ``records`` of them from ``offset``; ``length`` is where they should end)."""
        segment = self.segment
        fd = os.open(segment.seg.path, os.O_RDONLY)
        try:
            data = os.pread(fd, self.length, self.offset)
            skip = self.skip or ()
            levels, level = self.levels, self.level
            pos = 0
            unpack, head = RECORD_HEAD.unpack_from, RECORD_HEAD.size
            for index in range(self.records):
                if pos + head > len(data):
                    data += os.pread(fd, pos + head - len(data), self.offset + len(data))
                if pos + head > len(data):
                    raise OSError(f"{segment.seg.path}: short read at offset {self.offset + pos}")
                length, crc = unpack(data, pos)
                start = pos + head
                pos = start + length
                if index in skip or (levels is not None and levels[index] != level):
                    continue
                if pos > len(data):
                    data += os.pread(fd, pos - len(data), self.offset + len(data))
                payload = memoryview(data)[start:pos]
                if len(payload) != length or zlib.crc32(payload) != crc:
                    log.warning(
                        "%s: corrupt record at offset %d skipped",
                        segment.seg.path,
                        self.offset + start - head,
                    )
                    self._gone(index, 0, None)
                    continue
                yield index, self.offset + start - head, payload
        finally:
            os.close(fd)

    def split(self, keep: int) -> SegmentRun:
        """Cut the run after its first ``keep`` messages (0 < keep < count); return the rest,
        as a run of its own (a queue reads the first part into what its budget has left)."""
        data = self._bytes()
        own = self._own
        unpack, head = RECORD_HEAD.unpack_from, RECORD_HEAD.size
        pos = index = live = size = 0
        last = first = 0
        while live < keep:
            length = unpack(data, pos)[0]
            if own(index):
                live += 1
                lengths = MESSAGE_HEAD.unpack_from(data, pos + head)
                last = lengths[0]
                size += length - MESSAGE_HEAD.size - sum(lengths[2:])
            pos += head + length
            index += 1
        at, cut = pos, index
        while not first:  # the first message of the rest
            length = unpack(data, pos)[0]
            if own(index):
                first = MESSAGE_HEAD.unpack_from(data, pos + head)[0]
            pos += head + length
            index += 1
        rest = SegmentRun(self.segment, self.offset + at)
        rest.log, rest.length, rest.records = self.log, self.length - at, self.records - cut
        rest.count, rest.size = self.count - keep, self.size - size
        rest.deadline, rest.delivered = self.deadline, self.delivered
        rest.first, rest.last = first, self.last
        if self.skip:
            rest.skip = {i - cut for i in self.skip if i >= cut} or None
        if self.base:
            rest.base = self.base + cut
        if self.levels is not None:
            rest.levels, rest.level = self.levels[cut:], self.level
            self.levels = self.levels[:cut]
        self.length, self.records, self.count, self.size, self.last = at, cut, keep, size, last
        if self.log is not None:
            self.log.runs_out.add(rest)
        return rest

    def _bytes(self) -> bytes:
        """The run's byte range of its segment file."""
        with open(self.segment.seg.path, "rb") as file:
            file.seek(self.offset)
            return file.read(self.length)

    def by_priority(self, max_priority: int) -> list[tuple[int, SegmentRun]]:
        """Cut the run into one run per priority level present (a message's priority,
        clamped to 0 .. ``max_priority``), each with its messages in order; this run is
        used no more. Reads the record heads (one read of the byte range); the runs share
        the range's levels, a byte per record, and each covers only the span from its first
        message to its last."""
        data = self._bytes()
        skip = self.skip or ()
        unpack, head = RECORD_HEAD.unpack_from, RECORD_HEAD.size
        codecs: dict[bytes, PropertiesCodec | None] = {}
        levels = bytearray(self.records)  # a record not in the queue: 0, in level 0's skip
        #: per level: its run, and the index and offset of its first record, the index and
        #: end of its last
        parts: dict[int, tuple[SegmentRun, list[int]]] = {}
        now_wall, now = time.time(), time.monotonic()
        was = self.delivered
        pos = 0
        for index in range(self.records):
            length = unpack(data, pos)[0]
            start = pos + head
            end = start + length
            if index in skip:
                pos = end
                continue
            seq, expires, cl, el, kl, pl = MESSAGE_HEAD.unpack_from(data, start)
            at = start + MESSAGE_HEAD.size
            name = data[at : at + cl]
            if name in codecs:
                codec = codecs[name]
            else:
                codec = codecs[name] = CODECS.get(name.decode(errors="replace"))
            at += cl + el + kl
            try:
                priority = codec.priority(data[at : at + pl]) if codec is not None else None
            except Exception:  # malformed properties: as if it had none
                priority = None
            level = min(max(priority or 0, 0), max_priority)
            levels[index] = level
            found = parts.get(level)
            if found is None:
                run = SegmentRun(self.segment, self.offset + pos)
                run.log, run.level, run.first = self.log, level, seq
                run.delivered = set() if isinstance(was, set) else was
                found = parts[level] = (run, [index, pos, index, end])
            run, span = found
            span[2], span[3] = index, end
            run.count += 1
            run.size += length - MESSAGE_HEAD.size - cl - el - kl - pl
            run.last = seq
            if expires:
                deadline = now + max(0.0, expires - now_wall)
                if not run.deadline or deadline < run.deadline:
                    run.deadline = deadline
            if isinstance(was, set) and seq in was:
                run.delivered.add(seq)  # type: ignore[union-attr]
            pos = end
        shared = memoryview(bytes(levels))
        result: list[tuple[int, SegmentRun]] = []
        for level in sorted(parts):
            run, (first, offset, last, end) = parts[level]
            run.length, run.records = end - offset, last - first + 1
            run.levels = shared[first : last + 1]
            if self.base:
                run.base = self.base + first
            if level == 0 and self.skip:  # the records not in the queue read as level 0
                run.skip = {i - first for i in self.skip if first <= i <= last} or None
            if isinstance(run.delivered, set):
                if not run.delivered:
                    run.delivered = False
                elif len(run.delivered) == run.count:
                    run.delivered = True
            if self.log is not None:
                self.log.runs_out.add(run)
            result.append((level, run))
        if self.log is not None:
            self.log.runs_out.discard(self)
        self.count = self.size = 0
        self.done = True
        return result

    def read(self) -> list[StoredEntry]:
        names: dict[bytes, tuple[str, str, str]] = {}
        now_wall, now = time.time(), time.monotonic()
        segment = self.segment
        delivered = self.delivered
        entries: list[StoredEntry] = []
        for _, at, payload in self._payloads():
            seq, expires, codec_name, exchange, key, encoded, body = decode_message(payload, names)
            message = Message(exchange, key, body, None, encoded, CODECS.get(codec_name))
            # through the constructor: a compiled StoredEntry cannot be made with object.__new__
            entry = StoredEntry(
                message,
                0,
                now + max(0.0, expires - now_wall) if expires else 0.0,
                READY,
                1 if delivered is True or (delivered and seq in delivered) else 0,
            )
            entry.position = seq
            entry.segment = segment
            segment.put(seq, entry, at)
            entries.append(entry)
        segment.refs -= self.count
        self.count = self.size = 0
        self.done = True
        if self.log is not None:
            self.log.runs_out.discard(self)
        return entries

    def expire_due(self) -> list[Message]:
        now_wall = time.time()
        names: dict[bytes, tuple[str, str, str]] = {}
        expired: list[Message] = []
        later = 0.0
        for index, _, payload in list(self._payloads()):
            seq, expires = MESSAGE_HEAD.unpack_from(payload)[:2]
            if not expires:
                continue
            if expires <= now_wall:
                _, _, codec_name, exchange, key, encoded, body = decode_message(payload, names)
                expired.append(Message(exchange, key, body, None, encoded, CODECS.get(codec_name)))
                self._gone(index, len(body), seq)
            elif not later or expires < later:
                later = expires
        self.deadline = time.monotonic() + (later - now_wall) if later else 0.0
        return expired

    def _gone(self, index: int, body_size: int, position: int | None) -> None:
        """The record at ``index`` left the queue while in the run."""
        if self.skip is None:
            self.skip = set()
        self.skip.add(index)
        self.count -= 1
        self.size -= body_size
        self.segment.refs -= 1
        if position is not None and self.log is not None:
            self.log.remove_paged(self.segment.number, position)

    def drop(self) -> None:
        if self.base:  # the positions are known: nothing to read
            own, base = self._own, self.base
            for index in range(self.records):
                if own(index):
                    self._gone(index, 0, base + index)
        else:
            for index, _, payload in list(self._payloads()):
                self._gone(index, 0, MESSAGE_HEAD.unpack_from(payload)[0])
        self.count = self.size = 0
        self.done = True
        if self.log is not None:
            self.log.runs_out.discard(self)

    def delivered_positions(self) -> list[int | list[int]]:
        """Its positions delivered before, for a clean shutdown's record."""
        if self.done or not self.count:
            return []
        if self.delivered is not True:
            return sorted(self.delivered or ())
        if self.levels is None:
            return [[self.first, self.last]]
        # one level's: the positions between are other levels', not all delivered
        if self.base:
            own, base = self._own, self.base
            positions = [base + index for index in range(self.records) if own(index)]
        else:
            positions = [MESSAGE_HEAD.unpack_from(p)[0] for _, _, p in self._payloads()]
        return _ranges(positions)


def _ranges(positions: list[int]) -> list[int | list[int]]:
    """Ascending positions, consecutive ones as inclusive ranges."""
    found: list[int | list[int]] = []
    start = previous = 0
    for position in positions:
        if start and position == previous + 1:
            previous = position
            continue
        if start:
            found.append(start if start == previous else [start, previous])
        start = previous = position
    if start:
        found.append(start if start == previous else [start, previous])
    return found

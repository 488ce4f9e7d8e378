"""Paging: a classic queue's ready messages past its memory budget wait on disk.

A queue keeps the oldest ready messages in memory, up to its budget (``in_memory_length``
messages and ``in_memory_bytes`` of bodies); the newer ones are written out in runs
(``Chunk``: one write, later one read) to page files of its own and cost no object in memory,
only their run's few fields (plus, for a persistent message, where its queue log has it).
Runs are read back in order, a whole run at a time, when the messages in memory run out, and
the kernel is asked to read the next run ahead meanwhile (``posix_fadvise``). This is the
model of RabbitMQ's lazy and v2 classic queues (an index in memory, bodies on disk) and of
LavinMQ's segments.

Page files are scratch: never fsynced, never read after a restart (the broker empties the
paging directory at start), so a transient message paged out does not survive a restart
and costs no fsync. A persistent message is in its queue's log already: once the log has
written it, it pages out as a run that points into the log's files (``StoredRun``, from
``MessageLog.page_out_run``), not as a second copy. One the log cannot point at (not
written yet, or in a compacted segment) goes to a page file too: the log forgets the entry
object (``MessageLog.page_out``) and takes the message back when it is read in again.

Writes and file deletions run on one worker thread per broker, in order; a run keeps its
bytes until its write is done, so reading it meanwhile needs no wait.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import shutil
import struct
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warrenmq import Message
from warrenmq.message import CODECS, PropertiesCodec
from warrenmq.queue import GONE, READY, Entry, StoredEntry
from warrenmq.store import StoredRun

if TYPE_CHECKING:
    from .classic_queue import ClassicQueue, Fifo

#: kind, deliveries, expires_at (monotonic; page files never outlive the process), log key,
#: log position, then the lengths of: names, properties, body
HEAD = struct.Struct("<BIdqQIII")
#: names: the lengths of codec name, exchange and routing key, then the three
NAMES = struct.Struct("<BHH")
BARE, ENTRY, STORED = 0, 1, 2
#: a page file this large is closed for writing and the next one started
FILE_BYTES = 64 * 1024 * 1024
#: a run is at most this many bytes of records ...
RUN_BYTES = 1024 * 1024
#: ... and this many messages
RUN_MESSAGES = 4096

_new = object.__new__
_advise = getattr(os, "posix_fadvise", None)
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", 3)


class PageFile:
    """One page file: written at increasing offsets, deleted once its runs are all read."""

    __slots__ = ("path", "fd", "size", "runs", "closed")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.size = 0
        #: runs written here and not yet read back or dropped
        self.runs = 0
        #: no more runs will be written here
        self.closed = False


class Chunk:
    """A run of paged-out messages, in queue order, in one page file."""

    __slots__ = (
        "file",
        "offset",
        "length",
        "count",
        "size",
        "deadline",
        "skip",
        "stored",
        "pinned",
        "data",
        "owner",
        "done",
    )

    file: PageFile
    offset: int
    length: int
    #: messages in the run still in the queue, and their body bytes
    count: int
    size: int
    #: the earliest expiry among them (monotonic), 0.0: none expires
    deadline: float
    #: indexes of records that left the queue while paged out (expired)
    skip: set[int] | None
    #: where the log has the persistent messages: ranges (first index in the run, log key,
    #: first log position, how many), four ints each in one array; a run of consecutive
    #: persistent messages is usually one range
    stored: array[int] | None
    #: entries a log could not page out, by index (kept in memory as they are)
    pinned: dict[int, Entry] | None
    #: the records until they are written (then None: read from the file)
    data: bytes | None
    #: the FIFO whose run this is
    owner: Fifo
    #: read back or dropped
    done: bool


def _default_codec() -> PropertiesCodec:
    return next(iter(CODECS.values()))


class Pager:
    """The page files of one queue, and its runs' expiry."""

    def __init__(
        self,
        queue: ClassicQueue,
        directory: Path,
        run: Callable[[Callable[[], Any]], Any],
    ) -> None:
        self.queue = queue
        self.directory = directory
        #: hands a job to the broker's paging thread (jobs run in order)
        self._run = run
        self._file: PageFile | None = None
        self._numbers = itertools.count(1)
        #: encoded names (codec, exchange, routing key) by their strings, and back
        self._raw: dict[tuple[str, str, str], bytes] = {}
        self._names: dict[bytes, tuple[PropertiesCodec | None, str, str]] = {}
        #: (deadline, order, run, its FIFO) of runs holding messages that expire
        self._deadlines: list[tuple[float, int, Chunk | StoredRun, Fifo]] = []
        self._order = itertools.count()

    # -- writing ----------------------------------------------------------------------------

    def write(self, owner: Fifo, items: list[Entry | Message]) -> list[Chunk | StoredRun]:
        """Page ``items`` (ready, in queue order) out as runs; the caller places the runs.
        Persistent messages whose log has them on disk become runs pointing into the log's
        files (``MessageLog.page_out_run``): nothing of them is written again."""
        runs: list[Chunk | StoredRun] = []
        log = self.queue._log
        start, stop = 0, len(items)
        while start < stop:
            end = start
            if log is not None:  # a stretch of persistent messages in one place of the log
                item = items[start]
                where = item.segment if item.__class__ is StoredEntry else None  # type: ignore[union-attr]
                if where is not None:
                    end = start + 1
                    while (
                        end < stop
                        and end - start < RUN_MESSAGES
                        and items[end].__class__ is StoredEntry
                        and items[end].segment is where  # type: ignore[union-attr]
                    ):
                        end += 1
                    found = log.page_out_run(items[start:end])  # type: ignore[arg-type]
                    if found is not None:
                        for entry in items[start:end]:
                            entry.state = GONE  # type: ignore[union-attr]
                        self.adopt(owner, found)
                        runs.append(found)
                        start = end
                        continue
            if end == start:  # up to the next persistent message
                end = start + 1
                while end < stop and (
                    log is None
                    or items[end].__class__ is not StoredEntry
                    or items[end].segment is None  # type: ignore[union-attr]
                ):
                    end += 1
            while start < end:
                run, start = self._encode(owner, items, start, end)
                runs.append(run)
        return runs

    def _encode(
        self, owner: Fifo, items: list[Entry | Message], start: int, stop: int
    ) -> tuple[Chunk, int]:
        queue = self.queue
        log = queue._log
        raw_names = self._raw
        pack = HEAD.pack
        parts: list[bytes] = []
        last_codec: PropertiesCodec | None = None
        last_exchange = last_key = ""
        raw = b""
        count = size = length = 0
        deadline = 0.0
        stored: array[int] | None = None
        pinned: dict[int, Entry] | None = None
        i = start
        while i < stop and count < RUN_MESSAGES and length < RUN_BYTES:
            item = items[i]
            i += 1
            key = -1
            position = 0
            if item.__class__ is Message:
                message: Message = item  # type: ignore[assignment]
                kind = BARE
                deliveries = 0
                expires = 0.0
            else:
                entry: Entry = item  # type: ignore[assignment]
                message = entry.message
                deliveries = entry.deliveries
                expires = entry.expires_at
                kind = ENTRY
                if entry.__class__ is StoredEntry:
                    found = log.page_out(entry) if log is not None else None  # type: ignore[arg-type]
                    if found is None:  # this log keeps the entry: so does the run
                        if pinned is None:
                            pinned = {}
                        pinned[count] = entry
                    else:
                        kind = STORED
                        key = found
                        position = entry.position  # type: ignore[attr-defined]
                        if stored is None:
                            stored = array("q")
                        if (
                            stored
                            and stored[-3] == key
                            and stored[-4] + stored[-1] == count
                            and stored[-2] + stored[-1] == position
                        ):
                            stored[-1] += 1  # the range goes on
                        else:
                            stored.extend((count, key, position, 1))
                entry.state = GONE  # the expiry heap forgets it; the run has it now
                if expires and (not deadline or expires < deadline):
                    deadline = expires
            codec, encoded = message.codec, message.encoded
            if codec is None or encoded is None:  # properties made by the broker
                codec = _default_codec()
                encoded = message.encoded_for(codec)
            exchange, routing_key = message.exchange, message.routing_key
            if codec is not last_codec or routing_key != last_key or exchange != last_exchange:
                names = (codec.name, exchange, routing_key)
                known = raw_names.get(names)
                if known is None:
                    known = raw_names[names] = self._encode_names(codec, exchange, routing_key)
                raw = known
                last_codec, last_exchange, last_key = codec, exchange, routing_key
            body = message.body
            parts += (
                pack(kind, deliveries, expires, key, position, len(raw), len(encoded), len(body)),
                raw,
                encoded,
                body,
            )
            length += HEAD.size + len(raw) + len(encoded) + len(body)
            size += len(body)
            count += 1
        data = b"".join(parts)
        file = self._file
        if file is None or file.size >= FILE_BYTES:
            file = self._new_file()
        run: Chunk = _new(Chunk)
        run.file = file
        run.offset = file.size
        run.length = len(data)
        run.count = count
        run.size = size
        run.deadline = deadline
        run.skip = None
        run.stored = stored
        run.pinned = pinned
        run.data = data
        run.owner = owner
        run.done = False
        file.size += len(data)
        file.runs += 1
        self._run(lambda: _write(file, run, data))
        queue.paged_count += count
        queue.paged_bytes += size
        if deadline:
            heapq.heappush(self._deadlines, (deadline, next(self._order), run, owner))
        return run, i

    def _encode_names(self, codec: PropertiesCodec, exchange: str, routing_key: str) -> bytes:
        parts = (
            codec.name.encode(),
            exchange.encode("utf-8", "surrogateescape"),
            routing_key.encode("utf-8", "surrogateescape"),
        )
        raw = NAMES.pack(*(len(part) for part in parts)) + b"".join(parts)
        self._names[raw] = (codec, exchange, routing_key)
        return raw

    def _new_file(self) -> PageFile:
        old = self._file
        if old is not None:
            old.closed = True
            if not old.runs:
                self._delete(old)
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True)
        file = self._file = PageFile(self.directory / f"{next(self._numbers):08d}.page")
        return file

    # -- reading ----------------------------------------------------------------------------

    def adopt(self, owner: Fifo, run: StoredRun) -> None:
        """A run of messages the log keeps waits on disk as it is (in ``owner``)."""
        self.queue.paged_count += run.count
        self.queue.paged_bytes += run.size
        if run.deadline:
            heapq.heappush(self._deadlines, (run.deadline, next(self._order), run, owner))

    def read(self, run: Chunk | StoredRun) -> list[Entry | Message]:
        """Take ``run`` back into memory: its messages still in the queue, in order."""
        queue = self.queue
        if run.__class__ is not Chunk:
            stored: StoredRun = run  # type: ignore[assignment]
            queue.paged_count -= stored.count
            queue.paged_bytes -= stored.size
            return stored.read()  # type: ignore[return-value]
        run: Chunk = run  # type: ignore[no-redef]
        items = self._decode(run, run.data or _read(run))
        queue.paged_count -= run.count
        queue.paged_bytes -= run.size
        self._release(run)
        return items

    def advise(self, run: Chunk | StoredRun) -> None:
        """``run`` is next: have the kernel read it in the background (read-ahead)."""
        if _advise is not None and run.__class__ is Chunk and run.data is None:  # type: ignore[union-attr]
            with contextlib.suppress(OSError):
                _advise(run.file.fd, run.offset, run.length, _WILLNEED)

    def _decode(self, run: Chunk, data: bytes) -> list[Entry | Message]:
        log = self.queue._log
        names = self._names
        unpack = HEAD.unpack_from
        skip = run.skip
        pinned = run.pinned
        items: list[Entry | Message] = []
        append = items.append
        pos = index = 0
        end_of_data = len(data)
        last_raw = b""
        decoded: tuple[PropertiesCodec | None, str, str] = (None, "", "")
        while pos < end_of_data:
            kind, deliveries, expires, key, position, nl, pl, bl = unpack(data, pos)
            pos += HEAD.size
            names_end = pos + nl
            props_end = names_end + pl
            end = props_end + bl
            if skip is not None and index in skip:
                pos = end
                index += 1
                continue
            if pinned is not None and index in pinned:
                kept = pinned[index]
                kept.state = READY
                append(kept)
                pos = end
                index += 1
                continue
            if nl != len(last_raw) or not data.startswith(last_raw, pos):
                last_raw = data[pos:names_end]
                decoded = names.get(last_raw) or self._learn(last_raw)
            # through the constructor: a compiled Message cannot be made with object.__new__
            message = Message(
                decoded[1],
                decoded[2],
                data[props_end:end],
                None,
                data[names_end:props_end],
                decoded[0],
            )
            if kind == BARE:
                append(message)
            else:
                entry: Entry = (StoredEntry if kind == STORED else Entry)(
                    message, 0, expires, READY, deliveries
                )
                if kind == STORED:
                    entry.position = position  # type: ignore[attr-defined]
                    if log is not None:
                        log.page_in(entry, key)  # type: ignore[arg-type]
                append(entry)
            pos = end
            index += 1
        return items

    def _learn(self, raw: bytes) -> tuple[PropertiesCodec | None, str, str]:
        """Names this pager did not write itself (never, but be safe)."""
        cl, el, _ = NAMES.unpack_from(raw)
        at = NAMES.size
        decoded = (
            CODECS.get(raw[at : at + cl].decode()),
            raw[at + cl : at + cl + el].decode("utf-8", "surrogateescape"),
            raw[at + cl + el :].decode("utf-8", "surrogateescape"),
        )
        self._names[raw] = decoded
        return decoded

    # -- leaving without coming back ---------------------------------------------------------

    def expire_due(self, now: float, expire: Callable[[Message], None]) -> None:
        """Drop the paged-out messages whose TTL has passed (``expire`` dead-letters each);
        a run emptied so leaves its FIFO."""
        deadlines = self._deadlines
        queue = self.queue
        log = queue._log
        while deadlines and deadlines[0][0] <= now:
            _, _, found, owner = heapq.heappop(deadlines)
            if found.done:
                continue
            if found.__class__ is not Chunk:
                self._expire_stored(found, owner, expire)  # type: ignore[arg-type]
                continue
            run: Chunk = found  # type: ignore[assignment]
            data = run.data or _read(run)
            skip = run.skip
            if skip is None:
                skip = run.skip = set()
            unpack = HEAD.unpack_from
            pos = index = 0
            later = 0.0
            while pos < len(data):
                kind, _, expires, key, position, nl, pl, bl = unpack(data, pos)
                start = pos + HEAD.size
                end = start + nl + pl + bl
                if index not in skip and expires:
                    if expires <= now:
                        skip.add(index)
                        run.count -= 1
                        run.size -= bl
                        queue.paged_count -= 1
                        queue.paged_bytes -= bl
                        queue.ready_count -= 1
                        queue.ready_bytes -= bl
                        if kind == STORED and log is not None:
                            log.remove_paged(key, position)
                        pinned = run.pinned
                        if pinned is not None and index in pinned:
                            message = pinned[index].message
                            if log is not None and pinned[index].__class__ is StoredEntry:
                                log.remove(pinned[index])  # type: ignore[arg-type]
                        else:
                            message = self._decode_one(data, start, nl, pl, bl)
                        expire(message)
                    elif not later or expires < later:
                        later = expires
                pos = end
                index += 1
            run.deadline = later
            if not run.count:
                owner.chunks.remove(run)
                self._release(run)
                if not owner.chunks:
                    owner.page_in()  # the tail is the queue's memory part again
            elif later:
                heapq.heappush(deadlines, (later, next(self._order), run, owner))

    def _expire_stored(
        self, run: StoredRun, owner: Fifo, expire: Callable[[Message], None]
    ) -> None:
        queue = self.queue
        for message in run.expire_due():
            size = len(message.body)
            queue.paged_count -= 1
            queue.paged_bytes -= size
            queue.ready_count -= 1
            queue.ready_bytes -= size
            expire(message)
        if not run.count:
            run.drop()  # nothing left: done
            owner.chunks.remove(run)
            if not owner.chunks:
                owner.page_in()
        elif run.deadline:
            heapq.heappush(self._deadlines, (run.deadline, next(self._order), run, owner))

    def _decode_one(self, data: bytes, start: int, nl: int, pl: int, bl: int) -> Message:
        names_end = start + nl
        raw = data[start:names_end]
        decoded = self._names.get(raw) or self._learn(raw)
        return Message(
            decoded[1],
            decoded[2],
            data[names_end + pl : names_end + pl + bl],
            None,
            data[names_end : names_end + pl],
            decoded[0],
        )

    def drop(self, run: Chunk | StoredRun) -> None:
        """``run`` left the queue unread (purge, delete): its persistent messages leave the
        log, its bytes the disk."""
        if run.__class__ is not Chunk:
            self.queue.paged_count -= run.count
            self.queue.paged_bytes -= run.size
            run.drop()  # type: ignore[union-attr]
            return
        run: Chunk = run  # type: ignore[no-redef]
        log = self.queue._log
        if run.stored is not None and log is not None:
            skip = run.skip or ()
            ranges = run.stored
            for at in range(0, len(ranges), 4):
                first, key, position, length = ranges[at : at + 4]
                for offset in range(length):
                    if first + offset not in skip:
                        log.remove_paged(key, position + offset)
        if run.pinned is not None and log is not None:
            for index, entry in run.pinned.items():
                if index not in (run.skip or ()) and entry.__class__ is StoredEntry:
                    log.remove(entry)  # type: ignore[arg-type]
        self.queue.paged_count -= run.count
        self.queue.paged_bytes -= run.size
        self._release(run)

    def _release(self, run: Chunk) -> None:
        run.done = True
        run.data = None
        file = run.file
        file.runs -= 1
        if not file.runs:  # read back or dropped to the last run: the disk space goes
            if file is self._file:
                self._file = None
            self._delete(file)

    def _delete(self, file: PageFile) -> None:
        file.closed = True
        self._run(lambda: _delete(file))

    def close(self) -> None:
        """The queue is gone: delete its page files."""
        directory = self.directory
        file, self._file = self._file, None
        self._deadlines.clear()

        def finish() -> None:
            if file is not None:
                _delete(file)
            shutil.rmtree(directory, ignore_errors=True)

        self._run(finish)


def _write(file: PageFile, run: Chunk, data: bytes) -> None:
    """Write a run (paging thread). Unsynced: page files are scratch."""
    if file.fd < 0:
        return
    view = memoryview(data)
    offset = run.offset
    while view:
        written = os.pwrite(file.fd, view, offset)
        view = view[written:]
        offset += written
    run.data = None


def _read(run: Chunk) -> bytes:
    data = run.data  # written meanwhile or not: either way the bytes are right
    if data is not None:
        return data
    data = os.pread(run.file.fd, run.length, run.offset)
    if len(data) != run.length:
        raise OSError(f"{run.file.path}: short read at offset {run.offset}")
    return data


def _delete(file: PageFile) -> None:
    """Close and unlink a page file (paging thread)."""
    fd, file.fd = file.fd, -1
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        file.path.unlink()

"""The one writer of a disk store: group commit on a worker thread.

The event loop only appends bytes to in-memory buffers (``write``, ``ack``) and queues file
operations (``later``). The writer task takes everything pending as one batch and hands it to a
worker thread, which writes the message records, fsyncs every file it wrote (and the directory
of every file it created), then writes the ack records and runs the queued operations
(segment deletion, compaction). Whatever arrives meanwhile forms the next batch, so one fsync
covers every message published while the previous one ran: confirms stay fast under load and
cost one fsync's latency when idle.

Ack records are written right after the fsync of the batch's messages (a message acked and
dead-lettered is thus never lost between the two) and reach the disk with the next batches'
page flushes; they are fsynced at close. A crash of the process loses nothing written; a power
loss may bring back a message acked just before it (at least once, never lost).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import anyio

from .records import ack_record

log = logging.getLogger("warrenmq.disk_store")

_datasync = getattr(os, "fdatasync", os.fsync)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Handle:
    """An append-only file, opened (and created, magic first) by the worker thread."""

    __slots__ = ("path", "magic", "fd", "synced")

    def __init__(self, path: Path, magic: bytes) -> None:
        self.path = path
        self.magic = magic
        self.fd: int | None = None
        #: bytes appended through ``Writer.write`` and written (the event loop's count)
        self.synced = 0

    def open(self, created_in: set[Path]) -> int:
        fd = self.fd
        if fd is None:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
                _write_all(fd, self.magic)
                created_in.add(self.path.parent)
            except FileExistsError:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:  # the queue's directory, on its first message
                self.path.parent.mkdir(parents=True, exist_ok=True)
                created_in.add(self.path.parent.parent)
                return self.open(created_in)
            self.fd = fd
        return fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def delete(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def sync(self) -> None:
        if self.fd is not None:
            _datasync(self.fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Writer:
    """Pending writes of the event loop, flushed by one worker thread in batches."""

    def __init__(self, on_synced: Callable[[int], None]) -> None:
        self._writes: dict[Handle, bytearray] = {}
        self._acks: dict[Handle, bytearray] = {}
        self._later: list[Callable[[], None]] = []
        self._on_synced = on_synced
        #: the ``written`` count of the store when the pending batch is taken
        self.mark: Callable[[], int] = lambda: 0
        #: the writer task's wake-up (made in ``run``: an event belongs to a running loop)
        self._wake: anyio.Event | None = None
        self._woken = False
        #: ack files written since they were last fsynced (they are fsynced at close)
        self._unsynced_acks: set[Handle] = set()
        self.failed: BaseException | None = None

    # -- the event loop's side (cheap) -------------------------------------------------------

    def write(self, handle: Handle, head: bytes, body: bytes = b"") -> None:
        buffer = self._writes.get(handle)
        if buffer is None:
            buffer = self._writes[handle] = bytearray()
        buffer += head
        if body:
            buffer += body
        if not self._woken:
            self._wakeup()

    def ack(self, handle: Handle, seq: bytes) -> None:
        buffer = self._acks.get(handle)
        if buffer is None:
            buffer = self._acks[handle] = bytearray()
        buffer += seq
        if not self._woken:
            self._wakeup()

    def later(self, operation: Callable[[], None]) -> None:
        """Run ``operation`` on the worker thread after the pending writes."""
        self._later.append(operation)
        if not self._woken:
            self._wakeup()

    def _wakeup(self) -> None:
        self._woken = True
        if self._wake is not None:
            self._wake.set()

    @property
    def idle(self) -> bool:
        return not (self._writes or self._acks or self._later)

    # -- the writer task ------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if not self._woken:
                self._wake = anyio.Event()
                await self._wake.wait()
            self._woken = False
            await self.flush()

    async def flush(self) -> None:
        """Write and fsync everything pending now (one batch)."""
        if self.idle:
            return
        writes, acks, later = self._writes, self._acks, self._later
        self._writes, self._acks, self._later = {}, {}, []
        mark = self.mark()
        if self.failed is not None:
            return  # nothing is durable any more; confirms stay pending (see _batch)
        try:
            # shielded: a batch taken is written, even if the broker is stopping meanwhile
            # (to_thread may otherwise be cancelled before its thread starts)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._batch, writes, acks, later)
            for handle, data in writes.items():
                handle.synced += len(data)
        except OSError as exc:
            self.failed = exc
            log.critical(
                "cannot write the store (%s): persistent messages are no longer confirmed; "
                "fix the disk and restart the broker",
                exc,
            )
            return
        self._on_synced(mark)

    def _batch(
        self,
        writes: dict[Handle, bytearray],
        acks: dict[Handle, bytearray],
        later: list[Callable[[], None]],
    ) -> None:
        created_in: set[Path] = set()
        for handle, data in writes.items():
            _write_all(handle.open(created_in), data)
        for handle in writes:
            handle.sync()
        for directory in created_in:
            fsync_dir(directory)
        created_in.clear()
        for handle, seqs in acks.items():
            _write_all(handle.open(created_in), ack_record(seqs))
            self._unsynced_acks.add(handle)
        for directory in created_in:
            fsync_dir(directory)
        for operation in later:
            try:
                operation()
            except OSError as exc:  # a deletion or compaction failed: retried never, logged
                log.warning("store maintenance failed: %s", exc)

    def sync_acks(self) -> None:
        """fsync the ack files written since the last call (worker thread, or at close)."""
        for handle in self._unsynced_acks:
            with contextlib.suppress(OSError):
                handle.sync()
        self._unsynced_acks.clear()

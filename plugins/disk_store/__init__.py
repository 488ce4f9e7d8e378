"""The ``disk`` store: durable definitions and persistent messages in a data directory.

Layout of the data directory::

    lock                  held (fcntl) by the broker using the directory
    definitions.sqlite3   durable exchanges, queues and bindings (see definitions.py)
    queues/<id>/          one directory per durable queue (<id> from the queues table):
        00000001.seg      message records, append-only (see records.py, queue_log.py)
        00000001.ack      the positions acknowledged among them
    logs/<id>/            the same, for a log a plugin keeps outside any queue
                          (``Store.extension_log``; <id> from the logs table)
    clean-shutdown        written at a clean stop: which messages had been delivered

Messages are written by one writer with group commit (writer.py); confirms wait for the fsync
that covers them (``Store.written`` / ``synced``).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio

from warrenmq import Store, hookimpl
from warrenmq.errors import StoreError
from warrenmq.exchange import Binding, Exchange
from warrenmq.queue import Queue
from warrenmq.store import (
    BindingDefinition,
    Definitions,
    ExchangeDefinition,
    QueueDefinition,
    default_data_dir,
)

from .definitions import DefinitionsFile
from .queue_log import Found, QueueLog, recover_queue
from .runs import Delivered
from .writer import Writer, fsync_dir

log = logging.getLogger("warrenmq.disk_store")

CLEAN_SHUTDOWN = "clean-shutdown"
#: seconds between progress lines while recovery runs
PROGRESS_INTERVAL = 5.0


def lock_data_dir(directory: Path) -> int:
    """Take the directory's lock (held until the process exits) or raise ``StoreError``."""
    import fcntl  # here, not at import: the plugin must load where fcntl does not exist

    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreError(
            f"data directory {directory} is in use by another broker (pid {holder}); "
            "stop that broker or give this one another --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class DiskStore(Store):
    name = "disk"

    def __init__(self, data_dir: Path | None) -> None:
        super().__init__(data_dir or default_data_dir())
        self.directory: Path = self.data_dir  # type: ignore[assignment]
        self.writer = Writer(self._synced)
        self.writer.mark = lambda: self.written
        self._lock: int | None = None
        self._db: DefinitionsFile | None = None
        self._definitions = Definitions()
        #: queue id by (vhost, name)
        self._ids: dict[tuple[str, str], int] = {}
        self._logs: dict[int, QueueLog] = {}
        #: what recovery found per queue id
        self._found: dict[int, Found] = {}
        #: plugins' logs (``extension_log``): id by (vhost, name), open ones, what was found
        self._log_ids: dict[tuple[str, str], int] = {}
        self._extension_logs: dict[int, QueueLog] = {}
        self._found_logs: dict[int, Found] = {}
        self._waiters: list[Any] = []
        self._recovery_started = 0.0

    # -- lifetime -------------------------------------------------------------------------

    def disk_directory(self) -> Path:
        return self.directory

    async def open(self) -> None:
        started = self._recovery_started = time.monotonic()
        directory = self.directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data directory {directory}: {exc}") from None
        self._lock = lock_data_dir(directory)
        log.info("data directory %s (store 'disk')", directory)
        try:
            path = directory / "definitions.sqlite3"
            try:
                self._db = DefinitionsFile(path)
                self._definitions, self._ids = self._db.load()
                self._log_ids = self._db.log_ids()
            except (sqlite3.DatabaseError, ValueError) as exc:
                raise StoreError(
                    f"{path} is damaged ({exc}); move it aside to start without the "
                    "definitions (queue directories without one are then removed)"
                ) from None
            delivered = self._read_clean_shutdown()
            for subdirectory in ("queues", "logs"):
                if not (directory / subdirectory).is_dir():
                    (directory / subdirectory).mkdir()
                    fsync_dir(directory)  # the logs' directories hang from it from now on
            # hundreds of thousands of objects that all live on: the cyclic collector would
            # scan them again and again while they are made (half the time of a recovery)
            collecting = gc.isenabled()
            gc.disable()
            try:
                self._found = await anyio.to_thread.run_sync(
                    self._recover, directory / "queues", set(self._ids.values()), delivered
                )
                self._found_logs = await anyio.to_thread.run_sync(
                    self._recover, directory / "logs", set(self._log_ids.values()), {}
                )
            finally:
                if collecting:
                    gc.enable()
        except BaseException:
            os.close(self._lock)
            self._lock = None
            raise
        log.debug("messages read back in %.2f s", time.monotonic() - started)

    def _read_clean_shutdown(self) -> dict[int, Delivered] | None:
        """Delivered positions per queue if the last stop was clean; None after a crash."""
        path = self.directory / CLEAN_SHUTDOWN
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        path.unlink()
        fsync_dir(self.directory)
        try:
            return {int(key): Delivered(value) for key, value in json.loads(text).items()}
        except (ValueError, TypeError, AttributeError):
            log.warning("%s is unreadable; treating the last stop as a crash", path)
            return None

    def _recover(
        self, queues: Path, known: set[int], delivered: dict[int, Delivered] | None
    ) -> dict[int, Found]:
        """Read the segments of every log in ``queues`` (a durable queue's, or a plugin's
        under ``logs``) back (worker thread), with progress lines."""
        for path in queues.iterdir():  # logs deleted before a crash finished removing them
            if not (path.name.isdigit() and int(path.name) in known):
                shutil.rmtree(path, ignore_errors=True)
        found: dict[int, Found] = {}
        last_report = time.monotonic()
        messages = done = 0

        def progress(more: int) -> None:
            nonlocal messages, last_report
            messages += more
            if time.monotonic() - last_report >= PROGRESS_INTERVAL:
                last_report = time.monotonic()
                log.info(
                    "recovering: %d of %d queues read, %d messages so far",
                    done,
                    len(known),
                    messages,
                )

        for queue_id in sorted(known):
            directory = queues / str(queue_id)
            if directory.is_dir():
                seen = None if delivered is None else delivered.get(queue_id, Delivered())
                found[queue_id] = recover_queue(directory, seen, progress)
            done += 1
        return found

    def recovery_done(self, queues: int, messages: int) -> None:
        log.info(
            "recovered %d durable queue%s with %d persistent message%s in %.2f s",
            queues,
            "" if queues == 1 else "s",
            messages,
            "" if messages == 1 else "s",
            time.monotonic() - self._recovery_started,
        )
        # what was found for queues that could not be restored stays, for a later declare
        self._definitions = Definitions()

    async def run(self) -> None:
        await self.writer.run()

    async def close(self) -> None:
        if self._lock is None:
            return
        with anyio.CancelScope(shield=True):
            await self.writer.flush()
            delivered = {
                queue_id: qlog.delivered_positions() for queue_id, qlog in self._logs.items()
            }
            for qlog in [*self._logs.values(), *self._extension_logs.values()]:
                qlog.close(delete=False)
            await self.writer.flush()
            self.writer.sync_acks()
            if self.writer.failed is None:
                path = self.directory / CLEAN_SHUTDOWN
                temporary = path.with_suffix(".tmp")
                with open(temporary, "w") as out:
                    json.dump(delivered, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, path)
                fsync_dir(self.directory)
        if self._db is not None:
            self._db.close()
        os.close(self._lock)
        self._lock = None

    # -- durability -----------------------------------------------------------------------

    def _synced(self, mark: int) -> None:
        self.synced = mark
        waiters, self._waiters = self._waiters, []
        for callback in waiters:
            try:
                callback()
            except Exception:
                log.exception("a waiter for durable writes failed")

    def when_synced(self, callback: Any) -> None:
        if self.synced >= self.written:
            callback()
            return
        self._waiters.append(callback)

    # -- definitions ----------------------------------------------------------------------

    def load_definitions(self) -> Definitions:
        return self._definitions

    @property
    def db(self) -> DefinitionsFile:
        assert self._db is not None, "the store is not open"
        return self._db

    def save_exchange(self, exchange: Exchange) -> None:
        if self.loading:
            return
        self.db.save_exchange(
            ExchangeDefinition(
                exchange.vhost.name,
                exchange.name,
                exchange.type_name,
                exchange.auto_delete,
                exchange.internal,
                dict(exchange.arguments),
            )  # fmt: skip
        )

    def delete_exchange(self, exchange: Exchange) -> None:
        self.db.delete_exchange(exchange.vhost.name, exchange.name)

    def save_queue(self, queue: Queue) -> None:
        key = (queue.vhost.name, queue.name)
        if self.loading and key in self._ids:
            return
        self._ids[key] = self.db.save_queue(
            QueueDefinition(key[0], key[1], queue.auto_delete, dict(queue.arguments))
        )

    def delete_queue(self, queue: Queue) -> None:
        key = (queue.vhost.name, queue.name)
        self.db.delete_queue(*key)
        queue_id = self._ids.pop(key, None)
        qlog = self._logs.pop(queue_id, None) if queue_id is not None else None
        if qlog is not None:
            qlog.close(delete=True)

    def _binding(self, binding: Binding) -> BindingDefinition:
        return BindingDefinition(
            binding.source.vhost.name, binding.source.name, binding.destination.kind,
            binding.destination.name, binding.routing_key, dict(binding.arguments),
        )  # fmt: skip

    def save_binding(self, binding: Binding) -> None:
        if not self.loading:
            self.db.save_binding(self._binding(binding))

    def delete_binding(self, binding: Binding) -> None:
        self.db.delete_binding(self._binding(binding))

    # -- messages -------------------------------------------------------------------------

    def message_log(self, queue: Queue) -> QueueLog | None:
        queue_id = self._ids.get((queue.vhost.name, queue.name))
        if queue_id is None:
            return None
        found = self._found.pop(queue_id, None) or Found()
        qlog = QueueLog(self, self.directory / "queues" / str(queue_id), found)
        self._logs[queue_id] = qlog
        return qlog

    def extension_log(self, vhost: str, name: str) -> QueueLog:
        key = (vhost, name)
        log_id = self._log_ids.get(key)
        if log_id is None:
            log_id = self._log_ids[key] = self.db.save_log(vhost, name)
        previous = self._extension_logs.pop(log_id, None)
        if previous is not None:  # asked again: the old object writes nothing more
            previous.close(delete=False)
        found = self._found_logs.pop(log_id, None) or Found()
        qlog = QueueLog(self, self.directory / "logs" / str(log_id), found)
        self._extension_logs[log_id] = qlog
        return qlog

    def delete_extension_log(self, vhost: str, name: str) -> None:
        log_id = self._log_ids.pop((vhost, name), None)
        if log_id is None:
            return
        self.db.delete_log(vhost, name)
        self._found_logs.pop(log_id, None)
        qlog = self._extension_logs.pop(log_id, None)
        if qlog is not None:
            qlog.close(delete=True)
        else:  # never opened since the start: its files are still there
            directory = self.directory / "logs" / str(log_id)
            self.writer.later(lambda: shutil.rmtree(directory, ignore_errors=True))


@hookimpl
def warrenmq_register_stores(registry: Any) -> None:
    registry.add(DiskStore)

"""The store interface: durable definitions and persistent messages.

The broker calls the store when durable things change; the store decides how to keep them.
The ``memory`` store keeps nothing (a transient broker); the ``disk`` store keeps everything
in a data directory; stores on replicated engines plug in here through
``warrenmq_register_stores``.

Messages: a durable queue whose type keeps persistent messages asks the store for a
``MessageLog`` (``message_log``) and tells it of every persistent message that enters
(``append``) and leaves (``remove``). A write is durable once ``synced`` has reached the value
``written`` had just after it: publisher confirms and ``tx.commit`` wait for that
(``when_synced``).

A plugin that holds messages outside any queue (the example delayed-message exchange) asks for
a log of its own with ``extension_log`` and uses it the same way.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .exchange import Binding, Exchange
from .message import Message
from .queue import Queue, StoredEntry


def default_data_dir() -> Path:
    """``warrenmq`` under the user's data directory ($XDG_DATA_HOME or ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "warrenmq"


@dataclass
class ExchangeDefinition:
    vhost: str
    name: str
    type: str
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class QueueDefinition:
    vhost: str
    name: str
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class BindingDefinition:
    vhost: str
    source: str
    #: "queue" or "exchange"
    destination_kind: str
    destination: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Definitions:
    """Everything durable a store found at start, in the order to restore it."""

    exchanges: list[ExchangeDefinition] = field(default_factory=list)
    queues: list[QueueDefinition] = field(default_factory=list)
    bindings: list[BindingDefinition] = field(default_factory=list)


class MessageLog(ABC):
    """One durable queue's persistent messages, as its queue type sees the store.

    An entry's ``expires_at`` (a ``time.monotonic()`` deadline, 0.0 for none) is kept as a
    wall-clock time and comes back from ``recovered`` as a deadline again, so time spent
    while the broker was down counts.
    """

    @abstractmethod
    def append(self, entry: StoredEntry) -> None:
        """A persistent message entered the queue (ready, or delivered at once)."""

    @abstractmethod
    def remove(self, entry: StoredEntry) -> None:
        """The message left the queue for good (acked, rejected, expired, dropped, purged)."""

    @abstractmethod
    def recovered(self) -> list[StoredEntry]:
        """The messages found at start, in queue order (ready, with their delivery counts).
        Called once, when the queue attaches."""

    def recovered_runs(self) -> list[StoredRun] | None:
        """The messages found at start as runs left in the log's files, in queue order, none
        read yet: a queue that pages asks for these instead of ``recovered`` and reads into
        memory only what its budget holds. None: this log has no runs (call ``recovered``)."""
        return None

    # A queue past its memory budget pages ready messages out (their bodies go to a page
    # file, the entry object is dropped) and reads them back before delivery. The log then
    # forgets the entry object but keeps the message: these three let it do so.

    def page_out_run(self, entries: list[StoredEntry]) -> StoredRun | None:
        """``entries`` (ready, consecutive in the queue) leave memory as one run that points
        at the log's own copy of them, so that nothing is written twice; their entry objects
        are forgotten. None: the log cannot (the queue writes them to a page file)."""
        return None

    def written(self, entry: StoredEntry) -> bool:
        """Whether ``entry``'s message is in the log's files yet (a queue pages a message
        out once it is, so that ``page_out_run`` can point at it)."""
        return True

    def page_out(self, entry: StoredEntry) -> int | None:
        """``entry`` leaves memory (the message stays in the queue and in the log): return a
        key (an int of the log's choosing) that ``page_in`` and ``remove_paged`` take back
        with ``entry.position``; None: this log needs the entry object, keep it in memory."""
        return None

    def page_in(self, entry: StoredEntry, key: int) -> None:
        """A paged-out message is back in memory as ``entry`` (a new object, its ``position``
        and delivery count as they were)."""

    def remove_paged(self, key: int, position: int) -> None:
        """A paged-out message left the queue for good without coming back to memory
        (purged, expired)."""


class StoredRun(ABC):
    """Messages a log keeps in its files and the queue holds no entry for (found at start,
    or paged out past the queue's budget): the queue holds the run in place of entries until
    it drains to it."""

    __slots__ = ()

    #: messages of the run still in the queue, and their body bytes
    count: int
    size: int
    #: the earliest expiry among them (a ``time.monotonic()`` deadline), 0.0: none expires
    deadline: float
    #: read back or dropped
    done: bool

    @abstractmethod
    def split(self, keep: int) -> StoredRun:
        """Keep the first ``keep`` messages (0 < keep < count) here; return the others as a
        run of their own."""

    @abstractmethod
    def read(self) -> list[StoredEntry]:
        """Its messages still in the queue, as ready entries in order (the log has them as
        entries from now on, as if appended)."""

    @abstractmethod
    def expire_due(self) -> list[Message]:
        """Take the messages whose TTL has passed out of the run and the log; return them
        (to be dead-lettered). ``deadline`` is the next expiry after."""

    @abstractmethod
    def drop(self) -> None:
        """The run leaves the queue unread (purge, delete): its messages leave the log."""

    def by_priority(self, max_priority: int) -> Sequence[tuple[int, StoredRun]] | None:
        """For a priority queue: the run cut into one run per priority level present
        (``(level, run)``, lowest first; a message's priority clamped to 0 ..
        ``max_priority``), each with its messages in order; this run is used no more.
        None: this log cannot (the queue reads the run instead)."""
        return None


class Store(ABC):
    """Keeps what must survive a restart. Every method has a do-nothing default."""

    name: ClassVar[str]

    def __init__(self, data_dir: Path | None) -> None:
        self.data_dir = data_dir
        #: writes handed to the store so far (a counter, not bytes)
        self.written = 0
        #: writes known durable (fsynced); ``synced == written`` when nothing is pending
        self.synced = 0
        #: True while the broker restores definitions (save_* calls are echoes, not news)
        self.loading = False

    async def open(self) -> None:
        """Open files/connections before the broker loads definitions."""

    async def run(self) -> None:
        """Background work while the broker runs (the writer of a disk store)."""

    async def close(self) -> None:
        """Flush and close at shutdown."""

    def disk_directory(self) -> Path | None:
        """The directory whose filesystem this store fills, watched by the disk alarm (see
        ``Settings.disk_free_limit``); None: the store writes nothing to local disk."""
        return None

    def load_definitions(self) -> Definitions:
        """Durable exchanges, queues and bindings found at start."""
        return Definitions()

    def recovery_done(self, queues: int, messages: int) -> None:
        """The broker restored what the store found (for the store's own log line)."""

    def when_synced(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once, on the broker's event loop) after ``synced`` advances."""
        callback()

    def save_exchange(self, exchange: Exchange) -> None: ...

    def delete_exchange(self, exchange: Exchange) -> None: ...

    def save_queue(self, queue: Queue) -> None: ...

    def delete_queue(self, queue: Queue) -> None: ...

    def save_binding(self, binding: Binding) -> None: ...

    def delete_binding(self, binding: Binding) -> None: ...

    def message_log(self, queue: Queue) -> MessageLog | None:
        """The log of a durable queue's persistent messages; None: messages are not kept."""
        return None

    def extension_log(self, vhost: str, name: str) -> MessageLog | None:
        """A log of persistent messages that a plugin keeps outside any queue (a delayed
        exchange's held messages, say), called ``name`` in ``vhost``; None: messages are not
        kept (the default, and the ``memory`` store).

        It works as a queue's log: ``append`` is counted in ``written``, so a publish that
        appends is confirmed after the fsync that covers it, and ``recovered`` gives back,
        after a restart, what was appended and not removed. Ask once per name while the
        broker runs; the log lasts across restarts until ``delete_extension_log``. Names are
        shared by every plugin: start them with your plugin's own (``x-delayed-message/...``).
        """
        return None

    def delete_extension_log(self, vhost: str, name: str) -> None:
        """Forget the log ``name`` of ``vhost`` and its messages, for good."""

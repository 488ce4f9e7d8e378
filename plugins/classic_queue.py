"""The ``classic`` queue type: messages in memory, with RabbitMQ's queue features.

Behaviour comes from the queue's arguments: ``x-message-ttl`` and per-message expiration
(expired anywhere in the queue, not only at the head), ``x-max-length``/``-bytes`` with
``x-overflow``, dead-lettering, ``x-max-priority``. Ready messages sit in publish order; a
requeued message goes back to its original place, as in RabbitMQ.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from warrenmq import Message, Queue
from warrenmq.dead_letter import EXPIRED, MAXLEN, REJECTED, dead_letter
from warrenmq.message import CODECS
from warrenmq.queue import ACK, GONE, OUT, READY, REJECT, REQUEUE, Entry, StoredEntry
from warrenmq.queue_arguments import argument_text

from ._paging import Chunk, Pager

if TYPE_CHECKING:
    from warrenmq.consumer import Consumer
    from warrenmq.dispatch import DispatchPolicy
    from warrenmq.store import MessageLog, StoredRun
    from warrenmq.timers import Timer
    from warrenmq.vhost import VirtualHost

_monotonic = time.monotonic
#: per-message TTL heap entries beyond this many more than ready messages trigger a rebuild
_EXPIRY_SLACK: Final = 4096
#: lazily removed entries tolerated in the ready index before it is rebuilt
_GONE_SLACK: Final = 1024
#: most messages paged out of memory at one time (more wait for the next time: a queue
#: recovered with millions of messages does not hold the event loop for long)
PAGE_OUT_MAX: Final = 50_000


class Fifo:
    """Ready messages in publish order: new ones at the tail, requeued ones by position.

    ``items`` holds what was never delivered, in publish order: a plain message (no TTL, so
    nothing about it is this queue's own until it is delivered: it costs no entry while it
    waits) or an entry. ``returned`` holds requeued entries by ``seq``, which is given at
    first delivery; everything requeued was published before everything in ``items`` (a
    delivery takes the head, or happens when nothing waits), so ``returned`` goes first.

    Past the queue's memory budget, messages are paged out (see _paging.py): then the queue
    is ``returned``, ``items`` (the oldest, in memory), ``chunks`` (runs on disk), ``tail``
    (new messages, in memory until the next paging). Without paged runs ``tail`` *is*
    ``items``, so a publish appends to ``tail`` either way.
    """

    __slots__ = ("items", "returned", "tail", "chunks", "pager")

    def __init__(self) -> None:
        self.items: deque[Entry | Message] = deque()
        #: requeued entries, a heap by delivery order (which is publish order)
        self.returned: list[tuple[int, Entry]] = []
        self.tail = self.items
        #: paged-out runs, in order, between ``items`` and ``tail``
        self.chunks: deque[Chunk | StoredRun] = deque()
        self.pager: Pager | None = None

    def push(self, item: Entry | Message) -> None:
        self.tail.append(item)

    def put_back(self, entry: Entry) -> None:
        heapq.heappush(self.returned, (entry.seq, entry))

    def pop(self) -> Entry | Message | None:
        """The oldest item (possibly an entry the queue marked gone), or None."""
        if self.returned:
            return heapq.heappop(self.returned)[1]
        items = self.items
        if not items and self.tail is not items:  # runs on disk, or a tail to take back
            self.page_in()
        return items.popleft() if items else None

    def page_in(self) -> None:
        """Read the next run back (``items`` ran out); once none is left, ``tail`` joins
        ``items`` again."""
        pager, chunks, items = self.pager, self.chunks, self.items
        assert pager is not None
        while chunks and not items:
            back = pager.read(chunks.popleft())
            items.extend(back)
            pager.queue._paged_in(back)
        if chunks:
            pager.advise(chunks[0])
        elif self.tail is not items:
            items.extend(self.tail)
            self.tail = items

    def page_out(
        self, pager: Pager, count: int, size: int, keep_count: int, keep_bytes: int
    ) -> tuple[int, int]:
        """Page out what is beyond ``keep_count`` messages and ``keep_bytes`` bytes, given
        that ``count`` and ``size`` are in memory here; return what stays in memory."""
        moved, moved_bytes = self.page_tail(pager)
        count -= moved
        size -= moved_bytes
        if count <= keep_count and size <= keep_bytes:
            return count, size
        items = self.items
        out: list[Entry | Message] = []
        while items and (count > keep_count or size > keep_bytes) and len(out) < PAGE_OUT_MAX:
            item = items.pop()
            if not _ready(item):
                pager.queue._gone -= 1
                continue
            count -= 1
            size -= _size(item)
            out.append(item)
        if out:
            out.reverse()
            self.chunks.extendleft(reversed(pager.write(self, out)))
            if self.tail is items:
                self.tail = deque()
        return count, size

    def page_tail(self, pager: Pager) -> tuple[int, int]:
        """While runs are on disk, new messages go behind them: page the tail out. Return
        how many messages left memory, and their bytes."""
        self.pager = pager
        items, tail = self.items, self.tail
        if tail is items or not tail:
            return 0, 0
        moved = [item for item in tail if _ready(item)]
        pager.queue._gone -= len(tail) - len(moved)
        tail.clear()
        log = pager.queue._log
        if log is not None:  # persistent messages the log is still writing wait for it here
            cut = len(moved)
            for index in range(cut - 1, -1, -1):
                item = moved[index]
                if item.__class__ is StoredEntry and item.segment is not None:  # type: ignore[union-attr]
                    if log.written(item):  # type: ignore[arg-type]
                        break
                    cut = index
            tail.extend(moved[cut:])
            del moved[cut:]
        self.chunks.extend(pager.write(self, moved))
        return len(moved), sum(_size(item) for item in moved)

    def memory(self) -> tuple[int, int]:
        """Ready messages in memory here, and their bytes (counted one by one)."""
        count = size = 0
        for item in self.entries():
            if _ready(item):
                count += 1
                size += _size(item)
        return count, size

    def entries(self) -> list[Entry | Message]:
        """What is in memory (not the paged-out runs)."""
        tail = self.tail
        return [
            *(entry for _, entry in self.returned),
            *self.items,
            *(tail if tail is not self.items else ()),
        ]

    def compact(self) -> None:
        """Drop entries the queue marked gone (in place: the queue holds bound methods)."""
        for part in (self.items, self.tail) if self.tail is not self.items else (self.items,):
            live = [item for item in part if _ready(item)]
            part.clear()
            part.extend(live)
        self.returned[:] = [item for item in self.returned if item[1].state == READY]
        heapq.heapify(self.returned)

    def clear(self) -> None:
        """Forget every ready message (purge): paged-out runs leave the disk."""
        self.items.clear()
        self.returned.clear()
        self.tail = self.items
        pager = self.pager
        while self.chunks:
            run = self.chunks.popleft()
            if pager is not None:
                pager.drop(run)


def _ready(item: Entry | Message) -> bool:
    return item.__class__ is Message or item.state == READY  # type: ignore[union-attr]


def _size(item: Entry | Message) -> int:
    return len(item.body if item.__class__ is Message else item.message.body)  # type: ignore[union-attr]


class PriorityIndex:
    """One ``Fifo`` per priority level; the highest non-empty level goes first."""

    __slots__ = ("levels", "max_priority")

    def __init__(self, max_priority: int) -> None:
        self.max_priority = max_priority
        self.levels = [Fifo() for _ in range(max_priority + 1)]

    def _level(self, entry: Entry) -> Fifo:
        priority = entry.message.priority or 0
        return self.levels[min(max(priority, 0), self.max_priority)]

    def push(self, entry: Entry) -> None:
        self._level(entry).push(entry)

    def put_back(self, entry: Entry) -> None:
        self._level(entry).put_back(entry)

    def pop(self) -> Entry | Message | None:
        for level in reversed(self.levels):
            entry = level.pop()
            if entry is not None:
                return entry
        return None

    def page_out(self, pager: Pager, keep_count: int, keep_bytes: int) -> None:
        """The budget goes to the highest priorities first; lower ones page out."""
        for level in reversed(self.levels):
            count, size = level.memory()
            if not (count or level.chunks):
                continue
            count, size = level.page_out(pager, count, size, keep_count, keep_bytes)
            keep_count = max(0, keep_count - count)
            keep_bytes = max(0, keep_bytes - size)

    def entries(self) -> list[Entry | Message]:
        return [entry for level in reversed(self.levels) for entry in level.entries()]

    def compact(self) -> None:
        for level in self.levels:
            level.compact()

    def clear(self) -> None:
        for level in self.levels:
            level.clear()


@mypyc_attr(allow_interpreted_subclasses=True)  # a plugin may build on it
class ClassicQueue(Queue):
    """A queue whose messages live in this process's memory."""

    queue_type = "classic"

    __slots__ = (
        "message_ttl",
        "max_length",
        "max_length_bytes",
        "overflow",
        "dead_letter_exchange",
        "dead_letter_routing_key",
        "_limited",
        "_plain",
        "_index",
        "_fifo",
        "_push",
        "_seq",
        "_gone",
        "_expiry",
        "_expiry_timer",
        "_expiry_order",
        "_log",
        "_pager",
        "_encoded",
    )

    def __init__(
        self,
        vhost: VirtualHost,
        name: str,
        policy_class: type[DispatchPolicy],
        durable: bool = False,
        exclusive_owner: object | None = None,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            vhost, name, policy_class, durable, exclusive_owner, auto_delete, arguments
        )
        args = self.arguments
        self._read_arguments(args)
        max_priority = args.get("x-max-priority")
        self._index: Fifo | PriorityIndex = (
            PriorityIndex(max_priority) if isinstance(max_priority, int) else Fifo()
        )
        #: the plain FIFO (None for a priority queue), whose operations are inlined
        self._fifo = self._index if isinstance(self._index, Fifo) else None
        self._push = self._index.push
        self._seq = 0
        #: entries marked gone while still in the index (skipped when popped)
        self._gone = 0
        #: (deadline, order, entry) of ready entries that expire
        self._expiry: list[tuple[float, int, Entry]] = []
        self._expiry_timer: Timer | None = None
        #: breaks ties between equal deadlines in publish (or requeue) order
        self._expiry_order = itertools.count()
        #: where persistent messages are kept (a durable queue with a disk store), else None
        self._log: MessageLog | None = None
        #: the page files of messages past the memory budget (made when first needed)
        self._pager: Pager | None = None
        #: the encoded properties of the last message that waited (shared with the next
        #: ones that are equal)
        self._encoded: bytes | None = None

    # -- the store -----------------------------------------------------------------------

    def attach_log(self, log: MessageLog) -> bool:
        """Recovered messages wait as entries (with their delivery counts), in their order;
        like any waiting message, each gets its ``seq`` at its first delivery from now. Past
        the memory budget they stay in the log's files as runs, read when the queue drains
        to them; a priority queue cuts the runs by priority level and gives the budget to
        the highest levels first, as its paging does."""
        self._log = log
        runs = log.recovered_runs() if CODECS else None
        if runs is None:
            self._recovered(log.recovered())
            return True
        index = self._index
        if isinstance(index, PriorityIndex):
            by_level: list[list[StoredRun]] = [[] for _ in index.levels]
            for run in runs:
                parts = run.by_priority(index.max_priority)
                if parts is None:  # a log whose runs do not split: read them, page later
                    self._recovered(run.read())
                    continue
                for level, part in parts:
                    by_level[level].append(part)
            for fifo, level_runs in zip(reversed(index.levels), reversed(by_level), strict=True):
                self._adopt_runs(fifo, level_runs)
        else:
            self._adopt_runs(index, runs)
        return True

    def _adopt_runs(self, fifo: Fifo, runs: list[StoredRun]) -> None:
        """Recovered runs join ``fifo`` in order: read while the memory budget has room
        (the run it ends in is cut), held on disk after."""
        for run in runs:
            room = self.in_memory_length - (self.ready_count - self.paged_count)
            in_memory_bytes = self.ready_bytes - self.paged_bytes
            if not fifo.chunks and room > 0 and in_memory_bytes < self.in_memory_bytes:
                if room < run.count:
                    rest = run.split(room)  # the budget ends inside this run
                    self._recovered(run.read())
                    run = rest
                else:
                    self._recovered(run.read())
                    continue
            pager = self._paging()
            if fifo.pager is None:
                fifo.pager = pager
            if fifo.tail is fifo.items:
                fifo.tail = deque()
            fifo.chunks.append(run)
            self.ready_count += run.count
            self.ready_bytes += run.size
            pager.adopt(fifo, run)

    def _recovered(self, entries: list[StoredEntry]) -> None:
        for entry in entries:
            self._push(entry)
            self.ready_count += 1
            self.ready_bytes += len(entry.message.body)
            if entry.expires_at:
                self._schedule_expiry(entry)

    # -- paging ----------------------------------------------------------------------------

    def page(self) -> None:
        if not CODECS:  # nothing to write properties with (no protocol that has a codec)
            return
        pager = self._paging()
        pager.expire_due(_monotonic(), self._expire)
        keep_count, keep_bytes = self.in_memory_length, self.in_memory_bytes
        fifo = self._fifo
        if fifo is not None:
            fifo.page_out(
                pager,
                self.ready_count - self.paged_count,
                self.ready_bytes - self.paged_bytes,
                keep_count,
                keep_bytes,
            )
        else:  # tails first: they go to disk whatever the budget, and cost no count
            index: PriorityIndex = self._index  # type: ignore[assignment]
            for level in index.levels:
                level.page_tail(pager)
            if (
                self.ready_count - self.paged_count > keep_count
                or self.ready_bytes - self.paged_bytes > keep_bytes
            ):
                index.page_out(pager, keep_count, keep_bytes)
        if len(self._expiry) > 2 * (self.ready_count - self.paged_count) + _EXPIRY_SLACK:
            self._expiry = [item for item in self._expiry if item[2].state == READY]
            heapq.heapify(self._expiry)

    def _paging(self) -> Pager:
        pager = self._pager
        if pager is None:
            paging = self.vhost.broker.paging
            pager = self._pager = Pager(self, paging.directory(), paging.run)
        return pager

    def _paged_in(self, items: list[Entry | Message]) -> None:
        """Entries read back from disk wait in memory again: their TTL is watched again."""
        for item in items:
            if item.__class__ is not Message and item.expires_at:  # type: ignore[union-attr]
                self._schedule_expiry(item)  # type: ignore[arg-type]

    def _forget(self, entry: Entry) -> None:
        """``entry`` left the queue for good: a persistent message leaves the log too."""
        log = self._log
        if log is not None and entry.__class__ is StoredEntry:
            log.remove(entry)  # type: ignore[arg-type]

    def _read_arguments(self, args: Mapping[str, Any]) -> None:
        """Take TTL, length limits and dead-lettering from the (effective) arguments; the hot
        path reads only the plain attributes set here."""
        ttl = args.get("x-message-ttl")
        #: queue-wide TTL in seconds, None: none
        self.message_ttl: float | None = ttl / 1000 if isinstance(ttl, int) else None
        self.max_length: int | None = args.get("x-max-length")
        self.max_length_bytes: int | None = args.get("x-max-length-bytes")
        self.overflow = argument_text(args, "x-overflow") or "drop-head"
        self.dead_letter_exchange = argument_text(args, "x-dead-letter-exchange")
        self.dead_letter_routing_key = argument_text(args, "x-dead-letter-routing-key")
        self._limited = self.max_length is not None or self.max_length_bytes is not None
        settings = self.vhost.broker.settings
        lazy = argument_text(args, "x-queue-mode") == "lazy"
        length = args.get("x-max-in-memory-length")
        size = args.get("x-max-in-memory-bytes")
        self.in_memory_length = (
            length if isinstance(length, int) else 0 if lazy else settings.max_in_memory_length
        )
        self.in_memory_bytes = (
            size if isinstance(size, int) else 0 if lazy else settings.max_in_memory_bytes
        )
        #: no length limit and no queue TTL: publish skips both checks
        self._plain = not self._limited and self.message_ttl is None

    def configure(self, arguments: Mapping[str, Any]) -> None:
        """A policy changed: new limits drop the oldest messages over them at once, whatever
        the overflow mode, as RabbitMQ does; a new TTL applies to messages published from now
        on (RabbitMQ sets a message's expiry when it enters the queue)."""
        super().configure(arguments)
        self._read_arguments(arguments)
        if self._limited:
            self._drop_head()

    # -- publish (hot path) ---------------------------------------------------------------

    def publish(self, message: Message) -> bool:
        rare = message.rare  # (its ``ttl``, read without a property call)
        ttl = rare.ttl if rare is not None else None
        if self._plain and ttl is None:  # no limits, no TTL: the usual case
            expires_at = 0.0
        else:
            if self._limited and self.overflow != "drop-head" and self._full_for(message):
                # refused even when a consumer is waiting, as RabbitMQ does
                self.rejected_publishes += 1
                if self.overflow == "reject-publish-dlx":
                    self._dead_letter(message, MAXLEN)
                return False
            queue_ttl = self.message_ttl
            if ttl is None and queue_ttl is None:
                expires_at = 0.0
            else:
                seconds = ttl / 1000 if ttl is not None else queue_ttl
                if queue_ttl is not None and queue_ttl < seconds:  # type: ignore[operator]
                    seconds = queue_ttl
                expires_at = _monotonic() + seconds  # type: ignore[operator]
        self.published += 1
        log = self._log
        stored = log is not None and message.persistent
        if not self.ready_count:
            policy = self.sole_policy
            if policy is None:
                consumer = self.next_consumer()
            else:  # next_consumer, inlined for the usual case (one consumer: no select)
                consumer = policy.only
                if consumer is None:
                    consumer = policy.select()
                if consumer is not None and not consumer.has_credit():
                    self.park(consumer)
                    consumer = self.next_consumer()
            if consumer is not None:
                self.delivered += 1
                entry: Entry | None = None
                if consumer.acks:
                    self._seq += 1
                    entry = out = (StoredEntry if stored else Entry)(
                        message, self._seq, expires_at, OUT, 1
                    )
                    self.unacked_count += 1
                    self.unacked_bytes += len(message.body)
                    if stored:
                        log.append(out)  # type: ignore[union-attr,arg-type]
                try:
                    consumer.deliver(self, message, entry)
                except Exception as error:
                    self._undeliver(consumer, message, entry, expires_at, error)
                return True
        fifo = self._fifo
        if not expires_at and fifo is not None and not stored:
            # it waits: one copy of the encoded properties for a run of messages published
            # alike (48 bytes or more each), found by a compare, not a hash lookup
            encoded = message.encoded
            if encoded == self._encoded:
                message.encoded = self._encoded
            else:
                self._encoded = encoded
            fifo.tail.append(message)  # waits as itself: its entry is made at delivery
            self.ready_count += 1
            self.ready_bytes += len(message.body)
            if self._limited:
                self._drop_head()
            return True
        if expires_at and expires_at <= _monotonic():
            self._expire(message)  # TTL 0: only a consumer waiting right now could take it
            return True
        # its seq is given at first delivery; a persistent one is in the log from now
        ready = (StoredEntry if stored else Entry)(message, 0, expires_at, READY)
        if stored:
            log.append(ready)  # type: ignore[union-attr,arg-type]
        self._push(ready)
        self.ready_count += 1
        self.ready_bytes += len(message.body)
        if expires_at:
            self._schedule_expiry(ready)
        if self._limited:
            self._drop_head()
        return True

    def _undeliver(
        self,
        consumer: Consumer,
        message: Message,
        entry: Entry | None,
        expires_at: float,
        error: BaseException,
    ) -> None:
        """A direct hand-over failed: keep the message as ready and detach the consumer."""
        self.delivered -= 1
        if entry is None:
            self._seq += 1
            log = self._log
            if log is not None and message.persistent:
                entry = StoredEntry(message, self._seq, expires_at, READY)
                log.append(entry)  # type: ignore[arg-type]
            else:
                entry = Entry(message, self._seq, expires_at, READY)
        else:
            self.unacked_count -= 1
            self.unacked_bytes -= len(message.body)
            entry.deliveries = 0
        self._make_ready(entry)
        self.consumer_failed(consumer, error)
        self.dispatch()  # another consumer may take it now

    def _full_for(self, message: Message) -> bool:
        limit = self.max_length
        if limit is not None and self.ready_count >= limit:
            return True
        limit = self.max_length_bytes
        return limit is not None and self.ready_bytes + len(message.body) > limit

    def _drop_head(self) -> None:
        """drop-head: the oldest ready messages go (dead-lettered) until within the limits."""
        max_length, max_bytes = self.max_length, self.max_length_bytes
        while (max_length is not None and self.ready_count > max_length) or (
            max_bytes is not None and self.ready_bytes > max_bytes
        ):
            entry = self._take_ready()
            if entry is None:
                return
            entry.state = GONE
            self._forget(entry)
            self.dropped += 1
            self._dead_letter(entry.message, MAXLEN)

    # -- delivery ------------------------------------------------------------------------

    def _take_ready(self) -> Entry | None:
        """Remove the next ready entry from the index (skipping gone ones), or None. A
        message never delivered gets its entry, and its place in delivery order, here."""
        pop = self._index.pop
        while True:
            item = pop()
            if item is None:
                self._gone = 0
                return None
            if item.__class__ is Message:
                entry = Entry(item, 0, 0.0, READY)  # type: ignore[arg-type]
            else:
                entry = item  # type: ignore[assignment]
                if entry.state != READY:
                    self._gone -= 1
                    continue
            if not entry.seq:
                entry.seq = self._seq = self._seq + 1
            self.ready_count -= 1
            self.ready_bytes -= len(entry.message.body)
            return entry

    def dispatch(self) -> None:
        # The hot loop of a backlog. A queue's only consumer gets a run of messages as long
        # as its credit, without select/has_credit per message; the FIFO pop is inlined; the
        # counters no one reads meanwhile are summed locally and stored once.
        fifo = self._fifo
        delivered = redelivered = unacked = unacked_bytes = 0
        try:
            while self.ready_count and not self.deleted:
                policy = self.sole_policy
                consumer = policy.only if policy is not None else None
                if consumer is not None:
                    credit = consumer.available_credit()
                    if not credit:
                        self.park(consumer)
                        continue
                else:
                    consumer = self.next_consumer()
                    if consumer is None:
                        return
                    credit = 1
                acks = consumer.acks
                while credit:
                    if fifo is not None and not fifo.returned and fifo.items:
                        item = fifo.items.popleft()
                        if item.__class__ is Message:  # never delivered, no TTL: the usual case
                            message = item  # type: ignore[assignment]
                            self.ready_count -= 1
                            self.ready_bytes -= len(message.body)
                            delivered += 1
                            fresh: Entry | None = None  # a no-ack delivery needs none
                            if acks:
                                self._seq += 1
                                fresh = Entry(message, self._seq, 0.0, OUT, 1)
                                unacked += 1
                                unacked_bytes += len(message.body)
                            try:
                                consumer.deliver(self, message, fresh)
                            except Exception as error:
                                if fresh is None:  # the message needs an entry to wait again
                                    self._seq += 1
                                    fresh = Entry(message, self._seq, 0.0, GONE, 1)
                                self._restore(fresh, acks)
                                self.consumer_failed(consumer, error)
                                break
                            if consumer.parked:
                                break
                            credit -= 1
                            continue
                        entry: Entry = item  # type: ignore[assignment]
                        if entry.state != READY:
                            self._gone -= 1
                            continue
                        if not entry.seq:
                            entry.seq = self._seq = self._seq + 1
                        self.ready_count -= 1
                        self.ready_bytes -= len(entry.message.body)
                    else:
                        taken = self._take_ready()
                        if taken is None:
                            return
                        entry = taken
                    message = entry.message
                    if entry.expires_at and entry.expires_at <= _monotonic():
                        entry.state = GONE
                        self._forget(entry)
                        self._expire(message)
                        continue
                    deliveries = entry.deliveries = entry.deliveries + 1
                    delivered += 1
                    if deliveries > 1:
                        redelivered += 1
                    if acks:
                        entry.state = OUT
                        unacked += 1
                        unacked_bytes += len(message.body)
                    else:
                        entry.state = GONE
                    try:
                        consumer.deliver(self, message, entry)
                    except Exception as error:
                        self._restore(entry, acks)
                        self.consumer_failed(consumer, error)
                        break
                    if not acks and entry.__class__ is StoredEntry:
                        self._forget(entry)  # only once delivered: a failed one waits again
                    if consumer.parked:
                        break
                    credit -= 1
        finally:
            self.delivered += delivered
            self.redelivered += redelivered
            self.unacked_count += unacked
            self.unacked_bytes += unacked_bytes

    def _restore(self, entry: Entry, was_tracked: bool) -> None:
        """Undo a delivery that failed: the entry is ready again, as if never delivered."""
        self.delivered -= 1
        if entry.deliveries > 1:
            self.redelivered -= 1
        entry.deliveries -= 1
        if was_tracked:
            self.unacked_count -= 1
            self.unacked_bytes -= len(entry.message.body)
        self._make_ready(entry)

    def _make_ready(self, entry: Entry) -> None:
        """``entry`` is ready again, at its original place in the queue."""
        entry.state = READY
        self._index.put_back(entry)
        self.ready_count += 1
        self.ready_bytes += len(entry.message.body)
        if entry.expires_at:
            self._schedule_expiry(entry)

    def get(self, no_ack: bool) -> tuple[Message, Entry] | None:
        self.touch()
        while True:
            entry = self._take_ready()
            if entry is None:
                return None
            if entry.expires_at and entry.expires_at <= _monotonic():
                entry.state = GONE
                self._forget(entry)
                self._expire(entry.message)
                continue
            entry.deliveries += 1
            self.delivered += 1
            if entry.deliveries > 1:
                self.redelivered += 1
            if no_ack:
                entry.state = GONE
                self._forget(entry)
            else:
                entry.state = OUT
                self.unacked_count += 1
                self.unacked_bytes += len(entry.message.body)
            return entry.message, entry

    # -- settlement ----------------------------------------------------------------------

    def ack(self, entry: Entry) -> None:
        """One delivery acknowledged (the common case of ``settle``)."""
        if entry.state == OUT:
            entry.state = GONE
            self.unacked_count -= 1
            self.unacked_bytes -= len(entry.message.body)
            self.acknowledged += 1
            if entry.__class__ is StoredEntry:
                self._forget(entry)

    def ack_all(self, entries: list[Entry]) -> None:
        count = size = 0
        for entry in entries:
            if entry.state == OUT:
                entry.state = GONE
                count += 1
                size += len(entry.message.body)
                if entry.__class__ is StoredEntry:
                    self._forget(entry)
        self.unacked_count -= count
        self.unacked_bytes -= size
        self.acknowledged += count

    def settle(self, entries: Iterable[Entry], outcome: int) -> None:
        requeued = False
        for entry in entries:
            if entry.state != OUT:
                continue
            message = entry.message
            self.unacked_count -= 1
            self.unacked_bytes -= len(message.body)
            if outcome == ACK:
                entry.state = GONE
                self._forget(entry)
                self.acknowledged += 1
            elif outcome == REQUEUE and not self.deleted:
                if entry.expires_at and entry.expires_at <= _monotonic():
                    entry.state = GONE
                    self._forget(entry)
                    self._expire(message)
                    continue
                self._make_ready(entry)
                requeued = True
            else:
                entry.state = GONE
                self._forget(entry)
                if outcome == REJECT and not self.deleted:
                    self._dead_letter(message, REJECTED)
        if requeued:
            if self._limited and self.overflow == "drop-head":
                self._drop_head()  # requeued messages count against the limit again
            self.dispatch()

    def purge(self) -> int:
        count = self.ready_count
        for item in self._index.entries():
            if item.__class__ is not Message:  # an Entry or StoredEntry
                if item.state == READY:  # type: ignore[union-attr]
                    self._forget(item)  # type: ignore[arg-type]
                item.state = GONE  # type: ignore[union-attr]
        self._index.clear()
        self._expiry.clear()
        self._gone = 0
        self.ready_count = 0
        self.ready_bytes = 0
        self.paged_count = 0
        self.paged_bytes = 0
        return count

    def delete(self) -> int:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        count = super().delete()
        if self._pager is not None:
            self._pager.close()
            self._pager = None
        return count

    # -- expiry and dead-lettering -------------------------------------------------------

    def _schedule_expiry(self, entry: Entry) -> None:
        expiry = self._expiry
        heapq.heappush(expiry, (entry.expires_at, next(self._expiry_order), entry))
        if len(expiry) > 2 * (self.ready_count - self.paged_count) + _EXPIRY_SLACK:
            self._expiry = expiry = [item for item in expiry if item[2].state == READY]
            heapq.heapify(expiry)
        timer = self._expiry_timer
        if timer is None or entry.expires_at < timer.when:
            if timer is not None:
                timer.cancel()
            self._expiry_timer = self.vhost.broker.timers.call_at(expiry[0][0], self._expire_due)

    def _expire_due(self) -> None:
        """Drop (and dead-letter) every ready message whose TTL has passed, wherever it is."""
        self._expiry_timer = None
        expiry = self._expiry
        now = _monotonic()
        while expiry and expiry[0][0] <= now:
            entry = heapq.heappop(expiry)[2]
            if entry.state != READY or entry.expires_at > now:
                continue
            entry.state = GONE
            self._forget(entry)
            self._gone += 1
            self.ready_count -= 1
            self.ready_bytes -= len(entry.message.body)
            self._expire(entry.message)
        if self._gone > _GONE_SLACK and self._gone > self.ready_count:
            self._index.compact()
            self._gone = 0
        if expiry and not self.deleted:
            self._expiry_timer = self.vhost.broker.timers.call_at(expiry[0][0], self._expire_due)

    def _expire(self, message: Message) -> None:
        self.expired += 1
        self._dead_letter(message, EXPIRED)

    def _dead_letter(self, message: Message, reason: str) -> None:
        exchange = self.dead_letter_exchange
        if exchange is None:
            return
        self.dead_lettered += 1
        dead_letter(self, message, reason, exchange, self.dead_letter_routing_key)


def warrenmq_register_queue_types(registry: Any) -> None:
    registry.add(ClassicQueue, "classic")

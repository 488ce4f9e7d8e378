"""Queues: the interface every queue type implements, and the consumer bookkeeping they share.

A queue owns its messages and their state (ready, delivered and unsettled, gone); nothing
outside it touches its containers. Queue types (``classic`` built in) are plugins, chosen with
the ``x-queue-type`` argument, as in RabbitMQ's ``rabbit_queue_type``. This base class keeps
what every type needs alike: consumers by priority with a dispatch policy per priority, single
active consumer, exclusive consumers, counters and ``x-expires``.
"""

from __future__ import annotations

import logging
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from mypy_extensions import mypyc_attr

from .errors import AccessRefused
from .failures import log_failure
from .message import Message
from .policy import Policy, queue_arguments
from .views import ConsumerView, QueueView

if TYPE_CHECKING:
    from .consumer import Consumer
    from .dispatch import DispatchPolicy
    from .exchange import Binding
    from .store import MessageLog
    from .timers import Timer
    from .vhost import VirtualHost

log = logging.getLogger("warrenmq.queue")

# -- how a delivery is settled ---------------------------------------------------------------

#: the consumer is done with it
ACK: Final = 0
#: put it back where it was, for another delivery
REQUEUE: Final = 1
#: refused: dead-lettered with reason ``rejected`` if the queue has a dead-letter exchange
REJECT: Final = 2
#: dropped without dead-lettering
DISCARD: Final = 3

# -- an entry's state ------------------------------------------------------------------------

READY: Final = 0
OUT: Final = 1
GONE: Final = 2


class Entry:
    """One message in one queue, with the state that belongs to this queue only."""

    __slots__ = ("message", "seq", "deliveries", "expires_at", "state")

    def __init__(
        self, message: Message, seq: int, expires_at: float, state: int, deliveries: int = 0
    ) -> None:
        self.message = message
        #: position in publish order (a requeued message goes back to it)
        self.seq = seq
        #: how many times it was delivered (> 1 at delivery: redelivered)
        self.deliveries = deliveries
        #: time.monotonic() deadline from TTL; 0.0 = never expires
        self.expires_at = expires_at
        self.state = state

    @property
    def redelivered(self) -> bool:
        return self.deliveries > 1

    def __repr__(self) -> str:
        return f"Entry(seq={self.seq}, deliveries={self.deliveries}, state={self.state})"


class StoredEntry(Entry):
    """An entry whose persistent message is also in the queue's ``MessageLog``.

    A subclass rather than a flag, so that the queue's hot path for transient messages sets
    nothing more; ``entry.__class__ is StoredEntry`` tells them apart.
    """

    __slots__ = ("segment", "position")

    def __init__(
        self, message: Message, seq: int, expires_at: float, state: int, deliveries: int = 0
    ) -> None:
        super().__init__(message, seq, expires_at, state, deliveries)
        #: where the log keeps it (the log's own object; None once removed)
        self.segment: Any = None
        #: its place in the log, given by the log when it is appended (publish order; the
        #: queue's ``seq`` is delivery order, given at first delivery)
        self.position = 0


def _level_priority(level: tuple[int, DispatchPolicy]) -> int:
    return level[0]


@mypyc_attr(allow_interpreted_subclasses=True)
class Queue(ABC):
    """A named queue in a virtual host; subclasses keep the messages."""

    kind = "queue"
    #: the ``x-queue-type`` value that selects this queue type
    queue_type: ClassVar[str]

    # slots: a queue has more attributes than CPython shares dict keys for, and the hot path
    # reads and writes them per message (subclasses may add their own, or a __dict__)
    __slots__ = (
        "vhost",
        "name",
        "durable",
        "exclusive_owner",
        "auto_delete",
        "arguments",
        "policy_class",
        "consumers",
        "_levels",
        "sole_policy",
        "exclusive_consumer",
        "single_active",
        "active_consumer",
        "incoming",
        "had_consumer",
        "deleted",
        "ready_count",
        "ready_bytes",
        "unacked_count",
        "unacked_bytes",
        "published",
        "delivered",
        "redelivered",
        "acknowledged",
        "expired",
        "dead_lettered",
        "dropped",
        "rejected_publishes",
        "paged_count",
        "paged_bytes",
        "in_memory_length",
        "in_memory_bytes",
        "expires_after",
        "last_used",
        "_expires_timer",
        "policy",
        "__weakref__",
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
        self.vhost = vhost
        self.name = name
        self.durable = durable
        #: the connection that declared an exclusive queue, else None
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.policy_class = policy_class
        #: attached consumers in arrival order
        self.consumers: dict[Consumer, None] = {}
        #: (priority, policy) for each consumer priority present, highest first
        self._levels: list[tuple[int, DispatchPolicy]] = []
        #: the policy when all consumers share one priority (the usual case, a fast path)
        self.sole_policy: DispatchPolicy | None = None
        self.exclusive_consumer: Consumer | None = None
        self.single_active = bool(self.arguments.get("x-single-active-consumer"))
        self.active_consumer: Consumer | None = None
        #: bindings with this queue as destination
        self.incoming: set[Binding] = set()
        self.had_consumer = False
        self.deleted = False
        # counters, updated on the hot path (plain integer attributes)
        self.ready_count = 0
        self.ready_bytes = 0
        self.unacked_count = 0
        self.unacked_bytes = 0
        self.published = 0
        self.delivered = 0
        self.redelivered = 0
        self.acknowledged = 0
        self.expired = 0
        self.dead_lettered = 0
        self.dropped = 0
        self.rejected_publishes = 0
        #: ready messages whose bodies are on disk (paged out), counted in ``ready_*`` too
        self.paged_count = 0
        self.paged_bytes = 0
        #: the memory budget: ready messages held in memory beyond these are paged out by
        #: ``page`` (a queue type that never pages keeps the unreachable default)
        self.in_memory_length = sys.maxsize
        self.in_memory_bytes = sys.maxsize
        #: x-expires in seconds (None: never), and when the queue was last used
        self.expires_after: float | None = None
        self.last_used = time.monotonic()
        self._expires_timer: Timer | None = None
        #: the policy that applies to this queue (``VirtualHost.apply_policies`` sets it)
        self.policy: Policy | None = None
        self._configure_expires(self.arguments)

    # -- the message interface each queue type implements ----------------------------------

    @abstractmethod
    def publish(self, message: Message) -> bool:
        """Take ``message``: deliver it or keep it. False: refused (a length limit)."""

    @abstractmethod
    def dispatch(self) -> None:
        """Deliver ready messages while some consumer has credit."""

    @abstractmethod
    def get(self, no_ack: bool) -> tuple[Message, Entry] | None:
        """The next ready message (basic.get), or None; with ``no_ack`` it is settled."""

    @abstractmethod
    def settle(self, entries: Iterable[Entry], outcome: int) -> None:
        """Settle deliveries of this queue: ``ACK``, ``REQUEUE``, ``REJECT`` or ``DISCARD``."""

    def ack(self, entry: Entry) -> None:
        """One delivery acknowledged: the common case of ``settle``, kept cheap."""
        self.settle((entry,), ACK)

    def ack_all(self, entries: list[Entry]) -> None:
        """Several deliveries acknowledged (a multiple ack)."""
        self.settle(entries, ACK)

    def page(self) -> None:
        """Keep ready messages in memory within the budget (``in_memory_length`` and
        ``_bytes``), paging the rest out to disk and reading them back ahead of delivery.
        The broker calls it a few times a second for each queue over its budget or with
        messages paged out; a queue type that keeps everything in memory ignores it."""

    def attach_log(self, log: MessageLog) -> bool:
        """Keep this durable queue's persistent messages in ``log`` from now on, starting with
        those it recovered. False: this queue type keeps no messages across restarts."""
        return False

    @abstractmethod
    def purge(self) -> int:
        """Drop every ready message; return how many."""

    def delete(self) -> int:
        """The queue is being deleted: drop its messages and timers; return how many were
        ready. Unsettled deliveries are forgotten (their later settlement is ignored)."""
        if self._expires_timer is not None:
            self._expires_timer.cancel()
        return self.purge()

    # -- consumers -----------------------------------------------------------------------

    def check_consumer(self, exclusive: bool) -> None:
        """Raise 403 if a consumer (exclusive or not) may not attach now."""
        if (
            self.exclusive_consumer is not None
            or (exclusive and self.consumers)
            or (exclusive and self.single_active)
        ):
            raise AccessRefused(
                f"queue '{self.name}' in vhost '{self.vhost.name}' in exclusive use"
            )

    def add_consumer(self, consumer: Consumer) -> None:
        self.check_consumer(consumer.exclusive)
        if consumer.exclusive:
            self.exclusive_consumer = consumer
        self.consumers[consumer] = None
        self.had_consumer = True
        self.touch()
        consumer.parked = True
        if not self.single_active:
            self._offer(consumer)
        elif self.active_consumer is None:
            self.active_consumer = consumer
            self._offer(consumer)
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        """Forget ``consumer``; an auto-delete queue goes with its last consumer."""
        if consumer not in self.consumers:
            return
        del self.consumers[consumer]
        self.park(consumer)
        self._drop_level_of(consumer)
        if self.exclusive_consumer is consumer:
            self.exclusive_consumer = None
        if self.active_consumer is consumer:
            self.active_consumer = None
            self._activate_next()
        if not self.consumers and not self.deleted:
            self.touch()
            if self.auto_delete:
                self.vhost.delete_queue(self.name, owner=self.exclusive_owner)

    def consumer_ready(self, consumer: Consumer) -> None:
        """``consumer`` may have credit again: offer it messages if the queue had parked it."""
        if not consumer.parked or self.deleted or consumer not in self.consumers:
            return
        if self.single_active and consumer is not self.active_consumer:
            return
        self._offer(consumer)
        self.dispatch()

    def _activate_next(self) -> None:
        """Single active consumer: the next consumer by priority, then arrival, takes over."""
        best: Consumer | None = None
        for candidate in self.consumers:
            if best is None or candidate.priority > best.priority:
                best = candidate
        if best is not None:
            self.active_consumer = best
            self._offer(best)
            self.dispatch()

    def _offer(self, consumer: Consumer) -> None:
        consumer.parked = False
        priority = consumer.priority
        for level, policy in self._levels:
            if level == priority:
                policy.add(consumer)
                return
        policy = self.policy_class(self)
        policy.add(consumer)
        self._levels.append((priority, policy))
        # highest priority first; no lambda, which costs the compiled _offer an environment
        self._levels.sort(key=_level_priority, reverse=True)
        self.sole_policy = self._levels[0][1] if len(self._levels) == 1 else None

    def park(self, consumer: Consumer) -> None:
        """Stop offering ``consumer`` messages (no credit, or leaving) until
        ``consumer_ready``."""
        if consumer.parked:
            return
        consumer.parked = True
        for level, policy in self._levels:
            if level == consumer.priority:
                policy.remove(consumer)
                return

    def _drop_level_of(self, consumer: Consumer) -> None:
        """A consumer left: forget its priority's policy if no one else has that priority."""
        priority = consumer.priority
        if any(other.priority == priority for other in self.consumers):
            return
        self._levels = [level for level in self._levels if level[0] != priority]
        self.sole_policy = self._levels[0][1] if len(self._levels) == 1 else None

    def next_consumer(self) -> Consumer | None:
        """A consumer with credit for the next message (parking those found without)."""
        for _, policy in self._levels:
            select = policy.select
            while True:
                consumer = select()
                if consumer is None:
                    break
                if consumer.has_credit():
                    return consumer
                policy.remove(consumer)
                consumer.parked = True
        return None

    def consumer_failed(self, consumer: Consumer, error: BaseException) -> None:
        """``consumer.deliver`` raised: detach it and let its session close; others go on."""
        log_failure(log, f"delivery to {consumer!r} of queue '{self.name}' failed", error)
        self.remove_consumer(consumer)
        try:
            consumer.failed(self, error)
        except Exception:
            log.exception("consumer %r failed while being detached", consumer)

    # -- policies ------------------------------------------------------------------------

    def effective_arguments(self) -> dict[str, Any]:
        """The queue's arguments combined with its policy's, by RabbitMQ's rules."""
        return queue_arguments(self.arguments, self.policy)

    def apply_policy(self, policy: Policy | None) -> None:
        """``policy`` now applies (None: none does): re-read the effective arguments. Called
        when the queue is declared and whenever its virtual host's policies change."""
        self.policy = policy
        self.configure(self.effective_arguments())

    def configure(self, arguments: Mapping[str, Any]) -> None:
        """Take on the effective ``arguments``, for a queue that already exists. A queue type
        extends this for the arguments it reads (TTL, length limits, dead-lettering)."""
        self._configure_expires(arguments)
        if self._expires_timer is not None:
            self._expires_timer.cancel()
            self._expires_timer = None
        self.touch()  # as RabbitMQ, a changed expiry counts from now

    def _configure_expires(self, arguments: Mapping[str, Any]) -> None:
        expires = arguments.get("x-expires")
        if isinstance(expires, int) and not isinstance(expires, bool):
            self.expires_after = expires / 1000
        else:
            self.expires_after = None

    # -- x-expires -----------------------------------------------------------------------

    def touch(self) -> None:
        """The queue was used (declared, consumed from, basic.get): restart x-expires."""
        self.last_used = time.monotonic()
        if self.expires_after is not None and self._expires_timer is None and not self.deleted:
            timers = self.vhost.broker.timers
            self._expires_timer = timers.call_at(
                self.last_used + self.expires_after, self._check_expires
            )

    def _check_expires(self) -> None:
        self._expires_timer = None
        if self.deleted or self.expires_after is None:
            return
        if self.consumers:
            return  # touched again when the last consumer leaves
        due = self.last_used + self.expires_after
        if time.monotonic() >= due:
            log.info("queue '%s' in vhost '%s' expired (x-expires)", self.name, self.vhost.name)
            self.vhost.remove_queue(self)
            return
        self._expires_timer = self.vhost.broker.timers.call_at(due, self._check_expires)

    # -- views ---------------------------------------------------------------------------

    @property
    def message_count(self) -> int:
        return self.ready_count

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    def view(self) -> QueueView:
        return QueueView(
            name=self.name,
            vhost=self.vhost.name,
            type=self.queue_type,
            durable=self.durable,
            exclusive=self.exclusive_owner is not None,
            auto_delete=self.auto_delete,
            arguments=dict(self.arguments),
            dispatch=self.policy_class.name,
            messages_ready=self.ready_count,
            messages_unacknowledged=self.unacked_count,
            message_bytes_ready=self.ready_bytes,
            message_bytes_unacknowledged=self.unacked_bytes,
            consumers=len(self.consumers),
            published=self.published,
            delivered=self.delivered,
            redelivered=self.redelivered,
            acknowledged=self.acknowledged,
            expired=self.expired,
            dead_lettered=self.dead_lettered,
            dropped=self.dropped,
            rejected_publishes=self.rejected_publishes,
            messages_paged_out=self.paged_count,
            message_bytes_paged_out=self.paged_bytes,
            policy=self.policy.name if self.policy is not None else None,
        )

    def consumer_views(self) -> list[ConsumerView]:
        return [consumer_view(self, consumer) for consumer in self.consumers]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, ready={self.ready_count}, "
            f"consumers={len(self.consumers)})"
        )


def consumer_view(queue: Queue, consumer: Consumer) -> ConsumerView:
    return ConsumerView(
        tag=consumer.tag,
        queue=queue.name,
        vhost=queue.vhost.name,
        acks=consumer.acks,
        exclusive=consumer.exclusive,
        priority=consumer.priority,
        prefetch=getattr(consumer, "prefetch", 0),
        unacked=consumer.unacked,
        active=not queue.single_active or consumer is queue.active_consumer,
        has_credit=consumer.has_credit(),
    )

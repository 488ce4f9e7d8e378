"""The delivery tracker: one protocol session's consumers, unsettled deliveries and credit.

Every protocol uses it the same way (an AMQP channel is a ``Session``; an MQTT client session
will be one too): consumers deliver through ``track``, the client's acks, nacks and rejects
become ``settle``, closing the session requeues what was not settled, and a transaction holds
publishes and settlements until commit. The protocol engine only encodes and decodes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from itertools import islice
from typing import TYPE_CHECKING, Final

from mypy_extensions import mypyc_attr

from .consumer import Consumer
from .errors import PreconditionFailed
from .queue import ACK, REQUEUE

if TYPE_CHECKING:
    from .queue import Entry, Queue

#: runs an iterator to its end in C (a deque that keeps nothing)
_exhaust: Callable[[Iterable[object]], None] = deque[object](maxlen=0).extend

#: the credit of a consumer with no limit of its own (a queue delivers until it is parked)
UNLIMITED: Final = 1 << 62

#: an unsettled delivery: its queue, the queue's entry, and the consumer (None: basic.get)
Delivery = tuple["Queue", "Entry", "SessionConsumer | None"]


@mypyc_attr(allow_interpreted_subclasses=True)
class SessionConsumer(Consumer):
    """A consumer that belongs to a session, with per-consumer and per-session prefetch."""

    __slots__ = (
        "session",
        "queue",
        "tag",
        "acks",
        "exclusive",
        "priority",
        "prefetch",
        "unacked",
        "parked",
    )

    def __init__(
        self,
        session: Session,
        queue: Queue,
        tag: str,
        *,
        acks: bool = True,
        exclusive: bool = False,
        prefetch: int = 0,
        priority: int = 0,
    ) -> None:
        self.session = session
        self.queue = queue
        self.tag = tag
        self.acks = acks
        self.exclusive = exclusive
        self.priority = priority
        #: per-consumer unsettled limit (0 = none), fixed when consuming starts
        self.prefetch = prefetch
        self.unacked = 0
        self.parked = True

    def has_credit(self) -> bool:
        session = self.session
        if session.paused:
            return False
        if not self.acks:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        limit = session.global_prefetch
        return not limit or session.consumer_unacked() < limit

    def available_credit(self) -> int:
        session = self.session
        if session.paused:
            return 0
        if not self.acks:
            return UNLIMITED  # until the session pauses (its socket backs up) and parks us
        credit = self.prefetch - self.unacked if self.prefetch else UNLIMITED
        limit = session.global_prefetch
        if limit:
            credit = min(credit, limit - session.consumer_unacked())
        return max(credit, 0)

    def failed(self, queue: Queue, error: BaseException) -> None:
        self.session.consumer_failed(self, error)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tag!r}, queue={self.queue.name!r})"


@mypyc_attr(allow_interpreted_subclasses=True)
class Session:
    """Unsettled deliveries by tag (in tag order), consumers by tag, credit, transactions."""

    def __init__(self) -> None:
        self.consumers: dict[str, SessionConsumer] = {}
        #: delivery tag -> unsettled delivery
        self.unacked: dict[int, Delivery] = {}
        self.delivery_tag = 0
        #: session-wide unsettled limit (AMQP basic.qos global), 0 = none
        self.global_prefetch = 0
        #: no deliveries now (client flow control, or the socket is backed up)
        self.paused = False
        #: publishes held by an open transaction (None: not transactional)
        self.tx: list[Callable[[], None]] | None = None
        #: settlements held by the transaction: (taken deliveries, outcome)
        self.tx_settles: list[tuple[list[tuple[int, Delivery]], int]] = []
        self.closing = False

    def consumer_unacked(self) -> int:
        """Deliveries to this session's consumers not yet settled (basic.get ones excluded,
        and settlements held by a transaction still counted), for the global prefetch."""
        return sum(consumer.unacked for consumer in self.consumers.values())

    # -- delivering ----------------------------------------------------------------------

    def track(self, queue: Queue, entry: Entry, consumer: SessionConsumer | None) -> int:
        """Record a delivery that needs settling; returns its tag."""
        tag = self.delivery_tag = self.delivery_tag + 1
        self.unacked[tag] = (queue, entry, consumer)
        if consumer is not None:
            consumer.unacked += 1
        return tag

    def next_tag(self) -> int:
        """A tag for a delivery that needs no settling (no-ack)."""
        tag = self.delivery_tag = self.delivery_tag + 1
        return tag

    # -- settling ------------------------------------------------------------------------

    def take(self, delivery_tag: int, multiple: bool) -> list[tuple[int, Delivery]]:
        """Remove and return the deliveries an ack/nack/reject names (406 if none)."""
        unacked = self.unacked
        if multiple:
            if delivery_tag == 0:
                taken = list(unacked.items())
                unacked.clear()
                return taken
            if delivery_tag not in unacked:  # RabbitMQ's rule, even if lower tags are known
                raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
            # Tags are distinct and in increasing order, so the settled ones are a prefix of at
            # most ``delivery_tag - first + 1`` keys: bisect those, then take and delete the
            # prefix with C-level loops (no bytecode per delivery; this runs for every ack)
            keys = list(islice(unacked, delivery_tag - next(iter(unacked)) + 1))
            count = bisect_right(keys, delivery_tag)
            taken = list(islice(unacked.items(), count))
            if count == len(unacked):
                unacked.clear()
            else:
                _exhaust(map(unacked.__delitem__, keys[:count] if count < len(keys) else keys))
            return taken
        delivery = unacked.pop(delivery_tag, None)
        if delivery is None:
            raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
        return [(delivery_tag, delivery)]

    def settle(self, delivery_tag: int, multiple: bool, outcome: int) -> None:
        """The client settled deliveries up to/at ``delivery_tag`` (held if in a transaction)."""
        taken = self.take(delivery_tag, multiple)
        if self.tx is not None:
            self.tx_settles.append((taken, outcome))  # applied at commit, undone on rollback
            return
        self.apply(taken, outcome)

    def apply(self, taken: list[tuple[int, Delivery]], outcome: int) -> None:
        """Settle taken deliveries with their queues, then hand back the credit they held."""
        ready: dict[SessionConsumer, None] = {}
        if outcome == ACK:
            # one ack_all per run of deliveries from the same queue (usually one run)
            run_queue: Queue | None = None
            run: list[Entry] = []
            for _, (queue, entry, consumer) in taken:
                if queue is not run_queue:
                    if run_queue is not None:
                        run_queue.ack_all(run)
                    run_queue, run = queue, []
                run.append(entry)
                if consumer is not None:
                    consumer.unacked -= 1
                    if consumer.parked:
                        ready[consumer] = None
            if run_queue is not None:
                run_queue.ack_all(run)
        else:
            by_queue: dict[Queue, list[Entry]] = {}
            for _, (queue, entry, consumer) in taken:
                if consumer is not None:
                    consumer.unacked -= 1
                    if consumer.parked:
                        ready[consumer] = None
                by_queue.setdefault(queue, []).append(entry)
            for queue, entries in by_queue.items():
                queue.settle(entries, outcome)
        if self.global_prefetch:
            ready = {c: None for c in self.consumers.values() if c.parked}
        for consumer in ready:
            consumer.queue.consumer_ready(consumer)

    def requeue_all(self) -> None:
        """Every unsettled delivery goes back to its queue (basic.recover, close)."""
        taken = list(self.unacked.items())
        self.unacked.clear()
        if taken:
            self.apply(taken, REQUEUE)

    def pause(self) -> None:
        """No deliveries until ``credit_changed`` (the socket backed up, or the client asked):
        the consumers are parked at once, so a queue stops even in the middle of a run."""
        self.paused = True
        for consumer in self.consumers.values():
            consumer.queue.park(consumer)

    def credit_changed(self) -> None:
        """Prefetch, flow or socket state changed: parked consumers may deliver again."""
        if self.paused:
            return
        for consumer in list(self.consumers.values()):
            if consumer.parked:
                consumer.queue.consumer_ready(consumer)

    # -- consumers -----------------------------------------------------------------------

    def add_consumer(self, consumer: SessionConsumer) -> None:
        consumer.queue.check_consumer(consumer.exclusive)  # 403 before anything is recorded
        self.consumers[consumer.tag] = consumer
        consumer.queue.add_consumer(consumer)

    def remove_consumer(self, tag: str) -> SessionConsumer | None:
        consumer = self.consumers.pop(tag, None)
        if consumer is not None:
            consumer.queue.remove_consumer(consumer)
        return consumer

    def consumer_failed(self, consumer: SessionConsumer, error: BaseException) -> None:
        """A delivery to one of this session's consumers raised: the protocol closes the
        session (override); by default the consumer is just forgotten."""
        self.consumers.pop(consumer.tag, None)

    # -- transactions --------------------------------------------------------------------

    def commit(self) -> None:
        actions, self.tx = self.tx or [], []
        settles, self.tx_settles = self.tx_settles, []
        for action in actions:
            action()
        for taken, outcome in settles:
            self.apply(taken, outcome)

    def rollback(self) -> None:
        self.tx = []
        self.restore_tx_settles()

    def restore_tx_settles(self) -> None:
        """Settlements of a rolled-back transaction never happened: unsettled again."""
        settles, self.tx_settles = self.tx_settles, []
        if not settles:
            return
        restored = dict(self.unacked)
        for taken, _ in settles:
            restored.update(taken)
        self.unacked = dict(sorted(restored.items()))

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Requeue every unsettled delivery, then cancel every consumer."""
        self.closing = True
        self.paused = True  # nothing more for these consumers, requeued messages included
        self.restore_tx_settles()
        consumers = list(self.consumers.values())
        # requeue before detaching: a single-active-consumer queue must have the messages
        # back in order before it hands the queue to the next consumer
        self.requeue_all()
        self.consumers.clear()
        for consumer in consumers:
            consumer.queue.remove_consumer(consumer)

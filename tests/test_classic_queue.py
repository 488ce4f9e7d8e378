"""Unit tests of the ``classic`` queue type, without sockets.

Queues are declared in a real broker's virtual host with the arguments a client would send;
small fake consumers implement the core's ``Consumer`` interface. Time is a fake clock that
stands in for ``time.monotonic`` in the classic queue and the queue base; moving it runs the
broker's timer service by hand (``broker.timers.run_due``), so TTL and ``x-expires`` are tested
without sleeping. Behaviour is RabbitMQ 3.10's; tests marked ``xfail`` name a known difference.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable
from typing import Any

import pytest

import warrenmq
from warrenmq import Consumer, Entry, Message, Properties, Queue
from warrenmq.plugins import classic_queue
from warrenmq.queue import ACK, DISCARD, REJECT, REQUEUE
from warrenmq.vhost import REFUSED, ROUTED, VirtualHost

# -- fixtures and fakes ---------------------------------------------------------------------------


class Clock:
    """``time.monotonic`` for the queues; ``advance`` also runs the timers that fall due."""

    def __init__(self, broker: warrenmq.Broker, now: float = 1000.0) -> None:
        self.broker = broker
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.broker.timers.run_due(self.now)


@pytest.fixture
def broker() -> warrenmq.Broker:
    return warrenmq.Broker(warrenmq.Settings(amqp_port=0))


@pytest.fixture
def clock(broker: warrenmq.Broker, monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(broker)
    monkeypatch.setattr(classic_queue, "_monotonic", fake)
    # the time module's own attribute: a module compiled with mypyc binds its ``time`` import
    # at import, so replacing ``warrenmq.queue.time`` would not reach it
    monkeypatch.setattr(time, "monotonic", fake)
    return fake


@pytest.fixture
def vhost(broker: warrenmq.Broker, clock: Clock) -> VirtualHost:
    return broker.vhosts["/"]


class Sink(Consumer):
    """A consumer that takes what its credit allows and keeps its deliveries to settle."""

    def __init__(
        self,
        tag: str = "c",
        *,
        credit: int | None = None,
        acks: bool = True,
        priority: int = 0,
    ) -> None:
        self.tag = tag
        #: unsettled deliveries allowed (None: no limit)
        self.credit = credit
        self.acks = acks
        self.priority = priority
        self.unacked = 0
        self.received: list[bytes] = []
        #: ``entry.deliveries`` of each delivery (0 for a first no-ack delivery)
        self.deliveries: list[int] = []
        self.held: dict[bytes, tuple[Queue, Entry]] = {}
        #: how many times a queue asked ``has_credit``
        self.credit_checks = 0
        self.cancelled = False

    def has_credit(self) -> bool:
        self.credit_checks += 1
        return self.credit is None or self.unacked < self.credit

    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        assert self.credit is None or self.unacked < self.credit, f"{self.tag}: no credit"
        self.received.append(message.body)
        self.deliveries.append(entry.deliveries if entry is not None else 0)
        if self.acks:
            assert entry is not None
            self.held[message.body] = (queue, entry)
            self.unacked += 1

    @property
    def redelivered(self) -> list[bool]:
        return [count > 1 for count in self.deliveries]

    def settle(self, *bodies: bytes, outcome: int = ACK) -> None:
        """Settle the deliveries of ``bodies`` (in one call per queue), then report credit."""
        by_queue: dict[Queue, list[Entry]] = {}
        for body in bodies:
            queue, entry = self.held.pop(body)
            self.unacked -= 1
            by_queue.setdefault(queue, []).append(entry)
        for queue, entries in by_queue.items():
            queue.settle(entries, outcome)
            queue.consumer_ready(self)

    def grant(self, queue: Queue, credit: int | None) -> None:
        self.credit = credit
        queue.consumer_ready(self)

    def cancelled_by_broker(self, queue: Queue) -> None:
        self.cancelled = True


class Boom(Sink):
    """A consumer whose ``deliver`` raises (a broken protocol session)."""

    def __init__(self, tag: str = "boom") -> None:
        super().__init__(tag)
        self.failures: list[BaseException] = []

    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        raise RuntimeError("socket gone")

    def failed(self, queue: Queue, error: BaseException) -> None:
        self.failures.append(error)


def message(
    body: bytes,
    *,
    ttl: int | None = None,
    priority: int | None = None,
    exchange: str = "",
    routing_key: str = "q",
    headers: dict[str, Any] | None = None,
) -> Message:
    """A message as a protocol engine makes it (``ttl`` set from ``expiration``)."""
    properties = Properties(
        priority=priority,
        expiration=None if ttl is None else str(ttl),
        headers=headers,
    )
    built = Message(exchange, routing_key, body, properties)
    built.ttl = ttl
    return built


def publish(queue: Queue, *bodies: bytes, **options: Any) -> list[bool]:
    return [queue.publish(message(body, **options)) for body in bodies]


def drain(queue: Queue) -> list[bytes]:
    """Every ready message, in the order ``basic.get`` returns them (settled)."""
    bodies = []
    while (got := queue.get(no_ack=True)) is not None:
        bodies.append(got[0].body)
    return bodies


def take(queue: Queue, count: int) -> list[Entry]:
    """``count`` messages by ``basic.get`` with acks: their entries."""
    entries = []
    for _ in range(count):
        got = queue.get(no_ack=False)
        assert got is not None
        entries.append(got[1])
    return entries


def bodies_of(entries: Iterable[Entry]) -> list[bytes]:
    return [entry.message.body for entry in entries]


def dead_letter_queue(vhost: VirtualHost, exchange: str = "dlx", name: str = "dlq") -> Queue:
    """A fanout exchange ``exchange`` and a queue ``name`` bound to it."""
    vhost.declare_exchange(exchange, "fanout")
    dlq = vhost.declare_queue(name)
    vhost.bind(dlq, exchange, "")
    return dlq


def got(queue: Queue) -> Message:
    """The next ready message (which must exist), settled."""
    result = queue.get(no_ack=True)
    assert result is not None, f"queue '{queue.name}' is empty"
    return result[0]


def death(letter: Message, index: int = 0) -> dict[str, Any]:
    deaths = letter.headers["x-death"]
    assert isinstance(deaths, list)
    entry = deaths[index]
    assert isinstance(entry, dict)
    return entry


# -- publish, deliver, get, settle ----------------------------------------------------------------


def test_ready_messages_keep_publish_order(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    assert publish(queue, b"m1", b"m2", b"m3") == [True, True, True]
    view = queue.view()
    assert (view.type, view.messages_ready, view.message_bytes_ready) == ("classic", 3, 6)
    assert drain(queue) == [b"m1", b"m2", b"m3"]
    assert queue.get(no_ack=True) is None


def test_a_waiting_consumer_gets_each_message_as_it_is_published(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    consumer = Sink()
    queue.add_consumer(consumer)
    publish(queue, b"m1", b"m22")
    assert consumer.received == [b"m1", b"m22"]
    assert consumer.redelivered == [False, False]
    view = queue.view()
    assert (view.messages_ready, view.messages_unacknowledged) == (0, 2)
    assert (view.message_bytes_ready, view.message_bytes_unacknowledged) == (0, 5)


def test_a_new_consumer_gets_the_backlog_in_order(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1", b"m2", b"m3")
    consumer = Sink()
    queue.add_consumer(consumer)
    assert consumer.received == [b"m1", b"m2", b"m3"]
    assert queue.view().messages_ready == 0


def test_ack_forgets_the_message(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    consumer = Sink()
    queue.add_consumer(consumer)
    publish(queue, b"m1", b"m2")
    consumer.settle(b"m1", b"m2")
    view = queue.view()
    assert (view.messages, view.message_bytes_unacknowledged) == (0, 0)
    assert (view.published, view.delivered, view.acknowledged) == (2, 2, 2)


def test_settling_a_settled_delivery_again_changes_nothing(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1")
    [entry] = take(queue, 1)
    queue.settle([entry], ACK)
    for outcome in (ACK, REQUEUE, REJECT, DISCARD):
        queue.settle([entry], outcome)
    view = queue.view()
    assert (view.messages_ready, view.messages_unacknowledged, view.acknowledged) == (0, 0, 1)


def test_get_with_and_without_ack(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1", b"m2")
    first = queue.get(no_ack=True)
    assert first is not None and first[0].body == b"m1"
    assert queue.view().messages_unacknowledged == 0
    second = queue.get(no_ack=False)
    assert second is not None
    message_2, entry = second
    assert message_2.body == b"m2" and not entry.redelivered
    assert (queue.view().messages_ready, queue.view().messages_unacknowledged) == (0, 1)
    queue.settle([entry], ACK)
    assert queue.view().messages == 0
    assert queue.get(no_ack=False) is None


def test_a_no_ack_consumer_leaves_nothing_unacknowledged(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1")
    consumer = Sink(acks=False)
    queue.add_consumer(consumer)
    publish(queue, b"m2")
    assert consumer.received == [b"m1", b"m2"]
    view = queue.view()
    assert (view.messages, view.delivered) == (0, 2)


def test_requeue_redelivers_with_the_redelivered_flag(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    consumer = Sink(credit=1)
    queue.add_consumer(consumer)
    publish(queue, b"m1", b"m2")
    assert consumer.received == [b"m1"]
    consumer.settle(b"m1", outcome=REQUEUE)
    assert consumer.received == [b"m1", b"m1"], "back at the head, before m2"
    assert consumer.deliveries == [1, 2]
    assert consumer.redelivered == [False, True]
    consumer.settle(b"m1")
    assert consumer.received[-1] == b"m2" and consumer.redelivered[-1] is False
    view = queue.view()
    assert (view.delivered, view.redelivered, view.acknowledged) == (3, 1, 1)


def test_a_requeued_message_got_again_is_redelivered(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1")
    [entry] = take(queue, 1)
    queue.settle([entry], REQUEUE)
    result = queue.get(no_ack=False)
    assert result is not None
    assert result[1] is entry and entry.redelivered and entry.deliveries == 2


def test_reject_without_a_dead_letter_exchange_drops_the_message(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1", b"m2")
    entries = take(queue, 2)
    queue.settle(entries, REJECT)
    view = queue.view()
    assert (view.messages, view.dead_lettered, view.acknowledged) == (0, 0, 0)


def test_reject_with_a_dead_letter_exchange_dead_letters_the_message(vhost: VirtualHost) -> None:
    dlq = dead_letter_queue(vhost)
    queue = vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx"})
    publish(queue, b"m1", b"m2")
    queue.settle(take(queue, 2), REJECT)
    assert queue.view().messages == 0
    assert queue.view().dead_lettered == 2
    first = got(dlq)
    assert (first.body, death(first)["reason"]) == (b"m1", "rejected")
    assert got(dlq).body == b"m2"


def test_discard_drops_the_message_even_with_a_dead_letter_exchange(vhost: VirtualHost) -> None:
    dlq = dead_letter_queue(vhost)
    queue = vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx"})
    publish(queue, b"m1")
    queue.settle(take(queue, 1), DISCARD)
    assert queue.view().messages == 0
    assert queue.view().dead_lettered == 0
    assert dlq.view().messages_ready == 0


def test_counters_over_a_message_lifecycle(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    consumer = Sink(credit=2)
    queue.add_consumer(consumer)
    publish(queue, b"a", b"bb", b"ccc")
    view = queue.view()
    assert (view.published, view.delivered, view.messages_ready) == (3, 2, 1)
    assert (view.messages_unacknowledged, view.message_bytes_unacknowledged) == (2, 3)
    assert view.message_bytes_ready == 3
    consumer.settle(b"a")  # then ccc is delivered
    consumer.settle(b"bb", outcome=REQUEUE)  # redelivered at once (credit left)
    assert consumer.received == [b"a", b"bb", b"ccc", b"bb"]
    view = queue.view()
    assert (view.delivered, view.redelivered, view.acknowledged) == (4, 1, 1)
    assert (view.messages_ready, view.messages_unacknowledged) == (0, 2)
    consumer.settle(b"bb", b"ccc")
    view = queue.view()
    assert (view.acknowledged, view.messages, view.message_bytes_unacknowledged) == (3, 0, 0)
    assert (view.expired, view.dead_lettered, view.dropped, view.rejected_publishes) == (0,) * 4


# -- requeue goes back to the original position ------------------------------------------------


@pytest.mark.parametrize(
    "order",
    [[3], [1], [5], [1, 3, 5], [5, 3, 1], [2, 5, 1, 4, 3], [4, 2], [1, 2, 3, 4, 5]],
    ids=str,
)
def test_requeued_messages_go_back_to_their_place(vhost: VirtualHost, order: list[int]) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, *(b"m%d" % n for n in range(1, 8)))
    entries = take(queue, 5)  # m6 and m7 stay ready
    for n in order:
        queue.settle([entries[n - 1]], REQUEUE)
    assert drain(queue) == [b"m%d" % n for n in [*sorted(order), 6, 7]]


def test_requeue_in_one_settle_in_reverse_order(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1", b"m2", b"m3", b"m4")
    entries = take(queue, 3)
    queue.settle(list(reversed(entries)), REQUEUE)
    assert drain(queue) == [b"m1", b"m2", b"m3", b"m4"]


def test_requeues_interleaved_with_gets_and_publishes(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1", b"m2", b"m3", b"m4")
    e1, e2, e3 = take(queue, 3)
    queue.settle([e3], REQUEUE)
    [again] = take(queue, 1)
    assert again is e3
    publish(queue, b"m5")
    queue.settle([e1], REQUEUE)
    queue.settle([e3], REQUEUE)
    [first] = take(queue, 1)
    assert first is e1
    queue.settle([e2], REQUEUE)
    queue.settle([e1], REQUEUE)
    assert drain(queue) == [b"m1", b"m2", b"m3", b"m4", b"m5"]


def test_requeue_to_a_consumer_waiting_for_credit(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    holder = Sink("holder")
    queue.add_consumer(holder)
    publish(queue, b"m1", b"m2", b"m3")
    queue.remove_consumer(holder)
    other = Sink("other", credit=0)
    queue.add_consumer(other)
    publish(queue, b"m4")
    holder.settle(b"m3", outcome=REQUEUE)
    holder.settle(b"m1", outcome=REQUEUE)
    other.grant(queue, None)
    assert other.received == [b"m1", b"m3", b"m4"]
    assert other.redelivered == [True, True, False]


# -- TTL ------------------------------------------------------------------------------------------


def test_queue_ttl_expires_ready_messages(vhost: VirtualHost, clock: Clock) -> None:
    queue = vhost.declare_queue("q", arguments={"x-message-ttl": 1000})
    publish(queue, b"m1")
    clock.advance(0.5)
    publish(queue, b"m2")
    clock.advance(0.25)
    assert queue.view().messages_ready == 2
    clock.advance(0.25)
    assert (queue.view().messages_ready, queue.view().expired) == (1, 1)
    clock.advance(0.5)
    assert (queue.view().messages_ready, queue.view().expired) == (0, 2)
    assert queue.view().message_bytes_ready == 0


def test_per_message_ttl(vhost: VirtualHost, clock: Clock) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"short", ttl=100)
    publish(queue, b"forever")
    clock.advance(0.1)
    assert drain(queue) == [b"forever"]
    assert queue.view().expired == 1


@pytest.mark.parametrize(("queue_ttl", "message_ttl"), [(1000, 5000), (5000, 1000)])
def test_the_lower_ttl_wins(
    vhost: VirtualHost, clock: Clock, queue_ttl: int, message_ttl: int
) -> None:
    queue = vhost.declare_queue("q", arguments={"x-message-ttl": queue_ttl})
    publish(queue, b"m", ttl=message_ttl)
    clock.advance(0.75)
    assert queue.view().messages_ready == 1
    clock.advance(0.25)
    assert queue.view().messages_ready == 0


def test_ttl_zero_reaches_a_waiting_consumer(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-message-ttl": 0})
    consumer = Sink()
    queue.add_consumer(consumer)
    publish(queue, b"m1")
    publish(queue, b"m2", ttl=0)
    assert consumer.received == [b"m1", b"m2"]
    assert queue.view().expired == 0


def test_ttl_zero_without_a_waiting_consumer_expires_at_once(vhost: VirtualHost) -> None:
    dlq = dead_letter_queue(vhost)
    queue = vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx"})
    busy = Sink(credit=0)
    queue.add_consumer(busy)
    assert publish(queue, b"m1", ttl=0) == [True]
    assert (queue.view().messages_ready, queue.view().expired) == (0, 1)
    letter = got(dlq)
    assert letter.body == b"m1"
    assert (death(letter)["reason"], death(letter)["original-expiration"]) == ("expired", "0")
    busy.grant(queue, None)
    assert busy.received == []


def test_a_message_behind_a_longer_lived_one_expires_on_time(
    vhost: VirtualHost, clock: Clock
) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"long", ttl=10_000)
    publish(queue, b"short", ttl=1000)
    publish(queue, b"mid", ttl=5000)
    clock.advance(1)
    assert (queue.view().messages_ready, queue.view().expired) == (2, 1)
    clock.advance(4)
    assert (queue.view().messages_ready, queue.view().expired) == (1, 2)
    assert drain(queue) == [b"long"]


def test_expired_messages_are_dead_lettered_by_the_timer(vhost: VirtualHost, clock: Clock) -> None:
    dlq = dead_letter_queue(vhost)
    queue = vhost.declare_queue(
        "q", arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx"}
    )
    publish(queue, b"m1", b"m2")
    clock.advance(1)
    assert bodies_of(take(dlq, 2)) == [b"m1", b"m2"]
    assert queue.view().dead_lettered == 2


def test_an_expired_message_is_never_delivered(vhost: VirtualHost, clock: Clock) -> None:
    """Even if the timer has not run yet: delivery checks the deadline itself."""
    queue = vhost.declare_queue("q")
    publish(queue, b"old", ttl=1000)
    publish(queue, b"new")
    clock.now += 2  # no timer run
    consumer = Sink()
    queue.add_consumer(consumer)
    assert consumer.received == [b"new"]
    assert queue.view().expired == 1


def test_basic_get_never_returns_an_expired_message(vhost: VirtualHost, clock: Clock) -> None:
    queue = vhost.declare_queue("q", arguments={"x-message-ttl": 1000})
    publish(queue, b"m1")
    clock.now += 1  # no timer run
    assert queue.get(no_ack=False) is None
    assert queue.view().expired == 1


def test_ttl_counts_from_publish_across_a_requeue(vhost: VirtualHost, clock: Clock) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1", ttl=2000)
    entries = take(queue, 1)
    clock.advance(1)
    queue.settle(entries, REQUEUE)
    assert queue.view().messages_ready == 1
    clock.advance(1)
    assert (queue.view().messages_ready, queue.view().expired) == (0, 1)


def test_a_delivery_requeued_after_its_ttl_expires(vhost: VirtualHost, clock: Clock) -> None:
    dlq = dead_letter_queue(vhost)
    queue = vhost.declare_queue(
        "q", arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx"}
    )
    consumer = Sink()
    queue.add_consumer(consumer)
    publish(queue, b"m1")
    clock.advance(5)
    assert queue.view().messages_unacknowledged == 1, "a delivered message does not expire"
    consumer.settle(b"m1", outcome=REQUEUE)
    assert consumer.received == [b"m1"]
    view = queue.view()
    assert (view.messages, view.expired) == (0, 1)
    assert death(got(dlq))["reason"] == "expired"


def test_many_expiring_messages_leave_a_correct_queue(vhost: VirtualHost, clock: Clock) -> None:
    queue = vhost.declare_queue("q")
    for n in range(3000):
        queue.publish(message(b"%d" % n, ttl=1000 if n % 3 else None))
    clock.advance(1)
    assert queue.view().messages_ready == 1000
    assert drain(queue) == [b"%d" % n for n in range(0, 3000, 3)]


# -- length limits ------------------------------------------------------------------------------


def test_max_length_drops_the_head(vhost: VirtualHost) -> None:
    dlq = dead_letter_queue(vhost)
    queue = vhost.declare_queue("q", arguments={"x-max-length": 2, "x-dead-letter-exchange": "dlx"})
    assert publish(queue, b"m1", b"m2", b"m3", b"m4") == [True] * 4
    assert drain(queue) == [b"m3", b"m4"]
    assert queue.view().dropped == 2
    letter = got(dlq)
    assert (letter.body, death(letter)["reason"]) == (b"m1", "maxlen")


def test_max_length_bytes_drops_the_head(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-max-length-bytes": 10})
    publish(queue, b"aaaa", b"bbbb", b"cccc")
    view = queue.view()
    assert (view.messages_ready, view.message_bytes_ready, view.dropped) == (2, 8, 1)
    assert drain(queue) == [b"bbbb", b"cccc"]


def test_max_length_zero_keeps_nothing_but_serves_a_waiting_consumer(
    vhost: VirtualHost,
) -> None:
    queue = vhost.declare_queue("q", arguments={"x-max-length": 0})
    publish(queue, b"m1")
    assert queue.view().messages_ready == 0
    consumer = Sink()
    queue.add_consumer(consumer)
    publish(queue, b"m2")
    assert consumer.received == [b"m2"]


@pytest.mark.parametrize("overflow", ["reject-publish", "reject-publish-dlx"])
def test_reject_publish_refuses_when_full(vhost: VirtualHost, overflow: str) -> None:
    dlq = dead_letter_queue(vhost)
    queue = vhost.declare_queue(
        "q",
        arguments={"x-max-length": 2, "x-overflow": overflow, "x-dead-letter-exchange": "dlx"},
    )
    assert publish(queue, b"m1", b"m2", b"m3") == [True, True, False]
    assert drain(queue) == [b"m1", b"m2"]
    assert queue.view().rejected_publishes == 1
    assert queue.view().dropped == 0
    if overflow == "reject-publish-dlx":
        letter = got(dlq)
        assert (letter.body, death(letter)["reason"]) == (b"m3", "maxlen")
    assert dlq.view().messages_ready == 0


def test_reject_publish_by_bytes(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue(
        "q", arguments={"x-max-length-bytes": 10, "x-overflow": "reject-publish"}
    )
    assert publish(queue, b"aaaa", b"bbbb", b"ccc", b"dd") == [True, True, False, True]
    assert drain(queue) == [b"aaaa", b"bbbb", b"dd"]


def test_refused_publish_is_reported_by_the_virtual_host(vhost: VirtualHost) -> None:
    vhost.declare_queue("q", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    assert vhost.publish("", message(b"m1")) == ROUTED
    assert vhost.publish("", message(b"m2")) == REFUSED


@pytest.mark.parametrize("overflow", ["drop-head", "reject-publish"])
def test_unacknowledged_messages_do_not_count_against_the_limit(
    vhost: VirtualHost, overflow: str
) -> None:
    queue = vhost.declare_queue("q", arguments={"x-max-length": 1, "x-overflow": overflow})
    consumer = Sink(credit=1)
    queue.add_consumer(consumer)
    publish(queue, b"m1")
    assert publish(queue, b"m2") == [True]
    view = queue.view()
    assert (view.messages_ready, view.messages_unacknowledged, view.dropped) == (1, 1, 0)


def test_requeue_over_max_length_drops_the_head(vhost: VirtualHost) -> None:
    dlq = dead_letter_queue(vhost)
    queue = vhost.declare_queue("q", arguments={"x-max-length": 1, "x-dead-letter-exchange": "dlx"})
    publish(queue, b"m1")
    entries = take(queue, 1)
    publish(queue, b"m2")
    queue.settle(entries, REQUEUE)
    assert queue.view().messages_ready == 1
    assert drain(queue) == [b"m2"]
    assert death(got(dlq))["reason"] == "maxlen"


@pytest.mark.parametrize(
    "limit", [{"x-max-length": 0}, {"x-max-length-bytes": 4}], ids=["length", "bytes"]
)
def test_reject_publish_refuses_even_with_a_waiting_consumer(
    vhost: VirtualHost, limit: dict[str, int]
) -> None:
    queue = vhost.declare_queue("q", arguments={**limit, "x-overflow": "reject-publish"})
    consumer = Sink()
    queue.add_consumer(consumer)
    assert publish(queue, b"too big") == [False]
    assert consumer.received == []


def test_a_ttl_zero_message_to_a_full_reject_publish_queue_is_refused(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    publish(queue, b"m1")
    assert publish(queue, b"m2", ttl=0) == [False]
    assert queue.view().rejected_publishes == 1


# -- dead-lettering -----------------------------------------------------------------------------


def test_x_death_records_the_first_death(vhost: VirtualHost) -> None:
    dlq = dead_letter_queue(vhost)
    vhost.declare_exchange("src", "direct")
    queue = vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx"})
    vhost.bind(queue, "src", "rk")
    original = message(
        b"payload", ttl=60_000, exchange="src", routing_key="rk", headers={"app": "kept"}
    )
    assert vhost.publish("src", original) == ROUTED
    queue.settle(take(queue, 1), REJECT)
    letter = got(dlq)
    assert letter.body == b"payload"
    assert (letter.exchange, letter.routing_key) == ("dlx", "rk")
    headers = letter.headers
    assert headers["app"] == "kept"
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["x-first-death-queue"] == "q"
    assert headers["x-first-death-exchange"] == "src"
    [entry] = headers["x-death"]
    assert entry["count"] == 1
    assert entry["reason"] == "rejected"
    assert entry["queue"] == "q"
    assert entry["exchange"] == "src"
    assert entry["routing-keys"] == ["rk"]
    assert entry["original-expiration"] == "60000"
    assert isinstance(entry["time"], datetime.datetime)
    assert letter.properties.expiration is None, "the TTL does not follow the message"
    assert letter.ttl is None
    assert original.headers == {"app": "kept"}, "the original message is not changed"


def test_no_original_expiration_without_a_per_message_ttl(vhost: VirtualHost) -> None:
    dlq = dead_letter_queue(vhost)
    queue = vhost.declare_queue(
        "q", arguments={"x-dead-letter-exchange": "dlx", "x-message-ttl": 10}
    )
    publish(queue, b"m1")
    queue.settle(take(queue, 1), REJECT)
    assert "original-expiration" not in death(got(dlq))


def test_dead_letter_routing_key(vhost: VirtualHost) -> None:
    vhost.declare_exchange("dlx", "direct")
    dead = vhost.declare_queue("dead")
    vhost.bind(dead, "dlx", "dead-key")
    queue = vhost.declare_queue(
        "q",
        arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead-key"},
    )
    publish(queue, b"m1")
    queue.settle(take(queue, 1), REJECT)
    letter = got(dead)
    assert letter.routing_key == "dead-key"
    assert death(letter)["routing-keys"] == ["q"], "x-death keeps the original routing key"


def test_the_default_exchange_as_dead_letter_exchange(vhost: VirtualHost) -> None:
    dead = vhost.declare_queue("dead")
    queue = vhost.declare_queue(
        "q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
    )
    publish(queue, b"m1")
    queue.settle(take(queue, 1), REJECT)
    assert got(dead).body == b"m1"


def test_a_missing_dead_letter_exchange_drops_the_message(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "nowhere"})
    other = vhost.declare_queue("other")
    publish(queue, b"m1")
    queue.settle(take(queue, 1), REJECT)
    assert queue.view().messages == 0
    assert other.view().messages == 0
    assert "nowhere" not in vhost.exchanges


def _two_queue_loop(vhost: VirtualHost, *, first_ttl: int | None) -> tuple[Queue, Queue]:
    """q1 dead-letters to q2 and q2 back to q1, through the default exchange; q2 has a TTL."""
    arguments: dict[str, Any] = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "q2",
    }
    if first_ttl is not None:
        arguments["x-message-ttl"] = first_ttl
    q1 = vhost.declare_queue("q1", arguments=arguments)
    q2 = vhost.declare_queue(
        "q2",
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "q1",
            "x-message-ttl": 1000,
        },
    )
    return q1, q2


def test_the_same_death_again_counts_up_and_moves_first(vhost: VirtualHost) -> None:
    q1, q2 = _two_queue_loop(vhost, first_ttl=None)
    publish(q1, b"m", routing_key="q1")
    q1.settle(take(q1, 1), REJECT)  # -> q2
    q2.settle(take(q2, 1), REJECT)  # -> q1 (a rejection is never a cycle)
    q1.settle(take(q1, 1), REJECT)  # -> q2
    letter = got(q2)
    deaths = letter.headers["x-death"]
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [
        ("q1", "rejected", 2),
        ("q2", "rejected", 1),
    ]
    assert deaths[0]["routing-keys"] == ["q1"], "the first death's details are kept"
    assert letter.headers["x-first-death-queue"] == "q1"


def test_expiry_around_a_cycle_is_dropped(vhost: VirtualHost, clock: Clock) -> None:
    q1, q2 = _two_queue_loop(vhost, first_ttl=1000)
    publish(q1, b"m", routing_key="q1")
    clock.advance(1)  # q1 -> q2
    assert q2.view().messages_ready == 1
    clock.advance(1)  # q2 -> q1 would close a cycle without a rejection: dropped
    assert (q1.view().messages, q2.view().messages) == (0, 0)
    clock.advance(10)
    assert (q1.view().messages, q2.view().messages) == (0, 0)


def test_a_queue_dead_lettering_expired_messages_to_itself_drops_them(
    vhost: VirtualHost, clock: Clock
) -> None:
    queue = vhost.declare_queue(
        "q", arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": ""}
    )
    publish(queue, b"m")
    clock.advance(1)
    assert queue.view().messages == 0
    assert queue.view().expired == 1


def test_a_cycle_with_a_rejection_goes_round(vhost: VirtualHost, clock: Clock) -> None:
    q1, q2 = _two_queue_loop(vhost, first_ttl=None)
    publish(q1, b"m", routing_key="q1")
    q1.settle(take(q1, 1), REJECT)  # -> q2
    clock.advance(1)  # q2 expires it -> q1: the rejection breaks the cycle
    letter = got(q1)
    assert [(d["queue"], d["reason"]) for d in letter.headers["x-death"]] == [
        ("q2", "expired"),
        ("q1", "rejected"),
    ]


def test_a_rejected_message_may_return_to_its_own_queue(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue(
        "q", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q"}
    )
    publish(queue, b"m1", b"m2")
    [first] = take(queue, 1)
    queue.settle([first], REJECT)
    assert drain(queue) == [b"m2", b"m1"], "republished: at the tail"


# -- x-max-priority -----------------------------------------------------------------------------


def test_priority_order_with_capping(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-max-priority": 5})
    for body, priority in [(b"p1", 1), (b"none", None), (b"p9", 9), (b"p5", 5), (b"p3", 3)]:
        queue.publish(message(body, priority=priority))
    publish(queue, b"p0", priority=0)
    assert drain(queue) == [b"p9", b"p5", b"p3", b"p1", b"none", b"p0"], (
        "9 is capped to 5 and keeps its publish order among 5s"
    )


def test_priority_requeue_goes_back_to_its_place_in_its_level(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-max-priority": 2})
    for body, priority in [(b"a0", 0), (b"b2", 2), (b"c1", 1), (b"d2", 2), (b"e0", 0)]:
        queue.publish(message(body, priority=priority))
    entries = take(queue, 4)
    assert bodies_of(entries) == [b"b2", b"d2", b"c1", b"a0"]
    queue.settle(list(reversed(entries)), REQUEUE)
    publish(queue, b"f2", priority=2)
    assert drain(queue) == [b"b2", b"d2", b"f2", b"c1", b"a0", b"e0"]


def test_priority_backlog_goes_to_a_consumer_highest_first(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-max-priority": 10})
    consumer = Sink(credit=0)
    queue.add_consumer(consumer)
    for n, priority in enumerate([1, 7, 3, 7, 10]):
        queue.publish(message(b"m%d" % n, priority=priority))
    consumer.grant(queue, 3)
    assert consumer.received == [b"m4", b"m1", b"m3"]
    consumer.settle(b"m1", outcome=REQUEUE)
    assert consumer.received[-1] == b"m1"


def test_priority_queue_with_length_limit_drops_the_highest(vhost: VirtualHost) -> None:
    """drop-head drops the head: in a priority queue, the next message it would deliver."""
    queue = vhost.declare_queue("q", arguments={"x-max-priority": 3, "x-max-length": 2})
    publish(queue, b"low", priority=0)
    publish(queue, b"high", priority=3)
    publish(queue, b"mid", priority=1)
    assert drain(queue) == [b"mid", b"low"]


# -- consumers: single active, priorities, parking ------------------------------------------------


def test_single_active_consumer_takes_over(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-single-active-consumer": True})
    first, second = Sink("first"), Sink("second")
    queue.add_consumer(first)
    queue.add_consumer(second)
    publish(queue, b"m1", b"m2")
    assert (first.received, second.received) == ([b"m1", b"m2"], [])
    assert second.credit_checks == 0, "a waiting consumer is not even asked"
    assert [view.active for view in queue.consumer_views()] == [True, False]
    queue.consumer_ready(second)
    assert second.received == []
    queue.remove_consumer(first)
    publish(queue, b"m3")
    assert second.received == [b"m3"]
    first.settle(b"m1", b"m2", outcome=REQUEUE)
    assert second.received == [b"m3", b"m1", b"m2"]
    assert second.redelivered == [False, True, True]
    assert queue.consumer_views()[0].active


def test_single_active_consumer_waiting_backlog_goes_to_the_next(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-single-active-consumer": True})
    first, second, third = Sink("first", credit=1), Sink("second"), Sink("third")
    for consumer in (first, second, third):
        queue.add_consumer(consumer)
    publish(queue, b"m1", b"m2", b"m3")
    assert first.received == [b"m1"]
    queue.remove_consumer(first)
    assert (second.received, third.received) == ([b"m2", b"m3"], [])


def test_consumer_priorities(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    low = Sink("low", priority=-1)
    high = Sink("high", credit=1, priority=5)
    normal = Sink("normal", credit=1)
    for consumer in (low, high, normal):
        queue.add_consumer(consumer)
    publish(queue, b"m1", b"m2", b"m3", b"m4")
    assert (high.received, normal.received, low.received) == (
        [b"m1"],
        [b"m2"],
        [b"m3", b"m4"],
    )
    high.settle(b"m1")
    normal.settle(b"m2")
    publish(queue, b"m5", b"m6", b"m7")
    assert (high.received[1:], normal.received[1:], low.received[2:]) == (
        [b"m5"],
        [b"m6"],
        [b"m7"],
    )


def test_consumers_of_one_priority_take_turns(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    a, b = Sink("a", priority=2), Sink("b", priority=2)
    low = Sink("low")
    for consumer in (low, a, b):
        queue.add_consumer(consumer)
    publish(queue, b"m1", b"m2", b"m3", b"m4")
    assert (a.received, b.received, low.received) == ([b"m1", b"m3"], [b"m2", b"m4"], [])
    queue.remove_consumer(a)
    queue.remove_consumer(b)
    publish(queue, b"m5")
    assert low.received == [b"m5"]


def test_a_consumer_without_credit_is_parked_until_ready(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    consumer = Sink(credit=0)
    queue.add_consumer(consumer)
    publish(queue, b"m1")
    assert consumer.credit_checks == 1 and consumer.parked
    publish(queue, b"m2", b"m3")
    queue.dispatch()
    assert consumer.credit_checks == 1, "a parked consumer is not asked again"
    consumer.credit = None  # credit without telling the queue: still parked
    publish(queue, b"m4")
    assert consumer.received == []
    queue.consumer_ready(consumer)
    assert consumer.received == [b"m1", b"m2", b"m3", b"m4"]
    assert not consumer.parked


class RunSink(Sink):
    """A consumer that reports its whole credit at once, and whose socket backs up (it parks
    itself, as a session's ``pause`` does) after ``room`` deliveries."""

    def __init__(self, credit: int, room: int | None = None) -> None:
        super().__init__("run", credit=credit)
        self.room = room
        self.queue: Queue | None = None

    def available_credit(self) -> int:
        self.credit_checks += 1
        return max(self.credit - self.unacked, 0) if self.credit is not None else 1 << 62

    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        super().deliver(queue, message, entry)
        if self.room is not None and len(self.received) >= self.room:
            queue.park(self)


def test_a_sole_consumer_gets_a_run_as_long_as_its_credit(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, *(b"m%d" % n for n in range(10)))
    consumer = RunSink(credit=4)
    queue.add_consumer(consumer)
    assert consumer.received == [b"m0", b"m1", b"m2", b"m3"]
    assert consumer.credit_checks == 2, "asked once for the run, once to find it spent"
    assert consumer.parked
    consumer.settle(*consumer.received)
    assert consumer.received[4:] == [b"m4", b"m5", b"m6", b"m7"]


def test_a_run_stops_when_the_consumer_is_parked_during_it(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, *(b"m%d" % n for n in range(10)))
    consumer = RunSink(credit=100, room=3)
    queue.add_consumer(consumer)
    assert consumer.received == [b"m0", b"m1", b"m2"]
    assert queue.view().messages_ready == 7
    consumer.room = None
    queue.consumer_ready(consumer)
    assert len(consumer.received) == 10


def test_consumer_ready_for_a_consumer_that_is_not_parked_is_harmless(
    vhost: VirtualHost,
) -> None:
    queue = vhost.declare_queue("q")
    consumer = Sink()
    queue.add_consumer(consumer)
    queue.consumer_ready(consumer)
    queue.consumer_ready(Sink("stranger"))
    publish(queue, b"m1")
    assert consumer.received == [b"m1"]


@pytest.mark.parametrize("policy", ["round-robin", "fair"])
@pytest.mark.parametrize("position", [0, 5000, 9999])
def test_dispatch_does_not_scan_consumers_without_credit(
    vhost: VirtualHost, policy: str, position: int
) -> None:
    queue = vhost.declare_queue("q", arguments={"x-dispatch": policy})
    consumers = [Sink(f"c{n}", credit=0) for n in range(10_000)]
    able = consumers[position] = Sink("able", acks=False)
    for consumer in consumers:
        queue.add_consumer(consumer)
    publish(queue, *(b"m%d" % n for n in range(200)))
    assert len(able.received) == 200
    assert max(c.credit_checks for c in consumers if c is not able) <= 1
    assert sum(c.credit_checks for c in consumers if c is not able) <= 9999


def test_an_exclusive_consumer_keeps_others_off(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    only = Sink("only")
    only.exclusive = True
    queue.add_consumer(only)
    with pytest.raises(warrenmq.BrokerError) as refused:
        queue.add_consumer(Sink("other"))
    assert refused.value.reply_code == 403
    queue.remove_consumer(only)
    queue.add_consumer(Sink("other"))


# -- x-expires --------------------------------------------------------------------------------


def test_an_unused_queue_expires(vhost: VirtualHost, clock: Clock) -> None:
    queue = vhost.declare_queue("q", arguments={"x-expires": 1000})
    publish(queue, b"m1")  # publishing is not using
    clock.advance(0.75)
    assert "q" in vhost.queues
    clock.advance(0.25)
    assert "q" not in vhost.queues
    assert queue.deleted


def test_basic_get_keeps_a_queue_alive(vhost: VirtualHost, clock: Clock) -> None:
    queue = vhost.declare_queue("q", arguments={"x-expires": 1000})
    clock.advance(0.75)
    assert queue.get(no_ack=True) is None
    clock.advance(0.75)
    assert "q" in vhost.queues
    clock.advance(0.25)
    assert "q" not in vhost.queues


def test_a_consumer_keeps_a_queue_alive(vhost: VirtualHost, clock: Clock) -> None:
    queue = vhost.declare_queue("q", arguments={"x-expires": 1000})
    consumer = Sink()
    queue.add_consumer(consumer)
    clock.advance(60)
    assert "q" in vhost.queues
    queue.remove_consumer(consumer)
    clock.advance(0.75)
    assert "q" in vhost.queues
    clock.advance(0.25)
    assert "q" not in vhost.queues


def test_redeclaring_keeps_a_queue_alive(vhost: VirtualHost, clock: Clock) -> None:
    vhost.declare_queue("q", arguments={"x-expires": 1000})
    clock.advance(0.75)
    vhost.declare_queue("q", arguments={"x-expires": 1000})
    clock.advance(0.75)
    assert "q" in vhost.queues
    clock.advance(0.25)
    assert "q" not in vhost.queues


def test_a_passive_declare_keeps_a_queue_alive(vhost: VirtualHost, clock: Clock) -> None:
    vhost.declare_queue("q", arguments={"x-expires": 1000})
    clock.advance(0.75)
    vhost.declare_queue("q", passive=True)
    clock.advance(0.75)
    assert "q" in vhost.queues


def test_an_expired_queue_leaves_no_timers(
    vhost: VirtualHost, broker: warrenmq.Broker, clock: Clock
) -> None:
    vhost.declare_queue("q", arguments={"x-expires": 1000, "x-message-ttl": 5000})
    vhost.publish("", message(b"m1"))
    clock.advance(1)
    assert "q" not in vhost.queues
    assert len(broker.timers) == 0


# -- deletion -----------------------------------------------------------------------------------


def test_deleting_a_queue_cancels_its_consumers_and_ignores_late_settles(
    vhost: VirtualHost,
) -> None:
    dlq = dead_letter_queue(vhost)
    queue = vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx"})
    consumer = Sink(credit=1)
    queue.add_consumer(consumer)
    publish(queue, b"m1", b"m2")
    assert vhost.delete_queue("q") == 1
    assert consumer.cancelled
    consumer.settle(b"m1", outcome=REJECT)
    assert dlq.view().messages == 0
    assert queue.view().messages == 0


# -- isolation: a consumer that fails ------------------------------------------------------------


def test_a_failing_consumer_is_detached_and_the_next_one_gets_the_message(
    vhost: VirtualHost,
) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1")
    [entry] = take(queue, 1)
    boom, good = Boom(), Sink("good")
    queue.add_consumer(boom)
    queue.add_consumer(good)
    queue.settle([entry], REQUEUE)  # boom's turn first
    assert len(boom.failures) == 1 and isinstance(boom.failures[0], RuntimeError)
    assert boom not in queue.consumers
    assert good.received == [b"m1"]
    assert good.deliveries == [2], "delivered once before (the get), not counting the failure"
    view = queue.view()
    assert (view.delivered, view.redelivered, view.messages_unacknowledged) == (2, 1, 1)


def test_a_failing_consumer_leaves_the_backlog_in_the_queue(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1", b"m2")
    boom = Boom()
    queue.add_consumer(boom)
    assert boom.failures and boom not in queue.consumers
    view = queue.view()
    assert (view.messages_ready, view.messages_unacknowledged, view.delivered) == (2, 0, 0)
    good = Sink("good", acks=False)
    queue.add_consumer(good)
    assert good.received == [b"m1", b"m2"]
    # m1's failed attempt does not count (its entry says first delivery); m2 was never tried
    assert good.deliveries == [1, 0], "the failed attempt does not count as a delivery"
    assert good.redelivered == [False, False]


def test_a_failing_consumer_on_publish_does_not_strand_the_message(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    boom, good = Boom(), Sink("good")
    queue.add_consumer(boom)
    queue.add_consumer(good)
    publish(queue, b"m1")
    assert boom.failures and boom not in queue.consumers
    assert good.received == [b"m1"]
    publish(queue, b"m2")
    assert good.received == [b"m1", b"m2"]


def test_a_failing_consumer_on_publish_keeps_the_message_ready(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    boom = Boom()
    queue.add_consumer(boom)
    publish(queue, b"m1")
    assert boom.failures and boom not in queue.consumers
    view = queue.view()
    assert (view.messages_ready, view.messages_unacknowledged, view.delivered) == (1, 0, 0)
    good = Sink("good")
    queue.add_consumer(good)
    assert good.received == [b"m1"] and good.redelivered == [False]


def test_a_failing_consumer_does_not_stop_the_other_queues_of_a_fanout(
    vhost: VirtualHost,
) -> None:
    vhost.declare_exchange("fan", "fanout")
    broken = vhost.declare_queue("broken")
    healthy = vhost.declare_queue("healthy")
    vhost.bind(broken, "fan", "")
    vhost.bind(healthy, "fan", "")
    boom, good = Boom(), Sink("good")
    broken.add_consumer(boom)
    healthy.add_consumer(good)
    assert vhost.publish("fan", message(b"m1", exchange="fan")) == ROUTED
    assert good.received == [b"m1"]
    assert boom.failures
    assert broken.view().messages_ready == 1

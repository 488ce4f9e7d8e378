"""Unit tests of the built-in dispatch policies (``round-robin``, ``fair``).

Small fake consumers (the core's ``Consumer`` interface, nothing protocol-specific) are fed by
a real ``Queue`` declared in a real broker's virtual host, with the policy chosen by the
``x-dispatch`` queue argument exactly as a client would.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import warrenmq
from warrenmq import Consumer, Entry, Message, Queue
from warrenmq.queue import ACK


class FakeConsumer(Consumer):
    """Records deliveries in a shared log; ``credit`` caps unacked messages (None: no cap)."""

    def __init__(self, tag: str, log: list[str], credit: int | None = None) -> None:
        self.tag = tag
        self.log = log
        self.credit = credit
        self.unacked = 0
        self.received: list[bytes] = []
        self.entries: list[Entry] = []

    def has_credit(self) -> bool:
        return self.credit is None or self.unacked < self.credit

    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        assert self.has_credit(), f"{self.tag} was given a message without credit"
        self.log.append(self.tag)
        self.received.append(message.body)
        if self.acks:
            assert entry is not None
            self.entries.append(entry)
            self.unacked += 1

    def ack(self, queue: Queue, count: int = 1) -> None:
        assert self.unacked >= count
        done, self.entries = self.entries[:count], self.entries[count:]
        self.unacked -= count
        queue.settle(done, ACK)
        queue.consumer_ready(self)

    def grant(self, queue: Queue, credit: int | None) -> None:
        """Change the credit and tell the queue, as a session does after basic.qos."""
        self.credit = credit
        queue.consumer_ready(self)


@pytest.fixture(scope="module")
def broker() -> warrenmq.Broker:
    return warrenmq.Broker(warrenmq.Settings(amqp_port=0))


class Setup:
    def __init__(self, broker: warrenmq.Broker, policy: str) -> None:
        self.vhost = warrenmq.vhost.VirtualHost(broker, f"dispatch-{policy}")
        self.queue = self.vhost.declare_queue("q", arguments={"x-dispatch": policy})
        self.log: list[str] = []
        self.sent = 0

    def consumer(self, tag: str, credit: int | None = None, auto_ack: bool = False) -> FakeConsumer:
        consumer = FakeConsumer(tag, self.log, credit)
        consumer.acks = not auto_ack
        self.queue.add_consumer(consumer)
        return consumer

    def publish(self, count: int = 1) -> list[str]:
        """Publish ``count`` messages; the tags of the consumers that got them."""
        before = len(self.log)
        for _ in range(count):
            self.sent += 1
            self.queue.publish(Message("", "q", b"m%d" % self.sent))
        return self.log[before:]


@pytest.fixture(params=["round-robin", "fair"])
def policy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def setup(broker: warrenmq.Broker, policy: str) -> Iterator[Setup]:
    yield Setup(broker, policy)


def test_x_dispatch_selects_the_policy(broker: warrenmq.Broker, policy: str) -> None:
    s = Setup(broker, policy)
    assert s.queue.policy_class is broker.dispatch_policies[policy]
    assert s.queue.view().dispatch == policy


def test_round_robin_is_the_default(broker: warrenmq.Broker) -> None:
    vhost = warrenmq.vhost.VirtualHost(broker, "default-policy")
    queue = vhost.declare_queue("q")
    assert queue.view().dispatch == "round-robin"


# -- behaviour both policies share (with equal load, fair is round-robin) ----------------------


def test_exact_alternation(setup: Setup) -> None:
    for tag in "abc":
        setup.consumer(tag, auto_ack=True)
    assert setup.publish(9) == list("abcabcabc")


def test_alternation_with_unacked_counts_equal(setup: Setup) -> None:
    for tag in "abc":
        setup.consumer(tag)
    assert setup.publish(6) == list("abcabc")


def test_skips_consumers_without_credit(setup: Setup) -> None:
    a = setup.consumer("a", auto_ack=True)
    b = setup.consumer("b", credit=0, auto_ack=True)
    setup.consumer("c", auto_ack=True)
    assert setup.publish(4) == list("acac")
    b.grant(setup.queue, None)  # b rejoins the rotation at the end, as in RabbitMQ
    assert setup.publish(3) == list("acb")
    assert a.received == [b"m1", b"m3", b"m5"]


def test_messages_wait_while_nobody_has_credit(setup: Setup) -> None:
    a = setup.consumer("a", credit=1)
    b = setup.consumer("b", credit=1)
    assert setup.publish(4) == list("ab")
    assert setup.queue.message_count == 2
    b.ack(setup.queue)
    assert setup.log[2:] == ["b"]
    a.ack(setup.queue)
    assert setup.log[3:] == ["a"]
    assert (a.received, b.received) == ([b"m1", b"m4"], [b"m2", b"m3"])
    assert setup.queue.message_count == 0


def test_a_queue_without_consumers_keeps_messages_in_order(setup: Setup) -> None:
    setup.publish(3)
    assert setup.queue.message_count == 3
    a = setup.consumer("a")
    assert a.received == [b"m1", b"m2", b"m3"]


def test_single_consumer_gets_everything_it_has_credit_for(setup: Setup) -> None:
    a = setup.consumer("a", credit=2)
    assert setup.publish(5) == list("aa")
    a.ack(setup.queue, 2)
    assert a.received == [b"m1", b"m2", b"m3", b"m4"]


@pytest.mark.parametrize(
    ("served", "removed", "expected"),
    [
        # four consumers a b c d; after `served` messages, remove one; who comes next?
        (1, "a", list("bcdbcd")),  # the one just served
        (1, "b", list("cdacda")),  # the one that was next
        (2, "a", list("cdbcdb")),  # one before the one that is next
        (2, "d", list("cabcab")),  # one after
        (4, "d", list("abcabc")),  # the last in the list, served last
        (3, "d", list("abcabc")),  # the last in the list, which was next
    ],
)
def test_removing_a_consumer_keeps_the_rotation(
    setup: Setup, served: int, removed: str, expected: list[str]
) -> None:
    consumers = {tag: setup.consumer(tag, auto_ack=True) for tag in "abcd"}
    assert setup.publish(served) == list("abcd")[:served]
    setup.queue.remove_consumer(consumers[removed])
    assert setup.publish(6) == expected


def test_removing_every_consumer_then_adding_one(setup: Setup) -> None:
    consumers = [setup.consumer(tag, auto_ack=True) for tag in "ab"]
    setup.publish(1)
    for consumer in consumers:
        setup.queue.remove_consumer(consumer)
    assert setup.publish(2) == []
    setup.consumer("c", auto_ack=True)
    assert setup.log[-2:] == ["c", "c"]
    assert setup.publish(1) == ["c"]


def test_a_consumer_added_later_joins_the_rotation(setup: Setup) -> None:
    setup.consumer("a", auto_ack=True)
    setup.consumer("b", auto_ack=True)
    assert setup.publish(3) == list("aba")
    setup.consumer("c", auto_ack=True)
    assert setup.publish(3) == list("bac"), "a newcomer joins the end of the rotation"


# -- fair: least unacknowledged first -------------------------------------------------------------


@pytest.fixture
def fair(broker: warrenmq.Broker) -> Setup:
    return Setup(broker, "fair")


def test_fair_chooses_the_least_unacked(fair: Setup) -> None:
    a, b, c = (fair.consumer(tag) for tag in "abc")
    assert fair.publish(3) == list("abc")
    a.ack(fair.queue)  # a: 0 unacked, b: 1, c: 1
    assert fair.publish(1) == ["a"]
    assert fair.publish(3) == list("bca"), "all equal again: ties go round-robin from b"
    b.ack(fair.queue)
    c.ack(fair.queue)
    c.ack(fair.queue)  # a: 2, b: 1, c: 0
    assert fair.publish(1) == ["c"]
    assert fair.publish(1) == ["b"], "b (1) and c (1) tie with a at 2: rotation after c is a, b"
    assert (a.unacked, b.unacked, c.unacked) == (2, 2, 1)
    assert fair.publish(1) == ["c"]


def test_fair_prefers_least_unacked_over_rotation_order(fair: Setup) -> None:
    a = fair.consumer("a")
    b = fair.consumer("b")
    fair.publish(4)  # a: 2, b: 2
    b.ack(fair.queue, 2)  # b: 0
    assert fair.publish(2) == ["b", "b"], "b stays least loaded until it catches up"
    assert fair.publish(1) == ["a"]
    assert a.unacked == 3


def test_fair_with_prefetch_one_is_classic_fair_dispatch(fair: Setup) -> None:
    slow = fair.consumer("slow", credit=1)
    fast = fair.consumer("fast", credit=1, auto_ack=True)
    assert fair.publish(10) == ["slow"] + ["fast"] * 9
    assert slow.received == [b"m1"]
    assert len(fast.received) == 9


def test_fair_skips_consumers_without_credit_even_if_least_loaded(fair: Setup) -> None:
    fair.consumer("a", credit=0)
    b = fair.consumer("b")
    assert fair.publish(3) == ["b", "b", "b"]
    assert b.unacked == 3


# -- round-robin ignores load ---------------------------------------------------------------------


def test_round_robin_ignores_unacked_counts(broker: warrenmq.Broker) -> None:
    rr = Setup(broker, "round-robin")
    a = rr.consumer("a")
    rr.consumer("b")
    rr.publish(4)
    a.ack(rr.queue, 2)
    rr.log.clear()
    assert rr.publish(4) == list("abab")

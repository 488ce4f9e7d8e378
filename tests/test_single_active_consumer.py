"""Single active consumer (``x-single-active-consumer: true``): of all the consumers of the queue
only one, the active one, receives messages, even while it has no credit left; the others wait.
When the active consumer goes away the next one becomes active:

- on channel or connection close, its unacknowledged messages are requeued (in their places) and
  delivered to the new active consumer, redelivered;
- on basic.cancel, its unacknowledged messages stay with its channel (to ack, or requeued when the
  channel closes), as for any cancelled consumer.

With consumer priorities (``x-priority`` on basic.consume), RabbitMQ 3.10 classic queues keep the
first consumer active whatever the priorities of later ones (no preemption); on a switch the new
active consumer is the highest-priority one, the earliest registered among equals
(rabbit_queue_consumers:get_consumer/1). A consumer counts in queue.declare-ok's consumer_count
whether active or waiting.

RabbitMQ 3.10 does not deliver the messages already waiting to the new active consumer after a
basic.cancel (rabbit_amqqueue_process never runs the queue there); the next publish is delivered
first, and in 3.10.8 that publish crashes the queue process (``true = BQ:is_empty(BQS)``,
removed by rabbitmq-server 5e5321753b). warrenmq hands them over at once (``warrenmq_only``).
"""

from __future__ import annotations

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import (
    Collector,
    Connections,
    channel_closed,
    publish_all,
    ready_count,
    settle,
    wait_for_ready_count,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0
SAC = {"x-single-active-consumer": True}


@pytest.fixture
def queue(conns: Connections, ch: BlockingChannel, unique: str) -> str:
    ch.queue_declare(unique, arguments=SAC)
    conns.track(queue=unique)
    return unique


class Consumers:
    """Named consumers of one queue, each on its own connection."""

    def __init__(self, conns: Connections, queue: str) -> None:
        self.conns = conns
        self.queue = queue
        self.channels: dict[str, BlockingChannel] = {}
        self.got: dict[str, Collector] = {}
        self.tags: dict[str, str] = {}

    def add(
        self, name: str, prefetch: int = 10, priority: int | None = None, ack: bool = False
    ) -> Collector:
        channel = self.conns.channel()
        channel.basic_qos(prefetch_count=prefetch)
        collector = Collector(ack=ack)
        arguments = {"x-priority": priority} if priority is not None else None
        self.tags[name] = channel.basic_consume(self.queue, collector, arguments=arguments)
        self.channels[name], self.got[name] = channel, collector
        return collector

    def connections(self) -> list[pika.BlockingConnection]:
        return [c.connection for c in self.channels.values() if c.connection.is_open]

    def wait(self, name: str, count: int) -> None:
        wait_until(
            self.connections(),
            lambda: len(self.got[name]) == count,
            f"{count} deliveries to {name}",
            WAIT,
        )

    def bodies(self, name: str) -> list[bytes]:
        return self.got[name].bodies

    def redelivered(self, name: str) -> list[bool]:
        return [d.redelivered for d in self.got[name].deliveries]


def test_only_the_first_consumer_receives(
    conns: Connections, ch: BlockingChannel, queue: str
) -> None:
    consumers = Consumers(conns, queue)
    for name in ("a", "b", "c"):
        consumers.add(name, ack=True)
    assert ch.queue_declare(queue, passive=True).method.consumer_count == 3
    bodies = [f"m{n}".encode() for n in range(6)]
    publish_all(ch, "", queue, bodies)
    consumers.wait("a", 6)  # all six: none went to b or c
    assert consumers.bodies("a") == bodies
    assert (len(consumers.got["b"]), len(consumers.got["c"])) == (0, 0)


def test_active_consumer_without_credit_keeps_the_others_waiting(
    conns: Connections, ch: BlockingChannel, queue: str
) -> None:
    consumers = Consumers(conns, queue)
    consumers.add("a", prefetch=1)
    consumers.add("b", prefetch=10)
    publish_all(ch, "", queue, [b"m0", b"m1", b"m2"])
    consumers.wait("a", 1)
    wait_for_ready_count(ch, queue, 2, WAIT)
    # Something that must NOT happen: b getting what a has no credit for. Give it a moment.
    settle(consumers.connections(), 0.2)
    assert len(consumers.got["b"]) == 0
    assert ready_count(ch, queue) == 2

    consumers.got["a"].deliveries[0].ack()
    consumers.wait("a", 2)
    assert consumers.bodies("a") == [b"m0", b"m1"]
    assert len(consumers.got["b"]) == 0


@pytest.mark.parametrize("leaving", ["channel close", "connection close"])
def test_next_consumer_takes_over_with_the_unacked_messages(
    conns: Connections, ch: BlockingChannel, queue: str, leaving: str
) -> None:
    consumers = Consumers(conns, queue)
    consumers.add("a")
    consumers.add("b")
    consumers.add("c")
    publish_all(ch, "", queue, [b"m0", b"m1", b"m2"])
    consumers.wait("a", 3)
    consumers.got["a"].deliveries[0].ack()  # m1 and m2 stay unacked

    a = consumers.channels["a"]
    a.close() if leaving == "channel close" else a.connection.close()
    consumers.wait("b", 2)
    assert consumers.bodies("b") == [b"m1", b"m2"]
    assert consumers.redelivered("b") == [True, True]
    ch.basic_publish("", queue, b"m3")
    consumers.wait("b", 3)
    assert consumers.bodies("b")[-1] == b"m3"
    assert len(consumers.got["c"]) == 0


def test_cancelled_active_consumer_hands_over_and_keeps_its_unacked(
    conns: Connections, ch: BlockingChannel, queue: str
) -> None:
    consumers = Consumers(conns, queue)
    consumers.add("a")
    consumers.add("b")
    publish_all(ch, "", queue, [b"m0", b"m1"])
    consumers.wait("a", 2)  # the queue is empty now

    a = consumers.channels["a"]
    a.basic_cancel(consumers.tags["a"])
    ch.basic_publish("", queue, b"m2")
    consumers.wait("b", 1)
    assert consumers.bodies("b") == [b"m2"]
    assert ready_count(ch, queue) == 0  # m0 and m1 are still a's, unacked

    consumers.got["a"].deliveries[0].ack()  # still a's to settle
    a.close()  # m1 goes back to the queue, and to b
    consumers.wait("b", 2)
    assert consumers.bodies("b") == [b"m2", b"m1"]
    assert consumers.redelivered("b") == [False, True]


@pytest.mark.warrenmq_only
def test_cancelled_active_consumer_hands_the_waiting_messages_over_at_once(
    conns: Connections, ch: BlockingChannel, queue: str
) -> None:
    consumers = Consumers(conns, queue)
    consumers.add("a", prefetch=1)
    consumers.add("b", ack=True)
    publish_all(ch, "", queue, [b"m0", b"m1", b"m2"])
    consumers.wait("a", 1)
    wait_for_ready_count(ch, queue, 2, WAIT)  # m1 and m2 wait for a, not for b
    assert len(consumers.got["b"]) == 0
    consumers.channels["a"].basic_cancel(consumers.tags["a"])
    consumers.wait("b", 2)
    assert consumers.bodies("b") == [b"m1", b"m2"]
    ch.basic_publish("", queue, b"m3")
    consumers.wait("b", 3)
    assert consumers.bodies("b") == [b"m1", b"m2", b"m3"]


def test_priorities_pick_the_successor_but_do_not_preempt(
    conns: Connections, ch: BlockingChannel, queue: str
) -> None:
    consumers = Consumers(conns, queue)
    for name, priority in (("a", 0), ("b", 5), ("c", 10), ("d", 10), ("e", None)):
        consumers.add(name, priority=priority)
    publish_all(ch, "", queue, [b"m0"])
    consumers.wait("a", 1)  # first registered: active, though the lowest priority

    actives = ["a"]
    for successor in ("c", "d", "b", "e"):
        consumers.channels[actives[-1]].connection.close()  # m0 moves on, unacked
        consumers.wait(successor, 1)
        actives.append(successor)
    assert actives == ["a", "c", "d", "b", "e"]
    assert consumers.redelivered("e") == [True]


def test_exclusive_consume_is_refused(conns: Connections, queue: str) -> None:
    """Even with no other consumer: an exclusive consumer contradicts the queue's hand-over."""
    channel = conns.channel()
    with channel_closed(403, f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"):
        channel.basic_consume(queue, Collector(), exclusive=True)

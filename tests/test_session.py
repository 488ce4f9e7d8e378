"""Unit tests of the core's delivery tracker (``Session``, ``SessionConsumer``), without sockets.

A session here is what an AMQP channel is without its wire format: consumers that deliver
through ``track``, acks/nacks/rejects as ``settle``, prefetch credit, transactions and the
requeue on close. Queues are real classic queues in a real broker's virtual host. Behaviour is
RabbitMQ 3.10's channel; tests marked ``xfail`` name a known difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import warrenmq
from warrenmq import Entry, Message, PreconditionFailed, Queue, Session, SessionConsumer
from warrenmq.queue import ACK, REJECT, REQUEUE
from warrenmq.vhost import VirtualHost


@dataclass(frozen=True)
class Delivered:
    tag: int
    body: bytes
    redelivered: bool


class Sink(SessionConsumer):
    """A session consumer that records its deliveries with the tags the session gave them."""

    def __init__(self, session: Session, queue: Queue, tag: str, **options: object) -> None:
        super().__init__(session, queue, tag, **options)  # type: ignore[arg-type]
        self.received: list[Delivered] = []

    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        if self.acks:
            assert entry is not None
            tag = self.session.track(queue, entry, self)
        else:
            tag = self.session.next_tag()
        self.received.append(Delivered(tag, message.body, entry is not None and entry.redelivered))

    @property
    def bodies(self) -> list[bytes]:
        return [delivered.body for delivered in self.received]

    @property
    def tags(self) -> list[int]:
        return [delivered.tag for delivered in self.received]


class Boom(Sink):
    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        raise RuntimeError("socket gone")


class RecordingSession(Session):
    """Remembers the consumers reported failed (a protocol would close the session)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: list[str] = []

    def consumer_failed(self, consumer: SessionConsumer, error: BaseException) -> None:
        super().consumer_failed(consumer, error)
        self.failed.append(consumer.tag)


@pytest.fixture
def vhost() -> VirtualHost:
    return warrenmq.Broker(warrenmq.Settings(amqp_port=0)).vhosts["/"]


def consume(
    session: Session, queue: Queue, tag: str = "c", *, cls: type[Sink] = Sink, **options: object
) -> Sink:
    consumer = cls(session, queue, tag, **options)
    session.add_consumer(consumer)
    return consumer


def publish(queue: Queue, *bodies: bytes) -> None:
    for body in bodies:
        queue.publish(Message("", queue.name, body))


def get(session: Session, queue: Queue) -> int:
    """``basic.get`` with acks on ``session``: the delivery tag."""
    got = queue.get(no_ack=False)
    assert got is not None
    return session.track(queue, got[1], None)


def drain(queue: Queue) -> list[bytes]:
    bodies = []
    while (got := queue.get(no_ack=True)) is not None:
        bodies.append(got[0].body)
    return bodies


def counts(queue: Queue) -> tuple[int, int, int]:
    """(ready, unacknowledged, acknowledged)"""
    view = queue.view()
    return view.messages_ready, view.messages_unacknowledged, view.acknowledged


# -- delivery tags and settling -----------------------------------------------------------------


def test_delivery_tags_count_up_per_session(vhost: VirtualHost) -> None:
    q1, q2, q3 = (vhost.declare_queue(name) for name in ("q1", "q2", "q3"))
    session, other = Session(), Session()
    consumer = consume(session, q1)
    publish(q1, b"a", b"b")
    publish(q2, b"c", b"d")
    assert get(session, q2) == 3
    no_ack = consume(session, q2, "no-ack", acks=False)
    assert consumer.tags == [1, 2]
    assert no_ack.tags == [4]
    assert list(session.unacked) == [1, 2, 3], "a no-ack delivery needs no settling"
    publish(q3, b"e")
    assert get(other, q3) == 1, "tags are per session"
    publish(q1, b"f")
    assert consumer.tags == [1, 2, 5]


def test_ack_settles_one_delivery(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    consumer = consume(session, queue)
    publish(queue, b"m1", b"m2", b"m3")
    session.settle(2, False, ACK)
    assert list(session.unacked) == [1, 3]
    assert counts(queue) == (0, 2, 1)
    assert consumer.unacked == 2


def test_multiple_ack_settles_up_to_the_tag(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    consume(session, queue)
    publish(queue, b"m1", b"m2", b"m3")
    session.settle(2, True, ACK)
    assert list(session.unacked) == [3]
    assert counts(queue) == (0, 1, 2)


def test_multiple_ack_of_tag_zero_settles_everything(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    consume(session, queue)
    publish(queue, b"m1", b"m2", b"m3")
    session.settle(0, True, ACK)
    assert not session.unacked
    assert counts(queue) == (0, 0, 3)
    session.settle(0, True, ACK)  # nothing left: still fine, as in RabbitMQ


def test_multiple_ack_across_queues(vhost: VirtualHost) -> None:
    q1, q2 = vhost.declare_queue("q1"), vhost.declare_queue("q2")
    session = Session()
    publish(q1, b"a", b"c")
    publish(q2, b"b")
    tags = [get(session, q1), get(session, q2), get(session, q1)]
    session.settle(tags[-1], True, ACK)
    assert (counts(q1), counts(q2)) == ((0, 0, 2), (0, 0, 1))


@pytest.mark.parametrize("multiple", [False, True])
def test_an_unknown_delivery_tag_is_406(vhost: VirtualHost, multiple: bool) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    with pytest.raises(PreconditionFailed) as error:
        session.settle(7, multiple, ACK)
    assert error.value.reply_code == 406
    assert error.value.reply_text == "PRECONDITION_FAILED - unknown delivery tag 7"
    publish(queue, b"m1")
    tag = get(session, queue)
    session.settle(tag, False, ACK)
    with pytest.raises(PreconditionFailed):
        session.settle(tag, False, ACK)  # twice
    with pytest.raises(PreconditionFailed):
        session.settle(0, False, ACK)


@pytest.mark.parametrize("case", ["beyond the highest", "already acked"])
def test_a_multiple_ack_of_an_unknown_tag_is_406(vhost: VirtualHost, case: str) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    publish(queue, b"m1", b"m2", b"m3")
    tags = [get(session, queue) for _ in range(3)]
    if case == "beyond the highest":
        unknown = tags[-1] + 2
    else:
        unknown = tags[1]
        session.settle(unknown, False, ACK)
    with pytest.raises(PreconditionFailed, match=f"unknown delivery tag {unknown}"):
        session.settle(unknown, True, ACK)


def test_nack_with_requeue_redelivers_in_order(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    consumer = consume(session, queue, prefetch=3)
    publish(queue, b"m1", b"m2", b"m3", b"m4")
    session.settle(3, True, REQUEUE)
    assert consumer.received[3:] == [
        Delivered(4, b"m1", True),
        Delivered(5, b"m2", True),
        Delivered(6, b"m3", True),
    ]
    assert counts(queue) == (1, 3, 0)


def test_reject_without_requeue_dead_letters(vhost: VirtualHost) -> None:
    vhost.declare_exchange("dlx", "fanout")
    dlq = vhost.declare_queue("dlq")
    vhost.bind(dlq, "dlx", "")
    queue = vhost.declare_queue("q", arguments={"x-dead-letter-exchange": "dlx"})
    session = Session()
    consume(session, queue)
    publish(queue, b"m1", b"m2")
    session.settle(2, False, REJECT)
    assert drain(dlq) == [b"m2"]
    assert counts(queue) == (0, 1, 0)


def test_recover_requeues_to_the_same_consumer(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    consumer = consume(session, queue)
    publish(queue, b"m1", b"m2")
    session.settle(1, False, ACK)
    session.requeue_all()
    assert consumer.received[2:] == [Delivered(3, b"m2", True)]


# -- credit ---------------------------------------------------------------------------------------


def test_prefetch_limits_a_consumer_and_an_ack_returns_the_credit(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    consumer = consume(session, queue, prefetch=2)
    publish(queue, b"m1", b"m2", b"m3", b"m4", b"m5")
    assert consumer.bodies == [b"m1", b"m2"]
    assert consumer.parked
    session.settle(1, False, ACK)
    assert consumer.bodies == [b"m1", b"m2", b"m3"]
    session.settle(3, True, ACK)
    assert consumer.bodies == [b"m1", b"m2", b"m3", b"m4", b"m5"]
    assert counts(queue) == (0, 2, 3)


def test_nack_returns_credit_too(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    consumer = consume(session, queue, prefetch=1)
    publish(queue, b"m1", b"m2")
    session.settle(1, False, REJECT)
    assert consumer.bodies == [b"m1", b"m2"]


def test_a_no_ack_consumer_ignores_prefetch(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    session.global_prefetch = 1
    consumer = consume(session, queue, acks=False, prefetch=1)
    publish(queue, b"m1", b"m2", b"m3")
    assert consumer.bodies == [b"m1", b"m2", b"m3"]
    assert not session.unacked


def test_global_prefetch_is_shared_by_the_session_consumers(vhost: VirtualHost) -> None:
    q1, q2 = vhost.declare_queue("q1"), vhost.declare_queue("q2")
    session = Session()
    session.global_prefetch = 3
    a = consume(session, q1, "a")
    b = consume(session, q2, "b")
    publish(q1, b"a1", b"a2", b"a3")
    publish(q2, b"b1", b"b2")
    assert (a.bodies, b.bodies) == ([b"a1", b"a2", b"a3"], [])
    session.settle(1, False, ACK)
    assert b.bodies == [b"b1"], "credit from a's ack goes to whoever can use it"
    session.settle(2, False, ACK)
    assert b.bodies == [b"b1", b"b2"]
    assert len(session.unacked) == 3


def test_per_consumer_and_global_prefetch_together(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    session.global_prefetch = 10
    a = consume(session, queue, "a", prefetch=1)
    b = consume(session, queue, "b", prefetch=2)
    publish(queue, b"m1", b"m2", b"m3", b"m4")
    assert (a.bodies, b.bodies) == ([b"m1"], [b"m2", b"m3"])
    assert counts(queue) == (1, 3, 0)


def test_raising_global_prefetch_and_credit_changed_resume_deliveries(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    session.global_prefetch = 1
    consumer = consume(session, queue)
    publish(queue, b"m1", b"m2", b"m3")
    assert consumer.bodies == [b"m1"]
    session.global_prefetch = 3
    session.credit_changed()
    assert consumer.bodies == [b"m1", b"m2", b"m3"]


def test_a_paused_session_gets_nothing_until_resumed(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    consumer = consume(session, queue, acks=False)
    session.paused = True
    publish(queue, b"m1", b"m2")
    session.credit_changed()  # still paused: nothing
    assert consumer.bodies == []
    session.paused = False
    session.credit_changed()
    assert consumer.bodies == [b"m1", b"m2"]


def test_global_prefetch_does_not_count_basic_get(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    session.global_prefetch = 1
    publish(queue, b"m1", b"m2")
    get(session, queue)
    consumer = consume(session, queue)
    assert consumer.bodies == [b"m2"]


# -- transactions ---------------------------------------------------------------------------------


def test_settles_in_a_transaction_wait_for_commit(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    session.tx = []
    consume(session, queue)
    publish(queue, b"m1", b"m2", b"m3")
    session.settle(1, False, ACK)
    session.settle(2, False, REQUEUE)
    assert counts(queue) == (0, 3, 0)
    assert list(session.unacked) == [3]
    with pytest.raises(PreconditionFailed):
        session.settle(1, False, ACK)  # already settled in this transaction
    session.commit()
    assert counts(queue) == (0, 2, 1), "m2 requeued and delivered again"
    assert list(session.unacked) == [3, 4]
    assert session.tx == [], "still transactional"


def test_a_transaction_holds_per_consumer_credit_until_commit(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    session.tx = []
    consumer = consume(session, queue, prefetch=1)
    publish(queue, b"m1", b"m2")
    session.settle(1, False, ACK)
    assert consumer.bodies == [b"m1"]
    session.commit()
    assert consumer.bodies == [b"m1", b"m2"]


def test_a_transaction_holds_global_credit_until_commit(vhost: VirtualHost) -> None:
    q1, q2 = vhost.declare_queue("q1"), vhost.declare_queue("q2")
    session = Session()
    session.global_prefetch = 1
    a = consume(session, q1, "a")
    b = consume(session, q2, "b")
    publish(q1, b"a1")
    session.tx = []
    session.settle(1, False, ACK)
    publish(q2, b"b1")
    assert b.bodies == []
    session.commit()
    assert (a.bodies, b.bodies) == ([b"a1"], [b"b1"])


def test_rollback_makes_settles_never_happen(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    session.tx = []
    consumer = consume(session, queue, prefetch=2)
    publish(queue, b"m1", b"m2", b"m3")
    session.settle(2, False, ACK)
    session.settle(1, False, REJECT)
    session.rollback()
    assert list(session.unacked) == [1, 2]
    assert counts(queue) == (1, 2, 0)
    assert consumer.unacked == 2
    session.settle(2, True, ACK)
    session.commit()
    assert counts(queue) == (0, 1, 2)
    assert consumer.bodies == [b"m1", b"m2", b"m3"]


def test_publishes_in_a_transaction_wait_for_commit(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    session.tx = []
    for body in (b"m1", b"m2"):
        message = Message("", "q", body)
        session.tx.append(lambda message=message: vhost.publish("", message))
    assert queue.view().messages_ready == 0
    session.commit()
    assert queue.view().messages_ready == 2
    session.tx.append(lambda: vhost.publish("", Message("", "q", b"m3")))
    session.rollback()
    session.commit()
    assert drain(queue) == [b"m1", b"m2"]


# -- closing --------------------------------------------------------------------------------------


def test_close_cancels_consumers_then_requeues_in_original_order(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    closing = Session()
    publish(queue, b"m1", b"m2", b"m3", b"m4", b"m5")
    got_tags = [get(closing, queue) for _ in range(3)]  # m1, m2, m3 by basic.get
    closing.settle(got_tags[0], False, REQUEUE)  # m1 back first
    mine = consume(closing, queue, "mine", prefetch=2)  # gets m1 again, then m4
    closing.settle(got_tags[2], False, ACK)  # m3 done
    assert mine.bodies == [b"m1", b"m4"]
    assert list(closing.unacked) == [2, 4, 5], "tag order m2, m1, m4: not publish order"
    other = Session()
    theirs = consume(other, queue, "theirs", prefetch=0)  # takes m5
    closing.close()
    assert mine.bodies == [b"m1", b"m4"], "a closing session's consumers get nothing back"
    assert theirs.bodies == [b"m5", b"m1", b"m2", b"m4"]
    assert [d.redelivered for d in theirs.received] == [False, True, True, True]
    assert (closing.consumers, closing.unacked) == ({}, {})
    assert queue.consumer_count == 1
    assert counts(queue) == (0, 4, 1)


def test_close_requeues_across_queues(vhost: VirtualHost) -> None:
    q1, q2 = vhost.declare_queue("q1"), vhost.declare_queue("q2")
    session = Session()
    publish(q1, b"a1", b"a2", b"a3")
    publish(q2, b"b1", b"b2")
    consume(session, q1, "a")
    consume(session, q2, "b")
    session.settle(2, False, ACK)
    session.close()
    assert (drain(q1), drain(q2)) == ([b"a1", b"a3"], [b"b1", b"b2"])


def test_close_undoes_the_open_transaction_first(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    session.tx = []
    consume(session, queue)
    publish(queue, b"m1", b"m2")
    session.settle(2, True, ACK)
    session.close()
    assert counts(queue) == (2, 0, 0)
    assert drain(queue) == [b"m1", b"m2"]


def test_close_of_a_no_ack_session_requeues_nothing(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    consume(session, queue, acks=False)
    publish(queue, b"m1")
    session.close()
    assert queue.view().messages == 0


def test_single_active_consumer_takeover_on_close_keeps_the_order(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q", arguments={"x-single-active-consumer": True})
    publish(queue, b"m1", b"m2", b"m3", b"m4")
    first_session, second_session = Session(), Session()
    first = consume(first_session, queue, "first", prefetch=2)
    second = consume(second_session, queue, "second")
    assert (first.bodies, second.bodies) == ([b"m1", b"m2"], [])
    first_session.close()
    assert second.bodies == [b"m1", b"m2", b"m3", b"m4"]


def test_single_active_consumer_takeover_on_close(vhost: VirtualHost) -> None:
    """What does hold today: the next consumer takes over and gets every message once."""
    queue = vhost.declare_queue("q", arguments={"x-single-active-consumer": True})
    publish(queue, b"m1", b"m2", b"m3", b"m4")
    first_session, second_session = Session(), Session()
    consume(first_session, queue, "first", prefetch=2)
    second = consume(second_session, queue, "second")
    first_session.close()
    assert sorted(second.bodies) == [b"m1", b"m2", b"m3", b"m4"]
    assert [view.tag for view in queue.consumer_views() if view.active] == ["second"]


# -- a failing consumer ---------------------------------------------------------------------------


def test_a_failing_consumer_is_reported_to_its_session(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    publish(queue, b"m1")
    broken, healthy = RecordingSession(), Session()
    consume(broken, queue, "boom", cls=Boom)
    assert broken.failed == ["boom"]
    assert broken.consumers == {} and queue.consumer_count == 0
    assert not broken.unacked
    good = consume(healthy, queue, "good")
    assert good.received == [Delivered(1, b"m1", False)]


# -- consumers ------------------------------------------------------------------------------------


def test_cancel_keeps_the_deliveries_unacknowledged(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    session = Session()
    consumer = consume(session, queue)
    publish(queue, b"m1")
    assert session.remove_consumer("c") is consumer
    assert session.remove_consumer("c") is None
    publish(queue, b"m2")
    assert consumer.bodies == [b"m1"]
    assert counts(queue) == (1, 1, 0)
    session.settle(1, False, ACK)
    assert counts(queue) == (1, 0, 1)


def test_a_consumer_the_queue_refuses_is_not_kept_by_the_session(vhost: VirtualHost) -> None:
    queue = vhost.declare_queue("q")
    owner, other = Session(), Session()
    consume(owner, queue, "only", exclusive=True)
    with pytest.raises(warrenmq.BrokerError) as refused:
        consume(other, queue, "refused")
    assert refused.value.reply_code == 403
    assert other.consumers == {}

"""The read-only views and counters a management API will serve, driven from pika.

Each test runs its own broker (in this process, so the test reads ``Broker`` views directly)
and checks what an operator would see after some traffic: messages in and out per
connection, channels, consumers and prefetch, and a queue's counters.
"""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from pika_helpers import wait_until

from warrenmq.testing import RunningBroker, running_broker
from warrenmq.views import ConnectionView, QueueView

pytestmark = pytest.mark.warrenmq_only


@pytest.fixture
def running() -> Iterator[RunningBroker]:
    with running_broker() as running:
        yield running


def _connect(running: RunningBroker, name: str = "test") -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            running.host,
            running.port,
            connection_attempts=3,
            client_properties={"connection_name": name},
        )
    )


def _connection_views(running: RunningBroker) -> dict[str, ConnectionView]:
    """The broker's connection views by the client's connection name."""
    return {view.client["connection_name"]: view for view in running.broker.connection_views()}


def test_connection_counters_count_messages_in_and_out_across_channels(
    running: RunningBroker,
) -> None:
    publisher, consumer = _connect(running, "publisher"), _connect(running, "consumer")
    try:
        pub = publisher.channel()
        pub.confirm_delivery()
        pub.queue_declare("views-q")
        for n in range(10):
            pub.basic_publish("", "views-q", b"m%d" % n)
        first, second = consumer.channel(), consumer.channel()
        for _ in range(3):
            method, _, _ = first.basic_get("views-q", auto_ack=True)
            assert method is not None
        second.basic_qos(prefetch_count=4)
        second.basic_consume("views-q", lambda *args: None, consumer_tag="watcher")

        def views() -> dict[str, ConnectionView]:
            return _connection_views(running)

        wait_until(
            [consumer],
            lambda: views()["consumer"].messages_out == 7,
            "3 gets and 4 deliveries (prefetch 4) counted",
        )
        seen = views()["consumer"]
        assert seen.user == "guest" and seen.vhost == "/"
        sessions = {s.number: s for s in seen.sessions}
        assert sessions[second.channel_number].unacked == 4
        assert sessions[second.channel_number].prefetch == 4
        assert [c.tag for c in sessions[second.channel_number].consumers] == ["watcher"]
        assert views()["publisher"].messages_in == 10
        assert views()["consumer"].bytes_out > views()["consumer"].bytes_in > 0

        first.close()  # a closed channel's deliveries stay counted
        wait_until(
            [consumer],
            lambda: len(views()["consumer"].sessions) == 1,
            "the closed channel is gone from the view",
        )
        assert views()["consumer"].messages_out == 7
    finally:
        publisher.close()
        consumer.close()


def test_queue_counters_follow_publish_delivery_and_ack(running: RunningBroker) -> None:
    connection = _connect(running)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("counted")
        for n in range(5):
            channel.basic_publish("", "counted", b"x" * (n + 1))
        method, _, _ = channel.basic_get("counted")
        assert method is not None

        def view() -> QueueView:
            (queue,) = [q for q in running.broker.vhosts["/"].queue_views() if q.name == "counted"]
            return queue

        wait_until([connection], lambda: view().messages_unacknowledged == 1, "one unacked")
        seen = view()
        assert (seen.messages_ready, seen.message_bytes_ready) == (4, 2 + 3 + 4 + 5)
        channel.basic_ack(method.delivery_tag)
        wait_until([connection], lambda: view().messages_unacknowledged == 0, "the ack counted")
        seen = view()
        assert (seen.messages_ready, seen.published, seen.delivered, seen.acknowledged) == (
            4,
            5,
            1,
            1,
        )
    finally:
        connection.close()

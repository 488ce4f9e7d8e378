"""Queue expiry (``x-expires``, milliseconds): a queue left unused for that long is deleted, with
any messages in it. Unused means no consumer; a queue.declare (active or passive) or a basic.get
renews the lease, as in RabbitMQ, where both go through the queue's ``stat``/``basic_get`` calls
that restart its expiry timer (rabbit_amqqueue_process:ensure_expiry_timer/1).

Because a passive declare renews the lease, a test cannot poll for the deletion the usual way:
``wait_for_expiry`` leaves a gap longer than the lease between two checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import (
    Collector,
    Connections,
    publish_all,
    queue_exists,
    settle,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0
EXPIRES = 300  # milliseconds
#: a longer lease where a test renews it, so that a stalled renewal does not lose the queue
RENEWED_EXPIRES = 400


def declare_expiring(
    conns: Connections, ch: BlockingChannel, name: str, expires: int = EXPIRES
) -> None:
    ch.queue_declare(name, arguments={"x-expires": expires})
    conns.track(queue=name)


def wait_for_expiry(
    connection: pika.BlockingConnection, queue: str, expires: int = EXPIRES
) -> None:
    """Check for the queue with gaps longer than the lease that each check renews."""
    deadline = time.monotonic() + WAIT
    while True:
        connection.process_data_events(time_limit=expires / 1000 + 0.25)  # the lease runs out
        if not queue_exists(connection, queue):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"queue {queue} still there {WAIT}s after its x-expires")


def test_unused_queue_is_deleted(conns: Connections, ch: BlockingChannel, unique: str) -> None:
    start = time.monotonic()
    declare_expiring(conns, ch, unique)
    wait_for_expiry(ch.connection, unique)
    assert time.monotonic() - start >= EXPIRES / 1000, "deleted before its x-expires"


def test_queue_holding_messages_is_deleted_too(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    declare_expiring(conns, ch, unique)
    publish_all(ch, "", unique, [b"lost", b"with it"])
    wait_for_expiry(ch.connection, unique)


@pytest.mark.parametrize("ending", ["basic.cancel", "connection close"])
def test_queue_with_a_consumer_is_kept_until_the_consumer_leaves(
    conns: Connections, ch: BlockingChannel, unique: str, ending: str
) -> None:
    declare_expiring(conns, ch, unique)
    consumer = conns.channel()
    got = Collector(ack=True)
    tag = consumer.basic_consume(unique, got)
    # Something that must NOT happen (the deletion): give it two leases' time, then check.
    settle(consumer.connection, 2 * EXPIRES / 1000)
    assert queue_exists(ch.connection, unique)
    ch.basic_publish("", unique, b"still consumed")
    wait_until(consumer.connection, lambda: len(got) == 1, "the delivery", WAIT)

    if ending == "basic.cancel":
        consumer.basic_cancel(tag)
    else:
        consumer.connection.close()
    wait_for_expiry(ch.connection, unique)


RENEWALS: dict[str, Callable[[BlockingChannel, str], object]] = {
    "basic.get": lambda ch, queue: ch.basic_get(queue, auto_ack=True),
    "redeclare": lambda ch, queue: ch.queue_declare(
        queue, arguments={"x-expires": RENEWED_EXPIRES}
    ),
    "passive declare": lambda ch, queue: ch.queue_declare(queue, passive=True),
}


@pytest.mark.parametrize("renewal", RENEWALS)
def test_lease_is_renewed(
    conns: Connections, ch: BlockingChannel, unique: str, renewal: str
) -> None:
    """Renewing every 100 ms keeps the queue alive for twice its x-expires (a 404 would close
    the channel and fail the test); once the renewals stop, it expires."""
    declare_expiring(conns, ch, unique, RENEWED_EXPIRES)
    renew = RENEWALS[renewal]
    end = time.monotonic() + 2 * RENEWED_EXPIRES / 1000
    while time.monotonic() < end:
        renew(ch, unique)
        ch.connection.process_data_events(time_limit=0.1)
    renew(ch, unique)
    wait_for_expiry(ch.connection, unique, RENEWED_EXPIRES)

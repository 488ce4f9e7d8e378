"""Requeue order: a requeued message goes back to its original place in the queue (by publish
order), not to the head or the tail, and is marked redelivered. That holds for one message
nacked or rejected alone, for several in any order or with ``multiple``, and for all of a
channel's unacknowledged messages when the channel closes. basic.cancel alone requeues nothing:
the cancelled consumer's messages stay unacknowledged on its channel (clients such as pika and
aio-pika then requeue what they had buffered, one by one).

The aio-pika tests are its own ``test_non_acked_messages_are_redelivered_to_queue`` and
``test_regression_only_messages_cancelled_subscription_are_nacked``, with unique names.
"""

from __future__ import annotations

import aio_pika
import pytest
from aio_pika import ExchangeType, Message
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import (
    BrokerLike,
    Collector,
    Connections,
    get_all,
    publish_all,
    ready_count,
    wait_for_ready_count,
    wait_until,
)

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def bodies(count: int) -> list[bytes]:
    return [f"m{n}".encode() for n in range(count)]


def fill(conns: Connections, ch: BlockingChannel, queue: str, count: int) -> None:
    """A queue other connections may use, holding m0..m<count-1>."""
    ch.queue_declare(queue)
    conns.track(queue=queue)
    publish_all(ch, "", queue, bodies(count))


def take(channel: BlockingChannel, queue: str) -> int:
    """basic.get one message without acking it; its delivery tag."""
    method, _properties, _body = channel.basic_get(queue)
    assert method is not None, f"{queue} unexpectedly empty"
    return int(method.delivery_tag)


def contents(ch: BlockingChannel, queue: str) -> list[tuple[bytes, bool]]:
    """Empty the queue: (body, redelivered) of each message in order."""
    return [(body, bool(method.redelivered)) for method, _props, body in get_all(ch, queue)]


@pytest.mark.parametrize("how", ["basic.nack", "basic.reject"])
def test_one_requeued_message_goes_back_to_its_place(
    conns: Connections, ch: BlockingChannel, unique: str, how: str
) -> None:
    fill(conns, ch, unique, 5)
    tags = [take(ch, unique) for _ in range(3)]
    if how == "basic.nack":
        ch.basic_nack(tags[1], requeue=True)
    else:
        ch.basic_reject(tags[1], requeue=True)
    wait_for_ready_count(ch, unique, 3, WAIT)
    assert contents(ch, unique) == [(b"m1", True), (b"m3", False), (b"m4", False)]


def test_several_requeued_in_any_order_return_to_publish_order(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    fill(conns, ch, unique, 8)
    tags = [take(ch, unique) for _ in range(5)]  # m0..m4; m5..m7 stay ready
    ch.basic_reject(tags[3], requeue=True)
    ch.basic_nack(tags[1], requeue=True)
    ch.basic_nack(tags[4], multiple=True, requeue=True)  # m0, m2, m4: all still unacked
    wait_for_ready_count(ch, unique, 8, WAIT)
    assert contents(ch, unique) == [(body, n < 5) for n, body in enumerate(bodies(8))]


def test_closed_channels_return_their_messages_interleaved(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    fill(conns, ch, unique, 6)
    a, b = conns.channel(), conns.channel()
    tags = [take(channel, unique) for channel in (a, b, a, b)]  # a: m0 m2; b: m1 m3
    a.close()
    wait_for_ready_count(ch, unique, 4, WAIT)
    b.basic_nack(tags[3], requeue=True)
    b.basic_nack(tags[1], requeue=True)
    wait_for_ready_count(ch, unique, 6, WAIT)
    assert contents(ch, unique) == [(body, n < 4) for n, body in enumerate(bodies(6))]


def test_consumer_channel_close_returns_its_unacked_in_place(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    fill(conns, ch, unique, 6)
    consumer = conns.channel()
    consumer.basic_qos(prefetch_count=3)
    got = Collector()
    consumer.basic_consume(unique, got)
    wait_until(consumer.connection, lambda: len(got) == 3, "three deliveries", WAIT)
    got.deliveries[1].ack()
    wait_until(consumer.connection, lambda: len(got) == 4, "m3, for the freed credit", WAIT)
    consumer.close()
    wait_for_ready_count(ch, unique, 5, WAIT)
    assert contents(ch, unique) == [
        (b"m0", True),
        (b"m2", True),
        (b"m3", True),
        (b"m4", False),
        (b"m5", False),
    ]


def test_basic_cancel_requeues_nothing_until_the_channel_closes(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    fill(conns, ch, unique, 6)
    consumer = conns.channel()
    consumer.basic_qos(prefetch_count=3)
    got = Collector()
    tag = consumer.basic_consume(unique, got)
    wait_until(consumer.connection, lambda: len(got) == 3, "three deliveries", WAIT)
    consumer.basic_cancel(tag)
    assert ready_count(ch, unique) == 3  # m0..m2 are still the cancelled consumer's
    got.deliveries[1].ack()  # and it can still settle them
    consumer.close()
    wait_for_ready_count(ch, unique, 5, WAIT)
    assert [body for body, _redelivered in contents(ch, unique)] == [
        b"m0",
        b"m2",
        b"m3",
        b"m4",
        b"m5",
    ]


def test_pika_consume_generator_cancel_requeues_its_pending_messages(
    conns: Connections, ch: BlockingChannel, unique: str
) -> None:
    """pika's ``BlockingChannel.cancel()`` rejects (requeue) each buffered message in turn."""
    fill(conns, ch, unique, 5)
    consumer = conns.channel()
    for method, _properties, body in consumer.consume(unique, inactivity_timeout=WAIT):
        assert method is not None, "no delivery"
        assert body == b"m0"
        consumer.basic_ack(method.delivery_tag)
        break
    wait_until(consumer.connection, lambda: ready_count(ch, unique) == 0, "all delivered", WAIT)
    consumer.cancel()
    wait_for_ready_count(ch, unique, 4, WAIT)
    assert [body for body, _redelivered in contents(ch, unique)] == bodies(5)[1:]


# -- aio-pika ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_non_acked_messages_are_redelivered_to_queue(
    broker: BrokerLike, conns: Connections, unique: str
) -> None:
    conns.track(queue=unique)  # deleted at teardown if the test fails before its own delete
    connection = await aio_pika.connect(broker.url, timeout=WAIT)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            f"{unique}-x", ExchangeType.DIRECT, auto_delete=True
        )
        queue = await channel.declare_queue(unique, auto_delete=False)
        await queue.bind(exchange, "key")
        all_bodies = bodies(5)
        for body in all_bodies:
            assert await exchange.publish(Message(body), "key")

        # a subscription that processes only the first message; the rest are nacked on exit
        async with queue.iterator() as queue_iterator:
            first_message = await queue_iterator.__anext__()
            async with first_message.process():
                assert first_message.body == all_bodies[0]

        for expected in all_bodies[1:]:
            incoming = await queue.get(timeout=WAIT)
            await incoming.ack()
            assert incoming.body == expected
        assert await queue.get(fail=False, timeout=WAIT) is None
        await queue.delete()


@pytest.mark.anyio
async def test_only_the_cancelled_subscriptions_messages_are_nacked(
    broker: BrokerLike, conns: Connections, unique: str
) -> None:
    conns.track(queue=f"{unique}-1")
    conns.track(queue=f"{unique}-2")
    connection = await aio_pika.connect(broker.url, timeout=WAIT)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            f"{unique}-x", ExchangeType.DIRECT, auto_delete=True
        )
        queue1 = await channel.declare_queue(f"{unique}-1", auto_delete=False)
        queue2 = await channel.declare_queue(f"{unique}-2", auto_delete=False)
        await queue1.bind(exchange, "key1")
        await queue2.bind(exchange, "key2")
        bodies1 = [f"q1-m{n}".encode() for n in range(5)]
        bodies2 = [f"q2-m{n}".encode() for n in range(5)]
        for body in bodies1:
            assert await exchange.publish(Message(body), "key1")
        for body in bodies2:
            assert await exchange.publish(Message(body), "key2")

        iterator1 = await queue1.iterator().__aenter__()
        iterator2 = await queue2.iterator().__aenter__()
        first1 = await iterator1.__anext__()
        async with first1.process():
            assert first1.body == bodies1[0]
        first2 = await iterator2.__anext__()
        async with first2.process():
            assert first2.body == bodies2[0]

        # Leaving subscription 2 (higher delivery tags) must not nack queue 1's messages: an
        # ack of one of those would then fail with a channel error.
        await iterator2.__aexit__(None, None, None)
        second1 = await iterator1.__anext__()
        async with second1.process():
            assert second1.body == bodies1[1]
        await iterator1.__aexit__(None, None, None)

        for queue, remaining in ((queue1, bodies1[2:]), (queue2, bodies2[1:])):
            for expected in remaining:
                incoming = await queue.get(timeout=WAIT)
                await incoming.ack()
                assert incoming.body == expected
            assert await queue.get(fail=False, timeout=WAIT) is None
            await queue.delete()

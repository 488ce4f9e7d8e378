"""aio-pika against the broker: what an asyncio application written for RabbitMQ relies on.

Every wait is bounded (``asyncio.timeout`` / ``asyncio.wait_for``); nothing sleeps and hopes.
aio-pika channels use publisher confirms by default, so an awaited publish has been confirmed.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.patterns import RPC
from pamqp import commands

pytestmark = pytest.mark.anyio

WAIT = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def connection(broker: Any) -> AsyncIterator[AbstractConnection]:
    # plain connect: a robust channel names "server-named" queues itself (amq_<uuid>)
    conn = await aio_pika.connect(broker.url, timeout=WAIT)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def channel(connection: AbstractConnection) -> AbstractChannel:
    return await connection.channel()


async def drain(queue: aio_pika.abc.AbstractQueue) -> list[bytes]:
    """Everything ready in the queue, acked, via basic.get until it reports empty."""
    bodies: list[bytes] = []
    while (message := await queue.get(fail=False, timeout=WAIT)) is not None:
        bodies.append(message.body)
        await message.ack()
    return bodies


async def message_count(channel: AbstractChannel, name: str) -> int:
    """Ready messages, as a passive Queue.Declare reports them."""
    declared = await channel.declare_queue(name, passive=True)
    result = declared.declaration_result
    assert result.message_count is not None
    return result.message_count


async def test_connect_robust_round_trip(broker: Any, unique: str) -> None:
    connection = await aio_pika.connect_robust(broker.url, timeout=WAIT)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}-q", auto_delete=True)
        confirm = await channel.default_exchange.publish(Message(b"hi"), routing_key=queue.name)
        assert isinstance(confirm, commands.Basic.Ack)
        got = await queue.get(timeout=WAIT)
        assert got.body == b"hi"
        await got.ack()
        await queue.delete()
    assert connection.is_closed


# -- exchanges of every type ------------------------------------------------------------------


async def test_direct_exchange_routes_by_exact_key(channel: AbstractChannel, unique: str) -> None:
    exchange = await channel.declare_exchange(f"{unique}-direct", ExchangeType.DIRECT)
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    await queue.bind(exchange, routing_key="orders")

    await exchange.publish(Message(b"hit"), routing_key="orders")
    await exchange.publish(Message(b"miss"), routing_key="orders.eu")
    await exchange.publish(Message(b"miss2"), routing_key="")

    assert await drain(queue) == [b"hit"]
    await exchange.delete()


async def test_fanout_exchange_copies_to_every_bound_queue(
    channel: AbstractChannel, unique: str
) -> None:
    exchange = await channel.declare_exchange(f"{unique}-fanout", ExchangeType.FANOUT)
    first = await channel.declare_queue(f"{unique}-a", exclusive=True)
    second = await channel.declare_queue(f"{unique}-b", exclusive=True)
    await first.bind(exchange)
    await second.bind(exchange, routing_key="ignored-by-fanout")

    await exchange.publish(Message(b"one"), routing_key="whatever")
    await exchange.publish(Message(b"two"), routing_key="")

    assert await drain(first) == [b"one", b"two"]
    assert await drain(second) == [b"one", b"two"]
    await exchange.delete()


async def test_topic_exchange_star_and_hash(channel: AbstractChannel, unique: str) -> None:
    exchange = await channel.declare_exchange(f"{unique}-topic", ExchangeType.TOPIC)
    star = await channel.declare_queue(f"{unique}-star", exclusive=True)
    hashq = await channel.declare_queue(f"{unique}-hash", exclusive=True)
    await star.bind(exchange, routing_key="stock.*.nyse")
    await hashq.bind(exchange, routing_key="stock.#")

    for key in ["stock.ibm.nyse", "stock.ibm.lse", "stock", "stock.a.b.nyse", "bond.x.nyse"]:
        await exchange.publish(Message(key.encode()), routing_key=key)

    assert await drain(star) == [b"stock.ibm.nyse"]
    # "#" matches zero or more words, so "stock" itself matches "stock.#"
    assert await drain(hashq) == [b"stock.ibm.nyse", b"stock.ibm.lse", b"stock", b"stock.a.b.nyse"]
    await exchange.delete()


async def test_headers_exchange_match_all_and_any(channel: AbstractChannel, unique: str) -> None:
    exchange = await channel.declare_exchange(f"{unique}-headers", ExchangeType.HEADERS)
    all_q = await channel.declare_queue(f"{unique}-all", exclusive=True)
    any_q = await channel.declare_queue(f"{unique}-any", exclusive=True)
    await all_q.bind(exchange, arguments={"x-match": "all", "format": "pdf", "type": "report"})
    await any_q.bind(exchange, arguments={"x-match": "any", "format": "pdf", "type": "report"})

    await exchange.publish(Message(b"both", headers={"format": "pdf", "type": "report"}), "")
    await exchange.publish(Message(b"format", headers={"format": "pdf", "type": "log"}), "")
    await exchange.publish(Message(b"neither", headers={"format": "zip"}), "")
    await exchange.publish(Message(b"no-headers"), routing_key="")

    assert await drain(all_q) == [b"both"]
    assert await drain(any_q) == [b"both", b"format"]
    await exchange.delete()


async def test_server_named_queue_and_redeclare_with_other_arguments(
    channel: AbstractChannel, connection: AbstractConnection, unique: str
) -> None:
    server_named = await channel.declare_queue("", exclusive=True)
    assert server_named.name.startswith("amq.gen-")

    await channel.declare_queue(f"{unique}-q", auto_delete=True, arguments={"x-max-length": 5})
    other = await connection.channel()
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as info:
        await other.declare_queue(f"{unique}-q", auto_delete=True, arguments={"x-max-length": 6})
    assert "PRECONDITION_FAILED" in str(info.value)
    assert "inequivalent arg 'x-max-length'" in str(info.value)
    await channel.queue_delete(f"{unique}-q")


async def test_passive_declare_of_missing_queue_closes_channel_404(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel()
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as info:
        await channel.declare_queue(f"{unique}-missing", passive=True)
    assert f"NOT_FOUND - no queue '{unique}-missing' in vhost '/'" in str(info.value)
    assert channel.is_closed
    # the connection survives a channel error
    fresh = await connection.channel()
    queue = await fresh.declare_queue("", exclusive=True)
    assert queue.name


# -- consuming --------------------------------------------------------------------------------


async def test_consume_with_iterator_and_process_acks(
    channel: AbstractChannel, unique: str
) -> None:
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    sent = [f"msg-{i}".encode() for i in range(5)]
    for body in sent:
        await channel.default_exchange.publish(Message(body), routing_key=queue.name)

    received: list[bytes] = []
    async with asyncio.timeout(WAIT), queue.iterator() as messages:
        async for message in messages:
            async with message.process():
                received.append(message.body)
                assert message.redelivered is False
                assert message.routing_key == queue.name
                assert message.exchange == ""
            if len(received) == len(sent):
                break

    assert received == sent
    # process() acked every message: nothing ready, nothing left to redeliver
    assert await message_count(channel, queue.name) == 0
    assert await queue.get(fail=False, timeout=WAIT) is None


async def test_consume_with_callback(channel: AbstractChannel, unique: str) -> None:
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def on_message(message: AbstractIncomingMessage) -> None:
        await message.ack()
        await inbox.put(message)

    consumer_tag = await queue.consume(on_message)
    assert consumer_tag
    for i in range(3):
        await channel.default_exchange.publish(Message(b"%d" % i), routing_key=queue.name)

    messages = [await asyncio.wait_for(inbox.get(), WAIT) for _ in range(3)]
    assert [m.body for m in messages] == [b"0", b"1", b"2"]
    assert {m.consumer_tag for m in messages} == {consumer_tag}

    await queue.cancel(consumer_tag)
    await channel.default_exchange.publish(Message(b"after-cancel"), routing_key=queue.name)
    # after cancel the message stays in the queue instead of reaching the callback
    got = await queue.get(timeout=WAIT)
    assert got.body == b"after-cancel"
    await got.ack()
    assert inbox.empty()


async def test_consumer_tag_and_delivery_tags(channel: AbstractChannel, unique: str) -> None:
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    tag = await queue.consume(inbox.put, consumer_tag=f"{unique}-ctag")
    assert tag == f"{unique}-ctag"
    for i in range(2):
        await channel.default_exchange.publish(Message(b"%d" % i), routing_key=queue.name)
    first = await asyncio.wait_for(inbox.get(), WAIT)
    second = await asyncio.wait_for(inbox.get(), WAIT)
    assert first.consumer_tag == second.consumer_tag == tag
    assert first.delivery_tag is not None and second.delivery_tag is not None
    assert second.delivery_tag > first.delivery_tag
    await second.ack(multiple=True)  # acks both
    await queue.cancel(tag)
    assert await message_count(channel, queue.name) == 0


async def test_process_requeues_when_the_block_raises(
    channel: AbstractChannel, unique: str
) -> None:
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    await channel.default_exchange.publish(Message(b"fragile"), routing_key=queue.name)

    first = await queue.get(timeout=WAIT)
    with pytest.raises(RuntimeError):
        async with first.process(requeue=True):
            raise RuntimeError("handler failed")

    again = await queue.get(timeout=WAIT)
    assert again.body == b"fragile"
    assert again.redelivered is True
    async with again.process():
        pass
    assert await queue.get(fail=False, timeout=WAIT) is None


async def test_nack_and_reject_with_and_without_requeue(
    channel: AbstractChannel, unique: str
) -> None:
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    for body in (b"nacked", b"rejected"):
        await channel.default_exchange.publish(Message(body), routing_key=queue.name)

    nacked = await queue.get(timeout=WAIT)
    assert nacked.body == b"nacked" and nacked.redelivered is False
    await nacked.nack(requeue=True)
    rejected = await queue.get(timeout=WAIT)
    # a requeued message goes back to its original position: the head of the queue
    assert rejected.body == b"nacked" and rejected.redelivered is True
    await rejected.reject(requeue=True)

    again = await queue.get(timeout=WAIT)
    assert again.body == b"nacked" and again.redelivered is True
    await again.reject(requeue=False)  # dropped (no dead-letter exchange)
    last = await queue.get(timeout=WAIT)
    assert last.body == b"rejected" and last.redelivered is False
    await last.nack(requeue=False)

    assert await queue.get(fail=False, timeout=WAIT) is None


async def test_get_on_empty_queue(channel: AbstractChannel, unique: str) -> None:
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    assert await queue.get(fail=False, timeout=WAIT) is None
    with pytest.raises(aio_pika.exceptions.QueueEmpty):
        await queue.get(timeout=WAIT)
    await channel.default_exchange.publish(Message(b"x"), routing_key=queue.name)
    got = await queue.get(no_ack=True, timeout=WAIT)
    assert got.body == b"x"
    assert await queue.get(fail=False, timeout=WAIT) is None


async def test_prefetch_count_limits_unacked_deliveries(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=2)
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    for i in range(5):
        await channel.default_exchange.publish(Message(b"%d" % i), routing_key=queue.name)

    inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    tag = await queue.consume(inbox.put)
    first = await asyncio.wait_for(inbox.get(), WAIT)
    second = await asyncio.wait_for(inbox.get(), WAIT)
    assert (first.body, second.body) == (b"0", b"1")
    # two unacked deliveries hold the other three back in the queue
    assert await message_count(channel, queue.name) == 3
    assert inbox.empty()

    await first.ack()
    third = await asyncio.wait_for(inbox.get(), WAIT)
    assert third.body == b"2"
    assert await message_count(channel, queue.name) == 2
    assert inbox.empty()

    await second.ack()
    await third.ack()
    rest = [await asyncio.wait_for(inbox.get(), WAIT) for _ in range(2)]
    assert [m.body for m in rest] == [b"3", b"4"]
    for message in rest:
        await message.ack()
    await queue.cancel(tag)
    assert await message_count(channel, queue.name) == 0


async def test_unacked_messages_are_requeued_when_the_channel_closes(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    await channel.default_exchange.publish(Message(b"keep-me"), routing_key=queue.name)

    consumer_channel = await connection.channel()
    consumer_queue = await consumer_channel.declare_queue(queue.name, passive=True)
    got = await consumer_queue.get(timeout=WAIT)
    assert got.body == b"keep-me"
    await consumer_channel.close()  # without acking

    again = await queue.get(timeout=WAIT)
    assert again.body == b"keep-me"
    assert again.redelivered is True
    await again.ack()


# -- properties -------------------------------------------------------------------------------


async def test_message_properties_round_trip(channel: AbstractChannel, unique: str) -> None:
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    stamp = datetime.datetime(2024, 5, 17, 12, 30, 45, tzinfo=datetime.UTC)
    headers: dict[str, Any] = {
        "str": "text ünïcode",
        "int": 42,
        "negative": -7,
        "big": 2**40,
        "float": 1.5,
        "bool": True,
        "false": False,
        "none": None,
        "list": [1, "two", [3, {"four": 4}]],
        "table": {"nested": {"deeper": {"k": "v"}}, "n": 1},
        "when": stamp,
    }
    await channel.default_exchange.publish(
        Message(
            b'{"hello": "world"}',
            headers=headers,
            content_type="application/json",
            content_encoding="utf-8",
            correlation_id=f"{unique}-corr",
            reply_to=f"{unique}-reply",
            message_id=f"{unique}-id",
            priority=7,
            timestamp=stamp,
            expiration=60,  # aio-pika sends the string "60000" (milliseconds)
            delivery_mode=DeliveryMode.PERSISTENT,
            app_id="warrenmq-tests",
            type="greeting",
            user_id="guest",
        ),
        routing_key=queue.name,
    )

    got = await queue.get(timeout=WAIT)
    await got.ack()
    assert got.body == b'{"hello": "world"}'
    assert got.headers == headers
    assert got.content_type == "application/json"
    assert got.content_encoding == "utf-8"
    assert got.correlation_id == f"{unique}-corr"
    assert got.reply_to == f"{unique}-reply"
    assert got.message_id == f"{unique}-id"
    assert got.priority == 7
    assert got.timestamp == stamp
    assert got.expiration == 60.0
    assert got.properties.expiration == "60000"
    assert got.delivery_mode == DeliveryMode.PERSISTENT
    assert got.app_id == "warrenmq-tests"
    assert got.type == "greeting"
    assert got.user_id == "guest"


async def test_message_without_properties_has_none_set(
    channel: AbstractChannel, unique: str
) -> None:
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    await channel.default_exchange.publish(Message(b"bare"), routing_key=queue.name)
    got = await queue.get(timeout=WAIT, no_ack=True)
    assert got.body == b"bare"
    assert got.headers == {}
    assert got.content_type is None
    assert got.correlation_id is None
    assert got.reply_to is None
    assert got.expiration is None
    assert got.user_id is None
    assert got.delivery_mode == DeliveryMode.NOT_PERSISTENT


async def test_user_id_other_than_login_closes_channel_406(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as info:
        await channel.default_exchange.publish(
            Message(b"forged", user_id="mallory"), routing_key=queue.name
        )
    assert str(info.value).startswith(
        "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'"
    )
    assert channel.is_closed
    checker = await connection.channel()
    assert await message_count(checker, queue.name) == 0


async def test_expired_message_is_not_delivered(channel: AbstractChannel, unique: str) -> None:
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    # expiration "0": RabbitMQ drops the message unless a consumer can take it at once
    await channel.default_exchange.publish(Message(b"stale", expiration=0), routing_key=queue.name)
    await channel.default_exchange.publish(Message(b"fresh"), routing_key=queue.name)
    got = await queue.get(timeout=WAIT, no_ack=True)
    assert got.body == b"fresh"
    assert await queue.get(fail=False, timeout=WAIT) is None


# -- patterns ---------------------------------------------------------------------------------


async def test_rpc_with_reply_to_an_exclusive_server_named_queue(
    connection: AbstractConnection, unique: str
) -> None:
    server_channel = await connection.channel()
    requests = await server_channel.declare_queue(f"{unique}-rpc", exclusive=True)

    async def serve(request: AbstractIncomingMessage) -> None:
        async with request.process():
            assert request.reply_to
            await server_channel.default_exchange.publish(
                Message(request.body.upper(), correlation_id=request.correlation_id),
                routing_key=request.reply_to,
            )

    await requests.consume(serve)

    client_channel = await connection.channel()
    callback_queue = await client_channel.declare_queue("", exclusive=True)
    assert callback_queue.name.startswith("amq.gen-")
    pending: dict[str, asyncio.Future[bytes]] = {}

    async def on_reply(reply: AbstractIncomingMessage) -> None:
        await reply.ack()
        assert reply.correlation_id is not None
        pending.pop(reply.correlation_id).set_result(reply.body)

    await callback_queue.consume(on_reply)
    loop = asyncio.get_running_loop()
    calls = {f"{unique}-{i}": f"request {i}".encode() for i in range(5)}
    futures = {correlation_id: loop.create_future() for correlation_id in calls}
    pending.update(futures)
    for correlation_id, body in calls.items():
        await client_channel.default_exchange.publish(
            Message(body, correlation_id=correlation_id, reply_to=callback_queue.name),
            routing_key=requests.name,
        )
    results = await asyncio.wait_for(asyncio.gather(*futures.values()), WAIT)
    assert dict(zip(futures, results, strict=True)) == {
        cid: body.upper() for cid, body in calls.items()
    }


async def test_rpc_pattern_calls_and_closes_cleanly(
    connection: AbstractConnection, unique: str
) -> None:
    """aio_pika.patterns.RPC: on close it cancels its reply consumer (which auto-deletes the
    reply queue) and then unbinds that queue, which must still be answered with unbind-ok."""
    server = await RPC.create(await connection.channel())
    client = await RPC.create(await connection.channel())

    async def shout(*, text: str) -> str:
        return text.upper()

    await server.register(f"{unique}-shout", shout, auto_delete=True)
    answer = await asyncio.wait_for(client.call(f"{unique}-shout", kwargs={"text": "hi"}), WAIT)
    assert answer == "HI"
    await asyncio.wait_for(client.close(), WAIT)
    await asyncio.wait_for(server.close(), WAIT)
    assert not connection.is_closed
    channel = await connection.channel()  # the connection still works
    assert await message_count(channel, (await channel.declare_queue(exclusive=True)).name) == 0


async def test_exclusive_queue_is_invisible_to_other_connections(
    channel: AbstractChannel, broker: Any, unique: str
) -> None:
    queue = await channel.declare_queue(f"{unique}-excl", exclusive=True)
    other = await aio_pika.connect(broker.url, timeout=WAIT)
    try:
        other_channel = await other.channel()
        with pytest.raises(aiormq.exceptions.ChannelLockedResource) as info:
            await other_channel.declare_queue(queue.name, passive=True)
        assert "RESOURCE_LOCKED" in str(info.value)
    finally:
        await other.close()


async def test_transaction_commit_and_rollback(connection: AbstractConnection, unique: str) -> None:
    channel = await connection.channel(publisher_confirms=False)
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    observer = await connection.channel()

    async with channel.transaction():
        await channel.default_exchange.publish(Message(b"committed-1"), routing_key=queue.name)
        await channel.default_exchange.publish(Message(b"committed-2"), routing_key=queue.name)
        # nothing is visible before the commit
        assert await message_count(observer, queue.name) == 0
    assert await message_count(observer, queue.name) == 2

    tx = channel.transaction()
    await tx.select()  # already transactional: select again is harmless
    await channel.default_exchange.publish(Message(b"rolled-back"), routing_key=queue.name)
    await tx.rollback()
    assert await message_count(observer, queue.name) == 2

    # acks inside a transaction take effect at commit too
    first = await queue.get(timeout=WAIT)
    await first.ack()
    await tx.rollback()
    second = await queue.get(timeout=WAIT)
    assert second.body == b"committed-2"
    await second.ack()
    await tx.commit()
    # the rolled-back ack left "committed-1" unacked on this channel: still not ready
    assert await message_count(observer, queue.name) == 0
    await channel.close()  # closing the channel requeues the still-unacked message
    requeued = await observer.get_queue(queue.name, ensure=True)
    again = await requeued.get(timeout=WAIT)
    assert again.body == b"committed-1" and again.redelivered is True
    await again.ack()


async def test_exchange_to_exchange_binding(channel: AbstractChannel, unique: str) -> None:
    source = await channel.declare_exchange(f"{unique}-src", ExchangeType.TOPIC)
    destination = await channel.declare_exchange(f"{unique}-dst", ExchangeType.FANOUT)
    queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
    await queue.bind(destination)
    await destination.bind(source, routing_key="logs.#")

    await source.publish(Message(b"routed"), routing_key="logs.error")
    await source.publish(Message(b"filtered"), routing_key="metrics.cpu")
    assert await drain(queue) == [b"routed"]

    await destination.unbind(source, routing_key="logs.#")
    await source.publish(Message(b"after-unbind"), routing_key="logs.error")
    assert await drain(queue) == []
    await source.delete()
    await destination.delete()


async def test_queue_deletion_cancels_the_consumer(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(f"{unique}-q")
    underlay = await channel.get_underlay_channel()
    cancelled: asyncio.Future[commands.Basic.Cancel] = asyncio.get_running_loop().create_future()

    def on_cancel(frame: commands.Basic.Cancel) -> None:
        if not cancelled.done():
            cancelled.set_result(frame)

    underlay.on_consumer_cancel_callbacks.add(on_cancel)

    async def on_message(message: AbstractIncomingMessage) -> None:
        await message.ack()

    tag = await queue.consume(on_message)

    other = await connection.channel()
    await other.queue_delete(queue.name)

    frame = await asyncio.wait_for(cancelled, WAIT)
    assert isinstance(frame, commands.Basic.Cancel)
    assert frame.consumer_tag == tag
    # the channel itself stays usable
    still = await channel.declare_queue("", exclusive=True)
    assert still.name


async def test_queue_delete_counts_ready_messages_and_cancels_iterator(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1)
    queue = await channel.declare_queue(f"{unique}-q")
    for body in (b"delivered", b"ready"):
        await channel.default_exchange.publish(Message(body), routing_key=queue.name)
    underlay = await channel.get_underlay_channel()
    cancelled: asyncio.Event = asyncio.Event()
    underlay.on_consumer_cancel_callbacks.add(lambda frame: cancelled.set())

    async with asyncio.timeout(WAIT), queue.iterator() as messages:
        async for message in messages:
            assert message.body == b"delivered"
            other = await connection.channel()
            deleted = await other.queue_delete(queue.name)
            # Delete-Ok counts the ready messages, not the one delivered and unacked
            assert deleted.message_count == 1
            await cancelled.wait()
            # acking a delivery from a deleted queue is not an error
            await message.ack()
            break
    assert not channel.is_closed
    assert (await channel.declare_queue("", exclusive=True)).name


async def test_mandatory_publish_without_route_raises_delivery_error(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel(on_return_raises=True)
    with pytest.raises(aio_pika.exceptions.DeliveryError) as info:
        await channel.default_exchange.publish(
            Message(b"nowhere"), routing_key=f"{unique}-absent", mandatory=True
        )
    returned = info.value.message
    assert returned is not None
    assert returned.body == b"nowhere"
    assert isinstance(returned.delivery, commands.Basic.Return)
    assert returned.delivery.reply_code == 312
    assert returned.delivery.reply_text == "NO_ROUTE"
    assert returned.delivery.routing_key == f"{unique}-absent"
    # a returned message does not close the channel
    queue = await channel.declare_queue("", exclusive=True)
    await channel.default_exchange.publish(Message(b"ok"), routing_key=queue.name, mandatory=True)
    assert await drain(queue) == [b"ok"]


async def test_mandatory_publish_without_route_reaches_return_callbacks(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel()
    exchange = await channel.declare_exchange(f"{unique}-x", ExchangeType.DIRECT, auto_delete=True)
    returned: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

    def on_return(_channel: Any, message: AbstractIncomingMessage) -> None:
        if not returned.done():
            returned.set_result(message)

    channel.return_callbacks.add(on_return)
    # non-mandatory and unroutable: silently dropped, but still confirmed
    confirm = await exchange.publish(Message(b"dropped"), routing_key="nobody", mandatory=False)
    assert isinstance(confirm, commands.Basic.Ack)
    assert not returned.done()

    await exchange.publish(
        Message(b"bounce", message_id=f"{unique}-m"), routing_key="nobody", mandatory=True
    )
    message = await asyncio.wait_for(returned, WAIT)
    assert message.body == b"bounce"
    assert message.message_id == f"{unique}-m"
    assert message.exchange == exchange.name
    assert message.routing_key == "nobody"
    await exchange.delete()


async def test_publish_to_missing_exchange_closes_channel_404(
    connection: AbstractConnection, unique: str
) -> None:
    channel = await connection.channel()
    exchange = await channel.get_exchange(f"{unique}-missing", ensure=False)
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity) as info:
        await exchange.publish(Message(b"lost"), routing_key="k")
    assert str(info.value).startswith(f"NOT_FOUND - no exchange '{unique}-missing' in vhost '/'")
    assert channel.is_closed

"""Large messages, frame-boundary bodies, and publisher confirms.

Bodies are checked byte for byte (or by SHA-256 for the big one). Confirms are checked both
through clients (pika's confirm_delivery, aio-pika's confirming channels) and on the wire, where
the order and the delivery tags of Basic.Ack are visible.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import aio_pika
import pika
import pika.exceptions
import pytest
from aio_pika import Message
from aio_pika.abc import AbstractIncomingMessage
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from raw_amqp import RawAMQP, publish_frames

WAIT = 5.0
MiB = 1024 * 1024


def pika_params(broker: Any, **kwargs: Any) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host=broker.host,
        port=broker.port,
        credentials=pika.PlainCredentials("guest", "guest"),
        blocked_connection_timeout=WAIT,
        socket_timeout=WAIT,
        **kwargs,
    )


@pytest.fixture
def pika_connection(broker: Any) -> Iterator[pika.BlockingConnection]:
    connection = pika.BlockingConnection(pika_params(broker))
    try:
        yield connection
    finally:
        if connection.is_open:
            connection.close()


def consume_one(channel: Any, queue: str, timeout: float = WAIT) -> tuple[Any, Any, bytes]:
    """The next delivery through basic_consume (the broker's push path), acked."""
    for method, properties, body in channel.consume(queue, inactivity_timeout=timeout):
        assert method is not None, f"nothing delivered from {queue} within {timeout}s"
        channel.basic_ack(method.delivery_tag)
        channel.cancel()
        return method, properties, body
    raise AssertionError("consume generator ended")  # pragma: no cover


# -- big bodies -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_64_mib_body_round_trip(pika_connection: pika.BlockingConnection, unique: str) -> None:
    channel = pika_connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare(f"{unique}-big", exclusive=True).method.queue
    body = os.urandom(64 * MiB)
    digest = hashlib.sha256(body).hexdigest()

    channel.basic_publish("", queue, body, pika.BasicProperties(message_id="big"))
    del body
    assert channel.queue_declare(queue, passive=True).method.message_count == 1

    method, properties, received = consume_one(channel, queue, timeout=60)
    assert properties.message_id == "big"
    assert len(received) == 64 * MiB
    assert hashlib.sha256(received).hexdigest() == digest
    assert method.redelivered is False


@pytest.mark.timeout(60)
def test_many_mid_size_bodies_with_aio_pika(broker: Any, unique: str) -> None:
    """Eight 1 MiB bodies published concurrently on one channel arrive whole and unmixed."""

    async def main() -> None:
        connection = await aio_pika.connect(broker.url, timeout=WAIT)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
            bodies = {f"{i}": bytes([i]) * MiB + os.urandom(1000) for i in range(8)}
            await asyncio.wait_for(
                asyncio.gather(
                    *(
                        channel.default_exchange.publish(
                            Message(body, message_id=mid), routing_key=queue.name
                        )
                        for mid, body in bodies.items()
                    )
                ),
                30,
            )
            received: dict[str, bytes] = {}
            while len(received) < len(bodies):
                message = await queue.get(timeout=WAIT, no_ack=True)
                assert message.message_id is not None
                received[message.message_id] = message.body
            assert received == bodies

    asyncio.run(main())


# -- frame boundaries -------------------------------------------------------------------------

# Offsets from the largest body that fits one frame (frame_max - 8: 7 bytes of header, 1 end).
BOUNDARY_SIZES = [
    pytest.param(lambda fm: 0, id="empty"),
    pytest.param(lambda fm: 1, id="one"),
    pytest.param(lambda fm: fm - 9, id="frame_max-9"),
    pytest.param(lambda fm: fm - 8, id="frame_max-8"),
    pytest.param(lambda fm: fm - 7, id="frame_max-7"),
    pytest.param(lambda fm: fm, id="frame_max"),
    pytest.param(lambda fm: fm + 1, id="frame_max+1"),
    pytest.param(lambda fm: 2 * (fm - 8), id="2x(frame_max-8)"),
    pytest.param(lambda fm: 2 * (fm - 8) + 1, id="2x(frame_max-8)+1"),
]


@pytest.mark.parametrize("frame_max", [131072, 4096])
@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_frame_boundary_bodies_arrive_intact(
    broker: Any, unique: str, frame_max: int, size: Any
) -> None:
    connection = pika.BlockingConnection(pika_params(broker, frame_max=frame_max))
    try:
        negotiated = connection._impl.params.frame_max
        assert negotiated == frame_max
        length = size(negotiated)
        body = bytes((i * 7 + 3) % 256 for i in range(length))
        channel = connection.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare(f"{unique}-q", exclusive=True).method.queue

        # the same body via basic.get and via a consumer: both server delivery paths split it
        channel.basic_publish("", queue, body, pika.BasicProperties(headers={"n": length}))
        channel.basic_publish("", queue, body, pika.BasicProperties(headers={"n": length}))
        method, properties, got = channel.basic_get(queue, auto_ack=True)
        assert method is not None
        assert properties.headers == {"n": length}
        assert got == body
        _, properties, consumed = consume_one(channel, queue)
        assert properties.headers == {"n": length}
        assert consumed == body
    finally:
        connection.close()


def test_small_frame_max_split_on_the_wire(broker: Any, unique: str) -> None:
    """With frame_max 4096 negotiated, every body frame the server sends is at most 4088 bytes."""
    body = os.urandom(3 * 4088 + 5)
    with RawAMQP(broker.host, broker.port) as client:
        client.handshake(frame_max=4096)
        client.open_channel(1)
        queue = f"{unique}-q"
        client.send_frame(commands.Queue.Declare(queue=queue, exclusive=True), 1)
        client.expect(commands.Queue.DeclareOk)
        client.send(publish_frames(1, "", queue, body, frame_max=4096))
        client.send_frame(commands.Basic.Get(queue=queue, no_ack=True), 1)
        client.expect(commands.Basic.GetOk)
        channel, header = client.read_frame()
        assert channel == 1 and isinstance(header, ContentHeader)
        assert header.body_size == len(body)
        chunks: list[bytes] = []
        while sum(map(len, chunks)) < len(body):
            channel, part = client.read_frame()
            assert channel == 1 and isinstance(part, ContentBody)
            assert 0 < len(part.value) <= 4096 - 8
            chunks.append(part.value)
        assert b"".join(chunks) == body
        assert [len(c) for c in chunks] == [4088, 4088, 4088, 5]
        client.close_gracefully()


def test_empty_body_has_no_body_frame(broker: Any, unique: str) -> None:
    """A zero-length message is a content header with body_size 0 and no body frame at all."""
    with RawAMQP(broker.host, broker.port) as client:
        client.handshake()
        client.open_channel(1)
        queue = f"{unique}-q"
        client.send_frame(commands.Queue.Declare(queue=queue, exclusive=True), 1)
        client.expect(commands.Queue.DeclareOk)
        client.send(publish_frames(1, "", queue, b""))
        client.send_frame(commands.Basic.Get(queue=queue, no_ack=True), 1)
        client.expect(commands.Basic.GetOk)
        _, header = client.read_frame()
        assert isinstance(header, ContentHeader) and header.body_size == 0
        # the next frame is the reply to the next method, not an empty body frame
        client.send_frame(commands.Basic.Get(queue=queue, no_ack=True), 1)
        client.expect(commands.Basic.GetEmpty)
        client.close_gracefully()


# -- confirms ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_ten_thousand_pipelined_confirmed_publishes(broker: Any, unique: str) -> None:
    count = 10_000

    async def main() -> None:
        connection = await aio_pika.connect(broker.url, timeout=WAIT)
        async with connection:
            channel = await connection.channel()  # publisher confirms on by default
            queue = await channel.declare_queue(f"{unique}-q", exclusive=True)
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        channel.default_exchange.publish(
                            Message(str(i).encode()), routing_key=queue.name
                        )
                        for i in range(count)
                    )
                ),
                30,
            )
            assert len(results) == count
            assert all(isinstance(r, commands.Basic.Ack) for r in results)
            assert queue.declaration_result is not None
            declared = await channel.declare_queue(queue.name, passive=True)
            assert declared.declaration_result.message_count == count

            consumer_channel = await connection.channel()
            await consumer_channel.set_qos(prefetch_count=500)
            consumer_queue = await consumer_channel.get_queue(queue.name)
            seen: list[int] = []
            done = asyncio.get_running_loop().create_future()

            async def on_message(message: AbstractIncomingMessage) -> None:
                assert message.redelivered is False
                seen.append(int(message.body))
                if len(seen) % 100 == 0:
                    await message.ack(multiple=True)
                if len(seen) == count and not done.done():
                    done.set_result(None)

            tag = await consumer_queue.consume(on_message)
            await asyncio.wait_for(done, 30)
            await consumer_queue.cancel(tag)
            assert seen == list(range(count))  # each exactly once, in publish order
            final = await channel.declare_queue(queue.name, passive=True)
            assert final.declaration_result.message_count == 0
            assert await queue.get(fail=False, timeout=WAIT) is None

    asyncio.run(main())


def test_confirms_arrive_in_order_on_the_wire(broker: Any, unique: str) -> None:
    """Delivery tags count publishes from 1; acks come in order and cover each tag exactly once."""
    count = 500
    with RawAMQP(broker.host, broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.send_frame(commands.Confirm.Select(), 1)
        client.expect(commands.Confirm.SelectOk)
        queue = f"{unique}-q"
        client.send_frame(commands.Queue.Declare(queue=queue, exclusive=True), 1)
        client.expect(commands.Queue.DeclareOk)
        client.send(b"".join(publish_frames(1, "", queue, b"m%d" % i) for i in range(count)))
        confirmed: list[int] = []
        highest = 0
        while highest < count:
            channel, method = client.read_method()
            assert channel == 1
            assert isinstance(method, commands.Basic.Ack), f"expected an ack, got {method!r}"
            assert method.delivery_tag > highest, "confirms went backwards"
            if method.multiple:
                confirmed.extend(range(highest + 1, method.delivery_tag + 1))
            else:
                confirmed.append(method.delivery_tag)
            highest = method.delivery_tag
        assert confirmed == list(range(1, count + 1))
        client.send_frame(commands.Queue.Declare(queue=queue, passive=True), 1)
        declare_ok = client.expect(commands.Queue.DeclareOk)
        assert isinstance(declare_ok, commands.Queue.DeclareOk)
        assert declare_ok.message_count == count
        client.close_gracefully()


def test_return_precedes_the_confirm_of_an_unroutable_mandatory_publish(
    broker: Any, unique: str
) -> None:
    with RawAMQP(broker.host, broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.send_frame(commands.Confirm.Select(), 1)
        client.expect(commands.Confirm.SelectOk)
        queue = f"{unique}-q"
        client.send_frame(commands.Queue.Declare(queue=queue, exclusive=True), 1)
        client.expect(commands.Queue.DeclareOk)
        client.send(publish_frames(1, "", f"{unique}-nowhere", b"bounce", mandatory=True))
        client.send(publish_frames(1, "", f"{unique}-nowhere", b"dropped", mandatory=False))
        client.send(publish_frames(1, "", queue, b"routed", mandatory=True))

        returned = client.expect(commands.Basic.Return)
        assert isinstance(returned, commands.Basic.Return)
        assert (returned.reply_code, returned.reply_text) == (312, "NO_ROUTE")
        assert returned.exchange == "" and returned.routing_key == f"{unique}-nowhere"
        _, header = client.read_frame()
        assert isinstance(header, ContentHeader) and header.body_size == 6
        _, content = client.read_frame()
        assert isinstance(content, ContentBody) and content.value == b"bounce"

        acked: set[int] = set()
        while len(acked) < 3:
            method = client.expect(commands.Basic.Ack)
            assert isinstance(method, commands.Basic.Ack)
            top = method.delivery_tag
            acked |= set(range(1, top + 1)) if method.multiple else {top}
        assert acked == {1, 2, 3}  # unroutable messages are confirmed (acked) too
        client.close_gracefully()


def test_confirm_select_on_a_transactional_channel_is_refused(broker: Any, unique: str) -> None:
    with RawAMQP(broker.host, broker.port) as client:
        client.handshake()
        client.open_channel(1)
        client.send_frame(commands.Tx.Select(), 1)
        client.expect(commands.Tx.SelectOk)
        client.send_frame(commands.Confirm.Select(), 1)
        channel, close = client.read_method()
        assert channel == 1 and isinstance(close, commands.Channel.Close)
        assert close.reply_code == 406
        assert close.reply_text.startswith("PRECONDITION_FAILED")
        assert (close.class_id, close.method_id) == (85, 10)
        client.send_frame(commands.Channel.CloseOk(), 1)
        client.open_channel(2)  # the connection is fine
        client.close_gracefully()


def test_pika_confirm_delivery_and_unroutable_error(
    pika_connection: pika.BlockingConnection, unique: str
) -> None:
    channel = pika_connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare(f"{unique}-q", exclusive=True).method.queue
    for i in range(50):
        channel.basic_publish("", queue, b"%d" % i, mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        channel.basic_publish("", f"{unique}-absent", b"lost", mandatory=True)
    (returned,) = info.value.messages
    assert returned.body == b"lost"
    assert returned.method.reply_code == 312
    assert channel.queue_declare(queue, passive=True).method.message_count == 50
    bodies = []
    for _ in range(50):
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        assert method is not None
        bodies.append(body)
    assert bodies == [b"%d" % i for i in range(50)]

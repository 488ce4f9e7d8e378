"""The example package warrenmq-consistent-hash (examples/consistent-hash), installed with pip
and driven from pika: weighted spread, one queue per message, a stable remap, hashing on a
header or a property, and RabbitMQ's errors for bad arguments and binding keys."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import UnroutableError
from pika_helpers import Collector, Connections, channel_closed, ready_count, wait_until

pytestmark = [pytest.mark.warrenmq_only, pytest.mark.usefixtures("example_plugins")]


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A fixed name for each test, not a random one as elsewhere: where a key goes depends on
    the queue names, so with fixed names every run places the keys the same way and the
    spread checks below cannot flake."""
    return f"chash-{request.node.originalname}"


@pytest.fixture
def exchange(conns: Connections, unique: str) -> str:
    conns.track(exchange=unique)
    return unique


def _queues(conns: Connections, channel: BlockingChannel, names: list[str]) -> list[str]:
    for name in names:
        channel.queue_declare(name)
        conns.track(queue=name)
    return names


def _publish_keys(channel: BlockingChannel, exchange: str, keys: Iterator[str] | list[str]) -> None:
    """Publish one message per key (the key is also the body), then make a round trip on the
    same channel: the broker handles a channel's frames in order, so every one is routed."""
    for key in keys:
        channel.basic_publish(exchange, key, key.encode())
    channel.queue_declare("", exclusive=True)


def _where_each_key_went(
    connection: pika.BlockingConnection, channel: BlockingChannel, queues: list[str], count: int
) -> dict[str, str]:
    """Consume every queue empty; key -> the queue it was in. Fails if a key is in two."""
    collectors = {queue: Collector() for queue in queues}
    tags = [channel.basic_consume(q, c, auto_ack=True) for q, c in collectors.items()]
    wait_until(connection, lambda: sum(map(len, collectors.values())) >= count, "every message")
    for tag in tags:
        channel.basic_cancel(tag)
    placed: dict[str, str] = {}
    for queue, collector in collectors.items():
        for body in collector.bodies:
            assert body.decode() not in placed, f"{body!r} reached two queues"
            placed[body.decode()] = queue
    assert len(placed) == count
    return placed


def test_keys_spread_over_queues_by_weight_one_queue_each(
    conns: Connections, exchange: str, unique: str
) -> None:
    channel = conns.channel()
    channel.exchange_declare(exchange, exchange_type="x-consistent-hash")
    weights = {f"{unique}-a": 1, f"{unique}-b": 1, f"{unique}-c": 2, f"{unique}-d": 2}
    for queue, weight in weights.items():
        _queues(conns, channel, [queue])
        channel.queue_bind(queue, exchange, routing_key=str(weight))
    total = 12_000
    _publish_keys(channel, exchange, (f"order-{n}" for n in range(total)))
    counts = {queue: ready_count(channel, queue) for queue in weights}
    assert sum(counts.values()) == total, f"each message goes to exactly one queue: {counts}"
    for queue, weight in weights.items():
        expected = total * weight / sum(weights.values())
        assert abs(counts[queue] - expected) <= 0.1 * expected, (queue, counts)


def test_adding_a_queue_moves_only_its_share_of_keys_and_removing_it_moves_them_back(
    conns: Connections, exchange: str, unique: str
) -> None:
    connection = conns.open()
    channel = connection.channel()
    channel.exchange_declare(exchange, exchange_type="x-consistent-hash")
    queues = _queues(conns, channel, [f"{unique}-{n}" for n in range(4)])
    for queue in queues[:3]:
        channel.queue_bind(queue, exchange, routing_key="1")
    keys = [f"user-{n}" for n in range(3000)]

    _publish_keys(channel, exchange, keys)
    before = _where_each_key_went(connection, channel, queues, len(keys))
    assert set(before.values()) == set(queues[:3])

    channel.queue_bind(queues[3], exchange, routing_key="1")
    _publish_keys(channel, exchange, keys)
    after = _where_each_key_went(connection, channel, queues, len(keys))
    moved = [key for key in keys if after[key] != before[key]]
    assert {after[key] for key in moved} == {queues[3]}, "keys move only to the new queue"
    assert 0.2 <= len(moved) / len(keys) <= 0.3, f"{len(moved)} of {len(keys)} moved (1/4 due)"

    channel.queue_unbind(queues[3], exchange, routing_key="1")
    _publish_keys(channel, exchange, keys)
    assert _where_each_key_went(connection, channel, queues, len(keys)) == before


def test_hash_header_routes_by_that_header(conns: Connections, exchange: str, unique: str) -> None:
    connection = conns.open()
    channel = connection.channel()
    channel.exchange_declare(
        exchange, exchange_type="x-consistent-hash", arguments={"hash-header": "customer"}
    )
    queues = _queues(conns, channel, [f"{unique}-a", f"{unique}-b"])
    for queue in queues:
        channel.queue_bind(queue, exchange, routing_key="1")
    customers = [f"c{n}" for n in range(200)]
    for round_ in range(2):
        for customer in customers:  # the routing key varies, the header decides
            properties = pika.BasicProperties(headers={"customer": customer})
            channel.basic_publish(exchange, f"k{round_}-{customer}", customer.encode(), properties)
    channel.queue_declare("", exclusive=True)
    placed = Counter()
    collectors = {queue: Collector() for queue in queues}
    for queue, collector in collectors.items():
        channel.basic_consume(queue, collector, auto_ack=True)
    wait_until(connection, lambda: sum(map(len, collectors.values())) == 400, "every message")
    for queue, collector in collectors.items():
        for body in collector.bodies:
            placed[(body, queue)] += 1
    assert all(count == 2 for count in placed.values()), "one customer, one queue"
    assert all(len(collector) > 0 for collector in collectors.values()), "both queues used"


def test_messages_without_the_hash_header_all_go_to_one_queue(
    conns: Connections, exchange: str, unique: str
) -> None:
    channel = conns.channel()
    channel.exchange_declare(
        exchange, exchange_type="x-consistent-hash", arguments={"hash-header": "customer"}
    )
    queues = _queues(conns, channel, [f"{unique}-{n}" for n in range(3)])
    for queue in queues:
        channel.queue_bind(queue, exchange, routing_key="1")
    _publish_keys(channel, exchange, [f"k{n}" for n in range(100)])
    assert sorted(ready_count(channel, queue) for queue in queues) == [0, 0, 100]


def test_hash_property_routes_by_message_id(conns: Connections, exchange: str, unique: str) -> None:
    channel = conns.channel()
    channel.exchange_declare(
        exchange, exchange_type="x-consistent-hash", arguments={"hash-property": "message_id"}
    )
    queues = _queues(conns, channel, [f"{unique}-a", f"{unique}-b"])
    for queue in queues:
        channel.queue_bind(queue, exchange, routing_key="1")
    for n in range(300):  # the same message id, whatever the routing key
        channel.basic_publish(
            exchange, f"k{n}", b"", pika.BasicProperties(message_id="the-same-id")
        )
    channel.queue_declare("", exclusive=True)
    assert sorted(ready_count(channel, queue) for queue in queues) == [0, 300]
    for n in range(300):
        channel.basic_publish(exchange, "k", b"", pika.BasicProperties(message_id=f"id-{n}"))
    channel.queue_declare("", exclusive=True)
    assert min(ready_count(channel, queue) for queue in queues) >= 50, "ids spread"


def test_with_no_binding_a_mandatory_message_is_returned(conns: Connections, exchange: str) -> None:
    channel = conns.channel()
    channel.confirm_delivery()
    channel.exchange_declare(exchange, exchange_type="x-consistent-hash")
    with pytest.raises(UnroutableError):
        channel.basic_publish(exchange, "k", b"lost", mandatory=True)


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("heavy", "The binding key must be an integer: 'heavy'"),
        ("0", "The binding key must be greater than 0"),
        ("-3", "The binding key must be greater than 0"),
    ],
)
def test_binding_key_must_be_a_positive_integer(
    conns: Connections, exchange: str, unique: str, key: str, error: str
) -> None:
    channel = conns.channel()
    channel.exchange_declare(exchange, exchange_type="x-consistent-hash")
    _queues(conns, channel, [unique])
    with channel_closed(406, error):
        channel.queue_bind(unique, exchange, routing_key=key)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"hash-header": "a", "hash-property": "message_id"}, "mutually exclusive"),
        ({"hash-property": "type"}, "Unsupported property: type"),
        ({"hash-header": 5}, "Invalid argument 'hash-header'"),
    ],
)
def test_bad_exchange_arguments_are_refused(
    conns: Connections, exchange: str, arguments: dict[str, object], error: str
) -> None:
    channel = conns.channel()
    with channel_closed(406, error):
        channel.exchange_declare(exchange, exchange_type="x-consistent-hash", arguments=arguments)

"""kombu's native delayed delivery (kombu.transport.native_delayed_delivery), which celery 5.5+
uses for countdown/ETA tasks: 28 levels of topic exchange + queue, level N's queue holding a
message for 2**N seconds (``x-message-ttl``, ``x-overflow: reject-publish``) before
dead-lettering it to level N-1's exchange; the routing key spells the delay in binary, one word
per level ("0.0.(...).1.1.<routing key>"), and exchange-to-exchange bindings skip the levels whose
bit is 0. Level 0 dead-letters into the ``celery_delayed_delivery`` exchange, bound to the task
exchange with ``#.<routing key>``. It relies on TTLs, dead-lettering, topic routing and
exchange-to-exchange bindings working together.

Celery enables it only when one of its queues is declared ``x-queue-type: quorum``
(celery.utils.quorum_queues.detect_quorum_queues); ``broker_native_delayed_delivery_queue_type
= "classic"`` makes the 28 delay queues classic ones. So that the test needs classic queues only,
its task queue is declared classic by the test and marked ``no_declare`` in celery's
configuration, where it says quorum.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from celery_helpers import RESULT_TIMEOUT, Worker, imported_tasks, running_worker
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message
from kombu.transport.native_delayed_delivery import (
    MAX_LEVEL,
    bind_queue_to_native_delayed_delivery_exchange,
    calculate_routing_key,
    declare_native_delayed_delivery_exchanges_and_queues,
    level_name,
)
from kombu_helpers import drain_until
from pika_helpers import BrokerLike, Connections, connect

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0


def delay_tree_names(prefix: str | None = None) -> tuple[list[str], list[str]]:
    """The queues and exchanges of the delay tree: one of each per level, plus the delivery
    exchange."""
    levels = [level_name(level, prefix) for level in range(MAX_LEVEL + 1)]
    delivery = f"{prefix}_celery_delayed_delivery" if prefix else "celery_delayed_delivery"
    return levels, [*levels, delivery]


def delete_all(broker: BrokerLike, queues: list[str], exchanges: list[str]) -> None:
    connection = connect(broker)
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


# -- kombu alone ------------------------------------------------------------------------------


@pytest.fixture
def kombu_conn(broker: BrokerLike) -> Iterator[Connection]:
    connection = Connection(
        broker.url.replace("amqp://", "pyamqp://"),
        connect_timeout=5,
        transport_options={"confirm_publish": True},
    )
    connection.connect()
    try:
        yield connection
    finally:
        connection.release()


def test_kombu_delayed_message_goes_through_the_levels(
    kombu_conn: Connection, conns: Connections, unique: str
) -> None:
    """A 2 s delay: level 27 down to level 1 by exchange-to-exchange bindings, 2 s in level 1's
    queue, dead-lettered to level 0's exchange, past it (bit 0 is 0) to the delivery exchange,
    then to the task exchange and queue."""
    levels, exchanges = delay_tree_names(unique)
    for name in levels:
        conns.track(queue=name)
    for name in exchanges:
        conns.track(exchange=name)
    declare_native_delayed_delivery_exchanges_and_queues(kombu_conn, "classic", prefix=unique)
    task_exchange = Exchange(f"{unique}-tasks", type="topic")
    queue = Queue(f"{unique}-tasks", task_exchange, routing_key="work")
    conns.track(queue=queue.name, exchange=task_exchange.name)
    queue.declare(channel=kombu_conn.default_channel)
    bind_queue_to_native_delayed_delivery_exchange(kombu_conn, queue, prefix=unique)

    routing_key = calculate_routing_key(2, "work")
    assert routing_key == "0." * 26 + "1.0.work"
    start = time.monotonic()
    Producer(kombu_conn.default_channel).publish(
        {"n": 1},
        exchange=Exchange(level_name(MAX_LEVEL, unique), type="topic"),
        routing_key=routing_key,
        serializer="json",
    )
    received: list[Message] = []

    def on_message(_body: Any, message: Message) -> None:
        received.append(message)
        message.ack()

    with Consumer(kombu_conn, [queue], accept=["json"], callbacks=[on_message]):
        drain_until(kombu_conn, lambda: len(received) == 1, "the delayed message", 2 + WAIT)
    assert time.monotonic() - start >= 2.0, "delivered before its delay"

    [message] = received
    assert message.payload == {"n": 1}
    assert message.delivery_info["exchange"] == level_name(0, unique)  # dead-lettered there
    assert message.delivery_info["routing_key"] == routing_key
    [death] = message.headers["x-death"]
    assert {key: death[key] for key in ("count", "reason", "queue", "exchange")} == {
        "count": 1,
        "reason": "expired",
        "queue": level_name(1, unique),
        "exchange": level_name(MAX_LEVEL, unique),
    }
    assert death["routing-keys"] == [routing_key]


# -- celery end to end ------------------------------------------------------------------------

TASKS_SOURCE = """\
import time

from celery import Celery
from kombu import Exchange, Queue

app = Celery("{name}", broker="{url}", backend="rpc://")
app.conf.update(
    broker_connection_retry_on_startup=True,
    broker_native_delayed_delivery_queue_type="classic",
    task_default_queue="{queue}",
    task_queues=[
        Queue(
            "{queue}",
            Exchange("{queue}", type="topic"),
            routing_key="{queue}",
            queue_arguments={{"x-queue-type": "quorum"}},  # what enables native delayed delivery
            no_declare=True,  # declared classic by the test instead
        ),
    ],
)


@app.task(bind=True)
def stamp(self) -> dict:
    return {{"routing_key": self.request.delivery_info["routing_key"], "ran_at": time.time()}}
"""


@pytest.fixture(scope="module")
def celery_dir(tmp_path_factory: pytest.TempPathFactory, broker: BrokerLike) -> Iterator[Path]:
    """tasks.py, and its task queue: a classic queue bound to a topic exchange, both unique to
    this run. The delay tree has celery's fixed names: it is deleted before (a leftover one
    could be of the other queue type) and after."""
    directory = tmp_path_factory.mktemp("celery-delayed")
    token = uuid.uuid4().hex[:8]
    task_queue = f"celery-delayed-{token}"
    url = broker.url.replace("amqp://", "pyamqp://")
    source = TASKS_SOURCE.format(name=f"t{token}", url=url, queue=task_queue)
    (directory / "tasks.py").write_text(source)
    levels, exchanges = delay_tree_names()
    delete_all(broker, levels, exchanges)
    connection = connect(broker)
    try:
        channel = connection.channel()
        channel.exchange_declare(task_queue, "topic", durable=True)
        channel.queue_declare(task_queue, durable=True)
        channel.queue_bind(task_queue, task_queue, task_queue)
    finally:
        connection.close()
    yield directory
    delete_all(broker, [task_queue, *levels], [task_queue, *exchanges])


@pytest.fixture(scope="module")
def tasks(celery_dir: Path) -> Iterator[ModuleType]:
    with imported_tasks(celery_dir) as module:
        yield module


@pytest.fixture(scope="module")
def worker(celery_dir: Path) -> Iterator[Worker]:
    with running_worker(celery_dir) as running:
        yield running


def test_task_without_countdown_is_routed_directly(worker: Worker, tasks: Any) -> None:
    result = tasks.stamp.delay().get(timeout=RESULT_TIMEOUT)
    assert result["routing_key"] == tasks.app.conf.task_default_queue


def test_countdown_task_is_delayed_by_the_broker(
    broker: BrokerLike, worker: Worker, tasks: Any
) -> None:
    """The routing key the worker got it with shows the way it came: through the delay tree and
    the delivery exchange's ``#.<queue>`` binding."""
    queue = tasks.app.conf.task_default_queue
    sent = time.time()
    result = tasks.stamp.apply_async(countdown=1).get(timeout=1 + RESULT_TIMEOUT)
    assert result["routing_key"] == calculate_routing_key(1, queue)
    assert result["ran_at"] - sent >= 1.0, "ran before its countdown"

    # the worker declared the delay tree; the message left it
    connection = connect(broker)
    try:
        channel = connection.channel()
        for name in delay_tree_names()[0]:
            assert channel.queue_declare(name, passive=True).method.message_count == 0
    finally:
        connection.close()

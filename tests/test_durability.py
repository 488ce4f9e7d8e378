"""The disk store across restarts, as a user sees it: real pika clients, a broker with a data
directory, stopped and started again by the test."""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aio_pika
import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, UnroutableError
from pika_helpers import (
    Collector,
    channel_closed,
    confirmed_channel,
    exchange_exists,
    get_bodies,
    queue_exists,
    ready_count,
    wait_until,
)

from warrenmq import Message, Properties, Settings, hookimpl
from warrenmq.errors import StoreError
from warrenmq.plugins import disk_store
from warrenmq.plugins.classic_queue import ClassicQueue
from warrenmq.plugins.disk_store import queue_log
from warrenmq.queue import READY, StoredEntry
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only

PERSISTENT = pika.BasicProperties(delivery_mode=2)


@contextmanager
def disk_broker(data_dir: Path) -> Iterator[RunningBroker]:
    with running_broker(
        Settings(host="127.0.0.1", amqp_port=0, store="disk", data_dir=data_dir)
    ) as running:
        yield running


@contextmanager
def client(running: RunningBroker) -> Iterator[pika.BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(running.url))
    try:
        yield connection
    finally:
        if connection.is_open:
            connection.close()


def test_durable_entities_and_persistent_messages_survive_and_the_rest_does_not(
    tmp_path: Path,
) -> None:
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        channel.exchange_declare("orders", "topic", durable=True)
        channel.exchange_declare("scratch", "fanout")
        channel.queue_declare("billing", durable=True)
        channel.queue_declare("temp")
        channel.queue_bind("billing", "orders", "order.#")
        channel.queue_bind("temp", "orders", "order.#")
        channel.basic_publish("orders", "order.new", b"kept", PERSISTENT)
        channel.basic_publish("orders", "order.new", b"transient")
        channel.basic_publish("", "billing", b"kept too", pika.BasicProperties(delivery_mode=2))
    with disk_broker(tmp_path) as running, client(running) as connection:
        assert exchange_exists(connection, "orders")
        assert not exchange_exists(connection, "scratch")
        assert queue_exists(connection, "billing")
        assert not queue_exists(connection, "temp")
        channel = connection.channel()
        assert get_bodies(channel, "billing") == [b"kept", b"kept too"]
        # the binding came back too
        confirmed_channel(connection).basic_publish("orders", "order.paid", b"routed", PERSISTENT)
        assert get_bodies(channel, "billing") == [b"routed"]


def test_definitions_with_exchange_to_exchange_bindings_and_arguments(tmp_path: Path) -> None:
    queue_arguments = {
        "x-max-length": 5,
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "dead",
        "x-message-ttl": 60_000,
    }
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = connection.channel()
        channel.exchange_declare("front", "topic", durable=True)
        channel.exchange_declare(
            "by-header", "headers", durable=True, arguments={"alternate-exchange": "lost"}
        )
        channel.exchange_declare("lost", "fanout", durable=True)
        channel.exchange_declare("dead", "fanout", durable=True)
        channel.exchange_bind("by-header", "front", "eu.#")
        channel.exchange_bind("by-header", "front", "us.#")
        channel.exchange_unbind("by-header", "front", "us.#")
        channel.queue_declare("urgent", durable=True, arguments=queue_arguments)
        channel.queue_declare("unrouted", durable=True)
        channel.queue_bind(
            "urgent", "by-header", "", arguments={"x-match": "all", "level": "high", "n": 2}
        )
        channel.queue_bind("unrouted", "lost", "")
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        # arguments restored: an equivalent redeclare passes, an inequivalent one fails
        channel.queue_declare("urgent", durable=True, arguments=queue_arguments)
        channel.exchange_declare(
            "by-header", "headers", durable=True, arguments={"alternate-exchange": "lost"}
        )
        with channel_closed(406, "inequivalent arg 'x-max-length'"):
            channel.queue_declare(
                "urgent", durable=True, arguments={**queue_arguments, "x-max-length": 6}
            )
        channel = confirmed_channel(connection)
        high = pika.BasicProperties(delivery_mode=2, headers={"level": "high", "n": 2})
        low = pika.BasicProperties(delivery_mode=2, headers={"level": "low", "n": 2})
        channel.basic_publish("front", "eu.paris", b"high", high)
        channel.basic_publish("front", "eu.paris", b"low", low)  # to the alternate exchange
        with pytest.raises(UnroutableError):  # the binding removed before the restart
            channel.basic_publish("front", "us.nyc", b"unbound", high, mandatory=True)
        assert get_bodies(channel, "urgent") == [b"high"]
        assert get_bodies(channel, "unrouted") == [b"low"]


def test_order_properties_and_redelivered_flag(tmp_path: Path) -> None:
    sent = [
        pika.BasicProperties(
            delivery_mode=2,
            content_type="application/json",
            headers={"n": i, "tags": ["a", b"b"], "nested": {"x": 15}},
            correlation_id=f"c{i}",
            message_id=f"m{i}",
            priority=i % 3,
            timestamp=1_700_000_000 + i,
            app_id="test",
            type="event",
        )
        for i in range(10)
    ]
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        channel.queue_declare("ordered", durable=True)
        for i, properties in enumerate(sent):
            channel.basic_publish("", "ordered", f"body-{i}".encode(), properties)
        consumer = connection.channel()
        consumer.basic_qos(prefetch_count=3)
        collector = Collector()
        consumer.basic_consume("ordered", collector)
        wait_until(connection, lambda: len(collector) == 3, "three deliveries")
        # closed without acking them: they go back, delivered once
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = connection.channel()
        received = []
        while True:
            method, properties, body = channel.basic_get("ordered", auto_ack=True)
            if method is None:
                break
            received.append((method.redelivered, properties, body))
    assert [body for _, _, body in received] == [f"body-{i}".encode() for i in range(10)]
    assert [redelivered for redelivered, _, _ in received] == [True] * 3 + [False] * 7
    for (_, got, _), want in zip(received, sent, strict=True):
        assert got.headers == {"n": want.headers["n"], "tags": ["a", b"b"], "nested": {"x": 15}}
        for name in ("content_type", "correlation_id", "message_id", "priority", "app_id", "type"):
            assert getattr(got, name) == getattr(want, name), name
        assert got.timestamp == want.timestamp
        assert got.delivery_mode == 2


def test_an_unacknowledged_message_comes_back_redelivered(tmp_path: Path) -> None:
    with disk_broker(tmp_path) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        channel.queue_declare("work", durable=True)
        channel.basic_publish("", "work", b"job", PERSISTENT)
        method, _, body = channel.basic_get("work", auto_ack=False)
        assert body == b"job" and not method.redelivered
        # the broker stops while the client still holds the delivery
    with disk_broker(tmp_path) as running, client(running) as connection:
        method, _, body = connection.channel().basic_get("work", auto_ack=True)
        assert body == b"job"
        assert method.redelivered


def test_two_hundred_confirmed_messages(tmp_path: Path) -> None:
    bodies = [f"message {i}".encode() for i in range(200)]
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        channel.queue_declare("bulk", durable=True)
        for body in bodies:
            channel.basic_publish("", "bulk", body, PERSISTENT)  # returns once confirmed
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = connection.channel()
        assert ready_count(channel, "bulk") == 200
        assert get_bodies(channel, "bulk") == bodies


def test_acked_purged_and_deleted_are_gone_after_a_restart(tmp_path: Path) -> None:
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        for name in ("acked", "purged", "deleted"):
            channel.queue_declare(name, durable=True)
            for i in range(20):
                channel.basic_publish("", name, f"{name}-{i}".encode(), PERSISTENT)
        for _ in range(15):
            method, _, _ = channel.basic_get("acked")
            channel.basic_ack(method.delivery_tag)
        channel.queue_purge("purged")
        channel.queue_delete("deleted")
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = connection.channel()
        assert get_bodies(channel, "acked") == [f"acked-{i}".encode() for i in range(15, 20)]
        assert ready_count(channel, "purged") == 0
        assert not queue_exists(connection, "deleted")
    assert len(list((tmp_path / "queues").iterdir())) == 2  # the deleted queue's files went


def test_transactions_commit_persistent_messages(tmp_path: Path) -> None:
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = connection.channel()
        channel.queue_declare("tx", durable=True)
        channel.tx_select()
        channel.basic_publish("", "tx", b"committed", PERSISTENT)
        channel.tx_commit()
        channel.basic_publish("", "tx", b"rolled back", PERSISTENT)
        channel.tx_rollback()
    with disk_broker(tmp_path) as running, client(running) as connection:
        assert get_bodies(connection.channel(), "tx") == [b"committed"]


def test_dead_lettered_persistent_messages_are_kept(tmp_path: Path) -> None:
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        channel.exchange_declare("dlx", "fanout", durable=True)
        channel.queue_declare("graveyard", durable=True)
        channel.queue_bind("graveyard", "dlx")
        channel.queue_declare("short", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
        channel.basic_publish("", "short", b"rejected", PERSISTENT)
        method, _, _ = channel.basic_get("short")
        channel.basic_reject(method.delivery_tag, requeue=False)
        wait_until(connection, lambda: ready_count(channel, "graveyard") == 1, "dead letter")
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = connection.channel()
        assert ready_count(channel, "short") == 0
        method, properties, body = channel.basic_get("graveyard", auto_ack=True)
        assert body == b"rejected"
        assert properties.headers["x-death"][0]["reason"] == "rejected"


def test_message_ttl_counts_across_a_restart(tmp_path: Path) -> None:
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        channel.queue_declare("ttl", durable=True)
        expiring = pika.BasicProperties(delivery_mode=2, expiration="1")
        channel.basic_publish("", "ttl", b"expires", expiring)
        channel.basic_publish("", "ttl", b"stays", PERSISTENT)
    with disk_broker(tmp_path) as running, client(running) as connection:
        assert get_bodies(connection.channel(), "ttl") == [b"stays"]


def test_a_second_broker_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with (
        disk_broker(tmp_path),
        pytest.raises(StoreError, match="in use by another broker"),
        disk_broker(tmp_path),
    ):
        pytest.fail("a second broker started on a locked data directory")


def test_segments_are_deleted_and_compacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_log, "SEGMENT_BYTES", 16384)
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        channel.queue_declare("churn", durable=True)
        for i in range(2000):
            channel.basic_publish("", "churn", f"{i:04d}".encode() * 8, PERSISTENT)
        directory = next((tmp_path / "queues").iterdir())
        segments_before = len(list(directory.glob("*.seg")))
        assert segments_before > 5
        size_before = sum(path.stat().st_size for path in directory.glob("*.seg"))
        # ack all but every 10th message: fully acked segments go, the rest are compacted
        for i in range(2000):
            method, _, body = channel.basic_get("churn")
            if i % 10:
                channel.basic_ack(method.delivery_tag)
        channel.close()
    with disk_broker(tmp_path) as running, client(running) as connection:
        bodies = get_bodies(connection.channel(), "churn")
        assert bodies == [f"{i:04d}".encode() * 8 for i in range(0, 2000, 10)]
    size_after = sum(path.stat().st_size for path in directory.glob("*.seg"))
    assert size_after < size_before / 3


def test_fully_acknowledged_segments_are_deleted_while_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_log, "SEGMENT_BYTES", 16384)
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        channel.queue_declare("drained", durable=True)
        for i in range(1000):
            channel.basic_publish("", "drained", f"{i:04d}".encode() * 8, PERSISTENT)
        directory = next((tmp_path / "queues").iterdir())
        assert len(list(directory.glob("*.seg"))) > 5
        collector = Collector(ack=True)
        channel.basic_consume("drained", collector)
        wait_until(connection, lambda: len(collector) == 1000, "every message")
        # only the segment being written to is left (deletion happens on the writer's thread)
        wait_until(connection, lambda: len(list(directory.glob("*.seg"))) == 1, "segments deleted")


def test_a_corrupt_record_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        channel.queue_declare("damaged", durable=True)
        for i in range(10):
            channel.basic_publish("", "damaged", f"body-{i:02d}".encode(), PERSISTENT)
    segment = next((tmp_path / "queues").glob("*/*.seg"))
    data = bytearray(segment.read_bytes())
    offset = data.index(b"body-04")
    data[offset] ^= 0xFF  # one flipped bit in the fifth message's body
    segment.write_bytes(bytes(data))
    with (
        caplog.at_level(logging.WARNING),
        disk_broker(tmp_path) as running,
        client(running) as connection,
    ):
        bodies = get_bodies(connection.channel(), "damaged")
    assert bodies == [f"body-{i:02d}".encode() for i in range(10) if i != 4]
    assert any(
        str(segment) in record.getMessage() and "corrupt record at offset" in record.getMessage()
        for record in caplog.records
    ), caplog.text


def test_torn_files_start_cleanly(tmp_path: Path) -> None:
    rng = random.Random(7)
    sent = [f"torn-{i:03d}".encode() for i in range(300)]
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        channel.queue_declare("torn", durable=True)
        for body in sent:
            channel.basic_publish("", "torn", body, PERSISTENT)
        for _ in range(100):
            method, _, _ = channel.basic_get("torn")
            channel.basic_ack(method.delivery_tag)
    for path in (tmp_path / "queues").glob("*/*"):
        size = path.stat().st_size
        with open(path, "r+b") as file:
            file.truncate(rng.randrange(size + 1))
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        bodies = get_bodies(channel, "torn")
        assert len(bodies) == len(set(bodies))
        assert set(bodies) <= set(sent)
        assert bodies == sorted(bodies)
        channel.basic_publish("", "torn", b"after", PERSISTENT)
        assert get_bodies(channel, "torn") == [b"after"]
    with disk_broker(tmp_path) as running, client(running) as connection:
        assert get_bodies(connection.channel(), "torn") == []


def test_tables_of_every_kind_survive_in_definitions(tmp_path: Path) -> None:
    arguments = {
        "text": "x",
        "number": 7,
        "big": 2**40,
        "flag": True,
        "raw": b"\x00\xff",
        "list": [1, "two", b"3"],
        "table": {"inner": {"deep": False}},
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5),
    }
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = connection.channel()
        channel.exchange_declare("tables", "headers", durable=True)
        channel.queue_declare("tabled", durable=True)
        channel.queue_bind("tabled", "tables", "", arguments={**arguments, "x-match": "any"})
    with disk_broker(tmp_path) as running:
        vhost = running.broker.vhosts["/"]
        (binding,) = vhost.exchanges["tables"].bindings.values()
        assert binding.arguments["raw"] == b"\x00\xff"
        assert binding.arguments["table"] == {"inner": {"deep": False}}
        assert binding.arguments["list"] == [1, "two", b"3"]
        assert binding.arguments["when"].year == 2026
        assert binding.arguments["big"] == 2**40


def test_non_durable_queues_never_touch_the_disk(tmp_path: Path) -> None:
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        channel.queue_declare("fast")
        for _ in range(50):
            channel.basic_publish("", "fast", b"x", PERSISTENT)
        channel.queue_declare("durable-transient", durable=True)
        for _ in range(50):
            channel.basic_publish("", "durable-transient", b"x")
        assert running.broker.store.written == 0
    assert not any((tmp_path / "queues").iterdir())


def test_bad_exchange_bind_after_restart_still_fails_cleanly(tmp_path: Path) -> None:
    with disk_broker(tmp_path) as running, client(running) as connection:
        connection.channel().exchange_declare("solo", "direct", durable=True)
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = connection.channel()
        with pytest.raises(ChannelClosedByBroker) as info:
            channel.queue_bind("missing", "solo", "k")
        assert info.value.reply_code == 404


def test_damaged_definitions_stop_the_start_with_a_clear_error(tmp_path: Path) -> None:
    with disk_broker(tmp_path) as running, client(running) as connection:
        connection.channel().queue_declare("q", durable=True)
    (tmp_path / "definitions.sqlite3").write_bytes(b"this is not a database" * 100)
    for leftover in tmp_path.glob("definitions.sqlite3-*"):
        leftover.unlink()
    with pytest.raises(StoreError, match="definitions.sqlite3 is damaged"), disk_broker(tmp_path):
        pytest.fail("started on a damaged definitions file")
    # the lock was released: a fixed directory starts
    (tmp_path / "definitions.sqlite3").unlink()
    with disk_broker(tmp_path) as running, client(running) as connection:
        assert not queue_exists(connection, "q")


def test_slow_recovery_shows_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        for name in ("p1", "p2"):
            channel.queue_declare(name, durable=True)
            channel.basic_publish("", name, b"x", PERSISTENT)
    monkeypatch.setattr(disk_store, "PROGRESS_INTERVAL", 0.0)  # as if every step took long
    with caplog.at_level(logging.INFO), disk_broker(tmp_path):
        pass
    progress = [r.getMessage() for r in caplog.records if "recovering:" in r.getMessage()]
    assert progress and progress[-1] == "recovering: 1 of 2 queues read, 2 messages so far"
    assert "recovered 2 durable queues with 2 persistent messages in" in caplog.text


class OtherQueue(ClassicQueue):
    queue_type = "other"


class OtherQueuePlugin:
    __name__ = "other-queue"

    @staticmethod
    @hookimpl
    def warrenmq_register_queue_types(registry: Any) -> None:
        registry.add(OtherQueue, "other")


def test_a_queue_that_cannot_be_restored_is_skipped_and_can_be_declared_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(host="127.0.0.1", amqp_port=0, store="disk", data_dir=tmp_path)
    with (
        running_broker(settings, plugins=[OtherQueuePlugin]) as running,
        client(running) as connection,
    ):
        channel = confirmed_channel(connection)
        channel.queue_declare("odd", durable=True, arguments={"x-queue-type": "other"})
        channel.basic_publish("", "odd", b"kept", PERSISTENT)
    # without the plugin, the queue cannot be restored: a warning, and the rest starts
    with (
        caplog.at_level(logging.WARNING),
        disk_broker(tmp_path) as running,
        client(running) as connection,
    ):
        assert not queue_exists(connection, "odd")
        channel = connection.channel()
        channel.queue_declare("odd", durable=True)  # a classic queue now, same name
        assert get_bodies(channel, "odd") == [b"kept"]
    assert "queue 'odd' in vhost '/' not restored" in caplog.text
    with disk_broker(tmp_path) as running, client(running) as connection:
        assert ready_count(connection.channel(), "odd") == 0


def test_a_confirm_comes_after_the_message_is_written(tmp_path: Path) -> None:
    with disk_broker(tmp_path) as running, client(running) as connection:
        channel = confirmed_channel(connection)
        channel.queue_declare("written", durable=True)
        for i in range(20):
            body = f"unique-body-{i:03d}".encode()
            channel.basic_publish("", "written", body, PERSISTENT)  # returns on the confirm
            (segment,) = (tmp_path / "queues").glob("*/*.seg")
            assert body in segment.read_bytes()


def test_a_refused_publish_is_nacked_in_order_behind_durable_confirms(tmp_path: Path) -> None:
    async def publish_pipelined(url: str) -> list[str]:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(
                "full", durable=True, arguments={"x-max-length": 3, "x-overflow": "reject-publish"}
            )
            outcomes = await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            f"m{i}".encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                        ),
                        "full",
                    )
                    for i in range(5)
                ),
                return_exceptions=True,
            )
        finally:
            await connection.close()
        return [
            "nack" if isinstance(o, aio_pika.exceptions.DeliveryError) else "ack" for o in outcomes
        ]

    with disk_broker(tmp_path) as running:
        outcomes = asyncio.run(publish_pipelined(running.url))
    assert outcomes == ["ack", "ack", "ack", "nack", "nack"]
    with disk_broker(tmp_path) as running, client(running) as connection:
        assert get_bodies(connection.channel(), "full") == [b"m0", b"m1", b"m2"]


@pytest.mark.parametrize("segment_bytes", [4 * 1024 * 1024, 600], ids=["default", "tiny"])
def test_random_operations_across_restarts_match_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, segment_bytes: int
) -> None:
    """Publishes (persistent and transient), gets, acks, requeues, rejects and purges in a
    random order, with restarts between: after each restart the queue holds exactly the
    persistent messages not settled for good, in publish order. With tiny segments, every
    few messages start a segment, and deletion and compaction happen all the time."""
    monkeypatch.setattr(queue_log, "SEGMENT_BYTES", segment_bytes)
    monkeypatch.setattr(queue_log, "COMPACT_MIN_RECORDS", 2)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    order: list[bytes] = []  # every body, in publish order
    persistent: set[bytes] = set()
    gone: set[bytes] = set()
    for round_ in range(4):
        with disk_broker(tmp_path) as running, client(running) as connection:
            channel = confirmed_channel(connection)
            channel.queue_declare("model", durable=True)
            # what the model says survived, checked by reading it all (then requeued)
            alive = [b for b in order if b in persistent and b not in gone]
            order[:] = alive
            reader = connection.channel()
            seen = []
            while True:
                method, _, body = reader.basic_get("model")
                if method is None:
                    break
                seen.append(body)
            assert seen == alive, f"seed {seed}, round {round_}"
            reader.close()  # all requeued, in place
            held: list[tuple[int, bytes]] = []
            worker = connection.channel()
            for step in range(60):
                action = rng.choice(
                    ["persistent", "persistent", "transient", "get", "settle", "purge"]
                )
                if action in ("persistent", "transient"):
                    body = f"r{round_}-s{step}".encode()
                    props = PERSISTENT if action == "persistent" else None
                    channel.basic_publish("", "model", body, props)
                    order.append(body)
                    if action == "persistent":
                        persistent.add(body)
                elif action == "get":
                    method, _, body = worker.basic_get("model")
                    if method is not None:
                        held.append((method.delivery_tag, body))
                elif action == "settle" and held:
                    tag, body = held.pop(rng.randrange(len(held)))
                    how = rng.choice(["ack", "requeue", "reject"])
                    if how == "ack":
                        worker.basic_ack(tag)
                        gone.add(body)
                    elif how == "reject":
                        worker.basic_reject(tag, requeue=False)
                        gone.add(body)
                    else:
                        worker.basic_reject(tag, requeue=True)
                elif action == "purge":
                    count = ready_count(channel, "model")
                    held_bodies = {body for _, body in held}
                    ready = [b for b in order if b not in gone and b not in held_bodies]
                    assert count == len(ready), f"seed {seed}"
                    channel.queue_purge("model")
                    gone.update(ready)
            # transient messages are gone after the restart, whatever happened to them


def _append_kept(running: RunningBroker, name: str, body: bytes, due: float) -> tuple[int, int]:
    """Append a persistent message to the plugin log ``name`` (in the broker's thread); the
    store's ``written`` before and after."""

    def append() -> tuple[int, int]:
        store = running.broker.store
        log = store.extension_log("/", name)
        assert log is not None
        before = store.written
        message = Message("held", "k", body, Properties(delivery_mode=2))
        log.append(StoredEntry(message, 0, due, READY))
        return before, store.written

    return running.call(append)


def _recovered(running: RunningBroker, name: str) -> list[tuple[bytes, float]]:
    def recovered() -> list[tuple[bytes, float]]:
        log = running.broker.store.extension_log("/", name)
        assert log is not None
        return [(entry.message.body, entry.expires_at) for entry in log.recovered()]

    return running.call(recovered)


def test_a_plugin_log_keeps_messages_outside_any_queue_until_deleted(tmp_path: Path) -> None:
    """``Store.extension_log``: a plugin's own log of persistent messages (the delayed-message
    example keeps its held messages there): its writes count for confirms, it comes back after
    a restart with each entry's deadline, and it is gone once deleted."""
    with disk_broker(tmp_path) as running, client(running) as connection:
        due = time.monotonic() + 60
        before, after = _append_kept(running, "test/kept", b"kept body", due)
        assert after == before + 1, "counted in written: a confirm waits for its fsync"
        _append_kept(running, "test/other", b"other body", due)
        store = running.broker.store
        wait_until(connection, lambda: store.synced >= after, "the fsync")
        assert any(b"kept body" in seg.read_bytes() for seg in tmp_path.glob("logs/*/*.seg"))
    with disk_broker(tmp_path) as running, client(running) as connection:
        ((body, expires_at),) = _recovered(running, "test/kept")
        assert body == b"kept body"
        assert abs(expires_at - due) < 1, "the deadline kept (as a wall-clock time)"
        assert not queue_exists(connection, "test/kept"), "no queue a client could see"
        running.call(running.broker.store.delete_extension_log, "/", "test/kept")
    assert len(list(tmp_path.glob("logs/*"))) == 1, "the deleted log's files are gone"
    with disk_broker(tmp_path) as running:
        assert _recovered(running, "test/kept") == [], "deleted for good"
        # a log not asked for since the start is deleted too
        running.call(running.broker.store.delete_extension_log, "/", "test/other")
    assert list(tmp_path.glob("logs/*")) == []
    with disk_broker(tmp_path) as running:
        assert _recovered(running, "test/other") == []
    with running_broker(Settings(amqp_port=0)) as running:
        assert running.broker.store.extension_log("/", "test/kept") is None, "memory: not kept"

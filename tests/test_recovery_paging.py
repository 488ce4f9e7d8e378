"""A durable queue's backlog past its memory budget across a restart: recovery reads into
memory only what the budget holds and leaves the rest in the store's segment files, as runs
read when the queue drains to them. Nothing is copied to page files, and what a user sees is
as before: every message once, in order, with its properties and redelivered flag, TTL and
dead-lettering, and nothing confirmed lost to a ``kill -9`` during the drain.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pytest
from pika_helpers import confirmed_channel, ready_count, wait_until
from test_crash import start_broker
from test_paging import consume, disk_bytes, page_files, queue_of

from warrenmq import Settings
from warrenmq.testing import RunningBroker, running_broker

pytestmark = [pytest.mark.warrenmq_only, pytest.mark.timeout(180)]

BUDGET = 100
COUNT = 3000
WAIT = 20.0


@contextmanager
def disk_broker(data_dir: Path, budget: int | None = None) -> Iterator[RunningBroker]:
    """A broker on ``data_dir``; ``budget``: the broker-wide ``max_in_memory_length``."""
    more = {} if budget is None else {"max_in_memory_length": budget}
    settings = Settings(
        host="127.0.0.1",
        amqp_port=0,
        store="disk",
        data_dir=data_dir,
        paging_interval=0.01,
        **more,  # type: ignore[arg-type]
    )
    with running_broker(settings) as running:
        yield running


def properties(n: int, mode: int = 2) -> pika.BasicProperties:
    return pika.BasicProperties(
        delivery_mode=mode,
        message_id=f"m{n}",
        correlation_id=f"c{n}",
        content_type="text/plain",
        headers={"n": n, "s": "é" * (n % 4)},
        priority=n % 10,
    )


def body(n: int) -> bytes:
    return f"body {n} ".encode() * (1 + n % 13)


def memory_and_disk(running: RunningBroker, name: str) -> tuple[int, int]:
    """(ready messages in memory, ready messages left on disk) of queue ``name``."""
    view = running.call(queue_of(running, name).view)
    return view.messages_ready - view.messages_paged_out, view.messages_paged_out


def test_a_backlog_past_the_budget_comes_back_once_in_order_without_page_files(
    tmp_path: Path,
) -> None:
    with disk_broker(tmp_path) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        channel.queue_declare("backlog", durable=True)
        for n in range(COUNT):
            channel.basic_publish("", "backlog", body(n), properties(n))
        # 40 delivered before the clean stop, 20 of them acked: 20 come back redelivered
        tags = []
        for _ in range(40):
            method, _, _ = channel.basic_get("backlog")
            assert method is not None
            tags.append(method.delivery_tag)
        channel.basic_ack(tags[19], multiple=True)
        connection.close()
    with disk_broker(tmp_path) as running:  # no budget: everything in memory, as before
        assert memory_and_disk(running, "backlog") == (COUNT - 20, 0)
    with disk_broker(tmp_path, 10):  # stopped with most of the backlog still in runs
        pass
    with disk_broker(tmp_path, BUDGET) as running:
        in_memory, on_disk = memory_and_disk(running, "backlog")
        assert in_memory == BUDGET
        assert on_disk == COUNT - 20 - BUDGET
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = connection.channel()
        assert ready_count(channel, "backlog") == COUNT - 20
        got = consume(channel, "backlog", COUNT - 20)
        assert not page_files(running)  # read from the segments, never copied
        connection.close()
    assert [got_body for got_body, _, _ in got] == [body(n) for n in range(20, COUNT)]
    assert [redelivered for _, redelivered, _ in got] == [n < 40 for n in range(20, COUNT)]
    for (_, _, got_properties), n in zip(got, range(20, COUNT), strict=True):
        want = properties(n)
        for name in ("message_id", "correlation_id", "content_type", "headers", "priority"):
            assert getattr(got_properties, name) == getattr(want, name), name
        assert got_properties.delivery_mode == 2


def test_a_queue_with_a_small_budget_recovers_to_its_budget(tmp_path: Path) -> None:
    """Transient and persistent messages mixed past the budget: the persistent ones come back,
    the memory part within the budget, the rest in runs; new messages queue behind them."""
    with disk_broker(tmp_path) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        channel.queue_declare("mixed", durable=True, arguments={"x-max-in-memory-length": BUDGET})
        for n in range(COUNT):
            channel.basic_publish("", "mixed", body(n), properties(n, 2 if n % 3 else 1))
        connection.close()
    persistent = [n for n in range(COUNT) if n % 3]
    with disk_broker(tmp_path) as running:
        in_memory, on_disk = memory_and_disk(running, "mixed")
        assert in_memory <= BUDGET
        assert in_memory + on_disk == len(persistent)
        assert not page_files(running)
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        for n in range(COUNT, COUNT + 50):  # behind the recovered backlog
            channel.basic_publish("", "mixed", body(n), properties(n, 1))
        got = consume(channel, "mixed", len(persistent) + 50)
        connection.close()
    assert [got_body for got_body, _, _ in got] == [
        body(n) for n in [*persistent, *range(COUNT, COUNT + 50)]
    ]
    assert not any(redelivered for _, redelivered, _ in got)


def test_recovered_messages_on_disk_expire_and_are_dead_lettered(tmp_path: Path) -> None:
    with disk_broker(tmp_path) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        channel.queue_declare("dead", durable=True)
        channel.queue_declare(
            "ttl",
            durable=True,
            arguments={
                "x-max-in-memory-length": BUDGET,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": "dead",
            },
        )
        for n in range(1000):
            props = properties(n)
            if n % 2:
                props.expiration = "1500"
            channel.basic_publish("", "ttl", body(n), props)
        connection.close()
    with disk_broker(tmp_path) as running:
        assert memory_and_disk(running, "ttl")[1] > 0
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = connection.channel()
        wait_until(
            connection, lambda: ready_count(channel, "dead") == 500, "expired dead-lettered", WAIT
        )
        assert ready_count(channel, "ttl") == 500
        kept = consume(channel, "ttl", 500)
        dead = consume(channel, "dead", 500)
        connection.close()
    assert [got_body for got_body, _, _ in kept] == [body(n) for n in range(0, 1000, 2)]
    assert sorted(int(p.headers["n"]) for _, _, p in dead) == list(range(1, 1000, 2))  # type: ignore[attr-defined]


def test_kill_9_while_a_recovered_backlog_drains_loses_nothing_confirmed(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def connect(port: int) -> pika.BlockingConnection:
        return pika.BlockingConnection(
            pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
        )

    process, port = start_broker(data)
    try:
        connection = connect(port)
        channel = confirmed_channel(connection)
        channel.queue_declare("drain", durable=True, arguments={"x-max-in-memory-length": BUDGET})
        for n in range(COUNT):
            channel.basic_publish("", "drain", body(n), properties(n))
        connection.close()
    finally:
        process.terminate()
        process.wait(20)
    process, port = start_broker(data)  # recovers the backlog as runs
    seen: list[int] = []
    try:
        connection = connect(port)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=50)
        for method, props, _ in channel.consume("drain", inactivity_timeout=10):
            assert method is not None
            seen.append(props.headers["n"])
            if len(seen) % 10 == 0:
                channel.basic_ack(method.delivery_tag, multiple=True)
            if len(seen) == COUNT // 2:
                break
        os.kill(process.pid, signal.SIGKILL)  # with deliveries in flight, unacked
    finally:
        process.kill()
        process.wait(20)
    assert seen == list(range(COUNT // 2))
    process, port = start_broker(data)
    try:
        connection = connect(port)
        channel = connection.channel()
        left = ready_count(channel, "drain")
        got = consume(channel, "drain", left)
        connection.close()
    finally:
        process.terminate()
        process.wait(20)
    after = [int(p.headers["n"]) for _, _, p in got]  # type: ignore[attr-defined]
    assert after == sorted(set(after)), "in order, once each"
    assert set(seen) | set(after) == set(range(COUNT)), "a confirmed message was lost"
    assert after[-1] == COUNT - 1
    assert all(redelivered for _, redelivered, _ in got)  # after a crash: may have been delivered


def test_persistent_messages_page_out_without_a_second_copy(tmp_path: Path) -> None:
    """Past the budget, a persistent message already in its queue's segments pages out as a
    reference to them: the page files hold the transient messages only."""
    with disk_broker(tmp_path) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        channel.queue_declare("refs", durable=True, arguments={"x-max-in-memory-length": BUDGET})
        transient = 0
        for n in range(COUNT):
            mode = 1 if n % 4 == 0 else 2
            channel.basic_publish("", "refs", body(n), properties(n, mode))
            transient += len(body(n)) if mode == 1 else 0
        wait_until(
            connection,
            lambda: memory_and_disk(running, "refs")[0] <= BUDGET,
            "paged out to the budget",
            WAIT,
        )
        in_memory, on_disk = memory_and_disk(running, "refs")
        assert on_disk == COUNT - in_memory
        pages = disk_bytes(page_files(running))
        # the transient bodies and their properties; persistent bodies would be 3x as many
        assert transient <= pages < 3 * transient
        got = consume(channel, "refs", COUNT)
        assert [got_body for got_body, _, _ in got] == [body(n) for n in range(COUNT)]
        assert [p.message_id for _, _, p in got] == [f"m{n}" for n in range(COUNT)]  # type: ignore[attr-defined]
        assert not any(redelivered for _, redelivered, _ in got)
        wait_until(connection, lambda: not page_files(running), "page files deleted", WAIT)
        connection.close()
    with disk_broker(tmp_path) as running:  # everything was acked: nothing comes back
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        assert ready_count(connection.channel(), "refs") == 0
        connection.close()


def test_purge_and_delete_of_a_recovered_backlog_stay_done_after_a_restart(
    tmp_path: Path,
) -> None:
    with disk_broker(tmp_path) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        for name in ("purged", "deleted"):
            channel.queue_declare(name, durable=True, arguments={"x-max-in-memory-length": BUDGET})
            for n in range(COUNT):
                channel.basic_publish("", name, body(n), properties(n))
        connection.close()
    with disk_broker(tmp_path) as running:
        assert memory_and_disk(running, "purged")[1] > 0
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = connection.channel()
        assert channel.queue_purge("purged").method.message_count == COUNT
        assert channel.queue_delete("deleted").method.message_count == COUNT
        channel.basic_publish("", "purged", b"after", properties(0))
        connection.close()
    with disk_broker(tmp_path) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = connection.channel()
        assert ready_count(channel, "purged") == 1
        method, _, got = channel.basic_get("purged", auto_ack=True)
        assert got == b"after"
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            channel.queue_declare("deleted", passive=True)
        assert closed.value.reply_code == 404
        connection.close()

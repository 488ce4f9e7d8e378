"""A durable queue's backlog past its memory budget across a restart: recovery reads into
memory only what the budget holds and leaves the rest in the store's segment files, as runs
read when the queue drains to them. Nothing is copied to page files, and what a user sees is
as before: every message once, in order, with its properties and redelivered flag, TTL and
dead-lettering, and nothing confirmed lost to a ``kill -9`` during the drain. A priority queue
recovers the same way, in priority order then publish order within a priority.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator
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
#: a priority queue's levels: ``properties(n)`` has priority n % 10, clamped to 5
MAX_PRIORITY = 5
PRIORITY = {"x-max-priority": MAX_PRIORITY}
#: the queues the guarantees are checked for: plain, and by priority
KINDS = pytest.mark.parametrize("kind", [{}, PRIORITY], ids=["fifo", "priority"])


def delivery_order(numbers: Iterable[int], kind: dict[str, int]) -> list[int]:
    """The order a queue of ``kind`` delivers messages ``numbers`` (published in order) in."""
    if not kind:
        return list(numbers)
    return sorted(numbers, key=lambda n: (-min(n % 10, kind["x-max-priority"]), n))


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


def fill_and_settle_half_of_40(
    connection: pika.BlockingConnection, queue: str, arguments: dict[str, int] | None = None
) -> None:
    """Declare ``queue`` durable, publish ``COUNT`` messages with confirms, take the first 40
    and ack the first 20 of them (the other 20 come back redelivered), then close."""
    channel = confirmed_channel(connection)
    channel.queue_declare(queue, durable=True, arguments=arguments)
    for n in range(COUNT):
        channel.basic_publish("", queue, body(n), properties(n))
    tags = []
    for _ in range(40):
        method, _, _ = channel.basic_get(queue)
        assert method is not None
        tags.append(method.delivery_tag)
    channel.basic_ack(tags[19], multiple=True)
    connection.close()


def test_a_backlog_past_the_budget_comes_back_once_in_order_without_page_files(
    tmp_path: Path,
) -> None:
    with disk_broker(tmp_path) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        # 40 delivered before the clean stop, 20 of them acked: 20 come back redelivered
        fill_and_settle_half_of_40(connection, "backlog")
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


@KINDS
def test_recovered_messages_on_disk_expire_and_are_dead_lettered(
    tmp_path: Path, kind: dict[str, int]
) -> None:
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
                **kind,
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
    assert [got_body for got_body, _, _ in kept] == [
        body(n) for n in delivery_order(range(0, 1000, 2), kind)
    ]
    assert sorted(int(p.headers["n"]) for _, _, p in dead) == list(range(1, 1000, 2))  # type: ignore[attr-defined]


@KINDS
def test_kill_9_while_a_recovered_backlog_drains_loses_nothing_confirmed(
    tmp_path: Path, kind: dict[str, int]
) -> None:
    data = tmp_path / "data"
    order = delivery_order(range(COUNT), kind)

    def connect(port: int) -> pika.BlockingConnection:
        return pika.BlockingConnection(
            pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
        )

    process, port = start_broker(data)
    try:
        connection = connect(port)
        channel = confirmed_channel(connection)
        channel.queue_declare(
            "drain", durable=True, arguments={"x-max-in-memory-length": BUDGET, **kind}
        )
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
    assert seen == order[: COUNT // 2]
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
    assert after == delivery_order(set(after), kind), "in order, once each"
    assert set(seen) | set(after) == set(range(COUNT)), "a confirmed message was lost"
    assert after[-1] == order[-1]
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


@KINDS
def test_purge_and_delete_of_a_recovered_backlog_stay_done_after_a_restart(
    tmp_path: Path, kind: dict[str, int]
) -> None:
    with disk_broker(tmp_path) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        for name in ("purged", "deleted"):
            channel.queue_declare(
                name, durable=True, arguments={"x-max-in-memory-length": BUDGET, **kind}
            )
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


# -- priority queues: one FIFO per level, each recovered as the classic queue's --------------


def test_a_priority_backlog_past_the_budget_comes_back_by_priority_without_page_files(
    tmp_path: Path,
) -> None:
    order = delivery_order(range(COUNT), PRIORITY)
    with disk_broker(tmp_path) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        # the 40 first by priority delivered before the clean stop, 20 of them acked
        fill_and_settle_half_of_40(connection, "ranked", PRIORITY)
    with disk_broker(tmp_path, 10):  # stopped with most of every level still in runs
        pass
    with disk_broker(tmp_path, BUDGET) as running:
        in_memory, on_disk = memory_and_disk(running, "ranked")
        assert in_memory == BUDGET
        assert on_disk == COUNT - 20 - BUDGET
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        new = range(COUNT, COUNT + 20)  # behind the recovered ones of their level
        for n in new:
            channel.basic_publish("", "ranked", body(n), properties(n))
        assert ready_count(channel, "ranked") == COUNT
        got = consume(channel, "ranked", COUNT)
        assert not page_files(running)  # read from the segments, never copied
        connection.close()
    want = delivery_order([*order[20:], *new], PRIORITY)
    assert [got_body for got_body, _, _ in got] == [body(n) for n in want]
    assert [redelivered for _, redelivered, _ in got] == [n in order[20:40] for n in want]
    for (_, _, got_properties), n in zip(got, want, strict=True):
        expected = properties(n)
        for name in ("message_id", "correlation_id", "content_type", "headers", "priority"):
            assert getattr(got_properties, name) == getattr(expected, name), name


def test_redelivered_flags_of_interleaved_levels_survive_a_stop_while_in_runs(
    tmp_path: Path,
) -> None:
    """Levels alternate in the segment files; every message of the high level was delivered
    before a clean stop, none of the low one. Restarted with most of both in runs and stopped
    again, the flags are those of each message, not of its neighbours of the other level."""
    count = 1000
    with disk_broker(tmp_path) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        channel.queue_declare("flags", durable=True, arguments={"x-max-priority": 1})
        for n in range(count):
            channel.basic_publish("", "flags", body(n), properties(n))  # priority n % 10
        high = [n for n in range(count) if n % 10]
        for n in high:  # delivered, not acked
            method, _, got_body = channel.basic_get("flags")
            assert method is not None and got_body == body(n)
        connection.close()  # the high level back to ready, redelivered from now on
    with disk_broker(tmp_path, 10) as running:
        assert memory_and_disk(running, "flags") == (10, count - 10)
    with disk_broker(tmp_path) as running:  # everything read back at once
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        got = consume(connection.channel(), "flags", count)
        connection.close()
    low = [n for n in range(count) if not n % 10]
    assert [got_body for got_body, _, _ in got] == [body(n) for n in [*high, *low]]
    assert [redelivered for _, redelivered, _ in got] == [True] * len(high) + [False] * len(low)


# 200,000 persistent messages of 1 KB in eleven priorities, restarted with a small budget
BIG_COUNT = 200_000
BIG_BODY = 1024
BIG_BUDGET = 1000
#: the backlog is 200 MB of bodies; the budget holds 1 MB, recovery and the runs' own
#: fields some more, the interpreter itself about 40 MiB
BIG_RSS_BOUND = 100 * 1024 * 1024


def peak_rss(pid: int) -> int:
    """The resident memory's high-water mark of process ``pid`` (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(600)
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_large_priority_backlog_restarts_within_a_fraction_of_its_size(tmp_path: Path) -> None:
    data = tmp_path / "data"
    arguments = {"x-max-priority": 10, "x-max-in-memory-length": BIG_BUDGET}
    filler = os.urandom(BIG_BODY)

    def connect(port: int) -> pika.BlockingConnection:
        return pika.BlockingConnection(
            pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
        )

    process, port = start_broker(data)
    try:
        connection = connect(port)
        channel = connection.channel()
        channel.queue_declare("big", durable=True, arguments=arguments)
        for n in range(BIG_COUNT):  # unconfirmed, for speed: the clean stop writes them all
            props = pika.BasicProperties(delivery_mode=2, priority=n % 11)
            channel.basic_publish("", "big", n.to_bytes(4, "big") + filler[4:], props)
        assert ready_count(channel, "big") == BIG_COUNT
        connection.close()
    finally:
        process.terminate()
        process.wait(60)
    process, port = start_broker(data)
    try:
        connection = connect(port)
        channel = connection.channel()
        assert ready_count(channel, "big") == BIG_COUNT
        peak = peak_rss(process.pid)
        print(f"restarted on {BIG_COUNT} x {BIG_BODY} B: peak resident {peak / 2**20:.0f} MiB")
        assert peak < BIG_RSS_BOUND, f"peak resident memory {peak / 2**20:.0f} MiB"
        # the head is the highest level's oldest; the last of all, the lowest's newest
        channel.basic_qos(prefetch_count=500)
        got: list[int] = []
        for method, props, payload in channel.consume("big", inactivity_timeout=20):
            assert method is not None, f"only {len(got)} of {BIG_COUNT} came"
            assert props.priority == int.from_bytes(payload[:4], "big") % 11
            got.append(int.from_bytes(payload[:4], "big"))
            if len(got) % 500 == 0 or len(got) == BIG_COUNT:
                channel.basic_ack(method.delivery_tag, multiple=True)
            if len(got) == BIG_COUNT:
                break
        assert got == sorted(range(BIG_COUNT), key=lambda n: (-(n % 11), n))
        assert peak_rss(process.pid) < BIG_RSS_BOUND, "the drain took memory"
        connection.close()
    finally:
        process.terminate()
        process.wait(60)

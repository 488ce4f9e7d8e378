"""Backlogs larger than memory: past a queue's memory budget (``x-max-in-memory-length`` /
``x-max-in-memory-bytes``) ready messages wait on disk and come back before delivery. Each
queue here has a budget of a few dozen messages, so a few thousand messages page.

What a user sees must not change: order, properties, redelivered flags, priorities, TTL and
dead-lettering, purge and delete (which free the disk), and across a restart transient
messages are gone while persistent ones stay. The last test floods one queue of a broker
process past its budget and watches that process's resident memory.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pytest
from line_reader import LineReader
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import confirmed_channel, ready_count, wait_until

from warrenmq import Settings
from warrenmq.plugins.classic_queue import ClassicQueue
from warrenmq.testing import RunningBroker, running_broker

pytestmark = [pytest.mark.warrenmq_only, pytest.mark.timeout(120)]

BUDGET = 40
COUNT = 3000
#: seconds to wait for what the broker does by itself (generous: CI machines are slow)
WAIT = 20.0


def settings(**more: object) -> Settings:
    return Settings(host="127.0.0.1", amqp_port=0, paging_interval=0.01, **more)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def running() -> Iterator[RunningBroker]:
    with running_broker(settings()) as running:
        yield running


@pytest.fixture
def connection(running: RunningBroker) -> Iterator[pika.BlockingConnection]:
    connection = pika.BlockingConnection(pika.URLParameters(running.url))
    yield connection
    if connection.is_open:
        connection.close()


def queue_of(running: RunningBroker, name: str) -> ClassicQueue:
    queue = running.broker.vhosts["/"].queues[name]
    assert isinstance(queue, ClassicQueue)
    return queue


def paged_out(running: RunningBroker, name: str) -> int:
    return running.call(lambda: queue_of(running, name).view().messages_paged_out)


def wait_paged(running: RunningBroker, connection: pika.BlockingConnection, name: str) -> None:
    """Until most of the queue is on disk and what stays in memory is within the budget."""

    def within() -> bool:
        view = running.call(queue_of(running, name).view)
        return view.messages_paged_out > 0 and (
            view.messages_ready - view.messages_paged_out <= BUDGET
        )

    wait_until(connection, within, f"queue {name} paged out to its budget", WAIT)


def page_files(running: RunningBroker) -> list[Path]:
    """The page files there are now (the paging thread may delete some meanwhile)."""
    root = running.broker.paging._root
    if root is None:
        return []
    return [
        Path(directory, name)
        for directory, _, names in os.walk(root)
        for name in names
        if name.endswith(".page")
    ]


def disk_bytes(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def budget(**more: object) -> dict[str, object]:
    return {"x-max-in-memory-length": BUDGET, **more}


def consume(channel: BlockingChannel, name: str, count: int) -> list[tuple[object, ...]]:
    """``count`` deliveries as (body, redelivered, properties), acked in slices."""
    got: list[tuple[object, ...]] = []
    for method, properties, body in channel.consume(name, inactivity_timeout=10):
        assert method is not None, f"only {len(got)} of {count} messages came"
        got.append((body, method.redelivered, properties))
        if len(got) % 25 == 0 or len(got) == count:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if len(got) == count:
            break
    channel.cancel()
    return got


def test_a_paged_backlog_drains_once_in_order_with_its_properties(
    running: RunningBroker, connection: pika.BlockingConnection, unique: str
) -> None:
    channel = confirmed_channel(connection)
    channel.queue_declare(unique, arguments=budget())
    for n in range(COUNT):
        channel.basic_publish(
            "",
            unique,
            f"body {n}".encode() * (1 + n % 7),
            pika.BasicProperties(
                message_id=str(n), content_type="text/plain", headers={"n": n, "s": "é"}
            ),
        )
    wait_paged(running, connection, unique)
    channel.basic_qos(prefetch_count=50)
    got = consume(channel, unique, COUNT)
    assert [body for body, _, _ in got] == [
        f"body {n}".encode() * (1 + n % 7) for n in range(COUNT)
    ]
    assert not any(redelivered for _, redelivered, _ in got)
    for n, (_, _, properties) in enumerate(got):
        assert properties.message_id == str(n)  # type: ignore[attr-defined]
        assert properties.content_type == "text/plain"  # type: ignore[attr-defined]
        assert properties.headers == {"n": n, "s": "é"}  # type: ignore[attr-defined]
    assert ready_count(channel, unique) == 0
    assert paged_out(running, unique) == 0
    channel.queue_delete(unique)


def test_publishing_while_a_paged_backlog_drains_keeps_order(
    running: RunningBroker, connection: pika.BlockingConnection, unique: str
) -> None:
    channel = confirmed_channel(connection)
    channel.queue_declare(unique, exclusive=True, arguments=budget())
    for n in range(COUNT):
        channel.basic_publish("", unique, str(n).encode())
    wait_paged(running, connection, unique)
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=10)
    got: list[int] = []
    for method, _, body in consumer.consume(unique, inactivity_timeout=10):
        assert method is not None
        got.append(int(body))
        consumer.basic_ack(method.delivery_tag)
        if len(got) % 10 == 0 and len(got) <= COUNT:  # more behind the paged-out ones
            for n in range(COUNT + len(got) - 10, COUNT + len(got)):
                channel.basic_publish("", unique, str(n).encode())
        if len(got) == 2 * COUNT:
            break
    consumer.cancel()
    assert got == list(range(2 * COUNT))


def test_requeued_messages_go_back_to_their_place_redelivered(
    running: RunningBroker, connection: pika.BlockingConnection, unique: str
) -> None:
    channel = confirmed_channel(connection)
    channel.queue_declare(unique, exclusive=True, arguments=budget())
    for n in range(COUNT):
        channel.basic_publish("", unique, str(n).encode())
    wait_paged(running, connection, unique)
    taker = connection.channel()
    taker.basic_qos(prefetch_count=200)
    taken = []
    for method, _, body in taker.consume(unique, inactivity_timeout=10):
        assert method is not None
        taken.append(int(body))
        if len(taken) == 200:
            break
    assert taken == list(range(200))
    taker.close()  # the 200 unacknowledged go back to the head
    wait_until(connection, lambda: ready_count(channel, unique) == COUNT, "the requeue", WAIT)
    got = consume(channel, unique, COUNT)
    assert [int(body) for body, _, _ in got] == list(range(COUNT))  # type: ignore[call-overload]
    assert [redelivered for _, redelivered, _ in got] == [True] * 200 + [False] * (COUNT - 200)


def test_priorities_order_a_paged_backlog(
    running: RunningBroker, connection: pika.BlockingConnection, unique: str
) -> None:
    channel = confirmed_channel(connection)
    channel.queue_declare(unique, exclusive=True, arguments=budget(**{"x-max-priority": 5}))
    for n in range(COUNT):
        channel.basic_publish("", unique, str(n).encode(), pika.BasicProperties(priority=n % 6))
    wait_paged(running, connection, unique)
    got = consume(channel, unique, COUNT)
    order = [int(body) for body, _, _ in got]  # type: ignore[call-overload]
    assert order == sorted(range(COUNT), key=lambda n: (-(n % 6), n))


def test_paged_messages_expire_and_are_dead_lettered(
    running: RunningBroker, connection: pika.BlockingConnection, unique: str
) -> None:
    channel = confirmed_channel(connection)
    channel.exchange_declare(f"{unique}-dlx", "fanout", auto_delete=True)
    channel.queue_declare(f"{unique}-dead", exclusive=True)
    channel.queue_bind(f"{unique}-dead", f"{unique}-dlx")
    channel.queue_declare(
        unique,
        exclusive=True,
        arguments=budget(**{"x-dead-letter-exchange": f"{unique}-dlx"}),
    )
    for n in range(COUNT):  # every other one expires; they are paged out before they do
        expiration = "4000" if n % 2 else None
        channel.basic_publish(
            "", unique, str(n).encode(), pika.BasicProperties(expiration=expiration)
        )
    wait_paged(running, connection, unique)
    # none expired yet: they expire while paged out
    assert ready_count(channel, unique) == COUNT, "the machine is too slow for this test"
    wait_until(
        connection,
        lambda: ready_count(channel, f"{unique}-dead") == COUNT // 2,
        "the expired messages dead-lettered",
        WAIT + 4,
    )
    assert ready_count(channel, unique) == COUNT // 2
    dead = consume(channel, f"{unique}-dead", COUNT // 2)
    # those in memory and those on disk expire at about the same moment, in either order
    assert sorted(int(body) for body, _, _ in dead) == list(range(1, COUNT, 2))  # type: ignore[call-overload]
    death = dead[0][2].headers["x-death"][0]  # type: ignore[attr-defined]
    assert death["reason"] == "expired" and death["queue"] == unique
    kept = consume(channel, unique, COUNT // 2)
    assert [int(body) for body, _, _ in kept] == list(range(0, COUNT, 2))  # type: ignore[call-overload]


def test_a_queue_whose_paged_messages_all_expired_serves_what_comes_next(
    running: RunningBroker, connection: pika.BlockingConnection, unique: str
) -> None:
    channel = confirmed_channel(connection)
    channel.queue_declare(unique, exclusive=True, arguments=budget(**{"x-message-ttl": 3000}))
    for n in range(COUNT):
        channel.basic_publish("", unique, str(n).encode())
    wait_paged(running, connection, unique)
    wait_until(connection, lambda: ready_count(channel, unique) == 0, "every message expired", WAIT)
    assert not page_files(running) or paged_out(running, unique) == 0
    channel.basic_publish("", unique, b"after")
    channel.basic_publish("", unique, b"after too")
    assert channel.basic_get(unique, auto_ack=True)[2] == b"after"
    got = consume(channel, unique, 1)
    assert [body for body, _, _ in got] == [b"after too"]


def test_purge_and_delete_free_the_disk(
    running: RunningBroker, connection: pika.BlockingConnection, unique: str
) -> None:
    channel = confirmed_channel(connection)
    body = os.urandom(1024)
    for name in (f"{unique}-purged", f"{unique}-deleted"):
        channel.queue_declare(name, arguments=budget())
        for _ in range(COUNT):
            channel.basic_publish("", name, body)
        wait_paged(running, connection, name)
    assert disk_bytes(page_files(running)) >= 2 * (COUNT - BUDGET) * 1024
    assert channel.queue_purge(f"{unique}-purged").method.message_count == COUNT
    channel.queue_delete(f"{unique}-deleted")
    wait_until(connection, lambda: not page_files(running), "the page files deleted", WAIT)
    assert ready_count(channel, f"{unique}-purged") == 0
    channel.basic_publish("", f"{unique}-purged", b"after")  # the queue works on
    assert channel.basic_get(f"{unique}-purged", auto_ack=True)[2] == b"after"
    channel.queue_delete(f"{unique}-purged")


def test_a_policy_sets_the_budget(running: RunningBroker, unique: str) -> None:
    from warrenmq.policy import Policy

    running.call(
        running.broker.set_policy,
        Policy("small", f"^{unique}$", {"max-in-memory-length": BUDGET}, vhost="/"),
    )
    try:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        channel.queue_declare(unique, exclusive=True)
        for n in range(COUNT):
            channel.basic_publish("", unique, str(n).encode())
        wait_paged(running, connection, unique)
        got = consume(channel, unique, COUNT)
        assert [int(body) for body, _, _ in got] == list(range(COUNT))  # type: ignore[call-overload]
        connection.close()
    finally:
        running.call(running.broker.clear_policy, "/", "small")


def test_transient_paged_messages_are_gone_after_a_restart_persistent_ones_stay(
    tmp_path: Path,
) -> None:
    def disk() -> Settings:
        return settings(store="disk", data_dir=tmp_path)

    with running_broker(disk()) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = confirmed_channel(connection)
        channel.queue_declare("backlog", durable=True, arguments=budget())
        for n in range(COUNT):
            mode = 2 if n % 3 == 0 else 1
            channel.basic_publish(
                "",
                "backlog",
                str(n).encode(),
                pika.BasicProperties(delivery_mode=mode, message_id=f"m{n}"),
            )
        wait_paged(running, connection, "backlog")
        assert page_files(running)
        assert all(path.is_relative_to(tmp_path / "paging") for path in page_files(running))
        # some persistent ones taken and acked, some left unacked, before the stop
        tags = []  # 60 delivered, 30 of them acked
        for _ in range(60):
            method, _, _ = channel.basic_get("backlog")
            assert method is not None
            tags.append(method.delivery_tag)
        channel.basic_ack(tags[29], multiple=True)
        connection.close()
    assert not (tmp_path / "paging").exists() or not any((tmp_path / "paging").iterdir())
    with running_broker(disk()) as running:
        connection = pika.BlockingConnection(pika.URLParameters(running.url))
        channel = connection.channel()
        persistent = [n for n in range(30, COUNT) if n % 3 == 0]
        assert ready_count(channel, "backlog") == len(persistent)
        got = consume(channel, "backlog", len(persistent))
        assert [int(body) for body, _, _ in got] == persistent  # type: ignore[call-overload]
        assert [p.message_id for _, _, p in got] == [f"m{n}" for n in persistent]  # type: ignore[attr-defined]
        # delivered (unacked) before the clean stop: redelivered; never delivered: not
        assert [redelivered for _, redelivered, _ in got] == [30 <= n < 60 for n in persistent]
        connection.close()


# -- memory, watched from outside: a broker process and its resident set size ----------------

FLOOD_BODY = 64 * 1024
FLOOD_BYTES = 400 * 1024 * 1024
#: the broker's memory alarm, under what the flooded queue receives: only paging keeps
#: its publishers (and everyone else's) unblocked
MEMORY_LIMIT = 300 * 1024 * 1024
#: generous: the flood is 400 MB; in memory are the budget (8 MiB) and what arrives between
#: two pagings, plus the interpreter's own
RSS_GROWTH_BOUND = 160 * 1024 * 1024


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextmanager
def broker_process(tmp_path: Path) -> Iterator[tuple[int, int]]:
    config = tmp_path / "warrenmq.toml"
    config.write_text(f"[broker]\nmemory_limit = {MEMORY_LIMIT}\n")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "warrenmq", "run", "--port", "0", "--config", str(config),
            "--data-dir", str(tmp_path / "data"), "--log-level", "info",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = LineReader(process.stderr).wait_for("listening for amqp", 20.0)
        yield process.pid, int(line.rsplit(":", 1)[1])
    finally:
        process.terminate()
        process.wait(20)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_flooded_queue_keeps_the_broker_small_and_blocks_no_one(tmp_path: Path) -> None:
    with broker_process(tmp_path) as (pid, port):
        params = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
        flooder, other = pika.BlockingConnection(params), pika.BlockingConnection(params)
        blocked: list[str] = []
        for connection in (flooder, other):
            connection.add_on_connection_blocked_callback(lambda *_: blocked.append("blocked"))
        flood, side = confirmed_channel(flooder), confirmed_channel(other)
        flood.queue_declare("flood", arguments={"x-max-in-memory-bytes": 8 * 1024 * 1024})
        side.queue_declare("side")
        start = peak = rss(pid)
        body = os.urandom(FLOOD_BODY)
        count = FLOOD_BYTES // FLOOD_BODY
        for n in range(count):
            flood.basic_publish("", "flood", n.to_bytes(4, "big") + body[4:])
            if n % 50 == 0:  # the other queue's publisher gets its confirms meanwhile
                side.basic_publish("", "side", str(n).encode())
                peak = max(peak, rss(pid))
        peak = max(peak, rss(pid))
        print(f"resident memory {start / 2**20:.0f} MiB at start, peak {peak / 2**20:.0f} MiB")
        assert not blocked, "a publisher was blocked: the memory alarm went off"
        assert ready_count(flood, "flood") == count
        assert ready_count(side, "side") == len(range(0, count, 50))
        assert peak - start < RSS_GROWTH_BOUND, (
            f"resident memory grew by {(peak - start) / 2**20:.0f} MiB "
            f"for {FLOOD_BYTES / 2**20:.0f} MiB published"
        )
        flood.basic_qos(prefetch_count=20)
        for n, (method, _, got) in enumerate(flood.consume("flood", inactivity_timeout=20)):
            assert method is not None, f"only {n} of {count} came back"
            assert int.from_bytes(got[:4], "big") == n and got[4:] == body[4:]
            if (n + 1) % 20 == 0 or n + 1 == count:
                flood.basic_ack(method.delivery_tag, multiple=True)
            if n + 1 == count:
                break
        flood.cancel()
        assert ready_count(flood, "flood") == 0
        flooder.close()
        other.close()

"""kill -9 under load: every confirmed message is consumed at least once, and no message acked a
second or more before a crash comes back.

A ``warrenmq run`` subprocess with a data directory; a publisher with confirms at full speed
(many publishes in flight) and a consumer acking, both aio-pika; SIGKILL at random moments,
restart, again; at the end the queue is drained and the books are checked. Then files torn by
a crash: every file cut at a random offset, and the broker must still start and serve.
Set ``WARRENMQ_CRASH_SEED`` to replay a run (each prints its seed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import pika
import pytest
from line_reader import LineReader

pytestmark = pytest.mark.warrenmq_only

QUEUE = "crash-test"
ROUNDS = 4
IN_FLIGHT = 200
#: a message acked this long before a crash must not come back
ACK_GRACE = 1.0


@dataclass
class Books:
    next_id: int = 0
    confirmed: set[int] = field(default_factory=set)
    consumed: set[int] = field(default_factory=set)
    redelivered: int = 0
    #: message id -> when its ack was sent
    acked_at: dict[int, float] = field(default_factory=dict)
    #: (message id, crash time) for messages acked >= ACK_GRACE before a crash and seen again
    resurrected: list[tuple[int, float]] = field(default_factory=list)
    crashes: list[float] = field(default_factory=list)


def start_broker(data_dir: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [
            sys.executable, "-m", "warrenmq", "run", "--port", "0",
            "--data-dir", str(data_dir), "--log-level", "info",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stderr is not None
    reader = LineReader(process.stderr)
    line = reader.wait_for("listening for amqp", 20.0)
    found = re.search(r":(\d+)\s*$", line)
    assert found, line
    return process, int(found.group(1))


def on_delivery(books: Books, message_id: int, redelivered: bool) -> None:
    if redelivered:
        books.redelivered += 1
    acked = books.acked_at.get(message_id)
    if acked is not None:
        for crash in books.crashes:
            if acked <= crash - ACK_GRACE:
                books.resurrected.append((message_id, crash))
                break
    books.consumed.add(message_id)


async def load(port: int, books: Books, seconds: float) -> None:
    """Publish with confirms and consume with acks until the broker dies (or ``seconds``)."""
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    publisher = await aio_pika.connect(url)
    consumer = await aio_pika.connect(url)
    try:
        out = await publisher.channel(publisher_confirms=True)
        await out.declare_queue(QUEUE, durable=True)
        inbox = await consumer.channel()
        await inbox.set_qos(prefetch_count=100)
        queue = await inbox.declare_queue(QUEUE, durable=True)

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            on_delivery(books, int(message.body), message.redelivered)
            await message.ack()
            books.acked_at.setdefault(int(message.body), time.monotonic())

        await queue.consume(handle)

        async def publish_one() -> None:
            message_id = books.next_id
            books.next_id += 1
            await out.default_exchange.publish(
                aio_pika.Message(
                    str(message_id).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
                QUEUE,
            )
            books.confirmed.add(message_id)

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.gather(*(publish_one() for _ in range(IN_FLIGHT)))
    finally:
        for connection in (publisher, consumer):
            with contextlib.suppress(Exception):  # the broker is gone: nothing to close
                await asyncio.wait_for(connection.close(), 2.0)


async def crash_rounds(data_dir: Path, books: Books, rng: random.Random) -> None:
    for _ in range(ROUNDS):
        process, port = start_broker(data_dir)
        try:
            task = asyncio.ensure_future(load(port, books, 30.0))
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            books.crashes.append(time.monotonic())
            with contextlib.suppress(Exception):  # connections reset by the crash: expected
                await asyncio.wait_for(task, 10.0)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


async def drain(data_dir: Path, books: Books) -> None:
    process, port = start_broker(data_dir)
    try:
        connection = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{port}/")
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, durable=True)
        while True:
            message = await queue.get(fail=False)
            if message is None:
                break
            on_delivery(books, int(message.body), message.redelivered)
            await message.ack()
        await connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


@pytest.mark.timeout(90)
def test_kill_9_under_load_loses_no_confirmed_message(tmp_path: Path) -> None:
    seed = int(os.environ.get("WARRENMQ_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    books = Books()

    async def main() -> None:
        await crash_rounds(tmp_path, books, rng)
        await drain(tmp_path, books)

    asyncio.run(main())
    lost = books.confirmed - books.consumed
    print(
        f"\ncrash test (seed {seed}): {len(books.crashes)} crashes, "
        f"{len(books.confirmed)} confirmed, {len(books.consumed)} consumed, "
        f"{books.redelivered} redelivered, {len(lost)} lost, "
        f"{len(books.resurrected)} acked >= {ACK_GRACE}s before a crash and back"
    )
    assert len(books.confirmed) > 1000, "the load was too light to mean anything"
    assert not lost, f"confirmed but never consumed: {sorted(lost)[:20]}"
    assert not books.resurrected, f"acked long before a crash, yet back: {books.resurrected[:20]}"


def test_torn_files_after_kill_9_start_and_serve(tmp_path: Path) -> None:
    """Every file a crash can leave half-written (segments, ack files, SQLite's write-ahead
    log) cut at a random offset: the broker still starts, and serves what is intact."""
    seed = int(os.environ.get("WARRENMQ_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    sent = {name: [f"{name}-{i:04d}".encode() for i in range(400)] for name in ("ta", "tb")}
    process, port = start_broker(tmp_path)
    try:
        connection = pika.BlockingConnection(
            pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
        )
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare("torn-x", "fanout", durable=True)
        for name, bodies in sent.items():
            channel.queue_declare(name, durable=True)
            channel.queue_bind(name, "torn-x")
            for body in bodies:
                channel.basic_publish("", name, body, pika.BasicProperties(delivery_mode=2))
        for _ in range(100):
            method, _, _ = channel.basic_get("ta")
            channel.basic_ack(method.delivery_tag)
        channel.basic_get("tb")  # one unacknowledged when the broker dies
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    torn = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file() and path.name not in ("lock", "definitions.sqlite3")
    ]
    assert any(path.suffix == ".seg" for path in torn)
    for path in torn:
        with open(path, "r+b") as file:
            file.truncate(rng.randrange(path.stat().st_size + 1))
    print(f"\ntorn test (seed {seed}): cut {len(torn)} files")

    process, port = start_broker(tmp_path)
    try:
        connection = pika.BlockingConnection(
            pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
        )
        channel = connection.channel()
        channel.confirm_delivery()
        for name, bodies in sent.items():
            channel.queue_declare(name, durable=True)
            got = []
            while True:
                method, _, body = channel.basic_get(name, auto_ack=True)
                if method is None:
                    break
                got.append(body)
            assert len(got) == len(set(got)) and set(got) <= set(bodies)
            assert got == sorted(got)
            channel.basic_publish("", name, b"after", pika.BasicProperties(delivery_mode=2))
            method, _, body = channel.basic_get(name, auto_ack=True)
            assert body == b"after"
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0

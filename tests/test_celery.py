"""celery, unchanged, against the broker: a real worker in a subprocess (pyamqp transport, rpc://
result backend), tasks round-tripping, groups and chains, a failing task's exception, and remote
control (ping) over the pidbox fanout exchange. Mingle and gossip stay on: they declare fanout
exchanges and queues with x-message-ttl / x-expires arguments."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import pytest
from celery_helpers import RESULT_TIMEOUT, Worker, imported_tasks, running_worker
from kombu import Connection

pytestmark = pytest.mark.timeout(60)

TASKS_SOURCE = """\
from celery import Celery

app = Celery("{name}", broker="{url}", backend="rpc://")
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_default_queue="{queue}",
)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def total(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def fail(message: str) -> None:
    raise ValueError(message)
"""


class BrokerLike(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@pytest.fixture(scope="module")
def celery_dir(tmp_path_factory: pytest.TempPathFactory, broker: BrokerLike) -> Iterator[Path]:
    """A directory holding tasks.py. Its task queue (and the direct exchange of the same name)
    is unique to this run and durable, so it is deleted once the worker has stopped."""
    directory = tmp_path_factory.mktemp("celery")
    token = uuid.uuid4().hex[:8]
    url = f"pyamqp://guest:guest@{broker.host}:{broker.port}//"
    task_queue = f"celery-{token}"
    source = TASKS_SOURCE.format(name=f"t{token}", url=url, queue=task_queue)
    (directory / "tasks.py").write_text(source)
    yield directory
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.default_channel
        channel.queue_delete(task_queue)
        channel.exchange_delete(task_queue)


@pytest.fixture(scope="module")
def tasks(celery_dir: Path) -> Iterator[ModuleType]:
    with imported_tasks(celery_dir) as module:
        yield module


@pytest.fixture(scope="module")
def worker(celery_dir: Path) -> Iterator[Worker]:
    with running_worker(celery_dir, expected=["Task tasks.fail["]) as running:
        yield running


def test_add_round_trips(worker: Worker, tasks: Any) -> None:
    assert tasks.add.delay(2, 3).get(timeout=RESULT_TIMEOUT) == 5


def test_several_tasks_round_trip(worker: Worker, tasks: Any) -> None:
    results = [tasks.add.delay(i, i) for i in range(10)]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in results] == [2 * i for i in range(10)]


def test_group(worker: Worker, tasks: Any) -> None:
    from celery import group

    result = group(tasks.add.s(i, 1) for i in range(5)).apply_async()
    assert result.get(timeout=RESULT_TIMEOUT) == [1, 2, 3, 4, 5]


def test_chain(worker: Worker, tasks: Any) -> None:
    """Each link is published by the worker itself; the last one answers the caller's reply queue.
    (A chord would need a result backend other than rpc://, which refuses chords.)"""
    from celery import chain

    result = chain(tasks.add.s(1, 2), tasks.add.s(3), tasks.total.si([4, 5]), tasks.add.s(1))()
    assert result.get(timeout=RESULT_TIMEOUT) == 10


def test_group_of_chains(worker: Worker, tasks: Any) -> None:
    from celery import chain, group

    result = group(chain(tasks.add.s(i, i), tasks.add.s(1)) for i in range(3)).apply_async()
    assert result.get(timeout=RESULT_TIMEOUT) == [1, 3, 5]


def test_failing_task_raises_its_exception(worker: Worker, tasks: Any) -> None:
    result = tasks.fail.delay("kaboom")
    with pytest.raises(ValueError, match="kaboom"):
        result.get(timeout=RESULT_TIMEOUT)
    assert result.state == "FAILURE"


def test_control_ping(worker: Worker, tasks: Any) -> None:
    """A broadcast over the pidbox fanout exchange; the reply comes back through the direct
    reply.celery.pidbox exchange to a reply queue declared with x-expires and x-message-ttl.
    Without a destination, ping collects replies for the whole timeout."""
    replies = tasks.app.control.ping(timeout=2)
    assert {worker.hostname: {"ok": "pong"}} in replies


def test_control_inspect_registered(worker: Worker, tasks: Any) -> None:
    registered = tasks.app.control.inspect(destination=[worker.hostname], timeout=2).registered()
    assert registered is not None
    assert "tasks.add" in registered[worker.hostname]

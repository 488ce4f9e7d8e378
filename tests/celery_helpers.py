"""Running a real celery worker in a subprocess for the celery tests: start it on a directory
holding a ``tasks`` module, wait for it to be ready, stop it with a warm shutdown, and fail the
test if it exited badly or logged a warning or an error."""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import kombu.pools
import pytest
from line_reader import LineReader

READY_TIMEOUT = 15.0
RESULT_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
LOG_PROBLEM = re.compile(r"^\[[^]]*: (WARNING|ERROR|CRITICAL)/")


@dataclass
class Worker:
    process: subprocess.Popen[str]
    hostname: str
    output: LineReader
    #: fragments of log lines at WARNING or above that the test expects (a failing task's)
    expected: Sequence[str] = field(default=())

    def wait_for(self, needle: str, timeout: float) -> None:
        self.output.wait_for(needle, timeout)

    def fail(self, why: str) -> NoReturn:
        pytest.fail(f"celery worker: {why}\n--- worker output ---\n{self.output.finish(0)}")

    def problems(self) -> list[str]:
        """Log lines at WARNING or above, except the expected ones."""
        return [
            line
            for line in self.output.finish(0).splitlines()
            if LOG_PROBLEM.match(line) and not any(text in line for text in self.expected)
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


@contextmanager
def running_worker(directory: Path, expected: Sequence[str] = ()) -> Iterator[Worker]:
    """A ``celery -A tasks worker`` (solo pool) in ``directory``, ready when yielded; after the
    block it must shut down cleanly without logging problems other than the ``expected`` ones."""
    hostname = f"w-{uuid.uuid4().hex[:8]}@localhost"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks",
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--hostname={hostname}",
            "--loglevel=info",
        ],
        cwd=directory,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    running = Worker(process, hostname, LineReader(process.stdout), expected)
    try:
        running.wait_for(" ready.", READY_TIMEOUT)
        yield running
    finally:
        running.stop()
    running.output.finish(STOP_TIMEOUT)  # EOF reached: all output is in
    if process.returncode != 0:
        running.fail(f"exit status {process.returncode} after SIGTERM (warm shutdown)")
    if problems := running.problems():
        running.fail("logged problems:\n" + "\n".join(problems))


def close_client(app: Any) -> None:
    """Close every connection this process opened: the rpc:// reply consumer's and the pool's
    (publishing and remote control), so none is left for the broker to close at its shutdown.
    The pools are kombu's process-wide ones, keyed by broker URL: they are dropped too, or the
    next app (another test module's) would be handed the closed ones."""
    consumer = app.backend.result_consumer
    if consumer._connection is not None:
        consumer.stop()
    if app._pool is not None:
        app._pool.force_close_all()
    app.close()
    kombu.pools.reset()


@contextmanager
def imported_tasks(directory: Path) -> Iterator[ModuleType]:
    """The same tasks module the worker loads, imported here for the client side."""
    sys.path.insert(0, str(directory))
    sys.modules.pop("tasks", None)
    try:
        module = importlib.import_module("tasks")
        yield module
        close_client(module.app)
    finally:
        sys.modules.pop("tasks", None)
        sys.path.remove(str(directory))

"""The example plugin packages under examples/, as the tests use them: installed with pip.

CI installs them (``.ci/run``); a developer runs the same command once. A test that needs one
fails, with that command, if it is missing: these tests never skip.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from line_reader import LineReader

TIMEOUT = 10.0

INSTALL = "pip install -e ./examples/consistent-hash -e ./examples/delayed-message"


def require(package: str) -> None:
    """Fail the test unless the distribution ``package`` is installed."""
    try:
        distribution(package)
    except PackageNotFoundError:
        pytest.fail(f"the example plugin {package} is not installed; run: {INSTALL}")


@contextmanager
def broker_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], LineReader, int]]:
    """``warrenmq run --port 0 ARGS`` as a user runs it: (process, its stderr, its AMQP port).

    On leaving, the broker is stopped with SIGINT (its shutdown hooks run and log) and waited for.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "warrenmq", "run", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    reader = LineReader(process.stderr)
    try:
        port = int(reader.wait_for("listening for amqp").rsplit(":", 1)[1])
        yield process, reader, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)

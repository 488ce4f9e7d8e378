"""Shared helpers for the kombu tests: waiting for deliveries with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress

import pytest
from kombu import Connection
from pika_helpers import TIMEOUT


def drain_until(
    conn: Connection, condition: Callable[[], bool], what: str, timeout: float = TIMEOUT
) -> None:
    """Process ``conn``'s events until ``condition()`` holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        with suppress(TimeoutError):
            conn.drain_events(timeout=min(remaining, 0.1))

"""Reading a subprocess's output line by line in a thread, so a test waits for a line with a
deadline instead of sleeping."""

from __future__ import annotations

import queue
import threading
import time
from typing import IO

import pytest

TIMEOUT = 10.0


class LineReader:
    """Reads a stream's lines in a thread so a test can wait for one with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no line with {text!r} within {timeout}s; got:\n{self.text}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"stream ended before a line with {text!r}; got:\n{self.text}")
            self.lines.append(line)
            if text in line:
                return line

    def finish(self, timeout: float = TIMEOUT) -> str:
        """Everything, once the stream has ended (the process exited)."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return self.text

    @property
    def text(self) -> str:
        return "".join(self.lines)

"""One timer service for the whole broker: a heap of deadlines, not a callback per message.

Queues use it for message TTL and ``x-expires``; anything else that needs "call me at t" may
too. The broker runs it from one task (``Broker.serve``); tests may drive it by hand with
``run_due``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable

log = logging.getLogger("warrenmq.timers")


class Timer:
    """A scheduled call; ``cancel()`` it if it is no longer wanted."""

    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """Deadlines on ``time.monotonic()``, run in order by ``run_due``."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        #: called when a deadline earlier than every other one is added (wakes the runner)
        self.on_earlier: Callable[[], None] | None = None

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        heap = self._heap
        earlier = not heap or when < heap[0][0]
        heapq.heappush(heap, (when, next(self._order), timer))
        if earlier and self.on_earlier is not None:
            self.on_earlier()
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now: float | None = None) -> float | None:
        """Run every timer due by ``now``; return the next deadline (None: nothing pending).

        A failing callback is logged and does not stop the others.
        """
        if now is None:
            now = time.monotonic()
        heap = self._heap
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timer.cancelled:
                continue
            timer.cancelled = True
            try:
                timer.callback()
            except Exception:
                log.exception("timer callback %r failed", timer.callback)
        return self.next_deadline()

    def __len__(self) -> int:
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)

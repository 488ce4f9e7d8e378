"""The held messages of one exchange, in order of due time, on the broker's one timer service.

A heap of (due, sequence, held message) and a single broker timer armed for the earliest one:
scheduling a message is a heap push, not a timer of its own, and a timer that fires releases
every message due by then. Due times are on ``time.monotonic()``, so a change of the wall clock
moves nothing; what is kept across restarts is the wall-clock due time (see ``__init__.py``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from warrenmq import Message
from warrenmq.broker import MESSAGE_OVERHEAD
from warrenmq.queue import StoredEntry
from warrenmq.timers import Timer, Timers

log = logging.getLogger("warrenmq.delayed")

#: the timer is armed at most this far ahead (seconds), then re-armed: a delay of years must
#: not reach the event loop as a deadline it cannot represent
HORIZON = 3600.0
#: a release later than this (seconds) is logged as a warning, at most every WARN_EVERY s
LATE_WARNING = 0.1
WARN_EVERY = 10.0


@dataclass(slots=True)
class Held:
    """A message waiting for its due time."""

    id: int
    #: wall-clock due time (seconds since the epoch): what survives a restart
    due_wall: float
    message: Message
    #: the delay in milliseconds, as the publisher asked (released as ``x-delay: -delay``)
    delay: int
    #: its entry in the store's log (persistent message, durable exchange), else None
    stored: StoredEntry | None = None


@dataclass
class Lateness:
    """How late messages were released: a histogram in whole milliseconds."""

    released: int = 0
    max_seconds: float = 0.0
    by_ms: Counter[int] = field(default_factory=Counter)

    def record(self, late: float) -> None:
        self.released += 1
        self.by_ms[int(late * 1000)] += 1
        self.max_seconds = max(self.max_seconds, late)

    def quantile_ms(self, q: float) -> int:
        """The lateness, in whole ms, that a fraction ``q`` of the releases did not exceed."""
        wanted = math.ceil(q * self.released)
        seen = 0
        for ms in sorted(self.by_ms):
            seen += self.by_ms[ms]
            if seen >= wanted:
                return ms
        return 0


class Schedule:
    """Releases held messages at their due time, earliest first (publish order on a tie)."""

    def __init__(self, timers: Timers, release: Callable[[Held], None], name: str) -> None:
        self._timers = timers
        self._release = release
        self._name = name
        self._heap: list[tuple[float, int, Held]] = []
        self._order = itertools.count()
        self._timer: Timer | None = None
        self._armed_for = math.inf
        self._last_warning = -math.inf
        #: bodies held plus a per-message overhead, for the broker's memory alarm
        self.held_bytes = 0
        #: recovered messages wait until the exchange has a binding to route them to
        self.paused = False
        self.lateness = Lateness()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, held: Held, due: float) -> None:
        """Hold ``held`` until ``due`` (on ``time.monotonic()``)."""
        heapq.heappush(self._heap, (due, next(self._order), held))
        self.held_bytes += len(held.message.body) + MESSAGE_OVERHEAD
        if due < self._armed_for:
            self._arm()

    def held(self) -> list[Held]:
        """The messages still held, in no particular order."""
        return [entry[2] for entry in self._heap]

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self._arm()

    def close(self) -> list[Held]:
        """Stop: cancel the timer and hand back what was still held."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed_for = None, math.inf
        held = self.held()
        self._heap.clear()
        self.held_bytes = 0
        return held

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._armed_for = None, math.inf
        if not self._heap or self.paused:
            return
        due = self._heap[0][0]
        self._armed_for = due
        when = min(due, time.monotonic() + HORIZON)
        self._timer = self._timers.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer, self._armed_for = None, math.inf
        heap, now = self._heap, time.monotonic()
        while heap and heap[0][0] <= now and not self.paused:
            due, _, held = heapq.heappop(heap)
            self.held_bytes -= len(held.message.body) + MESSAGE_OVERHEAD
            self._record(now - due)
            try:
                self._release(held)
            except Exception:  # one bad message must not stop the schedule
                log.exception("exchange '%s': releasing a delayed message failed", self._name)
        self._arm()

    def _record(self, late: float) -> None:
        self.lateness.record(late)
        if late > LATE_WARNING and time.monotonic() - self._last_warning > WARN_EVERY:
            self._last_warning = time.monotonic()
            log.warning(
                "exchange '%s': a delayed message was released %.0f ms late (broker overloaded?)",
                self._name,
                late * 1000,
            )

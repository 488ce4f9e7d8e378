"""What one scenario run measured, and the checks that decide OK or FAIL."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from heapq import merge


@dataclass
class Result:
    """Outcome of one scenario against one broker."""

    broker: str
    scenario: str
    sent: int = 0
    delivered: int = 0
    seconds: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    broker_cpu_s: float | None = None
    client_cpu_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.delivered > 0

    @property
    def rate(self) -> float | None:
        """Deliveries per second (all queues together)."""
        return self.delivered / self.seconds if self.seconds > 0 and self.delivered else None

    def cpu_us_per_msg(self, cpu_s: float | None) -> float | None:
        return cpu_s * 1e6 / self.delivered if cpu_s is not None and self.delivered else None


def check_sequence(seen: bytearray, sent: int) -> tuple[int, int]:
    """(missing, duplicated): sequence numbers ``0..sent-1`` not seen once, or seen twice+.

    Numbers at or past ``sent`` (never published) count as duplicated.
    """
    head = bytes(seen[:sent]).ljust(sent, b"\0")
    missing = head.count(0)
    duplicated = sent - missing - head.count(1)
    tail = bytes(seen[sent:])
    return missing, duplicated + len(tail) - tail.count(0)


def percentiles(samples: Iterable[Iterable[int]], qs: tuple[float, ...]) -> list[float] | None:
    """Nanosecond samples (several arrays) -> the requested quantiles in milliseconds."""
    ordered = list(merge(*(sorted(s) for s in samples)))
    if not ordered:
        return None
    last = len(ordered) - 1
    return [ordered[min(last, int(q * len(ordered)))] / 1e6 for q in qs]

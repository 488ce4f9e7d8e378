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
    #: latency scenarios: the tail of the latency as well
    p999_ms: float | None = None
    max_ms: float | None = None
    broker_cpu_s: float | None = None
    client_cpu_s: float | None = None
    #: delayed scenario: lateness (receive - publish - x-delay) p50, p99, p99.9 and max in ms
    late_ms: tuple[float, ...] | None = None
    #: delayed scenario: broker CPU seconds per timer wake, from its low-rate phase
    wake_cpu_s: float | None = None
    #: backlog scenario: the fill (publish, confirmed, no consumer) and drain phases, seconds
    #: and broker CPU seconds each; the broker's resident memory at the start and its peak
    fill_seconds: float | None = None
    fill_cpu_s: float | None = None
    drain_seconds: float | None = None
    drain_cpu_s: float | None = None
    rss_start: int | None = None  # bytes
    rss_peak: int | None = None  # bytes
    rss_peak_fill: int | None = None  # bytes, the fill's peak
    rss_peak_drain: int | None = None  # bytes, the drain's peak
    rss_filled: int | None = None  # bytes, once the broker is idle after the fill
    body_size: int = 0
    #: whether the scenario's speed target was met (None: it has none, or nothing measured)
    target_met: bool | None = None
    #: the target's row in the table (``report.LATE_TARGET`` or ``report.LATENCY_TARGET``)
    target: str = ""
    #: why the scenario does not apply to this broker (it lacks an optional plugin)
    not_applicable: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def checked(self) -> bool:
        """No lost, duplicated or corrupted message, no broker error (n/a counts as fine)."""
        return not self.problems and (self.delivered > 0 or bool(self.not_applicable))

    @property
    def ok(self) -> bool:
        """Checked, and the speed target (if any) met: decides the exit status."""
        return self.checked and self.target_met is not False

    @property
    def rate(self) -> float | None:
        """Deliveries per second (all queues together)."""
        return self.delivered / self.seconds if self.seconds > 0 and self.delivered else None

    def cpu_us_per_msg(self, cpu_s: float | None) -> float | None:
        return cpu_s * 1e6 / self.delivered if cpu_s is not None and self.delivered else None

    @property
    def fill_rate(self) -> float | None:
        """Backlog scenario: confirmed publishes per second while no consumer was attached."""
        return self.sent / self.fill_seconds if self.fill_seconds and self.sent else None

    @property
    def queued_bytes_per_msg(self) -> float | None:
        """Backlog scenarios: the broker's resident memory per queued message beyond its
        body, (RSS after the fill - RSS at the start) / messages - body size."""
        if self.rss_filled is None or self.rss_start is None or not self.sent:
            return None
        return (self.rss_filled - self.rss_start) / self.sent - self.body_size

    @property
    def drain_rate(self) -> float | None:
        """Backlog scenario: deliveries per second once the consumer started."""
        return self.delivered / self.drain_seconds if self.drain_seconds else None


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

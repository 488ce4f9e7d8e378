"""Message rates: the core's plain counters, sampled every few seconds into rates.

Nothing here runs per message. Every ``interval`` seconds (5, as RabbitMQ) ``Sampler.sample``
reads the integer counters that queues and connections keep anyway, and turns the change
since the last sample into rates per second. The broker-wide totals are kept for the last
``history`` seconds, for the charts (RabbitMQ's ``samples`` in ``*_details``).

Totals stay monotonic when queues and connections go away: their last sampled counts are
added to ``retired`` (what they did after that last sample is not counted, as a scrape that
came just before a counter vanished would not have seen it either).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from warrenmq.broker import Broker
    from warrenmq.protocol import ProtocolConnection
    from warrenmq.queue import Queue

#: per-queue counters, in this order: (published, delivered, acknowledged, redelivered,
#: messages_ready, messages_unacknowledged)
QUEUE_COUNTERS = ("publish", "deliver_get", "ack", "redeliver", "ready", "unacked")
#: broker-wide totals, in this order (``GLOBAL_FIELDS``)
GLOBAL_FIELDS = (
    "publish",
    "deliver_get",
    "ack",
    "redeliver",
    "messages",
    "messages_ready",
    "messages_unacknowledged",
    "recv_oct",
    "send_oct",
)
ZERO_QUEUE_RATES = (0.0,) * len(QUEUE_COUNTERS)
ZERO_CONNECTION_RATES = (0.0, 0.0)


def rate_text(value: float) -> str:
    """``{"rate": value}`` as JSON, rounded to a tenth as RabbitMQ shows rates."""
    return f'{{"rate":{round(value, 1)!r}}}'


ZERO_RATE_TEXTS = (rate_text(0.0),) * (len(QUEUE_COUNTERS) + 1)


def queue_counters(queue: Queue) -> tuple[int, ...]:
    return (
        queue.published,
        queue.delivered,
        queue.acknowledged,
        queue.redelivered,
        queue.ready_count,
        queue.unacked_count,
    )


@dataclass
class Sample:
    """The broker-wide totals at one moment (``GLOBAL_FIELDS``), milliseconds since the epoch."""

    timestamp: int
    totals: tuple[int, ...]


@dataclass
class Sampler:
    broker: Broker
    interval: float = 5.0
    #: seconds of broker-wide samples kept
    history: float = 600.0
    #: queue -> (counters at the last sample, rates since the one before)
    queues: dict[Queue, tuple[tuple[int, ...], tuple[float, ...]]] = field(default_factory=dict)
    #: connection -> ((bytes in, bytes out, messages in, messages out), (recv rate, send rate))
    connections: dict[ProtocolConnection, tuple[tuple[int, ...], tuple[float, float]]] = field(
        default_factory=dict
    )
    #: counts of queues and connections that are gone: publish, deliver_get, ack, redeliver,
    #: recv_oct, send_oct
    retired: list[int] = field(default_factory=lambda: [0] * 6)
    samples: deque[Sample] = field(default_factory=deque)
    #: broker-wide rates per second, by ``GLOBAL_FIELDS`` name
    rates: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GLOBAL_FIELDS, 0.0))
    _last: float | None = None
    _rate_texts: dict[Queue, tuple[str, ...]] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            self.sample()
            await anyio.sleep(self.interval)

    def sample(self, now: float | None = None) -> None:
        """Read every counter once; cheap enough for thousands of queues every 5 s."""
        now = time.monotonic() if now is None else now
        elapsed = None if self._last is None else now - self._last
        self._last = now
        previous_queues, queues = self.queues, {}
        retired = self.retired
        for vhost in list(self.broker.vhosts.values()):
            for queue in vhost.queues.values():
                counters = queue_counters(queue)
                before = previous_queues.pop(queue, None)
                if before is None or not elapsed or before[0] == counters:
                    queues[queue] = (counters, ZERO_QUEUE_RATES)  # the usual case: idle
                else:
                    old = before[0]
                    queues[queue] = (
                        counters,
                        (
                            max(0, counters[0] - old[0]) / elapsed,
                            max(0, counters[1] - old[1]) / elapsed,
                            max(0, counters[2] - old[2]) / elapsed,
                            max(0, counters[3] - old[3]) / elapsed,
                            (counters[4] - old[4]) / elapsed,  # depths rise and fall
                            (counters[5] - old[5]) / elapsed,
                        ),
                    )
        for counters, _ in previous_queues.values():  # deleted since the last sample
            retired[2] += counters[2]
            retired[3] += counters[3]
        self.queues = queues
        self._rate_texts = {}
        previous_connections = self.connections
        connections: dict[ProtocolConnection, tuple[tuple[int, ...], tuple[float, float]]] = {}
        for connection in list(self.broker.connections):
            view = connection.view()
            if view is None:
                continue
            counters = (view.bytes_in, view.bytes_out, view.messages_in, view.messages_out)
            before = previous_connections.pop(connection, None)
            if before is None or not elapsed:
                connections[connection] = (counters, ZERO_CONNECTION_RATES)
            else:
                connections[connection] = (
                    counters,
                    (
                        max(0, counters[0] - before[0][0]) / elapsed,
                        max(0, counters[1] - before[0][1]) / elapsed,
                    ),
                )
        for counters, _ in previous_connections.values():  # closed since the last sample
            retired[0] += counters[2]
            retired[1] += counters[3]
            retired[4] += counters[0]
            retired[5] += counters[1]
        self.connections = connections
        totals = self.totals()
        if self.samples and elapsed:
            last = self.samples[-1].totals
            self.rates = {
                name: (new - was) / elapsed
                for name, new, was in zip(GLOBAL_FIELDS, totals, last, strict=True)
            }
        self.samples.append(Sample(int(time.time() * 1000), totals))
        keep = max(2, int(self.history / self.interval) + 1)
        while len(self.samples) > keep:
            self.samples.popleft()

    def totals(self) -> tuple[int, ...]:
        """The broker-wide totals now (``GLOBAL_FIELDS``), from the last sampled counters
        of connections and the current counters of queues."""
        publish, deliver, ack, redeliver, recv, send = self.retired
        for (bytes_in, bytes_out, messages_in, messages_out), _ in self.connections.values():
            publish += messages_in
            deliver += messages_out
            recv += bytes_in
            send += bytes_out
        ready = unacked = 0
        for counters, _ in self.queues.values():
            ack += counters[2]
            redeliver += counters[3]
            ready += counters[4]
            unacked += counters[5]
        return (publish, deliver, ack, redeliver, ready + unacked, ready, unacked, recv, send)

    def queue_rates(self, queue: Queue) -> tuple[float, ...]:
        found = self.queues.get(queue)
        return ZERO_QUEUE_RATES if found is None else found[1]

    def queue_rate_texts(self, queue: Queue) -> tuple[str, ...]:
        """The queue's rates as the JSON of RabbitMQ's ``*_details``, in the order publish,
        deliver_get, ack, redeliver, messages_ready, messages_unacknowledged, messages: made
        once per sample, and shared by all idle queues."""
        found = self.queues.get(queue)
        if found is None or found[1] is ZERO_QUEUE_RATES:
            return ZERO_RATE_TEXTS
        texts = self._rate_texts.get(queue)
        if texts is None:
            rates = found[1]
            texts = self._rate_texts[queue] = (
                *(rate_text(rate) for rate in rates),
                rate_text(rates[4] + rates[5]),
            )
        return texts

    def connection_rates(self, connection: ProtocolConnection) -> tuple[float, float]:
        found = self.connections.get(connection)
        return ZERO_CONNECTION_RATES if found is None else found[1]

    def history_of(self, name: str, age: float, increment: float) -> dict[str, Any]:
        """RabbitMQ's ``*_details`` with ``samples`` (newest first) over the last ``age``
        seconds, one per ``increment`` seconds, and their averages."""
        index = GLOBAL_FIELDS.index(name)
        if not self.samples:
            return {"rate": 0.0, "samples": [], "avg_rate": 0.0, "avg": 0.0}
        newest = self.samples[-1].timestamp
        cutoff = newest - age * 1000
        step = max(1, round(increment / self.interval))
        chosen = [s for s in reversed(self.samples) if s.timestamp >= cutoff][::step]
        points = [{"sample": s.totals[index], "timestamp": s.timestamp} for s in chosen]
        values = [s.totals[index] for s in chosen]
        span = (chosen[0].timestamp - chosen[-1].timestamp) / 1000 if len(chosen) > 1 else 0
        return {
            "rate": round(self.rates[name], 1),
            "samples": points,
            "avg_rate": round((values[0] - values[-1]) / span, 1) if span else 0.0,
            "avg": round(sum(values) / len(values), 1),
        }

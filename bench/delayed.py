"""The delayed scenario's own parts: each message's ``x-delay``, lateness, and the timer phase.

Lateness is receive time minus publish time minus ``x-delay``, all on the load generator's
clock: the broker starts the delay when it takes the message, after the publish time, so a
broker that holds every message long enough never shows a negative lateness.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Sequence
from time import perf_counter, perf_counter_ns

from pamqp.common import FieldTable

from bench import wire
from bench.amqp import CHANNEL, Connection
from bench.peers import RecordingConsumer
from bench.procfs import cpu_seconds, scheduled_seconds
from bench.stats import percentiles

EXCHANGE_TYPE = "x-delayed-message"
EXCHANGE_ARGUMENTS: FieldTable = {"x-delayed-type": "direct"}
RATE = 10_000  # messages per second, unless --rate says otherwise
SPREAD_MS = (50, 500)  # x-delay of the measured messages, spread over this range
_STRIDE = 7919  # prime to the spread's 451 values: consecutive messages jump about the range
#: the target: 99% of the messages delivered at most this late
LATE_TARGET_MS = 5.0
LATE_QUANTILES = (0.5, 0.99, 0.999, 1.0)
#: a broker that counts delays in whole milliseconds (RabbitMQ's plugin) may deliver up to
#: this much before the due time on the load generator's nanosecond clock
EARLY_TOLERANCE_MS = 1.0
#: the timer phase: WAKES messages due WAKE_GAP_MS apart, the first WAKE_FIRST_MS after publishing
WAKES = 500
WAKE_GAP_MS = 2
WAKE_FIRST_MS = 100
_POLL = 0.01  # seconds between looks at the consumer in the timer phase


def x_delay(seq: int) -> int:
    """The ``x-delay`` (ms) of measured message ``seq``: due order is not publish order."""
    low, high = SPREAD_MS
    return low + seq * _STRIDE % (high - low + 1)


def lateness(consumers: Sequence[RecordingConsumer]) -> tuple[list[float] | None, list[str]]:
    """(p50, p99, p99.9 and max lateness in ms or None, problems) over every delivery."""
    late = []
    early, earliest = 0, 0
    tolerance = int(EARLY_TOLERANCE_MS * 1e6)
    for c in consumers:
        pairs = zip(c.latencies, c.order, strict=False)  # unequal only after a broker error
        ns = array("q", (lat - x_delay(seq) * 1_000_000 for lat, seq in pairs))
        for value in ns:
            if value < -tolerance:
                early += 1
                earliest = min(earliest, value)
        late.append(ns)
    problems = []
    if early:
        problems.append(
            f"{early:,} messages delivered before their due time (the earliest "
            f"{-earliest / 1e6:.1f} ms before)"
        )
    return percentiles(late, LATE_QUANTILES), problems


async def timer_wake_cpu(
    conn: Connection,
    exchange: str,
    consumer: RecordingConsumer,
    pid: int,
    first_seq: int,
    body_size: int,
    timeout: float,
) -> float:
    """Broker CPU seconds per timer wake: publish WAKES messages at once, due WAKE_GAP_MS
    apart, and wait for all of them. The figure includes taking, holding, releasing and
    delivering one message; a broker that spins until its clock reaches a due time costs
    about the gap itself. Raises TimeoutError if they have not all arrived ``timeout`` s
    after the last due time."""
    template = wire.PublishTemplate(
        CHANNEL,
        exchange,
        [""],
        body_size,
        min(256, WAKES),
        conn.frame_max,
        x_delay=lambda seq: WAKE_FIRST_MS + WAKE_GAP_MS * (seq - first_seq),
    )
    expected = consumer.received + WAKES
    deadline = perf_counter() + (WAKE_FIRST_MS + WAKE_GAP_MS * WAKES) / 1000 + timeout
    cpu0 = _cpu(pid)
    seq, end = first_seq, first_seq + WAKES
    while seq < end:
        count = min(template.batch, end - seq)
        assert conn.transport is not None
        conn.transport.write(template.render(seq, count, perf_counter_ns()))
        seq += count
    while consumer.received < expected:
        if conn.error is not None:
            raise conn.error
        if perf_counter() > deadline:
            raise TimeoutError(
                f"timer phase: {consumer.received - expected + WAKES} of {WAKES} delivered"
            )
        await asyncio.sleep(_POLL)
    return (_cpu(pid) - cpu0) / WAKES


def _cpu(pid: int) -> float:
    """CPU seconds of ``pid``, to the nanosecond where the kernel tells (a few hundred wakes
    cost too little for /proc/PID/stat's clock ticks)."""
    scheduled = scheduled_seconds(pid)
    return scheduled[0] if scheduled else cpu_seconds(pid)

"""The backlog scenario's two phases: fill a durable queue with no consumer, then drain it.

The fill publishes persistent messages with confirms (so the backlog is really stored) and
ends at the last confirm; the drain starts one consumer with manual acks and ends at the last
delivery. Each phase gets its own time and broker CPU; the broker's resident memory is sampled
throughout for its peak.
"""

from __future__ import annotations

import asyncio
import gc
import os
from array import array
from collections.abc import Callable
from itertools import pairwise
from time import perf_counter, process_time
from typing import TYPE_CHECKING, Any

from pamqp import commands

from bench.amqp import Connection
from bench.config import Options
from bench.peers import RecordingConsumer
from bench.procfs import cpu_seconds, rss_bytes, scheduled_seconds, waiting_share
from bench.stats import Result

if TYPE_CHECKING:
    from bench.scenarios import _Run

RSS_EVERY = 0.1  # seconds between samples of the broker's resident memory
#: after the fill, wait until the broker settles (it may still page messages out) before
#: reading its resident memory for the memory per queued message: until, over SETTLE_EVERY
#: seconds, it used under SETTLE_CPU of a core or its memory moved by under SETTLE_RSS bytes,
#: for at most SETTLE_MAX seconds
SETTLE_EVERY = 0.5
SETTLE_CPU = 0.05
SETTLE_RSS = 1 << 20
SETTLE_MAX = 10.0
Log = Callable[[str], None]


class _RssWatch:
    """Samples the resident memory of a process in the background, keeping the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = rss_bytes(pid)
        self.peak = self.start
        #: the peak of the phases before the current one
        self.overall = self.start
        self._task = asyncio.create_task(self._sample())

    def _take(self) -> None:
        rss = rss_bytes(self.pid)
        if rss is not None and (self.peak is None or rss > self.peak):
            self.peak = rss

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(RSS_EVERY)
            self._take()

    def next_phase(self) -> int | None:
        """The peak so far (one phase's), then start the next phase's from the current value."""
        self._take()
        peak = self.peak
        self.peak = rss_bytes(self.pid)
        self.overall = max(self.overall or 0, peak or 0) or None
        return peak

    async def stop(self) -> None:
        self._take()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def out_of_order(order: array[int]) -> int:
    """How many deliveries came after a later-published message (0 for a FIFO drain)."""
    return sum(1 for a, b in pairwise(order) if b < a)


async def _settle(pid: int | None) -> None:
    """Wait until the broker settles (see SETTLE_EVERY), for at most SETTLE_MAX seconds."""
    if not pid:
        return
    deadline = perf_counter() + SETTLE_MAX
    cpu, rss = cpu_seconds(pid), rss_bytes(pid) or 0
    while perf_counter() < deadline:
        await asyncio.sleep(SETTLE_EVERY)
        (cpu, cpu_before), (rss, rss_before) = (cpu_seconds(pid), cpu), (rss_bytes(pid) or 0, rss)
        if cpu - cpu_before < SETTLE_CPU * SETTLE_EVERY or abs(rss - rss_before) < SETTLE_RSS:
            return


async def _phase(
    run: _Run,
    opts: Options,
    log: Log,
    prefix: str,
    publishing: asyncio.Task[None] | None,
    pid: int | None,
) -> bool:
    """Wait until ``run.done`` (True), a failure or a stall (False); log how long the broker
    and the load generator waited for a CPU meanwhile."""
    sched0 = (scheduled_seconds(pid) if pid else None, scheduled_seconds(os.getpid()))
    monitor = asyncio.create_task(run.monitor(opts.timeout, log, prefix))
    pending: set[asyncio.Future[Any]] = {run.done, run.failed, run.stalled}
    if publishing is not None:
        pending.add(publishing)
    try:
        while True:  # the publisher finishing is not the end: confirms still come
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if finished != {publishing} or publishing.exception() is not None:
                break
    finally:
        monitor.cancel()
        await asyncio.gather(monitor, return_exceptions=True)
    sched1 = (scheduled_seconds(pid) if pid else None, scheduled_seconds(os.getpid()))
    waits = [
        f"{who} {100 * share:.0f}%"
        for who, before, after in zip(("broker", "load generator"), sched0, sched1, strict=True)
        if (share := waiting_share(before, after)) is not None
    ]
    if waits:
        log(f"{prefix} waiting for a CPU, part of the runnable time: " + ", ".join(waits))
    return run.done.done()


async def measure(
    run: _Run,
    cconn: Connection,
    queue: str,
    consumer_tag: str,
    pid: int | None,
    opts: Options,
    result: Result,
    log: Log,
    prefix: str,
    grace: float,
) -> BaseException | None:
    """Fill, then drain; fill ``result`` (seconds and CPU: both phases together). After the
    drain, listen ``grace`` more seconds for strays. Returns the publisher's exception, if any."""
    producer = run.producer
    assert producer is not None
    loop = asyncio.get_running_loop()
    rss = _RssWatch(pid) if pid else None
    gc.collect()
    gc.disable()
    client_cpu0 = process_time()
    cpu0 = cpu_seconds(pid) if pid else 0.0
    t0 = perf_counter()
    publishing = asyncio.create_task(producer.run())
    try:
        run.filling = True
        filled = await _phase(run, opts, log, f"{prefix} fill:", publishing, pid)
        t_fill = run.t_end or run.t_last_progress or perf_counter()
        cpu_fill = cpu_seconds(pid) if pid else 0.0
        result.fill_seconds = t_fill - t0
        result.fill_cpu_s = cpu_fill - cpu0 if pid else None
        if filled:
            log(
                f"{prefix} {producer.confirmed:,} confirmed in {result.fill_seconds:.2f} s, "
                f"{producer.confirmed / result.fill_seconds:,.0f} msg/s; starting the consumer"
            )
            if rss is not None:
                await _settle(pid)
                result.sent, result.rss_start = producer.sent, rss.start
                result.rss_filled = rss_bytes(rss.pid)
                if (per := result.queued_bytes_per_msg) is not None:
                    log(f"{prefix} broker memory per queued message beyond its body: {per:,.0f} B")
                result.rss_peak_fill = rss.next_phase()
            run.filling = False
            run.t_end = 0.0
            run.done, run.stalled = loop.create_future(), loop.create_future()
            t1 = perf_counter()
            cpu1 = cpu_seconds(pid) if pid else 0.0
            await cconn.rpc(
                commands.Basic.Consume(queue=queue, consumer_tag=consumer_tag, no_ack=False)
            )
            run.progress()  # everything may have arrived with the Consume-Ok
            drained = await _phase(run, opts, log, f"{prefix} drain:", None, pid)
            t_end = run.t_end or (run.t_last_progress if run.stalled.done() else perf_counter())
            result.drain_seconds = t_end - t1
            result.drain_cpu_s = cpu_seconds(pid) - cpu1 if pid else None
            if drained:
                log(
                    f"{prefix} {run.delivered():,} drained in {result.drain_seconds:.2f} s, "
                    f"{run.delivered() / result.drain_seconds:,.0f} msg/s"
                )
            result.seconds = t_end - t0
        else:
            result.seconds = t_fill - t0
        result.broker_cpu_s = cpu_seconds(pid) - cpu0 if pid else None
        result.client_cpu_s = process_time() - client_cpu0
    finally:
        gc.enable()
        if rss is not None:
            await rss.stop()
            result.rss_start = rss.start
            if result.rss_peak_fill is not None:
                result.rss_peak_drain = rss.peak
            result.rss_peak = max(rss.overall or 0, rss.peak or 0) or None
        error = publishing.exception() if publishing.done() and not publishing.cancelled() else None
        publishing.cancel()
        await asyncio.gather(publishing, return_exceptions=True)
    if run.done.done() and not run.filling:
        await asyncio.sleep(grace)  # a late duplicate or stray message still counts
    result.sent = producer.sent
    result.delivered = run.delivered()
    for c in run.consumers:
        if isinstance(c, RecordingConsumer) and (n := out_of_order(c.order)):
            result.problems.append(
                f"{c.queue}: {n:,} deliveries came after a later-published message "
                "(one consumer draining one queue must get publish order)"
            )
    return error

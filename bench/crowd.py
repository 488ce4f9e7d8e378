"""Many consumers without credit on one queue, for the consumers-10k scenario.

Each has prefetch 1 (Basic.Qos with global=false applies to every consumer the channel starts
afterwards) and is handed one message it never acks, so none of them can take another: every
later message must go to some other consumer, and finding it must not cost more with more
consumers around.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from time import perf_counter, perf_counter_ns

from pamqp import commands

from bench import wire
from bench.amqp import CHANNEL, RPC_TIMEOUT, BrokerURL, Connection
from bench.config import Options
from bench.peers import Consumer

PER_CONNECTION = 2_500  # consumers per connection, all on its one channel
PIPELINE = 500  # Basic.Consume calls sent per write
LOG_EVERY = 1.0  # seconds between progress lines


class Crowd:
    """The consumers without credit: their connections and what they were delivered."""

    def __init__(self) -> None:
        self.conns: list[Connection] = []
        self.holders: list[Consumer] = []  # one per connection, counting its deliveries
        self.size = 0

    @property
    def received(self) -> int:
        return sum(h.received for h in self.holders)

    async def gather(
        self,
        url: BrokerURL,
        queue: str,
        size: int,
        pconn: Connection,
        opts: Options,
        log: Callable[[str], None],
        prefix: str,
        on_failure: Callable[[BaseException], None],
    ) -> None:
        """Start ``size`` consumers on ``queue``, then publish and hand each one message."""
        self.size = size
        woken = asyncio.Event()  # set after every read on any of the connections
        t0 = last_log = perf_counter()
        started = 0
        for first in range(0, size, PER_CONNECTION):
            conn = await Connection.open(url)
            conn.on_failure = on_failure
            self.conns.append(conn)
            await conn.rpc(commands.Basic.Qos(prefetch_count=1))
            self.holders.append(
                Consumer(
                    conn, queue, manual_ack=False, ack_every=1, capacity=size, on_progress=woken.set
                )
            )  # manual_ack=False: it never acks, though the broker expects acks
            last = min(first + PER_CONNECTION, size)
            for start in range(first, last, PIPELINE):
                tags = range(start, min(start + PIPELINE, last))
                futures = conn.call_many(
                    [commands.Basic.Consume(queue=queue, consumer_tag=f"idle-{i}") for i in tags]
                )
                await asyncio.wait_for(asyncio.gather(*futures), RPC_TIMEOUT)
                started += len(tags)
                if perf_counter() - last_log >= LOG_EVERY or started == size:
                    log(f"{prefix} {started:,}/{size:,} consumers started")
                    last_log = perf_counter()
        log(f"{prefix} consumers started in {perf_counter() - t0:.1f} s; one message each")

        t0 = perf_counter()
        template = wire.PublishTemplate(
            CHANNEL, "", [queue], opts.body_size, opts.batch, pconn.frame_max
        )
        for first in range(0, size, opts.batch):
            await pconn.writable.wait()
            if pconn.error is not None:
                raise pconn.error
            assert pconn.transport is not None
            count = min(opts.batch, size - first)
            pconn.transport.write(template.render(first, count, perf_counter_ns()))
        await self._wait_filled(woken, opts.timeout, log, prefix)
        log(f"{prefix} {size:,} messages held in {perf_counter() - t0:.1f} s")

    async def _wait_filled(
        self, woken: asyncio.Event, timeout: float, log: Callable[[str], None], prefix: str
    ) -> None:
        """Until every consumer holds its message; TimeoutError after ``timeout`` s stuck."""
        last, last_change = 0, perf_counter()
        last_log = last_change
        while (received := self.received) < self.size:
            now = perf_counter()
            if received != last:
                last, last_change = received, now
            elif now - last_change > timeout:
                raise TimeoutError(
                    f"only {received:,} of {self.size:,} consumers with prefetch 1 got a "
                    f"message, none more for {timeout:g} s"
                )
            if now - last_log >= LOG_EVERY:
                log(f"{prefix} {received:,}/{self.size:,} consumers hold a message")
                last_log = now
            woken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), LOG_EVERY / 4)

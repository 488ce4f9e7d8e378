"""The five scenarios and how one of them is set up, measured and torn down."""

from __future__ import annotations

import asyncio
import gc
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter, process_time
from typing import Any

from pamqp import commands
from pamqp.base import Frame

from bench import wire
from bench.amqp import CHANNEL, BrokerError, Connection
from bench.config import Options, Target
from bench.peers import Consumer, Producer
from bench.procfs import cpu_seconds
from bench.stats import Result, check_sequence, percentiles

CONSUMER_TAG = "bench"
BIND_TIMEOUT = 300.0
LATE_GRACE = 0.2  # seconds to keep listening after the last expected delivery
TOPIC_KEYS = [f"bench.hot.k{i:02d}.load" for i in range(16)]  # published keys, rotating
TOPIC_MATCH = "bench.hot.*.load"  # the one binding that matches them
_FILLER_FORMS = (  # none matches a TOPIC_KEYS key: each has a word "n<i>" in the way
    "bench.hot.n{}.*",
    "bench.*.n{}.#",
    "#.n{}",
    "bench.#.n{}",
    "*.hot.n{}",
    "n{}.#",
    "bench.hot.*.n{}",
    "*.*.n{}.load",
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    """One workload shape; bodies are ``Options.body_size`` bytes, messages are transient."""

    name: str
    summary: str
    exchange_type: str | None = None  # None: default exchange, routing key = queue name
    queues: int = 1  # one consumer (and connection) per queue
    manual_ack: bool = False
    confirms: bool = False


SCENARIOS = (
    Scenario("autoack", "1 producer -> 1 queue -> 1 consumer, auto-ack"),
    Scenario("manual-ack", "as autoack, manual acks (multiple) with prefetch", manual_ack=True),
    Scenario("confirms", "as autoack, with publisher confirms (bounded in flight)", confirms=True),
    Scenario(
        "fanout",
        "fanout exchange -> 4 queues -> 4 consumers, auto-ack",
        exchange_type="fanout",
        queues=4,
    ),
    Scenario(
        "topic",
        "topic exchange, 10,000 non-matching bindings + 1 matching -> 1 consumer",
        exchange_type="topic",
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}


def filler_patterns(count: int) -> list[str]:
    """``count`` distinct topic patterns with ``*`` and ``#`` that match no published key."""
    return [_FILLER_FORMS[i % len(_FILLER_FORMS)].format(i) for i in range(count)]


class _Run:
    """Ties a producer to its consumers: wakes the producer, notices completion or a stall."""

    def __init__(self, sc: Scenario) -> None:
        loop = asyncio.get_running_loop()
        self.sc = sc
        self.done: asyncio.Future[None] = loop.create_future()
        self.failed: asyncio.Future[BaseException] = loop.create_future()
        self.stalled: asyncio.Future[None] = loop.create_future()
        self.producer: Producer | None = None
        self.consumers: list[Consumer] = []
        self.t_end = 0.0
        self.t_last_progress = 0.0

    def on_failure(self, exc: BaseException) -> None:
        if not self.failed.done():
            self.failed.set_result(exc)

    def progress(self) -> None:
        p = self.producer
        if p is None:
            return
        p.notify()
        if (
            p.finished
            and not self.done.done()
            and all(c.received >= p.sent for c in self.consumers)
            and (not self.sc.confirms or p.confirmed >= p.sent)
        ):
            self.t_end = perf_counter()
            self.done.set_result(None)

    def delivered(self) -> int:
        return sum(c.received for c in self.consumers)

    async def monitor(self, timeout: float, log: Log, prefix: str) -> None:
        """Log progress every second; resolve ``stalled`` after ``timeout`` s without any."""
        assert self.producer is not None
        p = self.producer
        last_mark, last_change = (-1, -1, -1), perf_counter()
        last_print, last_delivered = last_change, 0
        while True:
            await asyncio.sleep(0.25)
            now = perf_counter()
            delivered = self.delivered()
            mark = (p.sent, delivered, p.confirmed)
            if mark != last_mark:
                last_mark, last_change = mark, now
                self.t_last_progress = now
            elif now - last_change > timeout:
                self.stalled.set_result(None)
                return
            if now - last_print >= 1.0:
                rate = (delivered - last_delivered) / (now - last_print)
                log(f"{prefix} sent {p.sent:,} delivered {delivered:,} ({rate:,.0f} msg/s)")
                last_print, last_delivered = now, delivered


async def _setup(
    sc: Scenario,
    opts: Options,
    pconn: Connection,
    cconns: list[Connection],
    exchange: str,
    queues: list[str],
    log: Log,
    prefix: str,
) -> None:
    """Declare the exchange and (exclusive) queues, bind, set QoS, enable confirms."""
    if exchange:
        await pconn.rpc(
            commands.Exchange.Declare(
                exchange=exchange, exchange_type=sc.exchange_type or "direct", auto_delete=True
            )
        )
    for conn, queue in zip(cconns, queues, strict=True):
        await conn.rpc(commands.Queue.Declare(queue=queue, exclusive=True))
        if sc.exchange_type == "topic":
            patterns = filler_patterns(opts.bindings) + [TOPIC_MATCH]
            log(f"{prefix} binding {len(patterns):,} topic patterns")
            t0 = perf_counter()
            futures = conn.call_many(
                [
                    commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=pattern)
                    for pattern in patterns
                ]
            )
            await asyncio.wait_for(asyncio.gather(*futures), BIND_TIMEOUT)
            log(f"{prefix} bound in {perf_counter() - t0:.1f} s")
        elif exchange:
            await conn.rpc(commands.Queue.Bind(queue=queue, exchange=exchange, routing_key=""))
        if sc.manual_ack:
            await conn.rpc(commands.Basic.Qos(prefetch_count=opts.prefetch))
    if sc.confirms:
        await pconn.rpc(commands.Confirm.Select())


async def _teardown(
    pconn: Connection | None,
    cconns: list[Connection],
    consuming: list[Connection],
    exchange: str,
    queues: list[str],
    log: Log,
) -> None:
    """Best effort: delete the exchange, cancel consumers, delete queues, close connections."""

    async def attempt(conn: Connection, method: Frame) -> None:
        if conn.error is None:
            try:
                await asyncio.wait_for(conn.call(method), 10.0)
            except (BrokerError, TimeoutError) as exc:
                log(f"cleanup: {method.name} failed: {exc or 'timeout'}")

    if pconn is not None and exchange:
        await attempt(pconn, commands.Exchange.Delete(exchange=exchange))
    for conn, queue in zip(cconns, queues, strict=False):
        if conn in consuming:
            await attempt(conn, commands.Basic.Cancel(consumer_tag=CONSUMER_TAG))
        await attempt(conn, commands.Queue.Delete(queue=queue))
    for conn in ([pconn] if pconn else []) + cconns:
        await conn.close()


async def run_scenario(target: Target, sc: Scenario, opts: Options, log: Log) -> Result:
    """Run ``sc`` once against ``target``; never raises for broker trouble (see problems)."""
    result = Result(broker=target.label, scenario=sc.name)
    prefix = f"[{target.label}] {sc.name}:"
    names = f"warrenmq-bench.{secrets.token_hex(4)}.{sc.name}"
    exchange = f"{names}.x" if sc.exchange_type else ""
    queues = [f"{names}.q{i}" for i in range(sc.queues)]
    run = _Run(sc)
    pconn: Connection | None = None
    cconns: list[Connection] = []
    consuming: list[Connection] = []
    try:
        pconn = await Connection.open(target.url)
        pconn.on_failure = run.on_failure
        for _ in queues:
            cconns.append(await Connection.open(target.url))
            cconns[-1].on_failure = run.on_failure
        await _setup(sc, opts, pconn, cconns, exchange, queues, log, prefix)

        capacity = opts.messages if opts.duration is None else 1 << 20
        for conn, queue in zip(cconns, queues, strict=True):
            run.consumers.append(
                Consumer(
                    conn,
                    queue,
                    manual_ack=sc.manual_ack,
                    ack_every=max(1, opts.prefetch // 2 or 100),
                    capacity=capacity,
                    on_progress=run.progress,
                )
            )
            await conn.rpc(
                commands.Basic.Consume(
                    queue=queue, consumer_tag=CONSUMER_TAG, no_ack=not sc.manual_ack
                )
            )
            consuming.append(conn)
        if sc.exchange_type == "topic":
            keys = TOPIC_KEYS
        elif exchange:
            keys = [""]
        else:
            keys = queues
        template = wire.PublishTemplate(
            CHANNEL, exchange, keys, opts.body_size, opts.batch, pconn.frame_max
        )
        run.producer = Producer(
            pconn,
            template,
            run.consumers,
            total=None if opts.duration else opts.messages,
            duration=opts.duration,
            window=opts.window,
            confirm_window=opts.confirm_window if sc.confirms else None,
            on_progress=run.progress,
        )
        await _measure(run, target, opts, result, log, prefix)
    except (BrokerError, OSError, TimeoutError) as exc:
        result.problems.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    finally:
        await _teardown(pconn, cconns, consuming, exchange, queues, log)
    verdict = "OK" if result.ok else "FAIL: " + "; ".join(result.problems)
    rate = f", {result.rate:,.0f} msg/s" if result.rate else ""
    if result.seconds:
        log(f"{prefix} {result.delivered:,} delivered in {result.seconds:.2f} s{rate}, {verdict}")
    else:
        log(f"{prefix} {verdict}")
    return result


async def _measure(
    run: _Run, target: Target, opts: Options, result: Result, log: Log, prefix: str
) -> None:
    """Publish and consume until done, failed or stalled; fill ``result``."""
    producer = run.producer
    assert producer is not None
    gc.collect()
    gc.disable()
    pid = target.pid
    broker_cpu0 = cpu_seconds(pid) if pid else 0.0
    client_cpu0 = process_time()
    t0 = perf_counter()
    publishing = asyncio.create_task(producer.run())
    monitor = asyncio.create_task(run.monitor(opts.timeout, log, prefix))
    pending: set[asyncio.Future[Any]] = {run.done, run.failed, run.stalled, publishing}
    try:
        while True:  # the publisher finishing normally is not the end: deliveries still come
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if finished != {publishing} or publishing.exception() is not None:
                break
    finally:
        t_end = run.t_end or (run.t_last_progress if run.stalled.done() else perf_counter())
        delivered = run.delivered()
        client_cpu = process_time() - client_cpu0
        broker_cpu = cpu_seconds(pid) - broker_cpu0 if pid else None
        gc.enable()
        publisher_error = (
            publishing.exception() if publishing.done() and not publishing.cancelled() else None
        )
        for task in (publishing, monitor):
            task.cancel()
        await asyncio.gather(publishing, monitor, return_exceptions=True)

    if run.done.done():
        await asyncio.sleep(LATE_GRACE)  # a late duplicate or stray message still counts
    result.sent = producer.sent
    result.delivered = delivered
    result.seconds = t_end - t0
    result.client_cpu_s = client_cpu
    result.broker_cpu_s = broker_cpu
    qs = percentiles([c.latencies for c in run.consumers], (0.5, 0.99))
    if qs:
        result.p50_ms, result.p99_ms = qs
    _collect_problems(run, opts, result, publisher_error)


def _collect_problems(
    run: _Run, opts: Options, result: Result, publisher_error: BaseException | None
) -> None:
    producer = run.producer
    assert producer is not None
    problems = result.problems
    if run.failed.done():
        problems.append(str(run.failed.result()))
    elif run.stalled.done():
        problems.append(f"stalled: no progress for {opts.timeout:g} s")
    elif publisher_error is not None:
        problems.append(f"publisher: {type(publisher_error).__name__}: {publisher_error}")
    for c in run.consumers:
        missing, duplicated = check_sequence(c.seen, producer.sent)
        if missing or duplicated:
            problems.append(f"{c.queue}: {missing:,} missing, {duplicated:,} duplicated")
        if c.malformed:
            problems.append(f"{c.queue}: {c.malformed:,} malformed bodies")
    if producer.nacked:
        problems.append(f"{producer.nacked:,} nacked by the broker")
    if run.sc.confirms and producer.confirmed < producer.sent:
        problems.append(f"{producer.sent - producer.confirmed:,} never confirmed")

"""The scenarios and how one of them is set up, measured and torn down."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from time import perf_counter, process_time
from typing import Any, cast

from pamqp import commands
from pamqp.base import Frame
from pamqp.common import FieldTable

from bench import backlog, delayed, wire
from bench.amqp import CHANNEL, BrokerError, Connection
from bench.checks import priority_order, x_death_problems
from bench.config import DEFAULT_MESSAGES, LATENCY_TARGET_MS, Options, Target
from bench.crowd import Crowd
from bench.peers import Consumer, Producer, RecordingConsumer
from bench.procfs import cpu_seconds, scheduled_seconds, waiting_share
from bench.report import LATE_TARGET, LATENCY_TARGET
from bench.stats import Result, check_sequence, percentiles

CONSUMER_TAG = "bench"
BIND_TIMEOUT = 300.0
LATE_GRACE = 0.2  # seconds to keep listening after the last expected delivery
QUEUE_TTL_MS = 60_000  # ttl scenario: long enough that nothing expires during a run
MESSAGE_TTL_MS = 30_000  # ttl scenario: per-message expiration, on every other message
MAX_PRIORITY = 10
X_DEATH_SAMPLE = 10_000  # dead-letter scenario: check x-death on every n-th delivery
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

LATENCY_RATE = 20_000  # latency scenarios: messages per second, unless --rate says otherwise
LATENCY_SECONDS = 10.0  # latency scenarios: how long, unless --messages or --duration says
IN_MEMORY_ARGUMENTS = ("x-max-in-memory-length", "x-max-in-memory-bytes")

Log = Callable[[str], None]


class NotApplicable(Exception):
    """The broker lacks an optional feature the scenario measures (a plugin's exchange type)."""


@dataclass(frozen=True)
class Scenario:
    """One workload shape; bodies are ``Options.body_size`` bytes, messages are transient."""

    name: str
    summary: str
    exchange_type: str | None = None  # None: default exchange, routing key = queue name
    exchange_arguments: FieldTable | None = None
    queues: int = 1  # one consumer (and connection) per queue
    manual_ack: bool = False
    confirms: bool = False
    queue_arguments: FieldTable | None = None  # of the consumed queues
    properties: tuple[commands.Basic.Properties | None, ...] = (None,)  # rotate over messages
    dead_letter: bool = False  # publish to a queue that dead-letters at once into the exchange
    crowd: bool = False  # --idle-consumers consumers without credit share the (one) queue
    durable: bool = False  # durable (not exclusive) queues, deleted at the end
    delayed: bool = False  # x-delay per message (delayed.x_delay); lateness measured, not latency
    rate: float | None = None  # messages per second when --rate is not given (None: flat out)
    messages: int = DEFAULT_MESSAGES  # when --messages is not given
    #: publish for this long at the rate when --messages is not given (fixed-rate scenarios)
    seconds: float | None = None
    #: latency scenarios: p99 latency must be at most this (ms); p99.9 and max are reported
    latency_target_ms: float | None = None
    backlog: bool = False  # fill the queue with no consumer (confirmed), then drain it
    #: backlog scenarios: declare the queue with a memory budget that holds every message
    #: (x-max-in-memory-length and -bytes), so none is paged to disk
    in_memory: bool = False
    in_default: bool = True  # run when no --scenario is given
    needs: str = ""  # the broker features it relies on, named when it FAILs or does not apply

    @property
    def max_priority(self) -> int:
        value = (self.queue_arguments or {}).get("x-max-priority")
        return value if isinstance(value, int) else 0

    @property
    def keep_every(self) -> int:
        """Keep the content header of every n-th delivery for the checks (0: none)."""
        if self.max_priority:
            return 1
        if self.backlog:
            return 0  # but record the order
        return X_DEATH_SAMPLE if self.dead_letter else 0


SCENARIOS = (
    Scenario("autoack", "1 producer -> 1 queue -> 1 consumer, auto-ack"),
    Scenario("manual-ack", "as autoack, manual acks (multiple) with prefetch", manual_ack=True),
    Scenario("confirms", "as autoack, with publisher confirms (bounded in flight)", confirms=True),
    Scenario(
        "persistent",
        "as manual-ack, with confirms: persistent messages (delivery mode 2) to a durable queue",
        manual_ack=True,
        confirms=True,
        durable=True,
        properties=(commands.Basic.Properties(delivery_mode=2),),
        needs="durable queues and publisher confirms",
    ),
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
    Scenario(
        "ttl",
        "as autoack, queue x-message-ttl 60 s, every other message with expiration 30 s",
        queue_arguments={"x-message-ttl": QUEUE_TTL_MS},
        properties=(commands.Basic.Properties(expiration=str(MESSAGE_TTL_MS)), None),
        needs="x-message-ttl and per-message expiration",
    ),
    Scenario(
        "priority",
        "as manual-ack, queue x-max-priority 10, priorities 0-10 and none mixed",
        manual_ack=True,
        queue_arguments={"x-max-priority": MAX_PRIORITY},
        properties=tuple(commands.Basic.Properties(priority=p) for p in range(MAX_PRIORITY + 1))
        + (None,),
        needs="priority queues (x-max-priority)",
    ),
    Scenario(
        "dead-letter",
        "queue A (x-message-ttl 0, no consumer) -> dead-letter fanout exchange -> queue B "
        "-> 1 consumer",
        exchange_type="fanout",
        dead_letter=True,
        needs="dead-lettering of expired messages (x-message-ttl 0, x-dead-letter-exchange)",
    ),
    Scenario(
        "consumers-10k",
        "1 queue, 9,999 consumers without credit + 1 auto-ack consumer",
        crowd=True,
        needs="per-consumer prefetch (Basic.Qos global=false)",
    ),
    Scenario(
        "delayed",
        "x-delayed-message exchange (direct) -> 1 queue -> 1 consumer at 10,000 msg/s, "
        "x-delay 50-500 ms: lateness; then 500 messages due 2 ms apart: CPU per timer wake",
        exchange_type=delayed.EXCHANGE_TYPE,
        exchange_arguments=delayed.EXCHANGE_ARGUMENTS,
        delayed=True,
        rate=delayed.RATE,
        needs="the x-delayed-message exchange type (RabbitMQ: the rabbitmq_delayed_message_exchange "
        "plugin; warrenmq: the warrenmq-delayed-message example plugin)",
    ),
    Scenario(
        "latency",
        "1 producer -> 1 queue -> 1 consumer, auto-ack, at a fixed 20,000 msg/s for 10 s: "
        "p50, p99, p99.9 and max latency below saturation",
        rate=LATENCY_RATE,
        seconds=LATENCY_SECONDS,
        latency_target_ms=LATENCY_TARGET_MS,
        in_default=False,
    ),
    Scenario(
        "latency-manual-ack",
        "as latency, manual acks (multiple) with prefetch",
        manual_ack=True,
        rate=LATENCY_RATE,
        seconds=LATENCY_SECONDS,
        latency_target_ms=LATENCY_TARGET_MS,
        in_default=False,
    ),
    *(
        Scenario(
            f"backlog{'' if persistent else '-transient'}{'-in-memory' if in_memory else ''}",
            f"{'persistent' if persistent else 'transient'} messages (1,000,000) confirmed into "
            f"a {'durable ' if persistent else ''}queue with no consumer"
            + (", its memory budget raised to hold them all" if in_memory else "")
            + ", then drained by 1 consumer with manual acks: fill and drain rates, broker "
            "memory per queued message",
            manual_ack=True,
            confirms=True,
            durable=persistent,
            properties=(commands.Basic.Properties(delivery_mode=2),) if persistent else (None,),
            messages=1_000_000,
            backlog=True,
            in_memory=in_memory,
            in_default=False,
            needs="durable queues and publisher confirms" if persistent else "publisher confirms",
        )
        for in_memory in (False, True)
        for persistent in (True, False)
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}
DEFAULT_SET = [s.name for s in SCENARIOS if s.in_default]


def message_count(sc: Scenario, opts: Options) -> int:
    """Messages the scenario publishes (with --duration: an estimate, for sizing)."""
    if opts.messages:
        return opts.messages
    rate = opts.rate or sc.rate
    if sc.seconds and rate:
        return max(1, round(sc.seconds * rate))
    return sc.messages


def queue_arguments(sc: Scenario, opts: Options) -> FieldTable | None:
    """The measured queues' arguments: the scenario's, plus a memory budget that holds every
    message for the in-memory backlog scenarios."""
    if not sc.in_memory:
        return sc.queue_arguments
    count = message_count(sc, opts)
    budget = {IN_MEMORY_ARGUMENTS[0]: count, IN_MEMORY_ARGUMENTS[1]: 2 * count * opts.body_size}
    return {**(sc.queue_arguments or {}), **budget}


def filler_patterns(count: int) -> list[str]:
    """``count`` distinct topic patterns with ``*`` and ``#`` that match no published key."""
    return [_FILLER_FORMS[i % len(_FILLER_FORMS)].format(i) for i in range(count)]


class _Run:
    """Ties a producer to its consumers: wakes the producer, notices completion or a stall."""

    def __init__(self, sc: Scenario, source: str) -> None:
        loop = asyncio.get_running_loop()
        self.sc = sc
        self.source = source  # dead-letter scenario: the queue messages are dead-lettered from
        self.done: asyncio.Future[None] = loop.create_future()
        self.failed: asyncio.Future[BaseException] = loop.create_future()
        self.stalled: asyncio.Future[None] = loop.create_future()
        self.producer: Producer | None = None
        self.consumers: list[Consumer] = []
        self.crowd = Crowd()
        self.t_end = 0.0
        self.t_last_progress = 0.0
        self.filling = False  # backlog scenario: done at the last confirm, no delivery expected

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
            and (self.filling or all(c.received >= p.sent for c in self.consumers))
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
                confirmed = f" confirmed {p.confirmed:,}" if self.sc.confirms else ""
                log(
                    f"{prefix} sent {p.sent:,}{confirmed} delivered {delivered:,} "
                    f"({rate:,.0f} msg/s)"
                )
                last_print, last_delivered = now, delivered


async def _setup(
    sc: Scenario,
    opts: Options,
    pconn: Connection,
    cconns: list[Connection],
    exchange: str,
    source: str,
    queues: list[str],
    log: Log,
    prefix: str,
) -> None:
    """Declare the exchange and queues, bind, set QoS, enable confirms.

    Queues are exclusive, but the crowd's must be shared (it is auto-delete instead), and a
    durable scenario's are durable (RabbitMQ and warrenmq keep no messages of exclusive ones).
    """
    if exchange:
        exchange_type = sc.exchange_type or "direct"
        try:
            await pconn.rpc(
                commands.Exchange.Declare(
                    exchange=exchange,
                    exchange_type=exchange_type,
                    auto_delete=True,
                    arguments=sc.exchange_arguments,
                )
            )
        except BrokerError as exc:
            if exc.reply_code == 503 and "exchange type" in str(exc):
                raise NotApplicable(
                    f"no exchange type '{exchange_type}': needs {sc.needs}"
                ) from exc
            raise
    if source:
        dead_letter: FieldTable = {"x-message-ttl": 0, "x-dead-letter-exchange": exchange}
        await pconn.rpc(commands.Queue.Declare(queue=source, exclusive=True, arguments=dead_letter))
    for conn, queue in zip(cconns, queues, strict=True):
        try:
            await conn.rpc(
                commands.Queue.Declare(
                    queue=queue,
                    exclusive=not (sc.crowd or sc.durable),
                    durable=sc.durable,
                    auto_delete=sc.crowd,
                    arguments=queue_arguments(sc, opts),
                )
            )
        except BrokerError as exc:
            if sc.in_memory and exc.reply_code == 406 and "x-max-in-memory" in str(exc):
                raise NotApplicable(
                    "the queue refused x-max-in-memory-length/-bytes: no memory budget to raise"
                ) from exc
            raise
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
    queues: list[tuple[Connection, str]],
    crowd: Crowd,
    log: Log,
) -> None:
    """Best effort: delete the exchange, cancel consumers, close the crowd's connections (so
    the messages they held do not go to the measured consumer), delete queues, close."""

    async def attempt(conn: Connection, method: Frame) -> None:
        if conn.error is None:
            try:
                await asyncio.wait_for(conn.call(method), 10.0)
            except (BrokerError, TimeoutError) as exc:
                log(f"cleanup: {method.name} failed: {exc or 'timeout'}")

    if pconn is not None and exchange:
        await attempt(pconn, commands.Exchange.Delete(exchange=exchange))
    for conn in consuming:
        await attempt(conn, commands.Basic.Cancel(consumer_tag=CONSUMER_TAG))
    for conn in crowd.conns:
        await conn.close()
    for conn, queue in queues:
        await attempt(conn, commands.Queue.Delete(queue=queue))
    for conn in ([pconn] if pconn else []) + cconns:
        await conn.close()


async def run_scenario(target: Target, sc: Scenario, opts: Options, log: Log) -> Result:
    """Run ``sc`` once against ``target``; never raises for broker trouble (see problems)."""
    result = Result(broker=target.label, scenario=sc.name, body_size=opts.body_size)
    prefix = f"[{target.label}] {sc.name}:"
    if target.url.scheme != "amqp":
        result.not_applicable = "an AMQP scenario needs an amqp:// URL"
        log(f"{prefix} not applicable: {result.not_applicable}")
        return result
    names = f"warrenmq-bench.{secrets.token_hex(4)}.{sc.name}"
    exchange = f"{names}.x" if sc.exchange_type else ""
    source = f"{names}.dead" if sc.dead_letter else ""  # dead-letters into the exchange
    queues = [f"{names}.q{i}" for i in range(sc.queues)]
    run = _Run(sc, source)
    pconn: Connection | None = None
    cconns: list[Connection] = []
    consuming: list[Connection] = []
    try:
        pconn = await Connection.open(target.url)
        pconn.on_failure = run.on_failure
        for _ in queues:
            cconns.append(await Connection.open(target.url))
            cconns[-1].on_failure = run.on_failure
        await _setup(sc, opts, pconn, cconns, exchange, source, queues, log, prefix)
        if sc.crowd:
            await run.crowd.gather(
                target.url, queues[0], opts.idle_consumers, pconn, opts, log, prefix, run.on_failure
            )

        count = message_count(sc, opts)
        capacity = count if opts.duration is None else 1 << 20
        recording = sc.keep_every or sc.delayed or sc.backlog
        kind = partial(RecordingConsumer, keep_every=sc.keep_every) if recording else Consumer
        for conn, queue in zip(cconns, queues, strict=True):
            run.consumers.append(
                kind(
                    conn,
                    queue,
                    manual_ack=sc.manual_ack,
                    ack_every=max(1, opts.prefetch // 2 or 100),
                    capacity=capacity,
                    on_progress=run.progress,
                )
            )
            if not sc.backlog:  # which consumes only once the queue is full
                await conn.rpc(
                    commands.Basic.Consume(
                        queue=queue, consumer_tag=CONSUMER_TAG, no_ack=not sc.manual_ack
                    )
                )
            consuming.append(conn)
        target_exchange = exchange
        if source:
            target_exchange, keys = "", [source]
        elif sc.exchange_type == "topic":
            keys = TOPIC_KEYS
        elif exchange:
            keys = [""]
        else:
            keys = queues
        template = wire.PublishTemplate(
            CHANNEL,
            target_exchange,
            keys,
            opts.body_size,
            opts.batch,
            pconn.frame_max,
            sc.properties,
            x_delay=delayed.x_delay if sc.delayed else None,
        )
        run.producer = Producer(
            pconn,
            template,
            run.consumers,
            total=None if opts.duration else count,
            duration=opts.duration,
            window=1 << 62 if sc.backlog else opts.window,  # the fill has no consumer
            confirm_window=opts.confirm_window if sc.confirms else None,
            on_progress=run.progress,
            rate=opts.rate or sc.rate,
        )
        if sc.backlog:
            error = await backlog.measure(
                run,
                cconns[0],
                queues[0],
                CONSUMER_TAG,
                target.pid,
                opts,
                result,
                log,
                prefix,
                LATE_GRACE,
            )
            _collect_problems(run, opts, result, error)
        else:
            await _measure(run, target, opts, result, log, prefix)
        if sc.delayed and target.pid and result.checked:
            log(
                f"{prefix} timer phase: {delayed.WAKES} messages due {delayed.WAKE_GAP_MS} ms apart"
            )
            result.wake_cpu_s = await delayed.timer_wake_cpu(
                pconn,
                exchange,
                cast(RecordingConsumer, run.consumers[0]),
                target.pid,
                result.sent,
                opts.body_size,
                opts.timeout,
            )
    except NotApplicable as exc:
        result.not_applicable = str(exc)
    except (BrokerError, OSError, TimeoutError) as exc:
        result.problems.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    finally:
        declared = list(zip(cconns, queues, strict=False))
        if pconn is not None and source:
            declared.append((pconn, source))
        await _teardown(pconn, cconns, consuming, exchange, declared, run.crowd, log)
    if result.problems and sc.needs:
        result.problems.append(f"this scenario relies on {sc.needs}")
    if result.not_applicable:
        verdict = f"not applicable: {result.not_applicable}"
    elif result.ok:
        verdict = "OK"
    elif result.checked and result.late_ms:
        verdict = (
            f"FAIL: p99 late by {result.late_ms[1]:.2f} ms, over the "
            f"{delayed.LATE_TARGET_MS:g} ms target"
        )
    elif result.checked and result.p99_ms is not None and sc.latency_target_ms is not None:
        verdict = (
            f"FAIL: p99 latency {result.p99_ms:.2f} ms, over the {sc.latency_target_ms:g} ms target"
        )
    else:
        verdict = "FAIL: " + "; ".join(result.problems)
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
    sched0 = (scheduled_seconds(pid) if pid else None, scheduled_seconds(os.getpid()))
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
        sched1 = (scheduled_seconds(pid) if pid else None, scheduled_seconds(os.getpid()))
        gc.enable()
        publisher_error = (
            publishing.exception() if publishing.done() and not publishing.cancelled() else None
        )
        for task in (publishing, monitor):
            task.cancel()
        await asyncio.gather(publishing, monitor, return_exceptions=True)

    waits = [
        f"{who} {100 * share:.0f}%"
        for who, before, after in zip(("broker", "load generator"), sched0, sched1, strict=True)
        if (share := waiting_share(before, after)) is not None
    ]
    if waits:
        log(f"{prefix} waiting for a CPU, part of the runnable time: " + ", ".join(waits))
    if run.done.done():
        await asyncio.sleep(LATE_GRACE)  # a late duplicate or stray message still counts
    result.sent = producer.sent
    result.delivered = delivered
    result.seconds = t_end - t0
    result.client_cpu_s = client_cpu
    result.broker_cpu_s = broker_cpu
    if run.sc.delayed:
        recorded = [c for c in run.consumers if isinstance(c, RecordingConsumer)]
        late, problems = delayed.lateness(recorded)
        result.problems.extend(problems)
        if late:
            result.late_ms = tuple(late)
            result.target_met = late[1] <= delayed.LATE_TARGET_MS
            result.target = LATE_TARGET
            log(
                f"{prefix} late by p50 {late[0]:.2f} ms, p99 {late[1]:.2f} ms, "
                f"p99.9 {late[2]:.2f} ms, max {late[3]:.2f} ms"
            )
    elif run.sc.latency_target_ms is not None:
        qs = percentiles([c.latencies for c in run.consumers], (0.5, 0.99, 0.999, 1.0))
        if qs:
            result.p50_ms, result.p99_ms, result.p999_ms, result.max_ms = qs
            result.target_met = result.p99_ms <= run.sc.latency_target_ms
            result.target = LATENCY_TARGET
            log(
                f"{prefix} latency p50 {qs[0]:.2f} ms, p99 {qs[1]:.2f} ms, "
                f"p99.9 {qs[2]:.2f} ms, max {qs[3]:.2f} ms"
            )
    else:
        qs = percentiles([c.latencies for c in run.consumers], (0.5, 0.99))
        if qs:
            result.p50_ms, result.p99_ms = qs
    _collect_problems(run, opts, result, publisher_error)
    result.problems[:0] = _feature_problems(run, opts, log, prefix)  # the clearest first


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


def _feature_problems(run: _Run, opts: Options, log: Log, prefix: str) -> list[str]:
    """The checks particular to the priority, dead-letter and consumers-10k scenarios."""
    sc, problems = run.sc, []
    for c in run.consumers:
        if not isinstance(c, RecordingConsumer):
            continue
        if sc.dead_letter and not c.order:
            problems.append(f"{c.queue}: no message was dead-lettered into it")
        elif sc.dead_letter:
            log(f"{prefix} checking x-death on {len(c.headers):,} sampled deliveries")
            problems.extend(
                f"{c.queue}: {p}" for p in x_death_problems(c.headers, run.source, "expired")
            )
        if sc.max_priority and c.order:
            misordered, overtaken = priority_order(c.order, c.headers, sc.max_priority)
            log(f"{prefix} {overtaken:,} deliveries came after a later-published message")
            if misordered:
                problems.append(
                    f"{c.queue}: {misordered:,} deliveries out of priority order (after a "
                    "later-published message of lower or equal priority)"
                )
            backlog = opts.window > 2 * opts.prefetch and len(c.order) >= 10 * opts.prefetch
            if not overtaken and backlog:
                problems.append(
                    f"{c.queue}: priorities ignored: all {len(c.order):,} deliveries came in "
                    f"publish order, with up to {opts.window:,} messages in flight for a "
                    f"prefetch of {opts.prefetch}"
                )
    crowd = run.crowd
    if sc.crowd and crowd.received != crowd.size:
        problems.append(
            f"the {crowd.size:,} consumers without credit got {crowd.received:,} messages, "
            f"not {crowd.size:,}"
        )
    return problems

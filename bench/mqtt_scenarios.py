"""The MQTT scenarios: QoS 0 and 1, one subscriber or a fan-out to four, against any MQTT
3.1.1 broker given by an ``mqtt://`` URL."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter, process_time
from typing import Any

from bench.config import DEFAULT_MESSAGES, Options, Target
from bench.mqtt import (
    DISCONNECT,
    MAX_WINDOW,
    Connection,
    MQTTError,
    Publisher,
    PublishTemplate,
    Subscriber,
)
from bench.procfs import cpu_seconds, scheduled_seconds, waiting_share
from bench.stats import Result, check_sequence, percentiles

Log = Callable[[str], None]
LATE_GRACE = 0.2  # seconds to keep listening after the last expected delivery
#: max messages in flight when --window is not given: mosquitto drops QoS 1 messages beyond
#: 1,000 queued for a subscriber (its max_queued_messages), so a deeper window measures loss
DEFAULT_WINDOW = 1_000


@dataclass(frozen=True)
class MQTTScenario:
    name: str
    summary: str
    qos: int
    subscribers: int = 1


MQTT_SCENARIOS = (
    MQTTScenario("mqtt-qos0", "MQTT: 1 publisher -> 1 subscriber, QoS 0", 0),
    MQTTScenario("mqtt-qos1", "MQTT: 1 publisher -> 1 subscriber, QoS 1 (PUBACK both ways)", 1),
    MQTTScenario(
        "mqtt-fanout-qos0", "MQTT: 1 publisher -> 4 subscribers of one topic, QoS 0", 0, 4
    ),
    MQTTScenario(
        "mqtt-fanout-qos1", "MQTT: 1 publisher -> 4 subscribers of one topic, QoS 1", 1, 4
    ),
)
MQTT_BY_NAME = {s.name: s for s in MQTT_SCENARIOS}


class _Run:
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self.failed: asyncio.Future[BaseException] = loop.create_future()
        self.publisher: Publisher | None = None
        self.subscribers: list[Subscriber] = []
        self.qos = 0
        self.t_end = 0.0

    def on_failure(self, exc: BaseException) -> None:
        if not self.failed.done():
            self.failed.set_result(exc)

    def progress(self) -> None:
        p = self.publisher
        if p is None:
            return
        p.notify()
        if (
            p.finished
            and not self.done.done()
            and all(s.received >= p.sent for s in self.subscribers)
            and (not self.qos or p.confirmed >= p.sent)
        ):
            self.t_end = perf_counter()
            self.done.set_result(None)

    def delivered(self) -> int:
        return sum(s.received for s in self.subscribers)


async def run_mqtt_scenario(target: Target, sc: MQTTScenario, opts: Options, log: Log) -> Result:
    """Run ``sc`` once against ``target``; never raises for broker trouble (see problems)."""
    result = Result(broker=target.label, scenario=sc.name)
    prefix = f"[{target.label}] {sc.name}:"
    if target.url.scheme != "mqtt":
        result.not_applicable = "an MQTT scenario needs an mqtt:// URL"
        log(f"{prefix} not applicable: {result.not_applicable}")
        return result
    token = secrets.token_hex(4)
    topic = f"warrenmq-bench/{token}/{sc.name}"
    run = _Run()
    run.qos = sc.qos
    conns: list[Connection] = []
    try:
        for i in range(sc.subscribers):
            conn = await Connection.open(target.url, f"bench-{token}-s{i}")
            conns.append(conn)
            conn.on_failure = run.on_failure
            conn.on_progress = run.progress
            await conn.subscribe(topic, sc.qos)
        pconn = await Connection.open(target.url, f"bench-{token}-p")
        conns.append(pconn)
        pconn.on_failure = run.on_failure
        pconn.on_progress = run.progress
        count = opts.messages or DEFAULT_MESSAGES
        capacity = count if opts.duration is None else 1 << 20
        run.subscribers = [
            Subscriber(conn, f"subscriber {i}", capacity) for i, conn in enumerate(conns[:-1])
        ]
        window = min(opts.window if opts.window_given else DEFAULT_WINDOW, MAX_WINDOW)
        run.publisher = Publisher(
            pconn,
            PublishTemplate(topic, sc.qos, opts.body_size, opts.batch),
            run.subscribers,
            total=None if opts.duration else count,
            duration=opts.duration,
            window=window,
            on_progress=run.progress,
            rate=opts.rate,
        )
        await _measure(run, target, opts, result, log, prefix)
    except (MQTTError, OSError, TimeoutError) as exc:
        result.problems.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    finally:
        for conn in conns:
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.write(DISCONNECT)
                conn.transport.close()
    verdict = "OK" if result.ok else "FAIL: " + "; ".join(result.problems)
    rate = f", {result.rate:,.0f} msg/s" if result.rate else ""
    log(f"{prefix} {result.delivered:,} delivered in {result.seconds:.2f} s{rate}, {verdict}")
    return result


async def _monitor(
    run: _Run, timeout: float, log: Log, prefix: str, stalled: asyncio.Future[None]
) -> None:
    p = run.publisher
    assert p is not None
    last_mark: tuple[int, int, int] = (-1, -1, -1)
    last_change = last_print = perf_counter()
    last_delivered = 0
    while True:
        await asyncio.sleep(0.25)
        now = perf_counter()
        delivered = run.delivered()
        mark = (p.sent, delivered, p.confirmed)
        if mark != last_mark:
            last_mark, last_change = mark, now
            run.t_end = now
        elif now - last_change > timeout:
            stalled.set_result(None)
            return
        if now - last_print >= 1.0:
            rate = (delivered - last_delivered) / (now - last_print)
            acked = f" PUBACKed {p.confirmed:,}" if run.qos else ""
            log(f"{prefix} sent {p.sent:,}{acked} delivered {delivered:,} ({rate:,.0f} msg/s)")
            last_print, last_delivered = now, delivered


async def _measure(
    run: _Run, target: Target, opts: Options, result: Result, log: Log, prefix: str
) -> None:
    publisher = run.publisher
    assert publisher is not None
    loop = asyncio.get_running_loop()
    stalled: asyncio.Future[None] = loop.create_future()
    gc.collect()
    gc.disable()
    pid = target.pid
    broker_cpu0 = cpu_seconds(pid) if pid else 0.0
    sched0 = (scheduled_seconds(pid) if pid else None, scheduled_seconds(os.getpid()))
    client_cpu0 = process_time()
    t0 = perf_counter()
    publishing = asyncio.create_task(publisher.run())
    monitor = asyncio.create_task(_monitor(run, opts.timeout, log, prefix, stalled))
    pending: set[asyncio.Future[Any]] = {run.done, run.failed, stalled, publishing}
    try:
        while True:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if finished != {publishing} or publishing.exception() is not None:
                break
            run.progress()  # the publisher finished: maybe everything has arrived already
            if run.done.done():
                break
    finally:
        done = run.done.done()
        t_end = run.t_end if (done or stalled.done()) else perf_counter()
        delivered = run.delivered()
        client_cpu = process_time() - client_cpu0
        broker_cpu = cpu_seconds(pid) - broker_cpu0 if pid else None
        sched1 = (scheduled_seconds(pid) if pid else None, scheduled_seconds(os.getpid()))
        gc.enable()
        error = publishing.exception() if publishing.done() and not publishing.cancelled() else None
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
    if done:
        await asyncio.sleep(LATE_GRACE)  # a late duplicate still counts
    result.sent = publisher.sent
    result.delivered = delivered
    result.seconds = t_end - t0
    result.client_cpu_s = client_cpu
    result.broker_cpu_s = broker_cpu
    qs = percentiles([s.latencies for s in run.subscribers], (0.5, 0.99))
    if qs:
        result.p50_ms, result.p99_ms = qs
    problems = result.problems
    if run.failed.done():
        problems.append(str(run.failed.result()))
    elif stalled.done():
        problems.append(f"stalled: no progress for {opts.timeout:g} s")
    elif error is not None:
        problems.append(f"publisher: {type(error).__name__}: {error}")
    for s in run.subscribers:
        missing, duplicated = check_sequence(s.seen, publisher.sent)
        if missing or duplicated:
            problems.append(f"{s.queue}: {missing:,} missing, {duplicated:,} duplicated")
        if s.malformed:
            problems.append(f"{s.queue}: {s.malformed:,} malformed bodies")
    if run.qos and publisher.confirmed < publisher.sent:
        problems.append(f"{publisher.sent - publisher.confirmed:,} never PUBACKed")

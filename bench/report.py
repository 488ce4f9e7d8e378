"""The markdown results table: a row per scenario and metric, a column per broker."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from bench.config import LATENCY_TARGET_MS
from bench.delayed import LATE_TARGET_MS
from bench.stats import Result

Metric = tuple[str, Callable[[Result], str]]
#: rows shown for a scenario only where some broker has a figure: latency (not measured by
#: the delayed and backlog scenarios), and the delayed and backlog scenarios' own
OPTIONAL = {
    "p50 latency ms",
    "p99 latency ms",
    "p99.9 latency ms",
    "max latency ms",
    "p50 late ms",
    "p99 late ms",
    "p99.9 late ms",
    "max late ms",
    "broker CPU µs/wake",
    "fill msg/s",
    "drain msg/s",
    "broker CPU µs/msg fill",
    "broker CPU µs/msg drain",
    "broker RSS MB at start",
    "broker peak RSS MB",
    "broker peak RSS MB fill",
    "broker peak RSS MB drain",
    "broker RSS MB after fill",
    "broker B/msg queued beyond body",
}
#: the targets' rows: PASS or FAIL for the scenarios that have that target
LATE_TARGET = f"p99 late ≤ {LATE_TARGET_MS:g} ms"
LATENCY_TARGET = f"p99 latency ≤ {LATENCY_TARGET_MS:g} ms"
TARGETS = (LATE_TARGET, LATENCY_TARGET)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / (1 << 20):,.0f}"


def _per_msg(cpu_s: float | None, count: int) -> str:
    return "-" if cpu_s is None or not count else f"{cpu_s * 1e6 / count:.1f}"


def _late(r: Result, i: int) -> str:
    return "-" if r.late_ms is None else _ms(r.late_ms[i])


def _check(r: Result) -> str:
    if r.not_applicable:
        return "n/a"
    return "OK" if r.checked else "FAIL"


def _target(r: Result, row: str) -> str:
    if r.target != row or r.target_met is None:
        return "-"
    return "PASS" if r.target_met else "FAIL"


METRICS: tuple[Metric, ...] = (
    ("msg/s", lambda r: _num(r.rate, ",.0f")),
    ("p50 latency ms", lambda r: _ms(r.p50_ms)),
    ("p99 latency ms", lambda r: _ms(r.p99_ms)),
    ("p99.9 latency ms", lambda r: _ms(r.p999_ms)),
    ("max latency ms", lambda r: _ms(r.max_ms)),
    ("p50 late ms", lambda r: _late(r, 0)),
    ("p99 late ms", lambda r: _late(r, 1)),
    ("p99.9 late ms", lambda r: _late(r, 2)),
    ("max late ms", lambda r: _late(r, 3)),
    ("fill msg/s", lambda r: _num(r.fill_rate, ",.0f")),
    ("drain msg/s", lambda r: _num(r.drain_rate, ",.0f")),
    ("broker CPU µs/msg", lambda r: _num(r.cpu_us_per_msg(r.broker_cpu_s), ".1f")),
    (
        "broker CPU µs/wake",
        lambda r: _num(None if r.wake_cpu_s is None else r.wake_cpu_s * 1e6, ".1f"),
    ),
    ("broker CPU µs/msg fill", lambda r: _per_msg(r.fill_cpu_s, r.sent)),
    ("broker CPU µs/msg drain", lambda r: _per_msg(r.drain_cpu_s, r.delivered)),
    ("broker RSS MB at start", lambda r: _mb(r.rss_start)),
    ("broker peak RSS MB", lambda r: _mb(r.rss_peak)),
    ("broker peak RSS MB fill", lambda r: _mb(r.rss_peak_fill)),
    ("broker peak RSS MB drain", lambda r: _mb(r.rss_peak_drain)),
    ("broker RSS MB after fill", lambda r: _mb(r.rss_filled)),
    ("broker B/msg queued beyond body", lambda r: _num(r.queued_bytes_per_msg, ",.0f")),
    ("bench CPU µs/msg", lambda r: _num(r.cpu_us_per_msg(r.client_cpu_s), ".1f")),
    *((row, partial(_target, row=row)) for row in TARGETS),
    ("check", _check),
)


def table(results: Sequence[Result], brokers: Sequence[str], scenarios: Sequence[str]) -> str:
    """Render results as one markdown table (missing cells show as ``-``)."""
    by_key = {(r.scenario, r.broker): r for r in results}
    show_broker_cpu = any(r.broker_cpu_s is not None for r in results)
    lines = [
        "| scenario | metric | " + " | ".join(brokers) + " |",
        "|---|---|" + "---:|" * len(brokers),
    ]
    for scenario in scenarios:
        first = True
        for metric, render in METRICS:
            if metric.startswith("broker ") and not show_broker_cpu:
                continue
            cells = []
            for broker in brokers:
                result = by_key.get((scenario, broker))
                cells.append(render(result) if result else "-")
            if (metric in OPTIONAL or metric in TARGETS) and all(c == "-" for c in cells):
                continue
            lines.append(f"| {scenario if first else ''} | {metric} | " + " | ".join(cells) + " |")
            first = False
    return "\n".join(lines)

"""The markdown results table: a row per scenario and metric, a column per broker."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.delayed import LATE_TARGET_MS
from bench.stats import Result

Metric = tuple[str, Callable[[Result], str]]
#: rows shown for a scenario only where some broker has a figure (the delayed scenario's)
OPTIONAL = {"p50 late ms", "p99 late ms", "p99.9 late ms", "max late ms", "broker CPU µs/wake"}
TARGET = f"p99 late ≤ {LATE_TARGET_MS:g} ms"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _late(r: Result, i: int) -> str:
    return "-" if r.late_ms is None else _ms(r.late_ms[i])


def _check(r: Result) -> str:
    if r.not_applicable:
        return "n/a"
    return "OK" if r.checked else "FAIL"


def _target(r: Result) -> str:
    return "-" if r.target_met is None else "PASS" if r.target_met else "FAIL"


METRICS: tuple[Metric, ...] = (
    ("msg/s", lambda r: _num(r.rate, ",.0f")),
    ("p50 latency ms", lambda r: _ms(r.p50_ms)),
    ("p99 latency ms", lambda r: _ms(r.p99_ms)),
    ("p50 late ms", lambda r: _late(r, 0)),
    ("p99 late ms", lambda r: _late(r, 1)),
    ("p99.9 late ms", lambda r: _late(r, 2)),
    ("max late ms", lambda r: _late(r, 3)),
    ("broker CPU µs/msg", lambda r: _num(r.cpu_us_per_msg(r.broker_cpu_s), ".1f")),
    (
        "broker CPU µs/wake",
        lambda r: _num(None if r.wake_cpu_s is None else r.wake_cpu_s * 1e6, ".1f"),
    ),
    ("bench CPU µs/msg", lambda r: _num(r.cpu_us_per_msg(r.client_cpu_s), ".1f")),
    (TARGET, _target),
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
            if metric.startswith("broker CPU") and not show_broker_cpu:
                continue
            cells = []
            for broker in brokers:
                result = by_key.get((scenario, broker))
                cells.append(render(result) if result else "-")
            if (metric in OPTIONAL or metric == TARGET) and all(c == "-" for c in cells):
                continue
            lines.append(f"| {scenario if first else ''} | {metric} | " + " | ".join(cells) + " |")
            first = False
    return "\n".join(lines)

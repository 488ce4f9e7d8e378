"""The markdown results table: a row per scenario and metric, a column per broker."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.stats import Result

Metric = tuple[str, Callable[[Result], str]]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


METRICS: tuple[Metric, ...] = (
    ("msg/s", lambda r: _num(r.rate, ",.0f")),
    ("p50 latency ms", lambda r: _ms(r.p50_ms)),
    ("p99 latency ms", lambda r: _ms(r.p99_ms)),
    ("broker CPU µs/msg", lambda r: _num(r.cpu_us_per_msg(r.broker_cpu_s), ".1f")),
    ("bench CPU µs/msg", lambda r: _num(r.cpu_us_per_msg(r.client_cpu_s), ".1f")),
    ("check", lambda r: "OK" if r.ok else "FAIL"),
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
        for i, (metric, render) in enumerate(METRICS):
            if metric.startswith("broker CPU") and not show_broker_cpu:
                continue
            cells = []
            for broker in brokers:
                result = by_key.get((scenario, broker))
                cells.append(render(result) if result else "-")
            lines.append(f"| {scenario if i == 0 else ''} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

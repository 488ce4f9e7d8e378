"""Run settings: the brokers to measure and the knobs shared by every scenario."""

from __future__ import annotations

from dataclasses import dataclass

from bench.amqp import BrokerURL

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_MESSAGES = 100_000  # per scenario, unless the scenario has its own default
LATENCY_TARGET_MS = 5.0  # latency scenarios: p99 latency at most this at a fixed rate


@dataclass
class Target:
    """One broker to measure: a label for the table column, its URL and maybe its pid."""

    label: str
    url: BrokerURL
    pid: int | None = None


@dataclass(frozen=True)
class Options:
    """Knobs shared by every scenario (see ``python -m bench --help``)."""

    messages: int | None = None  # None: each scenario's own default
    duration: float | None = None
    rate: float | None = None  # messages per second (None: each scenario's own, or flat out)
    window: int = 10_000
    #: --window was given (the MQTT scenarios have a smaller default window of their own)
    window_given: bool = False
    confirm_window: int = 1_000
    prefetch: int = 100
    body_size: int = 64
    batch: int = 256
    bindings: int = 10_000
    idle_consumers: int = 9_999
    timeout: float = 15.0

"""The load generator (``python -m bench``) run as a user runs it, against the test broker:
its fixed-rate latency scenarios, the memory rows of its backlog scenarios and its MQTT
scenarios on the publishing loop they share with AMQP. Small runs: these check what the
table shows, not how fast the broker is (the benchmark itself measures that)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BrokerAddress

from warrenmq.broker import Settings
from warrenmq.testing import running_broker

ROOT = Path(__file__).resolve().parent.parent
Table = dict[tuple[str, str], list[str]]


def bench(*args: str, timeout: float = 90.0) -> tuple[int, Table, str]:
    """Run ``python -m bench ARGS``: (exit status, the table's cells by (scenario, metric),
    stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    cells: Table = {}
    scenario = ""
    for line in done.stdout.splitlines():
        if not line.startswith("| ") or line.startswith("| scenario |"):
            continue
        row = [cell.strip() for cell in line.strip().strip("|").split("|")]
        scenario = row[0] or scenario
        cells[(scenario, row[1])] = row[2:]
    return done.returncode, cells, done.stderr


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_latency_scenarios_report_the_tail_and_the_target(broker: BrokerAddress) -> None:
    status, cells, stderr = bench(
        "--url", f"b={broker.url}", "--broker-pid", "auto",
        "--scenario", "latency", "--scenario", "latency-manual-ack",
        "--rate", "2000", "--messages", "4000",
    )  # fmt: skip
    assert cells, stderr
    for scenario in ("latency", "latency-manual-ack"):
        assert cells[(scenario, "check")] == ["OK"], stderr
        p50, p99, p999, top = (
            number(cells[(scenario, f"{q} latency ms")][0]) for q in ("p50", "p99", "p99.9", "max")
        )
        assert 0 < p50 <= p99 <= p999 <= top
        # paced: 4,000 messages at 2,000 msg/s take about 2 s, not the broker's flat-out time
        assert number(cells[(scenario, "msg/s")][0]) <= 2000 * 1.1
        verdict = cells[(scenario, "p99 latency ≤ 5 ms")][0]
        assert verdict == ("PASS" if p99 <= 5 else "FAIL")
        assert number(cells[(scenario, "broker CPU µs/msg")][0]) > 0
    passed = all(
        cells[(s, "p99 latency ≤ 5 ms")] == ["PASS"] for s in ("latency", "latency-manual-ack")
    )
    assert status == (0 if passed else 1)
    # the other scenarios' tables keep their rows: no tail, no latency target
    _, cells, stderr = bench(
        "--url", f"b={broker.url}", "--scenario", "autoack", "--messages", "2000"
    )
    assert cells[("autoack", "check")] == ["OK"], stderr
    assert ("autoack", "p99 latency ms") in cells
    assert ("autoack", "p99.9 latency ms") not in cells
    assert ("autoack", "p99 latency ≤ 5 ms") not in cells


def test_backlog_memory_per_queued_message(broker: BrokerAddress) -> None:
    status, cells, stderr = bench(
        "--url", f"b={broker.url}", "--broker-pid", "auto",
        "--scenario", "backlog-transient", "--scenario", "backlog-transient-in-memory",
        "--messages", "20000",
    )  # fmt: skip
    assert cells, stderr
    row = "broker B/msg queued beyond body"
    assert cells[("backlog-transient", "check")] == ["OK"], stderr
    number(cells[("backlog-transient", row)][0])  # a figure, whatever the heap did
    assert number(cells[("backlog-transient", "broker RSS MB after fill")][0]) > 0
    assert "broker memory per queued message beyond its body" in stderr
    if broker.external:  # RabbitMQ's classic queues have no budget to raise
        assert cells[("backlog-transient-in-memory", "check")] == ["n/a"]
        assert "x-max-in-memory" in stderr
    else:
        assert cells[("backlog-transient-in-memory", "check")] == ["OK"], stderr
        number(cells[("backlog-transient-in-memory", row)][0])
    assert status == 0


def test_backlog_in_memory_budget_holds_every_message(broker: BrokerAddress) -> None:
    """The in-memory variant declares its queue with a budget for all of its messages (on a
    broker that has budgets): nothing is paged, and every message comes back in order."""
    status, cells, stderr = bench(
        "--url", f"b={broker.url}", "--scenario", "backlog-transient-in-memory",
        "--messages", "3000",
    )  # fmt: skip
    if broker.external:
        assert cells[("backlog-transient-in-memory", "check")] == ["n/a"], stderr
        return
    assert cells[("backlog-transient-in-memory", "check")] == ["OK"], stderr
    assert number(cells[("backlog-transient-in-memory", "drain msg/s")][0]) > 0
    assert status == 0


@pytest.fixture(scope="module")
def mqtt_url() -> Iterator[str]:
    external = os.environ.get("WARRENMQ_TEST_MQTT_EXTERNAL")
    if external:
        yield f"mqtt://{external}"
        return
    settings = Settings(host="127.0.0.1", amqp_port=0, mqtt_port=0)
    with running_broker(settings) as running:
        host, port = running.address("mqtt")
        yield f"mqtt://{host}:{port}"


def test_mqtt_scenarios_publish_through_the_shared_loop(mqtt_url: str) -> None:
    """Flat out, then paced with --rate (which the MQTT publisher gained from the shared
    loop): every message arrives once, and the paced run keeps to its rate."""
    status, cells, stderr = bench(
        "--url", f"m={mqtt_url}", "--scenario", "mqtt-qos0", "--scenario", "mqtt-fanout-qos1",
        "--messages", "3000",
    )  # fmt: skip
    assert cells[("mqtt-qos0", "check")] == ["OK"], stderr
    assert cells[("mqtt-fanout-qos1", "check")] == ["OK"], stderr
    assert status == 0
    status, cells, stderr = bench(
        "--url", f"m={mqtt_url}", "--scenario", "mqtt-qos1", "--messages", "2000",
        "--rate", "2000",
    )  # fmt: skip
    assert cells[("mqtt-qos1", "check")] == ["OK"], stderr
    assert number(cells[("mqtt-qos1", "msg/s")][0]) <= 2000 * 1.1
    assert status == 0

"""What the management plugin costs: ``python -m bench.management``.

Starts two brokers of this checkout (``warrenmq run --store memory``), one plain and one with
``--management-port 0``, and measures:

1. the management broker's CPU while idle for ``--idle`` seconds, with and without a client
   polling ``/api/queues`` every second: the cost of the sampler plus the polling, in CPU
   milliseconds per second, which divided by a busy broker's 1,000 ms/s is the share of its
   CPU;
2. the ``autoack`` scenario of ``python -m bench`` against both brokers side by side, while the
   client polls the management broker's ``/api/queues`` every second: broker CPU per message;
3. with ``--queues`` queues (10,000) declared through ``POST /api/definitions``: how long
   ``GET /api/queues`` takes (the whole list), a page of 100, ``/metrics`` and
   ``/metrics/per-object``, as the median and the worst of ``--repeat`` requests.

Results go to stdout as markdown; progress to stderr. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bench.procfs import cpu_seconds

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def log(message: str) -> None:
    print(f"[management] {message}", file=sys.stderr, flush=True)


@dataclass
class Running:
    process: subprocess.Popen[str]
    amqp_port: int
    http_port: int | None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@contextmanager
def broker(*args: str) -> Iterator[Running]:
    process = subprocess.Popen(
        [sys.executable, "-m", "warrenmq", "run", "--port", "0", "--store", "memory", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    amqp = http = None
    try:
        deadline = time.monotonic() + 30
        for line in process.stderr:
            found = re.search(r"listening for amqp on tcp [^ ]+:(\d+)", line)
            if found:
                amqp = int(found.group(1))
            found = re.search(r"management API.* http://[^:]+:(\d+)/", line)
            if found:
                http = int(found.group(1))
            if "memory alarm at" in line or time.monotonic() > deadline:
                break
        if amqp is None:
            raise RuntimeError("the broker did not start")
        threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # type: ignore[union-attr]
        yield Running(process, amqp, http)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def get(url: str) -> tuple[float, int]:
    """(seconds, bytes) of one GET."""
    request = urllib.request.Request(url, headers={"authorization": AUTH})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        size = len(response.read())
    return time.perf_counter() - start, size


def post(url: str, body: object) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"authorization": AUTH, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300):
        pass


class Poller:
    """GET ``url`` once a second in a thread until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stopped = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.wait(1.0):
            get(self.url)
            self.count += 1

    def __enter__(self) -> Poller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


def cpu_ms_per_second(pid: int, seconds: float) -> float:
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) * 1000 / (time.monotonic() - start)


def idle_cost(plain: Running, running: Running, seconds: float) -> list[str]:
    log(f"idle CPU for {seconds:.0f} s: plain, management, management polled every second")
    get(running.url + "/api/queues")  # the first login verifies the password hash (~0.2 s)
    base = cpu_ms_per_second(plain.pid, seconds)
    quiet = cpu_ms_per_second(running.pid, seconds)
    with Poller(running.url + "/api/queues"):
        polled = cpu_ms_per_second(running.pid, seconds)
    return [
        "| broker idle | CPU ms per second |",
        "| --- | ---: |",
        f"| plain (no management) | {base:.2f} |",
        f"| management on (HTTP server, sampler) | {quiet:.2f} |",
        f"| management on, GET /api/queues every second | {polled:.2f} |",
        f"| the plugin's share of one busy core (1,000 ms/s) | {(polled - base) / 10:.3f}% |",
    ]


def bench_side_by_side(plain: Running, managed: Running, messages: int) -> str:
    log(f"autoack, {messages} messages, plain broker then management broker (polled)")
    command = [
        sys.executable, "-m", "bench", "--scenario", "autoack", "--messages", str(messages),
        "--url", f"plain=amqp://guest:guest@127.0.0.1:{plain.amqp_port}/%2F",
        "--broker-pid", str(plain.pid),
        "--url", f"management=amqp://guest:guest@127.0.0.1:{managed.amqp_port}/%2F",
        "--broker-pid", str(managed.pid),
    ]  # fmt: skip
    with Poller(managed.url + "/api/queues"):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        log(result.stderr[-2000:])
    return result.stdout


def many_queues(running: Running, count: int, repeat: int) -> list[str]:
    log(f"declaring {count} queues")
    queues = [
        {"name": f"bench-mgmt-{n:05d}", "vhost": "/", "durable": False, "auto_delete": False,
         "arguments": {}}
        for n in range(count)
    ]  # fmt: skip
    post(running.url + "/api/definitions", {"queues": queues})
    rows = [
        f"| {count:,} queues | median ms | worst ms | bytes | broker CPU ms per request |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for path in ("/api/queues", "/api/queues?page=1&page_size=100", "/api/overview",
                 "/metrics", "/metrics/per-object"):  # fmt: skip
        get(running.url + path)  # warm up
        times, size = [], 0
        before = cpu_seconds(running.pid)
        for _ in range(repeat):
            seconds, size = get(running.url + path)
            times.append(seconds * 1000)
        cpu = (cpu_seconds(running.pid) - before) * 1000 / repeat
        rows.append(
            f"| `GET {path}` | {statistics.median(times):.1f} | {max(times):.1f} | {size:,} | "
            f"{cpu:.1f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.management", description=__doc__)
    parser.add_argument("--messages", type=int, default=300_000, help="autoack messages")
    parser.add_argument("--queues", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=10, help="requests per timed path")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds per idle measure")
    parser.add_argument("--skip-bench", action="store_true", help="leave out the autoack run")
    args = parser.parse_args(argv)
    with broker("--management-port", "0") as managed, broker() as plain:
        print("\n".join(idle_cost(plain, managed, args.idle)) + "\n")
        if not args.skip_bench:
            print(bench_side_by_side(plain, managed, args.messages))
        print("\n".join(many_queues(managed, args.queues, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: parse options, run the scenarios against each broker, print the table."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bench.amqp import BrokerURL
from bench.config import DEFAULT_MESSAGES, DEFAULT_URL, Options, Target
from bench.mqtt_scenarios import DEFAULT_WINDOW, MQTT_BY_NAME, MQTT_SCENARIOS, run_mqtt_scenario
from bench.procfs import listening_pid
from bench.report import table
from bench.scenarios import BY_NAME, DEFAULT_SET, SCENARIOS, message_count, run_scenario
from bench.stats import Result

_WIDTH = max(len(s.name) for s in (*SCENARIOS, *MQTT_SCENARIOS))
EPILOG = (
    "scenarios:\n"
    + "\n".join(
        f"  {s.name:<{_WIDTH}} {s.summary}" + ("" if s.in_default else " (only with --scenario)")
        for s in SCENARIOS
    )
    + "\n"
    + "\n".join(f"  {s.name:<{_WIDTH}} {s.summary}" for s in MQTT_SCENARIOS)
    + """

The MQTT scenarios run against mqtt:// URLs (the default set when every --url is one), the
others against amqp:// URLs.

Compare brokers side by side (one table column each):
  python -m bench --url warrenmq=amqp://guest:guest@127.0.0.1:5673/%2F --broker-pid auto \\
                  --url rabbitmq=amqp://guest:guest@127.0.0.1:5672/%2F --broker-pid auto
  python -m bench --url warrenmq=mqtt://127.0.0.1:1885 --broker-pid auto \\
                  --url mosquitto=mqtt://127.0.0.1:1883 --broker-pid auto
"""
)


class _Ordered(argparse.Action):
    """Keep --url and --broker-pid in command-line order, so a pid pairs with its url."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        items = getattr(namespace, "targets", None) or []
        items.append((self.dest, values))
        namespace.targets = items


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="AMQP 0-9-1 load generator: throughput, latency and loss checks for "
        "warrenmq or any AMQP broker. Progress goes to stderr, a markdown table to stdout; "
        "the exit status is 1 if any scenario FAILs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Options()
    p.add_argument(
        "--url",
        dest="url",
        action=_Ordered,
        metavar="[NAME=]URL",
        help="broker to measure; repeat to compare several (default "
        + DEFAULT_URL.replace("%", "%%")
        + ")",
    )
    p.add_argument(
        "--broker-pid",
        dest="pid",
        action=_Ordered,
        metavar="PID|auto",
        help="pid of the broker given by the preceding --url, to report its CPU "
        "time per message; 'auto' finds the local process listening on the port",
    )
    p.add_argument(
        "--scenario",
        action="append",
        choices=[*BY_NAME, *MQTT_BY_NAME],
        metavar="NAME",
        help="scenario to run; repeatable (default: all but backlog, see below)",
    )
    p.add_argument(
        "--messages",
        type=int,
        default=d.messages,
        help=f"messages published per scenario (default {DEFAULT_MESSAGES:,}; backlog: "
        f"{BY_NAME['backlog'].messages:,}; latency: 10 s' worth at the rate)",
    )
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="publish for this long instead of a fixed number of messages",
    )
    p.add_argument(
        "--rate",
        type=float,
        metavar="MSG_PER_S",
        help="publish at this fixed rate (default: as fast as the window allows; "
        "the delayed scenario: 10,000; the latency scenarios: 20,000)",
    )
    p.add_argument(
        "--window",
        type=int,
        help=f"max messages published but not yet consumed (default {d.window:,}; MQTT "
        f"scenarios: {DEFAULT_WINDOW:,})",
    )
    p.add_argument(
        "--confirm-window",
        type=int,
        default=d.confirm_window,
        help=f"max unconfirmed messages with confirms (default {d.confirm_window:,})",
    )
    p.add_argument(
        "--prefetch",
        type=int,
        default=d.prefetch,
        help=f"Basic.Qos prefetch count for manual acks (default {d.prefetch})",
    )
    p.add_argument(
        "--body-size",
        type=int,
        default=d.body_size,
        help=f"message body bytes, at least 16 (default {d.body_size})",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=d.batch,
        help=f"max publishes per socket write (default {d.batch})",
    )
    p.add_argument(
        "--bindings",
        type=int,
        default=d.bindings,
        help=f"non-matching bindings in the topic scenario (default {d.bindings:,})",
    )
    p.add_argument(
        "--idle-consumers",
        type=int,
        default=d.idle_consumers,
        help="consumers without credit in the consumers-10k scenario "
        f"(default {d.idle_consumers:,})",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=d.timeout,
        help=f"FAIL a scenario after this many seconds without progress (default {d.timeout:g})",
    )
    p.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop for the load generator (default: uvloop if installed)",
    )
    return p


def _targets(items: Sequence[tuple[str, str]], parser: argparse.ArgumentParser) -> list[Target]:
    """Pair each --broker-pid with the --url before it (or the first/default url)."""
    targets: list[Target] = []
    pids: list[tuple[int, str]] = []
    for kind, value in items:
        if kind == "url":
            label, sep, url = value.partition("=")
            if not sep or "://" in label:
                label, url = "", value
            try:
                parsed = BrokerURL.parse(url)
            except ValueError as exc:
                parser.error(str(exc))
            targets.append(Target(label or f"{parsed.host}:{parsed.port}", parsed))
        else:
            pids.append((max(len(targets) - 1, 0), value))
    if not targets:
        targets.append(Target("broker", BrokerURL.parse(DEFAULT_URL)))
    if len({t.label for t in targets}) != len(targets):
        parser.error("broker labels must be unique (use --url NAME=URL)")
    for index, value in pids:
        target = targets[index]
        if target.pid is not None:
            parser.error(f"two --broker-pid for {target.label}")
        if value == "auto":
            target.pid = listening_pid(target.url.port)
            if target.pid is None:
                parser.error(f"no local process found listening on port {target.url.port}")
        elif value.isdigit():
            target.pid = int(value)
        else:
            parser.error(f"--broker-pid wants a number or 'auto', not {value!r}")
    return targets


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _run_all(targets: list[Target], scenarios: list[str], opts: Options) -> list[Result]:
    results = []
    for name in scenarios:  # scenario-major, so brokers see similar machine conditions
        for target in targets:
            if name in MQTT_BY_NAME:
                results.append(await run_mqtt_scenario(target, MQTT_BY_NAME[name], opts, _log))
            else:
                results.append(await run_scenario(target, BY_NAME[name], opts, _log))
    return results


def _runner(choice: str) -> Callable[[Coroutine[Any, Any, list[Result]]], list[Result]]:
    factory = None
    if choice != "asyncio":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("uvloop is not installed") from None

    def run(coro: Coroutine[Any, Any, list[Result]]) -> list[Result]:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    targets = _targets(getattr(args, "targets", None) or [], parser)
    window_given = args.window is not None
    if not window_given:
        args.window = Options().window
    if (
        (args.messages is not None and args.messages < 1)
        or args.window < 1
        or args.confirm_window < 1
        or args.batch < 1
    ):
        parser.error("--messages, --window, --confirm-window and --batch must be positive")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    if args.idle_consumers < 0:
        parser.error("--idle-consumers must not be negative")
    if args.body_size < 16:
        parser.error("--body-size must be at least 16 (sequence number + timestamp)")
    opts = Options(
        messages=args.messages,
        duration=args.duration,
        rate=args.rate,
        window=args.window,
        window_given=window_given,
        confirm_window=args.confirm_window,
        prefetch=args.prefetch,
        body_size=args.body_size,
        batch=args.batch,
        bindings=args.bindings,
        idle_consumers=args.idle_consumers,
        timeout=args.timeout,
    )
    all_mqtt = all(t.url.scheme == "mqtt" for t in targets)
    default = [s.name for s in MQTT_SCENARIOS] if all_mqtt else DEFAULT_SET
    scenarios = list(dict.fromkeys(args.scenario or default))
    for t in targets:
        pid = f" (pid {t.pid})" if t.pid else ""
        _log(f"{t.label}: {t.url.host}:{t.url.port} vhost {t.url.vhost}{pid}")
    try:
        results = _runner(args.loop)(_run_all(targets, scenarios, opts))
    except KeyboardInterrupt:
        return 130
    counts = {
        name: message_count(BY_NAME[name], opts)
        if name in BY_NAME
        else opts.messages or DEFAULT_MESSAGES
        for name in scenarios
    }
    if opts.duration:
        amount = f"for {opts.duration:g} s"
    elif len(set(counts.values())) == 1:
        amount = f"{next(iter(counts.values())):,} messages"
    else:
        own = [f"{name} {n:,}" for name, n in counts.items() if n != DEFAULT_MESSAGES]
        amount = f"{DEFAULT_MESSAGES:,} messages (" + ", ".join(own) + ")"
    if opts.rate:
        amount += f" at {opts.rate:,.0f} msg/s"
    window = f"{opts.window:,}"
    if not window_given and any(name in MQTT_BY_NAME for name in scenarios):
        window += f" (MQTT: {DEFAULT_WINDOW:,})"
    print(
        f"{amount} per scenario, {opts.body_size}-byte bodies, in-flight window "
        f"{window}; msg/s counts deliveries over all queues (or subscribers); CPU is per "
        "delivery.\n"
    )
    print(table(results, [t.label for t in targets], scenarios))
    return 0 if all(r.ok for r in results) else 1

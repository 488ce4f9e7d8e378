"""The ``warrenmq`` command: ``run`` a broker, list ``plugins``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import anyio

from . import __version__
from .broker import Broker, Settings
from .errors import PluginError
from .testing import _backend_options

log = logging.getLogger("warrenmq")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warrenmq", description="A message broker in the RabbitMQ model."
    )
    parser.add_argument("--version", action="version", version=f"warrenmq {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run the broker", description="Run the broker.")
    run.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    run.add_argument("--port", type=int, default=5672, help="AMQP port (default: %(default)s)")
    run.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory for durable state (used by stores that persist)",
    )
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (default: %(default)s)",
    )
    run.add_argument(
        "--default-dispatch",
        default="round-robin",
        help="dispatch policy for queues without x-dispatch (default: %(default)s)",
    )
    run.add_argument(
        "--heartbeat", type=int, default=60, help="heartbeat seconds proposed to clients"
    )
    run.add_argument(
        "--memory-high-watermark",
        type=float,
        default=0.4,
        metavar="FRACTION",
        help="block publishers above this fraction of RAM in use by the broker (0: never)",
    )
    run.add_argument(
        "--block-plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="do not load this entry-point plugin (repeatable)",
    )

    plugins = commands.add_parser(
        "plugins", help="list loaded plugins", description="List what each plugin registered."
    )
    plugins.add_argument("--block-plugin", action="append", default=[], metavar="NAME")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


async def _run(broker: Broker) -> None:
    async with anyio.create_task_group() as group:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    group.cancel_scope.cancel()
                    return

        group.start_soon(watch_signals)
        await group.start(broker.serve)


def _cmd_run(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level)
    settings = Settings(
        host=args.host,
        amqp_port=args.port,
        data_dir=args.data_dir,
        default_dispatch=args.default_dispatch,
        heartbeat=args.heartbeat,
        memory_high_watermark=args.memory_high_watermark,
        blocked_plugins=frozenset(args.block_plugin),
    )
    try:
        broker = Broker(settings)
    except PluginError as exc:
        log.error("%s", exc)
        return 2
    log.info("warrenmq %s starting", __version__)
    status = 0
    try:
        anyio.run(_run, broker, backend="asyncio", backend_options=_backend_options())
    except* OSError as group:
        for error in _leaves(group):
            log.error("cannot listen: %s", error)
        status = 1
    except* PluginError as group:
        for error in _leaves(group):
            log.error("%s", error)
        status = 2
    return status


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside (nested) task-group exception groups."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _cmd_plugins(args: argparse.Namespace) -> int:
    try:
        broker = Broker(Settings(blocked_plugins=frozenset(args.block_plugin)))
    except PluginError as exc:
        print(f"warrenmq: {exc}", file=sys.stderr)
        return 2
    rows = [("KIND", "NAME", "PLUGIN", "PACKAGE"), *broker.plugins.registered()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "plugins":
        return _cmd_plugins(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

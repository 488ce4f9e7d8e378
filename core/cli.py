"""The ``warrenmq`` command: ``run`` a broker, list ``plugins``; the commands on files
(``config``, ``definitions``, ``policy``) are in ``cli_files``, those on users, vhosts and
permissions (``user``, ``vhost``, ``permission``) in ``cli_access``, ``bridge status`` in
``cli_bridge``."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import anyio

from . import __version__, cli_access, cli_bridge, cli_ctl
from .broker import Broker, Settings
from .build_info import build_name
from .cli_files import FILE_COMMANDS, add_file_commands, policy_reloader, settings_for
from .config import LOG_LEVELS
from .definitions import DefinitionsError
from .disk import parse_size
from .errors import ConfigError, PluginError, StoreError
from .limits import MAX_MESSAGE_SIZE, LimitsError, UserLimits, VhostLimits
from .store import default_data_dir
from .testing import _backend_options, _leaves
from .tls import AMQPS_PORT, MQTTS_PORT

log = logging.getLogger("warrenmq")

#: allocations between young-generation collections in a broker process (Python's is 700)
GC_THRESHOLD = 10_000

#: the largest value of an AMQP short (heartbeat seconds in connection.tune) and of a TCP port
MAX_SHORT = 65535
#: the largest frame_max, as the config file takes it
MAX_FRAME = 2**31 - 1


def _int_in_range(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse ``type`` taking an integer in ``low..high``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not {what} ({low} to {high})")
        return value

    return convert


def _watermark(text: str) -> float:
    """A fraction of RAM as RabbitMQ's ``vm_memory_high_watermark.relative`` takes it, 0 < f <= 1,
    or 0 for no memory alarm (RabbitMQ's 0 blocks every publisher instead)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid fraction: {text!r}") from None
    if not 0 <= value <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"{text} is not a fraction of RAM: give a number above 0 and at most 1 "
            "(0.4 is 40%), or 0 to turn the memory alarm off"
        )
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _limit(kind: type[VhostLimits] | type[UserLimits]) -> Callable[[str], tuple[str, str, int]]:
    """An argparse ``type`` taking ``NAME:LIMIT=VALUE``: a vhost or user name, one of
    ``kind``'s RabbitMQ limit names, an integer."""

    def convert(text: str) -> tuple[str, str, int]:
        owner, colon, setting = text.rpartition(":")
        key, equals, number = setting.partition("=")
        if not colon or not equals:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not NAME:LIMIT=VALUE (for example /:max-connections=100)"
            )
        try:
            value = int(number)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer in {text!r}: {number!r}") from None
        try:
            kind.from_mapping({key: value})
        except LimitsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return owner, key, value

    return convert


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warrenmq", description="A message broker in the RabbitMQ model."
    )
    parser.add_argument(
        "--version", action="version", version=f"warrenmq {__version__} ({build_name()})"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the broker",
        description="Run the broker. Flags override the config file; every setting has a "
        "default: `warrenmq config check FILE` shows what a file sets, and the configuration guide "
        "(docs/configuration.md in the source) lists every key.",
    )
    run.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    run.add_argument(
        "--definitions",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="definitions file (RabbitMQ's JSON format) to import at start (repeatable)",
    )
    run.add_argument("--host", help="address of the AMQP listener (default: 127.0.0.1)")
    run.add_argument(
        "--port",
        type=_int_in_range(0, MAX_SHORT, "a TCP port"),
        help="AMQP port, 0 for a free one (default: 5672)",
    )
    run.add_argument(
        "--mqtt-port",
        type=_int_in_range(0, MAX_SHORT, "a TCP port"),
        help="MQTT 3.1.1 port, by convention 1883; 0 for a free one (default: no MQTT, "
        "unless the config file has an mqtt listener)",
    )
    run.add_argument(
        "--ws-port",
        type=_int_in_range(0, MAX_SHORT, "a TCP port"),
        help="MQTT and AMQP over WebSocket (subprotocols mqtt and amqp), by convention 15675 "
        "as RabbitMQ's Web-MQTT; 0 for a free one (default: none, unless the config file has "
        "a websocket listener)",
    )
    run.add_argument(
        "--ws-path",
        metavar="PATH",
        help="the WebSocket endpoint's path (default: /ws)",
    )
    run.add_argument(
        "--management-port",
        type=_int_in_range(0, MAX_SHORT, "a TCP port"),
        metavar="PORT",
        help="serve the management HTTP API, /metrics and the web UI on this port, by "
        "convention 15672; 0 for a free one (default: off, unless the config file enables "
        "[plugins.management])",
    )
    run.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="directory for durable definitions and persistent messages, created on first "
        f"run (default: {default_data_dir()})",
    )
    run.add_argument(
        "--store",
        metavar="NAME",
        help="store plugin: 'disk' keeps durable state in --data-dir, 'memory' keeps nothing "
        "across restarts (default: disk)",
    )
    run.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="log verbosity on stderr (default: info)",
    )
    run.add_argument(
        "--default-dispatch",
        help="dispatch policy for queues without x-dispatch (default: round-robin)",
    )
    run.add_argument(
        "--heartbeat",
        type=_int_in_range(0, MAX_SHORT, "a heartbeat in seconds"),
        metavar="SECONDS",
        help="heartbeat seconds proposed to clients, 0 for none (default: 60)",
    )
    run.add_argument(
        "--memory-high-watermark",
        type=_watermark,
        metavar="FRACTION",
        help="block publishers while the broker uses more than this fraction of RAM, "
        "above 0 and at most 1; 0 turns the memory alarm off (default: 0.4)",
    )
    run.add_argument(
        "--disk-free-limit",
        type=_size,
        metavar="SIZE",
        help="block publishers while the data directory's filesystem has less free space than "
        "this: bytes, or with a unit (50MB, 1GB, 512MiB); 0 turns the disk alarm off "
        "(default: 50MB)",
    )
    run.add_argument(
        "--frame-max",
        type=_int_in_range(4096, MAX_FRAME, "a frame size in bytes"),
        metavar="BYTES",
        help="largest frame proposed to and accepted from clients (default: 131072)",
    )
    run.add_argument(
        "--channel-max",
        type=_int_in_range(1, MAX_SHORT, "a number of channels"),
        metavar="N",
        help="most channels open at once on a connection (default: 2047)",
    )
    run.add_argument(
        "--max-message-size",
        type=_int_in_range(1, MAX_MESSAGE_SIZE, "a message size in bytes"),
        metavar="BYTES",
        help="largest message body accepted (default: 134217728, at most 512 MiB)",
    )
    run.add_argument(
        "--handshake-timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="seconds a client has to complete its handshake (default: 10)",
    )
    run.add_argument(
        "--vhost-limit",
        type=_limit(VhostLimits),
        action="append",
        default=[],
        metavar="VHOST:LIMIT=N",
        help="max-connections or max-queues of a vhost, as rabbitmqctl set_vhost_limits; "
        "a negative N is no limit (repeatable)",
    )
    run.add_argument(
        "--user-limit",
        type=_limit(UserLimits),
        action="append",
        default=[],
        metavar="USER:LIMIT=N",
        help="max-connections or max-channels of a user, as rabbitmqctl set_user_limits; "
        "a negative N is no limit (repeatable)",
    )
    run.add_argument(
        "--block-plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="do not load this entry-point plugin (repeatable; adds to the config's list)",
    )
    tls = run.add_argument_group(
        "TLS",
        "AMQP over TLS on a second port (given a certificate and key), and MQTT over TLS "
        "with --mqtt-tls-port. Each flag replaces its key of the config file's TLS listener; "
        "without one in the file, one is added.",
    )
    tls.add_argument(
        "--tls-port",
        type=_int_in_range(0, MAX_SHORT, "a TCP port"),
        default=None,
        help=f"AMQP over TLS port, by convention {AMQPS_PORT} (default: the config's, or "
        f"{AMQPS_PORT} when --tls-cert is given)",
    )
    tls.add_argument(
        "--mqtt-tls-port",
        type=_int_in_range(0, MAX_SHORT, "a TCP port"),
        default=None,
        help=f"MQTT over TLS port, by convention {MQTTS_PORT}, with the certificate of "
        "--tls-cert (or of the config's TLS listener) (default: no MQTT over TLS)",
    )
    tls.add_argument("--tls-cert", type=Path, metavar="FILE", help="certificate chain (PEM)")
    tls.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="private key (PEM; default: in --tls-cert)"
    )
    tls.add_argument(
        "--tls-ca", type=Path, metavar="FILE", help="CA certificates for client certificates"
    )
    tls.add_argument(
        "--tls-verify-peer",
        action="store_true",
        default=None,
        help="require a client certificate signed by --tls-ca",
    )

    add_file_commands(commands)

    plugins = commands.add_parser(
        "plugins", help="list loaded plugins", description="List what each plugin registered."
    )
    plugins.add_argument("--block-plugin", action="append", default=[], metavar="NAME")
    cli_access.add_parsers(commands)
    cli_bridge.add_parser(commands)
    cli_ctl.add_parser(commands)
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


async def _run(broker: Broker, reload: Callable[[], None] | None = None) -> None:
    async with anyio.create_task_group() as group:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(
                signal.SIGINT, signal.SIGTERM, signal.SIGHUP
            ) as signals:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        if reload is not None:
                            reload()
                        continue
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    group.cancel_scope.cancel()
                    return

        group.start_soon(watch_signals)
        await group.start(broker.serve)


def _tune_garbage_collector() -> None:
    """Every message makes a few objects that live until it is consumed, so the cyclic
    collector's default (a young collection every 700 allocations) runs often for nothing:
    collect less often, and keep the startup objects out of its way for good."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 10, 10)


def _cmd_run(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level or "info")
    try:
        settings, log_level = settings_for(args)
    except (ConfigError, DefinitionsError) as exc:
        log.error("%s", exc)
        return 2
    logging.getLogger().setLevel(getattr(logging, log_level.upper()))
    try:
        broker = Broker(settings)
    except (PluginError, ConfigError) as exc:
        log.error("%s", exc)
        return 2
    log.info("warrenmq %s (%s) starting", __version__, build_name())
    _tune_garbage_collector()
    status = 0
    try:
        anyio.run(
            _run,
            broker,
            policy_reloader(args, broker),
            backend="asyncio",
            backend_options=_backend_options(),
        )
    except* OSError as group:
        for error in _leaves(group):
            log.error("cannot start the broker: %s", error)
        status = 1
    except* StoreError as group:
        for error in _leaves(group):
            log.error("cannot start the broker: %s", error)
        status = 1
    except* (PluginError, DefinitionsError, ConfigError) as group:
        for error in _leaves(group):
            log.error("%s", error)
        status = 2
    return status


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
    if broker.plugins.failed:
        print("\nFAILED (skipped; the broker runs without them)")
        for failure in broker.plugins.failed:
            print(f"failed  {failure.describe()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "plugins":
        return _cmd_plugins(args)
    if args.command in FILE_COMMANDS:
        return FILE_COMMANDS[args.command](args)
    if args.command == "ctl":
        return cli_ctl.run(args)
    if args.command in cli_access.HANDLERS:
        return cli_access.run(args)
    if args.command == "bridge":
        return cli_bridge.run(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

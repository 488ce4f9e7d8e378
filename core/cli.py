"""The ``warrenmq`` command: ``run`` a broker, list ``plugins``, check a ``config`` file,
export and import ``definitions``, manage ``policy`` entries of a definitions file."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from . import __version__, config, definitions
from .broker import Broker, Settings
from .config import LOG_LEVELS, ConfigError
from .definitions import DefinitionsError
from .errors import PluginError
from .policy import Policy, PolicyError
from .protocol import ListenerSpec
from .testing import _backend_options, _leaves

log = logging.getLogger("warrenmq")

#: allocations between young-generation collections in a broker process (Python's is 700)
GC_THRESHOLD = 10_000

#: the largest value of an AMQP short (heartbeat seconds in connection.tune) and of a TCP port
MAX_SHORT = 65535


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warrenmq", description="A message broker in the RabbitMQ model."
    )
    parser.add_argument("--version", action="version", version=f"warrenmq {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the broker",
        description="Run the broker. Flags override the config file; every setting has a "
        "default (docs/configuration.md).",
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
        "--data-dir",
        type=Path,
        help="directory for durable state (used by stores that persist)",
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
        "--block-plugin",
        action="append",
        default=[],
        metavar="NAME",
        help="do not load this entry-point plugin (repeatable; adds to the config's list)",
    )

    config = commands.add_parser(
        "config", help="check a config file", description="Work with config files."
    )
    config_commands = config.add_subparsers(dest="config_command", metavar="COMMAND")
    check = config_commands.add_parser(
        "check",
        help="check a config file without starting",
        description="Check a config file (and the definitions files it names) without "
        "starting a broker: exit 0 with a summary, or 2 with what is wrong.",
    )
    check.add_argument("file", type=Path, metavar="FILE")

    definitions = commands.add_parser(
        "definitions",
        help="export or import definitions (RabbitMQ's JSON format)",
        description="Definitions in RabbitMQ's JSON format. With no admin channel to a "
        "running broker yet, both commands build the broker that --config (and "
        "--definitions) describe, without listening.",
    )
    definition_commands = definitions.add_subparsers(dest="definitions_command", metavar="COMMAND")
    export = definition_commands.add_parser(
        "export",
        help="write the topology the config and definitions files declare",
        description="Write, in RabbitMQ's format, the vhosts, exchanges, queues, bindings and "
        "policies of the broker the config file and definitions files describe (as it would "
        "be after start-up), and any users and permissions imported with them.",
    )
    import_ = definition_commands.add_parser(
        "import",
        help="check that a definitions file imports into the configured broker",
        description="Import FILE into the broker the config describes, without listening: "
        "exit 0 with a summary if everything declares cleanly, 2 otherwise. To load it at "
        "every start, pass --definitions FILE to run or list it in [broker] definitions.",
    )
    import_.add_argument("file", type=Path, metavar="FILE")
    for command in (export, import_):
        command.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
        command.add_argument(
            "--definitions",
            type=Path,
            action="append",
            default=[],
            metavar="FILE",
            help="definitions file imported first (repeatable)",
        )
        command.add_argument(
            "--output",
            "-o",
            type=Path,
            metavar="FILE",
            help="write the JSON here (default: stdout)",
        )

    policy = commands.add_parser(
        "policy",
        help="set, clear or list policies in a definitions file",
        description="Policies, as rabbitmqctl set_policy, kept in a definitions file that "
        "the broker imports at start (--definitions FILE, or [broker] definitions).",
    )
    policy_commands = policy.add_subparsers(dest="policy_command", metavar="COMMAND")
    set_ = policy_commands.add_parser("set", help="add or replace a policy")
    set_.add_argument("name", metavar="NAME")
    set_.add_argument("pattern", metavar="PATTERN", help="regular expression searched in names")
    set_.add_argument(
        "definition", metavar="DEFINITION", help="JSON object, e.g. '{\"max-length\": 1000}'"
    )
    set_.add_argument("--priority", type=int, default=0, help="default: %(default)s")
    set_.add_argument(
        "--apply-to", default="all", help="queues, exchanges or all (default: %(default)s)"
    )
    clear = policy_commands.add_parser("clear", help="remove a policy")
    clear.add_argument("name", metavar="NAME")
    listing = policy_commands.add_parser(
        "list", help="list the policies of a definitions or config file"
    )
    listing.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    for command in (set_, clear, listing):
        command.add_argument(
            "--vhost", "-p", default=None, help="virtual host (default: all for list, / otherwise)"
        )
        command.add_argument(
            "--file",
            type=Path,
            metavar="FILE",
            required=command is not listing,
            help="the definitions file (created by set if missing)",
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


def _policy_reloader(args: argparse.Namespace, broker: Broker) -> Callable[[], None]:
    """On SIGHUP: read the config and definitions files again and make the running broker's
    policies theirs (set, replaced, cleared), applied to existing queues at once. Nothing
    else is reloaded; a bad file changes nothing."""

    def reload() -> None:
        try:
            settings, _ = _settings_for(args)
            wanted = {
                (policy.vhost, policy.name): policy
                for item in settings.definitions
                for policy in item.policies
            }
            missing = sorted({vhost for vhost, _ in wanted} - set(broker.vhosts))
            if missing:
                raise DefinitionsError(f"no vhost '{missing[0]}' in the running broker")
        except (ConfigError, DefinitionsError, PluginError) as exc:
            log.error("reload refused, policies unchanged: %s", exc)
            return
        for policy in broker.policies():
            if (policy.vhost, policy.name) not in wanted:
                broker.clear_policy(policy.vhost, policy.name)
        for policy in wanted.values():
            if broker.vhosts[policy.vhost].policies.get(policy.name) != policy:
                broker.set_policy(policy)
        log.info("reloaded policies: %d in effect", len(wanted))

    return reload


def _tune_garbage_collector() -> None:
    """Every message makes a few objects that live until it is consumed, so the cyclic
    collector's default (a young collection every 700 allocations) runs often for nothing:
    collect less often, and keep the startup objects out of its way for good."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 10, 10)


def _settings_for(args: argparse.Namespace) -> tuple[Settings, str]:
    """Settings and log level from the config file (if any) with the flags over it."""
    if args.config is not None:
        loaded = config.load(args.config)
        settings, log_level = loaded.settings, loaded.log_level
    else:
        settings, log_level = Settings(), "info"
    for flag, attribute in (
        ("data_dir", "data_dir"),
        ("default_dispatch", "default_dispatch"),
        ("heartbeat", "heartbeat"),
        ("memory_high_watermark", "memory_high_watermark"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(settings, attribute, value)
    if getattr(args, "block_plugin", None):
        settings.blocked_plugins = settings.blocked_plugins | frozenset(args.block_plugin)
    _override_address(settings, getattr(args, "host", None), getattr(args, "port", None))
    for file in args.definitions:
        settings.definitions.append(definitions.load(file))
    if getattr(args, "log_level", None) is not None:
        log_level = args.log_level
    return settings, log_level


def _override_address(settings: Settings, host: str | None, port: int | None) -> None:
    """--host and --port set the address of the first plain AMQP listener over TCP (one is
    added if the config file has none); other listeners keep theirs."""
    if host is None and port is None:
        return
    if settings.listeners is None:
        settings.host = host if host is not None else settings.host
        settings.amqp_port = port if port is not None else settings.amqp_port
        return
    for index, spec in enumerate(settings.listeners):
        if (spec.transport, spec.protocol) == ("tcp", "amqp") and spec.options.get("tls") is None:
            settings.listeners[index] = dataclasses.replace(
                spec,
                host=host if host is not None else spec.host,
                port=port if port is not None else spec.port,
            )
            return
    settings.listeners.append(
        ListenerSpec("tcp", "amqp", host or settings.host, port if port is not None else 5672)
    )


def _cmd_run(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level or "info")
    try:
        settings, log_level = _settings_for(args)
    except (ConfigError, DefinitionsError) as exc:
        log.error("%s", exc)
        return 2
    logging.getLogger().setLevel(getattr(logging, log_level.upper()))
    try:
        broker = Broker(settings)
    except PluginError as exc:
        log.error("%s", exc)
        return 2
    log.info("warrenmq %s starting", __version__)
    _tune_garbage_collector()
    status = 0
    try:
        anyio.run(
            _run,
            broker,
            _policy_reloader(args, broker),
            backend="asyncio",
            backend_options=_backend_options(),
        )
    except* OSError as group:
        for error in _leaves(group):
            log.error("cannot start the broker: %s", error)
        status = 1
    except* (PluginError, DefinitionsError) as group:
        for error in _leaves(group):
            log.error("%s", error)
        status = 2
    return status


def _fail(command: str, error: object) -> int:
    print(f"warrenmq {command}: {error}", file=sys.stderr)
    return 2


def _cmd_config(args: argparse.Namespace) -> int:
    if args.config_command != "check":
        return _fail("config", "give a command: check FILE")
    try:
        loaded = config.load(args.file)
        # declare everything in a broker that does not listen, as start-up would
        anyio.run(_built, Broker(loaded.settings))
    except (ConfigError, DefinitionsError, PluginError) as exc:
        return _fail("config check", exc)
    print(loaded.summary())
    return 0


async def _built(broker: Broker) -> dict[str, Any]:
    """Open the store, declare the start-up definitions, and export: what the broker would
    hold once started, without listening."""
    await broker.store.open()
    try:
        for item in broker.settings.definitions:
            definitions.apply(broker, item)
        return definitions.export(broker)
    finally:
        await broker.store.close()


def _cmd_definitions(args: argparse.Namespace) -> int:
    command = f"definitions {args.definitions_command}"
    if args.definitions_command not in ("export", "import"):
        return _fail("definitions", "give a command: export or import FILE")
    try:
        if args.definitions_command == "import":
            args.definitions.append(args.file)
        settings, _ = _settings_for(args)
        exported = anyio.run(_built, Broker(settings))
    except (ConfigError, DefinitionsError, PluginError) as exc:
        return _fail(command, exc)
    text = json.dumps(exported, indent=2, sort_keys=True) + "\n"
    if args.definitions_command == "import":
        summary = definitions.parse(exported, "the broker").summary()
        print(f"{args.file}: imports cleanly; the broker would hold {summary}")
        if args.output is None:
            return 0
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


def _cmd_policy(args: argparse.Namespace) -> int:
    command = f"policy {args.policy_command}"
    if args.policy_command not in ("set", "clear", "list"):
        return _fail("policy", "give a command: set, clear or list")
    try:
        if args.policy_command == "list":
            return _list_policies(args)
        file: Path = args.file
        data: dict[str, Any] = {}
        if file.exists():
            definitions.load(file)  # the whole file must be good before it is rewritten
            data = json.loads(file.read_text(encoding="utf-8"))
        vhost = args.vhost or "/"
        kept = [
            item
            for item in data.get("policies", [])
            if (item.get("vhost", "/"), item.get("name")) != (vhost, args.name)
        ]
        if args.policy_command == "set":
            try:
                definition = json.loads(args.definition)
            except json.JSONDecodeError as exc:
                return _fail(command, f"DEFINITION is not JSON: {exc}")
            policy = Policy(
                args.name, args.pattern, definition, vhost, args.apply_to, args.priority
            )
            kept.append(policy.as_json())
        elif len(kept) == len(data.get("policies", [])):
            return _fail(command, f"no policy '{args.name}' in vhost '{vhost}' in {file}")
        data["policies"] = kept
        data.setdefault("vhosts", [])
        if vhost != "/" and vhost not in [v.get("name") for v in data["vhosts"]]:
            data["vhosts"].append({"name": vhost})
        file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except (PolicyError, DefinitionsError, ConfigError, OSError) as exc:
        return _fail(command, exc)
    return 0


def _list_policies(args: argparse.Namespace) -> int:
    found: list[Policy] = []
    if args.config is None and args.file is None:
        raise ConfigError("give --file DEFINITIONS or --config FILE")
    if args.config is not None:
        for item in config.load(args.config).settings.definitions:
            found.extend(item.policies)
    if args.file is not None:
        found.extend(definitions.load(args.file).policies)
    print("vhost\tname\tpattern\tapply-to\tdefinition\tpriority")
    for policy in found:
        if args.vhost is None or policy.vhost == args.vhost:
            definition = json.dumps(dict(policy.definition), separators=(",", ":"))
            print(
                f"{policy.vhost}\t{policy.name}\t{policy.pattern}\t{policy.apply_to}\t"
                f"{definition}\t{policy.priority}"
            )
    return 0


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
    if args.command == "config":
        return _cmd_config(args)
    if args.command == "definitions":
        return _cmd_definitions(args)
    if args.command == "policy":
        return _cmd_policy(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``warrenmq`` commands that work on files: ``config check``, ``definitions export`` and
``import``, ``policy set|clear|list``; and the settings ``run`` builds from a config file and
its flags. With no admin channel to a running broker yet, these read and write files, and build
the broker a config describes without listening when they need one."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from . import config, definitions
from .broker import Broker, Settings
from .definitions import DefinitionsError
from .errors import ConfigError, PluginError
from .limits import UserLimits, VhostLimits, with_overrides
from .policy import Policy, PolicyError
from .protocol import ListenerSpec
from .store import default_data_dir
from .tls import AMQPS_PORT, TLSOptions

log = logging.getLogger("warrenmq")

#: the config section of the management plugin, which --management-port turns on
MANAGEMENT = "management"


def add_file_commands(commands: Any) -> None:
    """Add ``config``, ``definitions`` and ``policy`` to the ``warrenmq`` subcommands."""
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


def settings_for(args: argparse.Namespace) -> tuple[Settings, str]:
    """Settings and log level from the config file (if any) with the flags over it."""
    if args.config is not None:
        loaded = config.load(args.config)
        settings, log_level = loaded.settings, loaded.log_level
    else:
        settings, log_level = Settings(store=config.BROKER_KEYS["store"].default), "info"
    for flag, attribute in (
        ("store", "store"),
        ("data_dir", "data_dir"),
        ("default_dispatch", "default_dispatch"),
        ("heartbeat", "heartbeat"),
        ("memory_high_watermark", "memory_high_watermark"),
        ("frame_max", "frame_max"),
        ("channel_max", "channel_max"),
        ("max_message_size", "max_message_size"),
        ("handshake_timeout", "handshake_timeout"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(settings, attribute, value)
    if getattr(args, "disk_free_limit", None) is not None:  # over either form in the file
        settings.disk_free_limit = args.disk_free_limit
        settings.disk_free_limit_relative = None
    settings.vhost_limits = with_overrides(
        settings.vhost_limits, getattr(args, "vhost_limit", None) or [], VhostLimits
    )
    settings.user_limits = with_overrides(
        settings.user_limits, getattr(args, "user_limit", None) or [], UserLimits
    )
    if getattr(args, "block_plugin", None):
        settings.blocked_plugins = settings.blocked_plugins | frozenset(args.block_plugin)
        settings.loaded_plugins = None  # loaded for the file's blocks: load again with these
    override_address(settings, getattr(args, "host", None), getattr(args, "port", None))
    override_mqtt_port(settings, getattr(args, "mqtt_port", None))
    override_websocket(settings, getattr(args, "ws_port", None), getattr(args, "ws_path", None))
    override_management_port(settings, getattr(args, "management_port", None))
    override_tls(settings, args)
    override_mqtt_tls_port(settings, getattr(args, "mqtt_tls_port", None))
    if settings.data_dir is None:  # the store's and the plugins' directory, named for all
        settings.data_dir = default_data_dir()
    settings.data_dir = Path(settings.data_dir).absolute()  # logged and locked as it is
    for file in args.definitions:
        settings.definitions.append(definitions.load(file))
    if getattr(args, "log_level", None) is not None:
        log_level = args.log_level
    return settings, log_level


def override_address(settings: Settings, host: str | None, port: int | None) -> None:
    """--host and --port set the address of the first plain AMQP listener over TCP (one is
    added if the config file has none); other listeners keep theirs."""
    if host is None and port is None:
        return
    if settings.listeners is None:
        settings.host = host if host is not None else settings.host
        settings.amqp_port = port if port is not None else settings.amqp_port
        return
    for index, spec in enumerate(settings.listeners):
        if (spec.transport, spec.protocol) == ("tcp", "amqp") and spec.tls is None:
            settings.listeners[index] = dataclasses.replace(
                spec,
                host=host if host is not None else spec.host,
                port=port if port is not None else spec.port,
            )
            return
    settings.listeners.append(
        ListenerSpec("tcp", "amqp", host or settings.host, port if port is not None else 5672)
    )


def override_mqtt_port(settings: Settings, port: int | None) -> None:
    """--mqtt-port sets the port of the first MQTT listener over TCP (one is added if the
    config file's ``[[listeners]]`` has none)."""
    if port is None:
        return
    if settings.listeners is None:
        settings.mqtt_port = port
        return
    for index, spec in enumerate(settings.listeners):
        if (spec.transport, spec.protocol) == ("tcp", "mqtt") and spec.tls is None:
            settings.listeners[index] = dataclasses.replace(spec, port=port)
            return
    host = next((spec.host for spec in settings.listeners), settings.host)
    settings.listeners.append(ListenerSpec("tcp", "mqtt", host, port))


def override_websocket(settings: Settings, port: int | None, path: str | None) -> None:
    """--ws-port and --ws-path set the port and path of the first plain WebSocket listener
    (one is added if the config file's ``[[listeners]]`` has none and --ws-port is given)."""
    if port is None and path is None:
        return
    if path is not None and not path.startswith("/"):
        raise ConfigError(f"--ws-path must start with /, got {path!r}")
    if settings.listeners is None:
        settings.ws_path = path or settings.ws_path
        settings.ws_port = port if port is not None else settings.ws_port
        return
    for index, spec in enumerate(settings.listeners):
        if spec.transport == "websocket" and spec.tls is None:
            options = dict(spec.options, path=path) if path is not None else spec.options
            port = port if port is not None else spec.port
            settings.listeners[index] = dataclasses.replace(spec, port=port, options=options)
            return
    if port is not None:
        settings.ws_path = path or settings.ws_path
        settings.ws_port = port
        host = next((spec.host for spec in settings.listeners), settings.host)
        settings.listeners.append(settings.websocket_listener(host))


def override_management_port(settings: Settings, port: int | None) -> None:
    """--management-port turns the management plugin on, on that port (its config section
    ``[plugins.management]`` keeps its other keys)."""
    if port is None:
        return
    section = settings.plugin_config.setdefault(MANAGEMENT, {})
    section.update(enabled=True, port=port)


def override_tls(settings: Settings, args: argparse.Namespace) -> None:
    """The ``--tls-*`` flags, each over its key of the config's TLS: that of the first AMQP
    listener over TLS in ``[[listeners]]`` (one is added if there is none), or without
    ``[[listeners]]`` the default listeners' ``tls`` and ``tls_port``. ``ConfigError`` if the
    result has no certificate, or verifies peers without a CA."""
    files = {
        "certfile": getattr(args, "tls_cert", None),
        "keyfile": getattr(args, "tls_key", None),
        "cafile": getattr(args, "tls_ca", None),
    }
    port: int | None = getattr(args, "tls_port", None)
    verify_peer = bool(getattr(args, "tls_verify_peer", None))
    if port is None and not verify_peer and all(file is None for file in files.values()):
        return
    listeners = settings.listeners
    index = None
    if listeners is None:
        current, current_port = settings.tls, settings.tls_port
    else:
        index = next(
            (i for i, spec in enumerate(listeners) if _is_amqp_tcp(spec) and spec.tls is not None),
            None,
        )
        current = None if index is None else listeners[index].tls
        current_port = None if index is None else listeners[index].port
    if current is None and files["certfile"] is None:
        given = [flag for flag, value in (("port", port), ("key", files["keyfile"])) if value]
        given += ["ca"] if files["cafile"] is not None else []
        flag = f"--tls-{given[0]}" if given else "--tls-verify-peer"
        raise ConfigError(f"{flag} needs --tls-cert (or a TLS listener in the config file)")
    changes: dict[str, Any] = {key: value for key, value in files.items() if value is not None}
    if verify_peer:
        changes["verify_peer"] = True
    options = dataclasses.replace(current, **changes) if current else TLSOptions(**changes)
    if options.verify_peer and options.cafile is None:
        raise ConfigError(
            "--tls-verify-peer needs --tls-ca (the CA that signs client certificates)"
        )
    if port is None:
        port = current_port if current_port is not None else AMQPS_PORT
    if listeners is None:
        settings.tls, settings.tls_port = options, port
    elif index is not None:
        listeners[index] = dataclasses.replace(listeners[index], port=port, tls=options)
    else:
        host = getattr(args, "host", None) or next(
            (spec.host for spec in listeners if _is_amqp_tcp(spec)), settings.host
        )
        listeners.append(ListenerSpec("tcp", "amqp", host, port, tls=options))


def override_mqtt_tls_port(settings: Settings, port: int | None) -> None:
    """--mqtt-tls-port sets the port of the first MQTT listener over TLS; without one, one is
    added with the TLS options of the first TLS listener (``--tls-cert``'s, or the config's),
    as RabbitMQ's MQTT TLS listener uses the broker's ``ssl_options``."""
    if port is None:
        return
    if settings.listeners is None:
        if settings.tls is None:
            raise ConfigError("--mqtt-tls-port needs --tls-cert (or a TLS listener in the config)")
        settings.mqtt_tls_port = port
        return
    listeners = settings.listeners
    for index, spec in enumerate(listeners):
        if (spec.transport, spec.protocol) == ("tcp", "mqtt") and spec.tls is not None:
            listeners[index] = dataclasses.replace(spec, port=port)
            return
    model = next((spec for spec in listeners if spec.tls is not None), None)
    if model is None:
        raise ConfigError("--mqtt-tls-port needs --tls-cert (or a TLS listener in the config)")
    listeners.append(ListenerSpec("tcp", "mqtt", model.host, port, tls=model.tls))


def _is_amqp_tcp(spec: ListenerSpec) -> bool:
    return (spec.transport, spec.protocol) == ("tcp", "amqp")


def policy_reloader(args: argparse.Namespace, broker: Broker) -> Callable[[], None]:
    """On SIGHUP: read the config and definitions files again and make the running broker's
    policies theirs (set, replaced, cleared), applied to existing queues at once. Nothing
    else is reloaded; a bad file changes nothing."""

    def reload() -> None:
        try:
            settings, _ = settings_for(args)
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


def _fail(command: str, error: object) -> int:
    print(f"warrenmq {command}: {error}", file=sys.stderr)
    return 2


def _cmd_config(args: argparse.Namespace) -> int:
    if args.config_command != "check":
        return _fail("config", "give a command: check FILE")
    try:
        loaded = config.load(args.file)
        # declare everything in a broker that does not listen, as start-up would
        anyio.run(_built, Broker(_without_data_dir(loaded.settings)))
    except (ConfigError, DefinitionsError, PluginError) as exc:
        return _fail("config check", exc)
    print(loaded.summary())
    return 0


def _without_data_dir(settings: Settings) -> Settings:
    """The file commands never open the data directory: a running broker holds it (locked),
    and declaring there would change what it restores. Their broker keeps nothing."""
    return dataclasses.replace(settings, store="memory", data_dir=None)


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
        settings, _ = settings_for(args)
        exported = anyio.run(_built, Broker(_without_data_dir(settings)))
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


#: subcommand -> its function, for ``warrenmq.cli.main``
FILE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "config": _cmd_config,
    "definitions": _cmd_definitions,
    "policy": _cmd_policy,
}

"""The config file: one TOML file (read with ``tomllib``) that composes a broker.

``load(path)`` reads the file, checks every key against the tables below (and each plugin's
own section against the schema the plugin registered), and returns ``Settings``. A problem
raises ``ConfigError`` naming the file, the line, the key and what was expected; tomllib
does not report lines for values, so the line is found by scanning the text for the key.

Top-level sections: ``broker``, ``listeners``, ``plugins``, ``vhosts``, ``policies``,
``exchanges``, ``queues``, ``bindings``, plus those in ``SECTION_HANDLERS`` (``users`` and
``permissions``, built into ``Settings.access`` by ``warrenmq.access_config``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .access import Access
from .access_config import permissions_from_toml, users_from_toml
from .broker import Settings
from .definitions import Definitions, DefinitionsError
from .definitions import load as load_definitions
from .disk import DEFAULT_LIMIT, SIZE_FORMAT, parse_size
from .errors import ConfigError, PluginError
from .limits import L, LimitsError, UserLimits, VhostLimits
from .plugin_loader import ESSENTIAL, GROUP, Plugins, load_plugins
from .policy import Policy, PolicyError
from .tls import AMQPS_PORT, TLSOptions

MAX_SHORT = 65535
LOG_LEVELS = ("debug", "info", "warning", "error")

KeyPath = tuple[str | int, ...]


class ConfigProblem(Exception):
    """Raised while checking a config: ``path`` is the key (``("broker", "heartbeat")``,
    ``("listeners", 0, "port")``); ``load`` turns it into a ``ConfigError`` with the line."""

    def __init__(self, path: KeyPath, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


# -- schemas -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One key of a config section: its type, default, meaning and allowed values."""

    type: type | tuple[type, ...]
    default: Any = None
    doc: str = ""
    #: what a good value is, in words (default: from ``type``)
    expected: str = ""
    #: extra check of a value of the right type: True if good
    check: Callable[[Any], bool] | None = None
    required: bool = False

    def describe(self) -> str:
        if self.expected:
            return self.expected
        kinds = self.type if isinstance(self.type, tuple) else (self.type,)
        return " or ".join(_TYPE_WORDS.get(kind, kind.__name__) for kind in kinds)

    def validate(self, value: Any, path: KeyPath) -> Any:
        kinds = self.type if isinstance(self.type, tuple) else (self.type,)
        good = any(_is(value, kind) for kind in kinds)
        if not good or (self.check is not None and not self.check(value)):
            raise ConfigProblem(path, f"expected {self.describe()}, got {_shown(value)}")
        if float in kinds and isinstance(value, int):
            return float(value)
        return value


_TYPE_WORDS = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}


def _is(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _size(value: int | str) -> int | None:
    """Bytes from an integer (0 or more) or a size with a unit (``"50MB"``); None if bad."""
    if isinstance(value, int):
        return value if value >= 0 else None
    try:
        return parse_size(value)
    except ValueError:
        return None


def _range(low: float, high: float | None = None) -> Callable[[Any], bool]:
    return lambda value: value >= low and (high is None or value <= high)


@dataclass(frozen=True)
class ConfigSection:
    """A plugin's own section, ``[plugins.NAME]``: registered through the
    ``warrenmq_register_config_sections`` hook, so that the broker checks its keys."""

    name: str
    keys: Mapping[str, Key]
    doc: str = ""

    def validate(
        self, table: Mapping[str, Any], path: KeyPath, base: Path | None = None
    ) -> dict[str, Any]:
        """The section's values with defaults filled in; ``ConfigProblem`` for a bad key.

        ``base`` is the config file's folder, which relative file names count from (None:
        the current directory); a subclass that checks nested tables or files overrides this.
        """
        return check_table(table, self.keys, path, f"[plugins.{self.name}]")

    def defaults(self) -> dict[str, Any]:
        return {name: key.default for name, key in self.keys.items()}


def check_table(table: Any, keys: Mapping[str, Key], path: KeyPath, what: str) -> dict[str, Any]:
    """Check ``table`` against ``keys``: unknown keys, missing required ones, types."""
    if not isinstance(table, dict):
        raise ConfigProblem(path, f"expected a table, got {_shown(table)}")
    for name in table:
        if name not in keys:
            raise ConfigProblem(
                (*path, name),
                f"unknown key in {what} (expected one of: {', '.join(sorted(keys))})",
            )
    values: dict[str, Any] = {}
    for name, key in keys.items():
        if name in table:
            values[name] = key.validate(table[name], (*path, name))
        elif key.required:
            raise ConfigProblem(path, f"missing key '{name}' in {what} ({key.describe()})")
        else:
            values[name] = key.default
    return values


BROKER_KEYS: dict[str, Key] = {
    "default_dispatch": Key(
        str, "round-robin", "dispatch policy for queues declared without `x-dispatch`"
    ),
    "store": Key(
        str, "disk", "the store plugin that keeps durable state (`memory` keeps nothing)"
    ),
    "data_dir": Key(
        str, None, "directory for durable state, relative to the config file (default: "
        "`$XDG_DATA_HOME/warrenmq` or `~/.local/share/warrenmq`)",
    ),
    "heartbeat": Key(
        int, 60, "heartbeat seconds proposed to clients, `0` for none",
        "an integer from 0 to 65535", _range(0, MAX_SHORT),
    ),
    "frame_max": Key(
        int, 131072, "largest frame the broker proposes and accepts, in bytes",
        "an integer from 4096 to 2147483647", _range(4096, 2**31 - 1),
    ),
    "channel_max": Key(
        int, 2047, "most channels open at once on one connection",
        "an integer from 1 to 65535", _range(1, MAX_SHORT),
    ),
    "max_message_size": Key(
        int, 128 * 1024 * 1024, "largest message body accepted, in bytes",
        "an integer from 1 to 536870912", _range(1, 512 * 1024 * 1024),
    ),
    "handshake_timeout": Key(
        float, 10.0, "seconds a client has from connecting to `connection.open`",
        "a number of seconds above 0", lambda v: 0 < v < float("inf"),
    ),
    "user_limits": Key(
        dict, {}, "limits per user name, as `rabbitmqctl set_user_limits` "
        "(`{ guest = { max-connections = 10, max-channels = 50 } }`)",
    ),
    "memory_high_watermark": Key(
        float, 0.4, "fraction of physical memory above which publishers are blocked; `0` off",
        "a number from 0 to 1", _range(0, 1),
    ),
    "memory_limit": Key(
        int, None, "bytes held above which publishers are blocked (instead of the watermark)",
        "a positive integer (bytes)", _range(1),
    ),
    "memory_check_interval": Key(
        float, 0.25, "seconds between memory checks", "a number above 0", lambda v: v > 0
    ),
    "disk_free_limit": Key(
        (int, str), DEFAULT_LIMIT, "free space on the data directory's filesystem below which "
        "publishers are blocked: bytes, or a size such as `\"50MB\"` or `\"1GiB\"`; `0` off",
        SIZE_FORMAT, lambda v: _size(v) is not None,
    ),
    "disk_free_limit_relative": Key(
        float, None, "the limit as a multiple of physical memory instead (`1.0`: as much free "
        "disk as RAM), as RabbitMQ's `disk_free_limit.relative`",
        "a number above 0", lambda v: 0 < v < float("inf"),
    ),
    "disk_check_interval": Key(
        float, 10.0, "longest seconds between free disk space checks (sooner near the limit)",
        "a number above 0", lambda v: 0 < v < float("inf"),
    ),
    "shutdown_grace": Key(
        float, 5.0, "seconds connections get to close cleanly at shutdown",
        "a number of seconds, 0 or more", _range(0),
    ),
    "log_level": Key(
        str, "info", "log verbosity on stderr", "one of: " + ", ".join(LOG_LEVELS),
        lambda v: v in LOG_LEVELS,
    ),
    "definitions": Key(
        (str, list), None, "definitions file(s) in RabbitMQ's JSON format to import at start",
        "a file name or a list of file names",
        lambda v: isinstance(v, str) or all(isinstance(item, str) for item in v),
    ),
    "loopback_users": Key(
        list, frozenset({"guest"}), "users who may log in from loopback addresses only",
        "a list of user names", lambda v: all(isinstance(item, str) for item in v),
    ),
    "login_failure_delay": Key(
        float, 0.25, "seconds an address's next login waits after its second failure in a row "
        "(doubling with each further one)", "a number of seconds, 0 or more", _range(0),
    ),
    "login_failure_max_delay": Key(
        float, 5.0, "the longest wait of a failing address's logins",
        "a number of seconds, 0 or more", _range(0),
    ),
    "mqtt_max_packet_size": Key(
        int, 256 * 1024 * 1024, "largest MQTT packet accepted from a logged-in client, in bytes",
        "an integer from 1 to 268435460", _range(1, 268_435_460),
    ),
    "mqtt_vhost": Key(str, "/", "vhost of MQTT clients whose user name has no `vhost:` prefix"),
    "mqtt_allow_anonymous": Key(
        bool, True, "MQTT clients that send no user name log in as `mqtt_default_user`"
    ),
    "mqtt_default_user": Key(str, "guest", "the user anonymous MQTT clients log in as"),
    "mqtt_default_password": Key(str, "guest", "that user's password"),
}  # fmt: skip

TLS_KEYS: dict[str, Key] = {
    "certfile": Key(str, None, "the listener's certificate chain (PEM)", required=True),
    "keyfile": Key(str, None, "the certificate's private key (PEM); default: in `certfile`"),
    "cafile": Key(str, None, "CA certificates that client certificates are checked against"),
    "verify_peer": Key(bool, False, "ask clients for a certificate signed by `cafile`"),
    "fail_if_no_peer_cert": Key(
        bool, True, "with `verify_peer`, refuse clients that send no certificate"
    ),
}

LISTENER_KEYS: dict[str, Key] = {
    "transport": Key(str, "tcp", "a registered transport"),
    "protocol": Key(str, "amqp", "a registered protocol"),
    "host": Key(str, "127.0.0.1", "address to listen on"),
    "port": Key(
        int, None, "port; default: the protocol's (5672 for AMQP, 5671 with TLS)",
        "an integer from 0 to 65535", _range(0, MAX_SHORT),
    ),
    "tls": Key(dict, None, "TLS settings (a table, see below)"),
}  # fmt: skip

PLUGINS_KEYS: dict[str, Key] = {
    "blocked": Key(list, [], "entry-point plugins not to load", "a list of plugin names"),
    "enabled": Key(
        list, None, "if given, the only non-essential entry-point plugins to load",
        "a list of plugin names",
    ),
}  # fmt: skip

VHOST_KEYS: dict[str, Key] = {
    "name": Key(str, None, "the virtual host's name", required=True),
    "description": Key(str, "", "free text"),
    "limits": Key(
        dict,
        {},
        "as `rabbitmqctl set_vhost_limits`: `{ max-connections = 100, max-queues = 1000 }`",
    ),
}

POLICY_KEYS: dict[str, Key] = {
    "name": Key(str, None, "the policy's name", required=True),
    "vhost": Key(str, "/", "its virtual host"),
    "pattern": Key(str, None, "regular expression searched in names", required=True),
    "apply-to": Key(
        str, "all", "what it applies to", "one of: queues, exchanges, all",
        lambda v: v in ("queues", "exchanges", "all"),
    ),
    "priority": Key(int, 0, "the highest priority among matching policies applies"),
    "definition": Key(dict, None, "the arguments it sets", required=True),
}  # fmt: skip

EXCHANGE_KEYS: dict[str, Key] = {
    "name": Key(str, None, "the exchange's name", required=True),
    "vhost": Key(str, "/", "its virtual host"),
    "type": Key(str, None, "a registered exchange type", required=True),
    "durable": Key(bool, True, "survives a restart (with a store that persists)"),
    "auto_delete": Key(bool, False, "deleted when its last binding goes"),
    "internal": Key(bool, False, "clients cannot publish to it"),
    "arguments": Key(dict, {}, "exchange arguments (`alternate-exchange`...)"),
}
QUEUE_KEYS: dict[str, Key] = {
    "name": Key(str, None, "the queue's name", required=True),
    "vhost": Key(str, "/", "its virtual host"),
    "durable": Key(bool, True, "survives a restart (with a store that persists)"),
    "auto_delete": Key(bool, False, "deleted when its last consumer goes"),
    "arguments": Key(dict, {}, "queue arguments (`x-message-ttl`...)"),
    "type": Key(str, "classic", "queue type (same as the `x-queue-type` argument)"),
}
BINDING_KEYS: dict[str, Key] = {
    "source": Key(str, None, "the exchange messages come from", required=True),
    "vhost": Key(str, "/", "its virtual host"),
    "destination": Key(str, None, "the queue or exchange they go to", required=True),
    "destination_type": Key(
        str, "queue", "", "queue or exchange", lambda v: v in ("queue", "exchange")
    ),
    "routing_key": Key(str, "", "the binding key"),
    "arguments": Key(dict, {}, "binding arguments (`x-match`... for headers exchanges)"),
}


# -- the extension point for users and permissions ---------------------------------------------

#: A handler for a top-level section this module does not know itself: it gets the section's
#: value (as tomllib decoded it), the settings being built, and the section's key path; it
#: stores what it needs on the settings and raises ``ConfigProblem`` for a bad key.
SectionHandler = Callable[[Any, Settings, KeyPath], None]

_ACCESS_ERROR = re.compile(r"(?:\.([A-Za-z_]+))?: (.*)", re.DOTALL)


def _access_problem(error: ConfigError, prefix: str, path: KeyPath) -> ConfigProblem:
    """``access_config``'s error (``PREFIX.key: text``) as a problem at ``path`` + key."""
    match = _ACCESS_ERROR.fullmatch(str(error).removeprefix(prefix))
    if match is None:
        return ConfigProblem(path, str(error))
    key = match.group(1)
    return ConfigProblem((*path, key) if key else path, match.group(2))


def _users(value: Any, settings: Settings, path: KeyPath) -> None:
    """``[users.NAME]``: a configured user (replacing the default guest)."""
    if not isinstance(value, dict):
        raise ConfigProblem(path, f"expected a table of [users.NAME] tables, got {_shown(value)}")
    access = settings.access = settings.access or Access()
    for name, entry in value.items():
        try:
            access.users.update(users_from_toml({name: entry}, "users"))
        except ConfigError as error:
            raise _access_problem(error, f"users.{name}", (*path, name)) from None


def _permissions(value: Any, settings: Settings, path: KeyPath) -> None:
    """``[[permissions]]`` of users of ``[users]`` or of the config's definitions files (or
    of the default guest when there are none) in vhosts that the config or those files make."""
    items = _array(value, path, "a list of [[permissions]]")
    access = settings.access = settings.access or Access()
    from_files = [
        str(user.get("name"))
        for item in settings.definitions
        for user in item.extras.get("users", [])
    ]
    users = [*access.users, *from_files] or ["guest"]
    vhosts = list(settings.vhosts)
    vhosts += [name for item in settings.definitions for name in item.vhosts]
    for index, entry in enumerate(items):
        where = (*path, index)
        if isinstance(entry, dict) and "user" not in entry:
            raise ConfigProblem(where, "missing key 'user' in [[permissions]] (a user name)")
        try:
            ((user, vhost), permission), *_ = permissions_from_toml([entry], "permissions").items()
        except ConfigError as error:
            raise _access_problem(error, "permissions[0]", where) from None
        if user not in users:
            raise ConfigProblem(
                (*where, "user"),
                f"no user '{user}' in [users] or the definitions files (known: "
                f"{', '.join(sorted(users))}); users of the access file get their permissions "
                "with `warrenmq permission set`",
            )
        if vhost not in vhosts:
            raise ConfigProblem(
                (*where, "vhost"),
                f"no virtual host '{vhost}' (add it to [[vhosts]]; known: {', '.join(vhosts)})",
            )
        if (user, vhost) in access.permissions:
            raise ConfigProblem(where, f"user '{user}' already has permissions in vhost '{vhost}'")
        access.permissions[(user, vhost)] = permission


#: top-level section name -> handler, called in this order after the other sections; any
#: other unknown top-level key is an error.
SECTION_HANDLERS: dict[str, SectionHandler] = {"users": _users, "permissions": _permissions}

TOP_LEVEL = (
    "broker",
    "listeners",
    "plugins",
    "vhosts",
    "policies",
    "exchanges",
    "queues",
    "bindings",
)


# -- loading -----------------------------------------------------------------------------------


@dataclass
class Config:
    """A checked config file: the broker's settings plus what only the command line uses."""

    path: Path
    settings: Settings
    log_level: str = "info"

    def summary(self) -> str:
        settings = self.settings
        lines = [f"{self.path}: ok"]
        for spec in settings.effective_listeners():
            tls = " (tls)" if spec.tls is not None else ""
            lines.append(
                f"  listener: {spec.protocol} on {spec.transport} {spec.host}:{spec.port}{tls}"
            )
        lines.append(f"  vhosts: {', '.join(settings.vhosts)}")
        if settings.blocked_plugins:
            lines.append(f"  blocked plugins: {', '.join(sorted(settings.blocked_plugins))}")
        for name in sorted(settings.plugin_config):
            lines.append(f"  plugin section: {name}")
        for definitions in settings.definitions:
            lines.append(f"  definitions from {definitions.source}: {definitions.summary()}")
        if settings.access is not None:
            if settings.access.users:
                lines.append(f"  users: {', '.join(sorted(settings.access.users))}")
            if settings.access.permissions:
                lines.append(f"  permissions: {len(settings.access.permissions)}")
        return "\n".join(lines)


def load(path: Path | str, plugins: Iterable[Any] = ()) -> Config:
    """Read and check the config file at ``path``; ``ConfigError`` if anything is wrong.

    ``plugins`` are extra plugin objects (as ``Broker(settings, plugins)`` takes them), whose
    config sections count too.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text: {error}") from None
    return parse(text, path, plugins)


def parse(text: str, path: Path, plugins: Iterable[Any] = ()) -> Config:
    """Check config ``text`` read from ``path`` (relative file names count from its folder)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    try:
        return _build(data, text, path, tuple(plugins))
    except ConfigProblem as problem:
        raise ConfigError(_located(text, path, problem)) from None


def _located(text: str, path: Path, problem: ConfigProblem) -> str:
    line = line_of(text, problem.path)
    where = f"{path}, line {line}" if line else str(path)
    return f"{where}: {dotted(problem.path)}: {problem.problem}"


def dotted(path: KeyPath) -> str:
    """``("listeners", 0, "port")`` as ``listeners[0].port``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            shown = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            text += f".{shown}" if text else shown
    return text or "(top level)"


def _build(data: dict[str, Any], text: str, path: Path, extra_plugins: tuple[Any, ...]) -> Config:
    base = path.parent
    for name in data:
        if name not in TOP_LEVEL and name not in SECTION_HANDLERS:
            known = sorted({*TOP_LEVEL, *SECTION_HANDLERS})
            raise ConfigProblem((name,), f"unknown section (expected one of: {', '.join(known)})")
    broker = check_table(data.get("broker", {}), BROKER_KEYS, ("broker",), "[broker]")
    if "disk_free_limit" in data.get("broker", {}) and broker["disk_free_limit_relative"]:
        raise ConfigProblem(
            ("broker", "disk_free_limit_relative"),
            "give disk_free_limit (bytes) or disk_free_limit_relative (of RAM), not both",
        )
    settings = Settings(
        default_dispatch=broker["default_dispatch"],
        store=broker["store"],
        data_dir=_relative(base, broker["data_dir"]),
        heartbeat=broker["heartbeat"],
        frame_max=broker["frame_max"],
        channel_max=broker["channel_max"],
        max_message_size=broker["max_message_size"],
        handshake_timeout=broker["handshake_timeout"],
        user_limits={
            name: _limits(UserLimits, value, ("broker", "user_limits", name))
            for name, value in broker["user_limits"].items()
        },
        memory_limit=broker["memory_limit"],
        memory_high_watermark=broker["memory_high_watermark"],
        memory_check_interval=broker["memory_check_interval"],
        disk_free_limit=_size(broker["disk_free_limit"]) or 0,
        disk_free_limit_relative=broker["disk_free_limit_relative"],
        disk_check_interval=broker["disk_check_interval"],
        shutdown_grace=broker["shutdown_grace"],
        loopback_users=frozenset(broker["loopback_users"]),
        login_failure_delay=broker["login_failure_delay"],
        login_failure_max_delay=broker["login_failure_max_delay"],
        mqtt_max_packet_size=broker["mqtt_max_packet_size"],
        mqtt_vhost=broker["mqtt_vhost"],
        mqtt_allow_anonymous=broker["mqtt_allow_anonymous"],
        mqtt_default_user=broker["mqtt_default_user"],
        mqtt_default_password=broker["mqtt_default_password"],
    )
    config = Config(path, settings, broker["log_level"])
    loaded = settings.loaded_plugins = _plugins(
        data.get("plugins", {}), settings, extra_plugins, base
    )
    settings.vhosts = _vhosts(data.get("vhosts", []))
    settings.vhost_limits = _vhost_limits(data.get("vhosts", []))
    if "listeners" in data:
        settings.listeners = _listeners(data["listeners"], base, loaded)
    _check_dispatch_and_store(settings, loaded)
    files = broker["definitions"]
    for index, name in enumerate([files] if isinstance(files, str) else files or []):
        file = _relative(base, name)
        assert file is not None
        key: KeyPath = ("broker", "definitions") if isinstance(files, str) else (
            "broker", "definitions", index
        )  # fmt: skip
        try:
            settings.definitions.append(load_definitions(file))
        except DefinitionsError as error:
            raise ConfigProblem(key, str(error)) from None
    own = _topology(data, str(path))
    if own is not None:
        lines = key_lines(text)
        for section in ("exchanges", "queues", "bindings"):
            for index in range(len(getattr(own, section))):
                line = lines.get((section, index))
                if line is not None:
                    own.lines[(section, index)] = line
        settings.definitions.append(own)
    _check_vhosts_exist(data, settings)
    for name, handler in SECTION_HANDLERS.items():
        if name in data:
            handler(data[name], settings, (name,))
    return config


def _relative(base: Path, name: str | None) -> Path | None:
    if name is None:
        return None
    file = Path(name).expanduser()
    return file if file.is_absolute() else base / file


def _array(value: Any, path: KeyPath, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigProblem(path, f"expected {what}, got {_shown(value)}")
    return value


def _plugins(
    table: Any, settings: Settings, extra: tuple[Any, ...], base: Path | None = None
) -> Plugins:
    sections: dict[str, Any] = {}
    own: dict[str, Any] = {}
    if not isinstance(table, dict):
        raise ConfigProblem(("plugins",), f"expected a table, got {_shown(table)}")
    for name, value in table.items():
        (sections if isinstance(value, dict) else own)[name] = value
    values = check_table(own, PLUGINS_KEYS, ("plugins",), "[plugins]")
    installed = sorted({ep.name for ep in entry_points(group=GROUP)})
    for key in ("blocked", "enabled"):
        for index, name in enumerate(values[key] or []):
            if not isinstance(name, str) or name not in installed:
                raise ConfigProblem(
                    ("plugins", key, index),
                    f"no installed plugin is named {_shown(name)} "
                    f"(installed: {', '.join(installed)})",
                )
    blocked = set(values["blocked"])
    for index, name in enumerate(values["blocked"]):
        if name in ESSENTIAL:
            raise ConfigProblem(
                ("plugins", "blocked", index), f"plugin '{name}' is essential and cannot be blocked"
            )
    if values["enabled"] is not None:
        blocked |= set(installed) - set(values["enabled"]) - ESSENTIAL
    settings.blocked_plugins = frozenset(blocked)
    try:
        loaded = load_plugins(settings.blocked_plugins, extra)
    except PluginError as error:
        raise ConfigProblem(("plugins",), str(error)) from None
    registry = loaded.registries["config_sections"]
    for name, value in sections.items():
        section = registry.get(name)
        if section is None:
            if name in blocked:
                continue  # the section of a blocked plugin is kept for when it comes back
            if any(failure.name == name for failure in loaded.failed):
                continue  # the plugin failed to load (logged): the broker runs without it
            known = ", ".join(sorted(registry)) or "none"
            raise ConfigProblem(
                ("plugins", name),
                f"no loaded plugin has a config section '{name}' (sections: {known})"
                + loaded.failure_note(),
            )
        settings.plugin_config[name] = section.validate(value, ("plugins", name), base)
    return loaded


def _vhosts(value: Any) -> tuple[str, ...]:
    names = ["/"]
    for index, item in enumerate(_array(value, ("vhosts",), "a list of virtual hosts")):
        if isinstance(item, str):
            name = item
        else:
            name = check_table(item, VHOST_KEYS, ("vhosts", index), "[[vhosts]]")["name"]
        if not name:
            raise ConfigProblem(("vhosts", index), "expected a non-empty virtual host name")
        if name not in names:
            names.append(name)
    return tuple(names)


def _vhost_limits(value: list[Any]) -> dict[str, VhostLimits]:
    """The ``limits`` of each ``[[vhosts]]`` table (``_vhosts`` has checked the rest)."""
    found = {}
    for index, item in enumerate(value):
        if isinstance(item, dict) and item.get("limits"):
            path: KeyPath = ("vhosts", index, "limits")
            found[item["name"]] = _limits(VhostLimits, item["limits"], path)
    return found


def _limits(kind: type[L], table: Any, path: KeyPath) -> L:
    """A table of limits in RabbitMQ's names (``max-connections = 10``), -1 for none."""
    if not isinstance(table, dict):
        raise ConfigProblem(path, f"expected a table of limits, got {_shown(table)}")
    limits = kind()
    for key, value in table.items():
        if not _is(value, int):
            raise ConfigProblem((*path, key), f"expected an integer, got {_shown(value)}")
        try:
            limits = limits.updated({key: value})
        except LimitsError as error:
            raise ConfigProblem((*path, key), str(error)) from None
    return limits


def _listeners(value: Any, base: Path, loaded: Plugins) -> list[Any]:
    from .protocol import ListenerSpec

    specs = []
    transports = loaded.registries["transports"]
    protocols = loaded.registries["protocols"]
    for index, item in enumerate(_array(value, ("listeners",), "a list of [[listeners]]")):
        where: KeyPath = ("listeners", index)
        values = check_table(item, LISTENER_KEYS, where, "[[listeners]]")
        for key, registry in (("transport", transports), ("protocol", protocols)):
            if values[key] not in registry:
                raise ConfigProblem(
                    (*where, key),
                    f"no {key} '{values[key]}' is registered "
                    f"(registered: {', '.join(sorted(registry)) or 'none'})",
                )
        tls = None if values["tls"] is None else _tls(values["tls"], base, (*where, "tls"))
        port = values["port"]
        if port is None:
            port = protocols[values["protocol"]].default_port
            if tls is not None and values["protocol"] == "amqp":
                port = AMQPS_PORT
            if not port:
                raise ConfigProblem(where, f"missing key 'port' ({LISTENER_KEYS['port'].expected})")
        specs.append(
            ListenerSpec(values["transport"], values["protocol"], values["host"], port, tls=tls)
        )
    return specs


def _tls(table: Any, base: Path, where: KeyPath) -> TLSOptions:
    """A listener's ``tls`` table as ``TLSOptions``, its files checked: they are loaded here
    as the listener will load them, so a bad file is reported with its line."""
    values = check_table(table, TLS_KEYS, where, "[listeners.tls]")
    if values["verify_peer"] and values["cafile"] is None:
        raise ConfigProblem((*where, "verify_peer"), "verify_peer = true needs a cafile")
    files = {key: _relative(base, values[key]) for key in ("certfile", "keyfile", "cafile")}
    for key, file in files.items():
        if file is not None and not file.is_file():
            raise ConfigProblem((*where, key), f"no such file: {file}")
    assert files["certfile"] is not None
    options = TLSOptions(
        certfile=files["certfile"],
        keyfile=files["keyfile"],
        cafile=files["cafile"],
        verify_peer=values["verify_peer"],
        fail_if_no_peer_cert=values["fail_if_no_peer_cert"],
    )
    try:
        options.server_context()
    except ConfigError as error:
        raise ConfigProblem(where, str(error)) from None
    return options


def _check_dispatch_and_store(settings: Settings, loaded: Plugins) -> None:
    for key, registry_name in (("default_dispatch", "dispatch_policies"), ("store", "stores")):
        registry = loaded.registries[registry_name]
        if getattr(settings, key) not in registry:
            raise ConfigProblem(
                ("broker", key),
                f"expected a registered {registry.kind} ({', '.join(sorted(registry))}), "
                f"got {_shown(getattr(settings, key))}",
            )


def _topology(data: Mapping[str, Any], source: str) -> Definitions | None:
    """The config's own policies, exchanges, queues and bindings, as definitions."""
    sections = ("policies", "exchanges", "queues", "bindings")
    if not any(key in data for key in sections):
        return None
    result = Definitions(source)
    for index, item in enumerate(_array(data.get("policies", []), ("policies",), "[[policies]]")):
        values = check_table(item, POLICY_KEYS, ("policies", index), "[[policies]]")
        try:
            result.policies.append(
                Policy(
                    values["name"],
                    values["pattern"],
                    values["definition"],
                    values["vhost"],
                    values["apply-to"],
                    values["priority"],
                )
            )
        except PolicyError as error:
            key = "pattern" if "pattern" in str(error) else "definition"
            raise ConfigProblem(("policies", index, key), str(error)) from None
    for section, keys in (
        ("exchanges", EXCHANGE_KEYS),
        ("queues", QUEUE_KEYS),
        ("bindings", BINDING_KEYS),
    ):
        items = getattr(result, section)
        for index, item in enumerate(_array(data.get(section, []), (section,), f"[[{section}]]")):
            items.append(check_table(item, keys, (section, index), f"[[{section}]]"))
    return result


def _check_vhosts_exist(data: Mapping[str, Any], settings: Settings) -> None:
    """The config's own declarations name virtual hosts that [[vhosts]] or a definitions
    file creates."""
    known = list(settings.vhosts)
    for definitions in settings.definitions:
        known += [name for name in definitions.vhosts if name not in known]
    for section in ("policies", "exchanges", "queues", "bindings"):
        for index, item in enumerate(data.get(section, [])):
            vhost = item.get("vhost", "/")
            if vhost not in known:
                raise ConfigProblem(
                    (section, index, "vhost"),
                    f"no virtual host '{vhost}' (add it to [[vhosts]]; known: {', '.join(known)})",
                )


# -- finding a key's line ----------------------------------------------------------------------

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?")
_ASSIGNMENT = re.compile(rf"^\s*({_DOTTED})\s*=")


def _parts(dotted_key: str) -> list[str]:
    return [
        part.strip()[1:-1] if part.strip()[:1] in "\"'" else part.strip()
        for part in re.findall(_KEY_PART, dotted_key)
    ]


def key_lines(text: str) -> dict[KeyPath, int]:
    """Each key's (and table header's) line, 1-based, found by scanning the text: tomllib
    gives no positions. Arrays of tables count their elements, so ``listeners[1].port`` is
    the ``port`` under the second ``[[listeners]]``."""
    lines: dict[KeyPath, int] = {}
    arrays: dict[KeyPath, int] = {}
    table: KeyPath = ()
    in_string = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.count('"""') % 2 or line.count("'''") % 2:
            in_string = not in_string
            if not in_string:
                continue
        elif in_string:
            continue
        header = _HEADER.match(line)
        if header:
            parts = _parts(header.group(2))
            resolved: list[str | int] = []
            for part in parts[:-1]:
                resolved.append(part)
                if tuple(resolved) in arrays:
                    resolved.append(arrays[tuple(resolved)])
            resolved.append(parts[-1])
            if header.group(1) == "[[":
                key = tuple(resolved)
                arrays[key] = arrays.get(key, -1) + 1
                resolved.append(arrays[key])
            table = tuple(resolved)
            lines.setdefault(table, number)
            continue
        assignment = _ASSIGNMENT.match(line)
        if assignment:
            lines.setdefault((*table, *_parts(assignment.group(1))), number)
    return lines


def line_of(text: str, path: KeyPath) -> int | None:
    """The line of ``path``, or of its nearest enclosing key or table that has one."""
    lines = key_lines(text)
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None

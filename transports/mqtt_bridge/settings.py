"""The bridge's config section, ``[plugins.mqtt-bridge]``: one ``[[plugins.mqtt-bridge.bridge]]``
table per remote broker, each with its ``[[...bridge.topic]]`` rules, checked deeply so that a
typo stops start-up with the file, line and key (as every config key does).

A topic rule is mosquitto's ``topic PATTERN DIRECTION QOS LOCAL-PREFIX REMOTE-PREFIX`` as a
table: the local topic is ``local_prefix + T`` where the remote topic is ``remote_prefix + T``
for each ``T`` that ``pattern`` matches.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warrenmq.config import ConfigProblem, ConfigSection, Key, KeyPath, check_table
from warrenmq.transports.mqtt.topics import BadTopic, check_filter, matches

SECTION = "mqtt-bridge"
DIRECTIONS = ("out", "in", "both")
#: bridge names become queue names and file keys: keep them plain
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _range(low: float, high: float | None = None) -> Any:
    return lambda value: value >= low and (high is None or value <= high)


TOPIC_KEYS: dict[str, Key] = {
    "pattern": Key(str, None, "topic filter, with `+` and `#`, under the prefixes", required=True),
    "direction": Key(
        str, "out", "`out` (local to remote), `in` (remote to local) or `both`",
        "one of: out, in, both", lambda v: v in DIRECTIONS,
    ),
    "qos": Key(
        int, 0, "the highest QoS of the forwarded messages", "0, 1 or 2", _range(0, 2)
    ),
    "local_prefix": Key(str, "", "put before `pattern` on the local side"),
    "remote_prefix": Key(str, "", "put before `pattern` on the remote side"),
}  # fmt: skip

TLS_KEYS: dict[str, Key] = {
    "cafile": Key(str, None, "CA certificates the remote's certificate is checked against "
                  "(default: the system's)"),
    "certfile": Key(str, None, "the bridge's client certificate (PEM), if the remote asks"),
    "keyfile": Key(str, None, "its private key (PEM); default: in `certfile`"),
    "verify": Key(bool, True, "check the remote's certificate and host name"),
}  # fmt: skip

BRIDGE_KEYS: dict[str, Key] = {
    "name": Key(str, None, "the bridge's name: its queue, client id and status line",
                "letters, digits, `_`, `.` and `-`", lambda v: NAME.fullmatch(v) is not None,
                required=True),
    "host": Key(str, None, "the remote MQTT broker's address", required=True),
    "port": Key(int, None, "its port (default: 1883, or 8883 with `tls`)",
                "an integer from 1 to 65535", _range(1, 65535)),
    "vhost": Key(str, "/", "the local virtual host whose `amq.topic` is bridged"),
    "client_id": Key(str, None, "client id at the remote (default: `HOSTNAME.NAME`)"),
    "username": Key(str, None, "user name at the remote"),
    "password": Key(str, None, "its password (needs `username`)"),
    "keepalive": Key(int, 60, "MQTT keepalive in seconds, `0` for none",
                     "an integer from 0 to 65535", _range(0, 65535)),
    "clean_session": Key(bool, False, "`false`: the remote keeps the bridge's subscriptions "
                         "and QoS 1/2 messages for it while it is away"),
    "try_private": Key(bool, True, "connect as a bridge (mosquitto's `try_private`), so that the "
                       "remote does not send the bridge's own messages back"),
    "reconnect_delay": Key(float, 1.0, "seconds before the first reconnection, doubled after "
                           "each failure", "a number of seconds above 0",
                           lambda v: 0 < v < float("inf")),
    "reconnect_delay_max": Key(float, 60.0, "the longest wait between reconnections",
                               "a number of seconds above 0", lambda v: 0 < v < float("inf")),
    "max_inflight": Key(int, 100, "QoS 1/2 messages sent to the remote and not yet "
                        "acknowledged, at most", "an integer from 1 to 65535", _range(1, 65535)),
    "tls": Key(dict, None, "TLS to the remote (a table, below)"),
    "topic": Key(list, None, "the topic rules (tables, below)", "a list of [[...topic]] tables",
                 required=True),
}  # fmt: skip

SECTION_KEYS: dict[str, Key] = {
    "bridge": Key(list, [], "one table per remote broker", "a list of [[...bridge]] tables"),
}


@dataclass(frozen=True)
class TopicRule:
    pattern: str
    direction: str
    qos: int
    local_prefix: str
    remote_prefix: str

    @property
    def local_filter(self) -> str:
        return self.local_prefix + self.pattern

    @property
    def remote_filter(self) -> str:
        return self.remote_prefix + self.pattern

    @property
    def out(self) -> bool:
        return self.direction in ("out", "both")

    @property
    def into(self) -> bool:
        return self.direction in ("in", "both")

    def to_remote(self, topic: str) -> str | None:
        """The remote topic of local ``topic``, or None if this rule does not take it."""
        if not matches(self.local_filter, topic):
            return None
        return self.remote_prefix + topic[len(self.local_prefix) :]

    def to_local(self, topic: str) -> str | None:
        """The local topic of remote ``topic``, or None if this rule does not take it."""
        if not matches(self.remote_filter, topic):
            return None
        return self.local_prefix + topic[len(self.remote_prefix) :]


@dataclass(frozen=True)
class TLSSettings:
    cafile: Path | None
    certfile: Path | None
    keyfile: Path | None
    verify: bool

    def context(self) -> ssl.SSLContext:
        """The client-side context; ``OSError``/``ssl.SSLError`` for a file that will not load."""
        context = ssl.create_default_context(cafile=self.cafile)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.certfile is not None:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context


@dataclass(frozen=True)
class BridgeSettings:
    name: str
    host: str
    port: int
    vhost: str
    client_id: str
    username: str | None
    password: str | None
    keepalive: int
    clean_session: bool
    try_private: bool
    reconnect_delay: float
    reconnect_delay_max: float
    max_inflight: int
    tls: TLSSettings | None
    topics: tuple[TopicRule, ...]

    @property
    def out_rules(self) -> list[TopicRule]:
        return [rule for rule in self.topics if rule.out]

    @property
    def in_rules(self) -> list[TopicRule]:
        return [rule for rule in self.topics if rule.into]

    @property
    def queue_name(self) -> str:
        """The durable queue where messages for the remote wait."""
        return f"mqtt-bridge.{self.name}"


class BridgeSection(ConfigSection):
    """``[plugins.mqtt-bridge]``: checks every bridge and topic table, and loads TLS files."""

    def validate(
        self, table: Mapping[str, Any], path: KeyPath, base: Path | None = None
    ) -> dict[str, Any]:
        values = super().validate(table, path, base)
        values["bridge"] = [
            _bridge(item, (*path, "bridge", index), base)
            for index, item in enumerate(values["bridge"])
        ]
        names: set[str] = set()
        for index, item in enumerate(values["bridge"]):
            if item["name"] in names:
                raise ConfigProblem(
                    (*path, "bridge", index, "name"), f"a second bridge named '{item['name']}'"
                )
            names.add(item["name"])
        return values


def _given(item: Any) -> Any:
    """A table without its None values (absent keys in TOML; defaults once checked), so
    that checking values already checked gives the same values."""
    if not isinstance(item, dict):
        return item
    return {key: value for key, value in item.items() if value is not None}


def _bridge(item: Any, where: KeyPath, base: Path | None) -> dict[str, Any]:
    values = check_table(_given(item), BRIDGE_KEYS, where, f"[[plugins.{SECTION}.bridge]]")
    if values["password"] is not None and values["username"] is None:
        raise ConfigProblem((*where, "password"), "a password needs a username")
    if values["reconnect_delay_max"] < values["reconnect_delay"]:
        raise ConfigProblem(
            (*where, "reconnect_delay_max"),
            f"expected at least reconnect_delay ({values['reconnect_delay']})",
        )
    if values["tls"] is not None:
        values["tls"] = _tls(values["tls"], (*where, "tls"), base)
    topics = values["topic"]
    if not topics:
        raise ConfigProblem((*where, "topic"), "a bridge needs at least one [[...topic]] rule")
    values["topic"] = [_topic(rule, (*where, "topic", i)) for i, rule in enumerate(topics)]
    return values


def _topic(item: Any, where: KeyPath) -> dict[str, Any]:
    values = check_table(item, TOPIC_KEYS, where, f"[[plugins.{SECTION}.bridge.topic]]")
    for key in ("local_prefix", "remote_prefix"):
        if "+" in values[key] or "#" in values[key]:
            raise ConfigProblem((*where, key), "a prefix cannot hold a wildcard (+ or #)")
    if not values["pattern"] and not (values["local_prefix"] and values["remote_prefix"]):
        raise ConfigProblem(
            (*where, "pattern"), "an empty pattern needs both a local_prefix and a remote_prefix"
        )
    for key, prefix in (("local_prefix", "local"), ("remote_prefix", "remote")):
        try:
            check_filter(values[key] + values["pattern"])
        except BadTopic as exc:
            key = "pattern" if values["pattern"] else key
            raise ConfigProblem((*where, key), f"the {prefix} filter is not valid: {exc}") from None
    return values


def _tls(table: Any, where: KeyPath, base: Path | None) -> dict[str, Any]:
    values = check_table(_given(table), TLS_KEYS, where, f"[plugins.{SECTION}.bridge.tls]")
    for key in ("cafile", "certfile", "keyfile"):
        name = values[key]
        if name is None:
            continue
        file = Path(name).expanduser()
        if not file.is_absolute() and base is not None:
            file = base / file
        if not file.is_file():
            raise ConfigProblem((*where, key), f"no such file: {file}")
        values[key] = str(file)
    if values["keyfile"] is not None and values["certfile"] is None:
        raise ConfigProblem((*where, "keyfile"), "a keyfile needs a certfile")
    try:
        _tls_settings(values).context()
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigProblem(where, f"cannot load the TLS files: {exc}") from None
    return values


def _tls_settings(values: Mapping[str, Any]) -> TLSSettings:
    def path(key: str) -> Path | None:
        return None if values[key] is None else Path(values[key])

    return TLSSettings(path("cafile"), path("certfile"), path("keyfile"), values["verify"])


def section() -> BridgeSection:
    return BridgeSection(SECTION, SECTION_KEYS, "bridges to other MQTT brokers")


def bridges(values: Mapping[str, Any]) -> list[BridgeSettings]:
    """The bridges of the section's values (checked again: values given in code, as
    ``Settings.plugin_config``, have not been; ``ConfigProblem`` if bad)."""
    checked = section().validate(dict(values), ("plugins", SECTION))
    found = []
    for item in checked["bridge"]:
        tls = None if item["tls"] is None else _tls_settings(item["tls"])
        port = item["port"] or (8883 if tls is not None else 1883)
        client_id = item["client_id"] or f"{socket.gethostname()}.{item['name']}"
        rules = tuple(TopicRule(**rule) for rule in item["topic"])
        found.append(
            BridgeSettings(
                item["name"], item["host"], port, item["vhost"], client_id,
                item["username"], item["password"], item["keepalive"], item["clean_session"],
                item["try_private"], item["reconnect_delay"], item["reconnect_delay_max"],
                item["max_inflight"], tls, rules,
            )
        )  # fmt: skip
    return found

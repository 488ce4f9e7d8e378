"""Definitions in RabbitMQ's JSON format (``rabbitmqctl export_definitions``): the topology.

A definitions file lists virtual hosts, exchanges, queues, bindings and policies, plus users,
permissions and parameters. ``parse`` checks a file's shape without a broker (``warrenmq
config check`` uses it); ``apply`` declares its contents in a broker; ``export`` writes a
broker's topology back in the same format, as RabbitMQ 3.10 does: every exchange but the
default and ``amq.*`` ones, every queue but exclusive ones, durable or not, and the bindings
between them.

Users and permissions are handed to the handlers in ``SECTION_IMPORTERS`` /
``SECTION_EXPORTERS``, which put them in the broker's access model (``Broker.import_access``)
and write them back with their hashes (topic permissions too). A section without a handler
(parameters) is kept as data in ``broker.definition_extras`` and written back unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .access import Access
from .access_config import (
    access_from_definitions,
    permissions_from_toml,
    topic_permissions_from_toml,
)
from .errors import BrokerError, ConfigError
from .limits import LimitsError, UserLimits, VhostLimits
from .policy import Policy, PolicyError

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("warrenmq.definitions")

#: sections of a definitions file kept as data unless a handler is registered for them
EXTRA_SECTIONS = ("users", "permissions", "topic_permissions", "parameters", "global_parameters")
#: the parameters component that holds a vhost's limits in RabbitMQ's definitions
VHOST_LIMITS = "vhost-limits"
#: sections this module declares itself
TOPOLOGY_SECTIONS = ("vhosts", "policies", "exchanges", "queues", "bindings")
#: informational keys of RabbitMQ's exports, ignored on import
VERSION_KEYS = ("rabbit_version", "rabbitmq_version", "product_name", "product_version")


class DefinitionsError(ValueError):
    """A definitions file that cannot be imported; the text names the file and the item."""


# -- users and permissions ----------------------------------------------------------------------


def _import_users(broker: Broker, items: list[dict[str, Any]]) -> None:
    """Users with their RabbitMQ hashes (checked by ``parse`` already)."""
    try:
        access = access_from_definitions({"users": items})
    except ConfigError as error:
        raise DefinitionsError(str(error)) from None
    broker.import_access(access)


def _import_permissions(broker: Broker, items: list[dict[str, Any]]) -> None:
    """Permissions of users and vhosts that exist by now (the file's own users and vhosts are
    imported before its permissions)."""
    known = {
        "users": [{"name": name} for name in broker.access.users],
        "vhosts": [{"name": name} for name in broker.vhosts],
        "permissions": items,
    }
    try:
        access = access_from_definitions(known, "the broker")
    except ConfigError as error:
        raise DefinitionsError(str(error).removeprefix("the broker: ")) from None
    broker.import_access(Access(permissions=access.permissions))


def _import_topic_permissions(broker: Broker, items: list[dict[str, Any]]) -> None:
    """Topic permissions of users and vhosts that exist by now, as ``_import_permissions``."""
    known = {
        "users": [{"name": name} for name in broker.access.users],
        "vhosts": [{"name": name} for name in broker.vhosts],
        "topic_permissions": items,
    }
    try:
        access = access_from_definitions(known, "the broker")
    except ConfigError as error:
        raise DefinitionsError(str(error).removeprefix("the broker: ")) from None
    broker.import_access(Access(topic_permissions=access.topic_permissions))


def _export_users(broker: Broker) -> list[dict[str, Any]]:
    """As RabbitMQ exports them: the hash and its algorithm, tags as a list, no limits."""
    users: list[dict[str, Any]] = broker.access.to_json()["users"]
    return [{**user, "limits": {}} for user in users]


def _export_permissions(broker: Broker) -> list[dict[str, Any]]:
    permissions: list[dict[str, Any]] = broker.access.to_json()["permissions"]
    return permissions


def _export_topic_permissions(broker: Broker) -> list[dict[str, Any]]:
    permissions: list[dict[str, Any]] = broker.access.to_json()["topic_permissions"]
    return permissions


# -- the extension point for users and permissions ---------------------------------------------

#: section name ("users", "permissions", "topic_permissions") -> function taking the broker and
#: the section's items (a list of dicts in RabbitMQ's format) at import, raising
#: ``DefinitionsError`` (the file's name is added). A section without one is kept as data.
SECTION_IMPORTERS: dict[str, Callable[[Broker, list[dict[str, Any]]], None]] = {
    "users": _import_users,
    "permissions": _import_permissions,
    "topic_permissions": _import_topic_permissions,
}
#: section name -> function returning the section's items for ``export``.
SECTION_EXPORTERS: dict[str, Callable[[Broker], list[dict[str, Any]]]] = {
    "users": _export_users,
    "permissions": _export_permissions,
    "topic_permissions": _export_topic_permissions,
}


@dataclass
class Definitions:
    """The parsed contents of one definitions file (or of a config file's topology)."""

    source: str = "definitions"
    vhosts: list[str] = field(default_factory=list)
    exchanges: list[dict[str, Any]] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    bindings: list[dict[str, Any]] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    #: users, permissions, topic_permissions, parameters, global_parameters: as in the file
    extras: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: (section, index) -> line in the source, where known (a config file's tables)
    lines: dict[tuple[str, int], int] = field(default_factory=dict)

    def where(self, section: str, index: int) -> str:
        """``source``, with the item's line and position when they are known."""
        line = self.lines.get((section, index))
        if line is None:
            return self.source
        return f"{self.source}, line {line}: {section}[{index}]"

    def summary(self) -> str:
        counts = [
            (len(self.vhosts), "vhost"),
            (len(self.exchanges), "exchange"),
            (len(self.queues), "queue"),
            (len(self.bindings), "binding"),
            (len(self.policies), "policy"),
        ]
        counts += [(len(items), key) for key, items in sorted(self.extras.items())]
        return ", ".join(f"{n} {_plural(what, n)}" for n, what in counts if n) or "nothing"


def _plural(word: str, n: int) -> str:
    if n == 1:
        return word.rstrip("s")
    if word.endswith("s"):
        return word
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


# -- reading ----------------------------------------------------------------------------------

_FIELDS: dict[str, dict[str, tuple[type, Any]]] = {
    # name -> (type, default; ... means required)
    "exchanges": {
        "name": (str, ...),
        "vhost": (str, "/"),
        "type": (str, ...),
        "durable": (bool, True),
        "auto_delete": (bool, False),
        "internal": (bool, False),
        "arguments": (dict, {}),
    },
    "queues": {
        "name": (str, ...),
        "vhost": (str, "/"),
        "durable": (bool, True),
        "auto_delete": (bool, False),
        "arguments": (dict, {}),
        "type": (str, "classic"),
    },
    "bindings": {
        "source": (str, ...),
        "vhost": (str, "/"),
        "destination": (str, ...),
        "destination_type": (str, "queue"),
        "routing_key": (str, ""),
        "arguments": (dict, {}),
    },
}
_TYPE_NAMES = {str: "a string", bool: "true or false", dict: "an object", int: "an integer"}


def load(path: Path | str) -> Definitions:
    """Read and check a definitions file; ``DefinitionsError`` names the file and the item."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DefinitionsError(f"cannot read definitions file {path}: {error.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DefinitionsError(
            f"{path}, line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"
        ) from None
    return parse(data, str(path))


def parse(data: Any, source: str = "definitions") -> Definitions:
    """Check the shape of decoded definitions (RabbitMQ's format) and return them."""
    if not isinstance(data, Mapping):
        raise DefinitionsError(f"{source}: expected a JSON object with definitions")
    result = Definitions(source)
    for key, value in data.items():
        if key in VERSION_KEYS:
            continue
        if key not in TOPOLOGY_SECTIONS and key not in EXTRA_SECTIONS:
            log.warning("%s: unknown section '%s' ignored", source, key)
            continue
        if not isinstance(value, list):
            raise DefinitionsError(f"{source}: '{key}' must be a list, got {_json_type(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise DefinitionsError(
                    f"{source}: {key}[{index}] must be an object, got {_json_type(item)}"
                )
    for index, item in enumerate(data.get("vhosts", [])):
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise DefinitionsError(f"{source}: vhosts[{index}]: 'name' must be a non-empty string")
        result.vhosts.append(name)
    for section in ("exchanges", "queues", "bindings"):
        items = getattr(result, section)
        for index, item in enumerate(data.get(section, [])):
            items.append(_checked(item, section, index, source))
    for index, item in enumerate(data.get("policies", [])):
        try:
            result.policies.append(Policy.from_json(item))
        except (PolicyError, TypeError) as error:
            raise DefinitionsError(
                f"{source}: policies[{index}] '{item.get('name', '?')}': {error}"
            ) from None
    for key in EXTRA_SECTIONS:
        if key in data:
            result.extras[key] = [dict(item) for item in data[key]]
    _check_access(data, source)
    return result


def _check_access(data: Mapping[str, Any], source: str) -> None:
    """Users' hashes and permissions' expressions are checked when the file is read; whether
    a permission's user and vhost exist is known only at import."""
    try:
        access_from_definitions({"users": data.get("users", [])}, source)
        permissions_from_toml(data.get("permissions", []), f"{source}: permissions")
        topic_permissions_from_toml(
            data.get("topic_permissions", []), f"{source}: topic_permissions"
        )
    except ConfigError as error:
        raise DefinitionsError(str(error)) from None


def _checked(item: Mapping[str, Any], section: str, index: int, source: str) -> dict[str, Any]:
    fields = _FIELDS[section]
    where = f"{source}: {section}[{index}]"
    if "name" in item and isinstance(item["name"], str):
        where += f" '{item['name']}'"
    unknown = sorted(set(item) - set(fields))
    if unknown:
        raise DefinitionsError(
            f"{where}: unknown field '{unknown[0]}' (expected: {', '.join(fields)})"
        )
    checked: dict[str, Any] = {}
    for name, (kind, default) in fields.items():
        if name not in item:
            if default is ...:
                raise DefinitionsError(f"{where}: missing '{name}'")
            checked[name] = dict(default) if isinstance(default, dict) else default
            continue
        value = item[name]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise DefinitionsError(
                f"{where}: '{name}' must be {_TYPE_NAMES.get(kind, kind.__name__)}, "
                f"got {_json_type(value)} {json.dumps(value)}"
            )
        checked[name] = value
    if section == "bindings" and checked["destination_type"] not in ("queue", "exchange"):
        raise DefinitionsError(
            f'{where}: \'destination_type\' must be "queue" or "exchange", '
            f"got {json.dumps(checked['destination_type'])}"
        )
    return checked


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return "null" if value is None else type(value).__name__


# -- importing --------------------------------------------------------------------------------


def apply(broker: Broker, definitions: Definitions) -> None:
    """Declare ``definitions`` in ``broker``, in RabbitMQ's order: virtual hosts, policies,
    exchanges, queues, bindings. Existing things with the same properties are left as they
    are; a clash (an exchange of another type, say) raises ``DefinitionsError``."""
    source = definitions.source
    for name in definitions.vhosts:
        broker.add_vhost(name)
    for key, items in definitions.extras.items():
        if key == "parameters":
            items = _import_vhost_limits(broker, source, items)
        elif key == "users":
            _import_user_limits(broker, source, items)
        importer = SECTION_IMPORTERS.get(key)
        if importer is not None:
            try:
                importer(broker, items)
            except DefinitionsError as error:
                raise DefinitionsError(f"{source}: {error}") from None
            continue
        kept = broker.definition_extras.setdefault(key, [])
        kept.extend(item for item in items if item not in kept)
        if items:
            log.warning("%s: %d %s have no effect in warrenmq", source, len(items), key)
    for policy in definitions.policies:
        _where(source, "policy", policy.name, policy.vhost, broker)
        try:
            broker.set_policy(policy)
        except PolicyError as error:
            raise DefinitionsError(f"{source}: policy '{policy.name}': {error}") from None
    for index, item in enumerate(definitions.exchanges):
        if item["name"] == "" or item["name"].startswith("amq."):
            continue  # every virtual host has them
        vhost = _where(source, "exchange", item["name"], item["vhost"], broker)

        def declare_exchange(item: dict[str, Any] = item, vhost: Any = vhost) -> None:
            vhost.declare_exchange(
                item["name"],
                item["type"],
                durable=item["durable"],
                auto_delete=item["auto_delete"],
                internal=item["internal"],
                arguments=item["arguments"],
            )

        _declare(definitions.where("exchanges", index), "exchange", item, declare_exchange)
    for index, item in enumerate(definitions.queues):
        vhost = _where(source, "queue", item["name"], item["vhost"], broker)
        arguments = dict(item["arguments"])
        if item["type"] != "classic":
            arguments.setdefault("x-queue-type", item["type"])

        def declare_queue(
            item: dict[str, Any] = item, vhost: Any = vhost, arguments: Any = arguments
        ) -> None:
            vhost.declare_queue(
                item["name"],
                durable=item["durable"],
                auto_delete=item["auto_delete"],
                arguments=arguments,
            )

        _declare(definitions.where("queues", index), "queue", item, declare_queue)
    for index, item in enumerate(definitions.bindings):
        vhost = _where(source, "binding of", item["destination"], item["vhost"], broker)

        def bind(item: dict[str, Any] = item, vhost: Any = vhost) -> None:
            if item["destination_type"] == "queue":
                destination = vhost.get_queue(item["destination"])
            else:
                destination = vhost.get_exchange(item["destination"])
            vhost.bind(destination, item["source"], item["routing_key"], item["arguments"])

        _declare(definitions.where("bindings", index), "binding", item, bind)


def _where(source: str, kind: str, name: str, vhost_name: str, broker: Broker) -> Any:
    vhost = broker.vhosts.get(vhost_name)
    if vhost is None:
        raise DefinitionsError(
            f"{source}: {kind} '{name}': vhost '{vhost_name}' does not exist (list it under vhosts)"
        )
    return vhost


def _declare(source: str, kind: str, item: Mapping[str, Any], declare: Callable[[], Any]) -> None:
    try:
        declare()
    except BrokerError as error:
        if kind == "binding":
            what = (
                f"binding of {item['destination_type']} '{item['destination']}' "
                f"to exchange '{item['source']}'"
            )
        else:
            what = f"{kind} '{item['name']}'"
        raise DefinitionsError(f"{source}: {what} in vhost '{item['vhost']}': {error}") from None


# -- exporting --------------------------------------------------------------------------------


def export(broker: Broker) -> dict[str, Any]:
    """The broker's topology in RabbitMQ's definitions format (``json.dumps`` it)."""
    from . import __version__

    vhosts, exchanges, queues, bindings = [], [], [], []
    for name in sorted(broker.vhosts):
        vhost = broker.vhosts[name]
        description = broker.access.vhosts.get(name, "")
        vhosts.append(
            {"name": name, "limits": [], "metadata": {"description": description, "tags": []}}
        )
        for exchange in vhost.exchanges.values():
            if exchange.name == "" or exchange.name.startswith("amq."):
                continue
            exchanges.append(
                {
                    "name": exchange.name,
                    "vhost": name,
                    "type": exchange.type_name,
                    "durable": exchange.durable,
                    "auto_delete": exchange.auto_delete,
                    "internal": exchange.internal,
                    "arguments": _jsonable(exchange.arguments),
                }
            )
        for queue in vhost.queues.values():
            if queue.exclusive_owner is not None:
                continue
            queues.append(
                {
                    "name": queue.name,
                    "vhost": name,
                    "type": queue.queue_type,
                    "durable": queue.durable,
                    "auto_delete": queue.auto_delete,
                    "arguments": _jsonable(queue.arguments),
                }
            )
        for exchange in vhost.exchanges.values():
            if exchange.name == "":
                continue  # the default exchange's bindings are implicit
            for binding in exchange.bindings.values():
                destination = binding.destination
                if getattr(destination, "exclusive_owner", None) is not None:
                    continue
                bindings.append(
                    {
                        "source": exchange.name,
                        "vhost": name,
                        "destination": destination.name,
                        "destination_type": destination.kind,
                        "routing_key": binding.routing_key,
                        "arguments": _jsonable(binding.arguments),
                    }
                )
    result: dict[str, Any] = {
        "product_name": "warrenmq",
        "product_version": __version__,
        "vhosts": vhosts,
        "policies": [policy.as_json() for policy in broker.policies()],
        "exchanges": sorted(exchanges, key=lambda x: (x["vhost"], x["name"])),
        "queues": sorted(queues, key=lambda q: (q["vhost"], q["name"])),
        "bindings": sorted(bindings, key=_binding_order),
    }
    for key in EXTRA_SECTIONS:
        exporter = SECTION_EXPORTERS.get(key)
        result[key] = (
            exporter(broker) if exporter is not None else broker.definition_extras.get(key, [])
        )
    result["parameters"] = [
        {"value": limits.as_json(), "vhost": name, "component": VHOST_LIMITS, "name": "limits"}
        for name, limits in sorted(broker.limits.vhost_limits.items())
        if limits.as_json()
    ] + [item for item in result["parameters"] if item.get("component") != VHOST_LIMITS]
    return result


def _import_vhost_limits(
    broker: Broker, source: str, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Apply the ``vhost-limits`` parameters (RabbitMQ keeps ``set_vhost_limits`` there) and
    return the other parameters."""
    others = []
    for item in items:
        if item.get("component") != VHOST_LIMITS:
            others.append(item)
            continue
        vhost = str(item.get("vhost", "/"))
        _where(source, "vhost-limits", str(item.get("name", "limits")), vhost, broker)
        value = item.get("value")
        try:
            if not isinstance(value, Mapping):
                raise LimitsError(f"expected an object of limits, got {value!r}")
            broker.limits.vhost_limits[vhost] = VhostLimits.from_mapping(value)
        except LimitsError as error:
            raise DefinitionsError(f"{source}: vhost-limits of vhost '{vhost}': {error}") from None
    return others


def _import_user_limits(broker: Broker, source: str, items: list[dict[str, Any]]) -> None:
    """Users' ``limits`` (``set_user_limits``), whoever handles the rest of the users."""
    for item in items:
        limits = item.get("limits")
        if not limits:
            continue
        name = str(item.get("name"))
        try:
            if not isinstance(limits, Mapping):
                raise LimitsError(f"expected an object of limits, got {limits!r}")
            broker.limits.user_limits[name] = UserLimits.from_mapping(limits)
        except LimitsError as error:
            raise DefinitionsError(f"{source}: limits of user '{name}': {error}") from None


def _binding_order(binding: Mapping[str, Any]) -> tuple[str, ...]:
    return (
        binding["vhost"],
        binding["source"],
        binding["destination_type"],
        binding["destination"],
        binding["routing_key"],
        json.dumps(binding["arguments"], sort_keys=True),
    )


def _jsonable(value: Any) -> Any:
    """AMQP field values as JSON: bytes as text, nested tables and arrays converted."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # decimals, timestamps

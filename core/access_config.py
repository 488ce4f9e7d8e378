"""Users, virtual hosts and permissions from configuration: the TOML config file's ``users``
table and ``permissions`` and ``topic_permissions`` lists, and RabbitMQ's definitions JSON
(``rabbitmqctl export_definitions``), whose ``users``, ``vhosts``, ``permissions`` and
``topic_permissions`` lists the data directory's ``access.json`` also uses.

Every function is pure: it takes parsed data and returns the model, or raises ``ConfigError``
naming the key (``users.alice.tags``, ``permissions[2].write``) and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .access import (
    DEFAULT_VHOST,
    PERMISSION_KINDS,
    TOPIC_KINDS,
    Access,
    AccessError,
    Permission,
    TopicPermission,
    UserRecord,
)
from .errors import ConfigError
from .passwords import ALGORITHMS, PBKDF2_SHA256, RABBIT_SHA256, check_hash, hash_password

_TOML_USER_KEYS = ("password", "password_hash", "hashing_algorithm", "tags")
_PERMISSION_KEYS = ("user", "vhost", *PERMISSION_KINDS)
_TOPIC_PERMISSION_KEYS = ("user", "vhost", "exchange", *TOPIC_KINDS)
TopicKey = tuple[str, str, str]


def _expect_str(value: Any, where: str, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {_shown(value)}")
    if not empty and not value:
        raise ConfigError(f"{where}: expected a non-empty string")
    return value


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _tags(value: Any, where: str) -> tuple[str, ...]:
    """A list of strings; RabbitMQ's older exports give one comma-separated string."""
    if isinstance(value, str):
        return tuple(tag.strip() for tag in value.split(",") if tag.strip())
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise ConfigError(f"{where}: expected a list of strings, got {_shown(value)}")
    return tuple(value)


def _unknown_keys(entry: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    unknown = sorted(set(entry) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}: unknown key (expected one of: {', '.join(known)})"
        )


def _hash(password_hash: str, algorithm: str, where: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"{where}.hashing_algorithm: unknown algorithm '{algorithm}' "
            f"(expected one of: {', '.join(ALGORITHMS)})"
        )
    try:
        check_hash(password_hash, algorithm)
    except ValueError as exc:
        raise ConfigError(f"{where}.password_hash: {exc}") from None


def users_from_toml(table: Any, where: str = "users") -> dict[str, UserRecord]:
    """``[users.NAME]`` tables: ``password`` (hashed here, never kept) or ``password_hash``
    (with ``hashing_algorithm``, default ``pbkdf2_sha256``; ``""`` for none), and ``tags``."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table of users, got {_shown(table)}")
    users: dict[str, UserRecord] = {}
    for name, entry in table.items():
        here = f"{where}.{name}"
        if not name:
            raise ConfigError(f"{where}: a user name cannot be empty")
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{here}: expected a table, got {_shown(entry)}")
        _unknown_keys(entry, _TOML_USER_KEYS, here)
        tags = _tags(entry.get("tags", []), f"{here}.tags")
        if "password" in entry and "password_hash" in entry:
            raise ConfigError(f"{here}: give password or password_hash, not both")
        if "password" in entry:
            if "hashing_algorithm" in entry:
                raise ConfigError(f"{here}.hashing_algorithm: only goes with password_hash")
            password = _expect_str(entry["password"], f"{here}.password", empty=False)
            users[name] = UserRecord(name, hash_password(password), PBKDF2_SHA256, tags)
        elif "password_hash" in entry:
            password_hash = _expect_str(entry["password_hash"], f"{here}.password_hash")
            algorithm = _expect_str(
                entry.get("hashing_algorithm", PBKDF2_SHA256), f"{here}.hashing_algorithm"
            )
            if password_hash:  # "": no password, as in RabbitMQ's definitions (certificate login)
                _hash(password_hash, algorithm, here)
            users[name] = UserRecord(name, password_hash or None, algorithm, tags)
        else:
            raise ConfigError(f"{here}: expected password or password_hash")
    return users


def _expressions(entry: Mapping[str, Any], kinds: tuple[str, ...], where: str) -> list[str]:
    """The regular expressions of a permission entry, one per kind, each required."""
    expressions = []
    for kind in kinds:
        if kind not in entry:
            raise ConfigError(f'{where}.{kind}: missing (a regular expression; "" for none)')
        expressions.append(_expect_str(entry[kind], f"{where}.{kind}"))
    return expressions


def _permission(entry: Any, where: str) -> tuple[tuple[str, str], Permission]:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a table, got {_shown(entry)}")
    user = _expect_str(entry.get("user"), f"{where}.user", empty=False)
    vhost = _expect_str(entry.get("vhost", DEFAULT_VHOST), f"{where}.vhost", empty=False)
    expressions = _expressions(entry, PERMISSION_KINDS, where)
    try:
        permission = Permission(*expressions)
    except AccessError as exc:
        raise ConfigError(f"{where}.{exc}") from None  # AccessError starts with the kind
    return (user, vhost), permission


def permissions_from_toml(
    items: Any, where: str = "permissions"
) -> dict[tuple[str, str], Permission]:
    """``[[permissions]]`` entries: ``user``, ``vhost`` (default ``/``), ``configure``,
    ``write``, ``read``. A second entry for the same user and vhost is an error."""
    if not isinstance(items, list):
        raise ConfigError(
            f"{where}: expected a list of tables ([[permissions]]), got {_shown(items)}"
        )
    permissions: dict[tuple[str, str], Permission] = {}
    for index, entry in enumerate(items):
        here = f"{where}[{index}]"
        if isinstance(entry, Mapping):
            _unknown_keys(entry, _PERMISSION_KEYS, here)
        key, permission = _permission(entry, here)
        if key in permissions:
            raise ConfigError(
                f"{here}: user '{key[0]}' already has permissions in vhost '{key[1]}'"
            )
        permissions[key] = permission
    return permissions


def _topic_permission(entry: Any, where: str) -> tuple[TopicKey, TopicPermission]:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a table, got {_shown(entry)}")
    user = _expect_str(entry.get("user"), f"{where}.user", empty=False)
    vhost = _expect_str(entry.get("vhost", DEFAULT_VHOST), f"{where}.vhost", empty=False)
    exchange = _expect_str(entry.get("exchange"), f"{where}.exchange", empty=False)
    expressions = _expressions(entry, TOPIC_KINDS, where)
    try:
        permission = TopicPermission(*expressions)
    except AccessError as exc:
        raise ConfigError(f"{where}.{exc}") from None  # AccessError starts with the kind
    return (user, vhost, exchange), permission


def topic_permissions_from_toml(
    items: Any, where: str = "topic_permissions"
) -> dict[TopicKey, TopicPermission]:
    """``[[topic_permissions]]`` entries (RabbitMQ's ``topic_permissions``): ``user``,
    ``vhost`` (default ``/``), ``exchange``, ``write``, ``read``. A second entry for the same
    user, vhost and exchange is an error."""
    if not isinstance(items, list):
        raise ConfigError(
            f"{where}: expected a list of tables ([[topic_permissions]]), got {_shown(items)}"
        )
    permissions: dict[TopicKey, TopicPermission] = {}
    for index, entry in enumerate(items):
        here = f"{where}[{index}]"
        if isinstance(entry, Mapping):
            _unknown_keys(entry, _TOPIC_PERMISSION_KEYS, here)
        key, permission = _topic_permission(entry, here)
        if key in permissions:
            raise ConfigError(
                f"{here}: user '{key[0]}' already has topic permissions on exchange "
                f"'{key[2]}' in vhost '{key[1]}'"
            )
        permissions[key] = permission
    return permissions


def access_from_config(
    users: Any = None,
    permissions: Any = None,
    vhosts: Iterable[str] = (DEFAULT_VHOST,),
) -> Access:
    """The model from the config file's ``users`` table, ``permissions`` list and virtual
    host names. Each permission must name a user of ``users`` and one of ``vhosts``."""
    access = Access(vhosts=dict.fromkeys(vhosts, ""))
    if users is not None:
        access.users = users_from_toml(users)
    if permissions is not None:
        access.permissions = permissions_from_toml(permissions)
    for index, (user, vhost) in enumerate(access.permissions):
        if user not in access.users:
            raise ConfigError(f"permissions[{index}].user: user '{user}' is not in [users]")
        if vhost not in access.vhosts:
            raise ConfigError(
                f"permissions[{index}].vhost: vhost '{vhost}' is not configured "
                f"(configured: {', '.join(sorted(access.vhosts))})"
            )
    return access


def access_from_definitions(data: Any, source: str = "definitions") -> Access:
    """``users``, ``vhosts``, ``permissions`` and ``topic_permissions`` of RabbitMQ's
    definitions JSON (other keys are ignored). Users keep their ``password_hash`` and ``hashing_algorithm``
    (``rabbit_password_hashing_sha256`` when absent, as RabbitMQ); an empty hash means no
    password. Without a ``vhosts`` list, the vhosts the permissions name are created."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a JSON object, got {_shown(data)}")
    access = Access()
    for index, entry in enumerate(_list(data, "users", source)):
        where = f"{source}: users[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected an object, got {_shown(entry)}")
        name = _expect_str(entry.get("name"), f"{where}.name", empty=False)
        password_hash = _expect_str(entry.get("password_hash", ""), f"{where}.password_hash")
        algorithm = _expect_str(
            entry.get("hashing_algorithm", RABBIT_SHA256), f"{where}.hashing_algorithm"
        )
        if password_hash:
            _hash(password_hash, algorithm, where)
        tags = _tags(entry.get("tags", []), f"{where}.tags")
        if name in access.users:
            raise ConfigError(f"{where}.name: user '{name}' appears twice")
        access.users[name] = UserRecord(name, password_hash or None, algorithm, tags)
    declared_vhosts = "vhosts" in data
    for index, entry in enumerate(_list(data, "vhosts", source)):
        where = f"{source}: vhosts[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected an object, got {_shown(entry)}")
        name = _expect_str(entry.get("name"), f"{where}.name", empty=False)
        description = entry.get("description", "")
        if not isinstance(description, str):  # RabbitMQ keeps it in metadata sometimes
            description = ""
        access.vhosts[name] = description
    for index, entry in enumerate(_list(data, "permissions", source)):
        where = f"{source}: permissions[{index}]"
        key, permission = _permission(entry, where)
        user, vhost = key
        if user not in access.users:
            raise ConfigError(f"{where}.user: no user '{user}' in users")
        if vhost not in access.vhosts:
            if declared_vhosts:
                raise ConfigError(f"{where}.vhost: no vhost '{vhost}' in vhosts")
            access.vhosts[vhost] = ""
        access.permissions[key] = permission
    for index, entry in enumerate(_list(data, "topic_permissions", source)):
        where = f"{source}: topic_permissions[{index}]"
        topic_key, topic_permission = _topic_permission(entry, where)
        user, vhost, _ = topic_key
        if user not in access.users:
            raise ConfigError(f"{where}.user: no user '{user}' in users")
        if vhost not in access.vhosts:
            if declared_vhosts:
                raise ConfigError(f"{where}.vhost: no vhost '{vhost}' in vhosts")
            access.vhosts[vhost] = ""
        access.topic_permissions[topic_key] = topic_permission
    return access


def _list(data: Mapping[str, Any], key: str, source: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{source}: {key}: expected a list, got {_shown(value)}")
    return value

"""Users, virtual hosts and permissions, and the checks RabbitMQ makes with them.

A permission is three regular expressions per user and virtual host: ``configure`` (declare
and delete), ``write`` (publish into, bind to) and ``read`` (consume from, bind from). A
resource's name is allowed when the expression matches anywhere in it (``re.search``, as
RabbitMQ's unanchored PCRE match), and the empty expression means ``^$``. The default
exchange is checked under the name ``amq.default``. A user may open a virtual host when it
holds any permission there, even three empty ones.

Topic permissions (RabbitMQ's ``set_topic_permissions``) narrow publishing to, and binding
from, a topic exchange by routing key: per user, vhost and exchange, a ``write`` and a ``read``
expression, in which ``{username}``, ``{vhost}`` and ``{client_id}`` (MQTT) are replaced by
their values first. Without a topic permission for the exchange, every routing key is allowed.

The model is plain data (``Access``); ``AccessFile`` keeps it as JSON in the data directory,
replaced atomically, so that the ``warrenmq user|vhost|permission`` commands can edit it while
a broker runs: the broker compares the file's modification stamp at each login and reloads it
when it changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from .errors import AccessRefused, ConfigError, NotAllowed
from .passwords import DEFAULT_GUEST_HASH, PBKDF2_SHA256, check_hash, hash_password

Kind = Literal["configure", "write", "read"]
PERMISSION_KINDS: tuple[Kind, ...] = ("configure", "write", "read")
#: the default exchange's name in permission checks, as in RabbitMQ
DEFAULT_EXCHANGE_NAME = "amq.default"
DEFAULT_VHOST = "/"
DEFAULT_USER = "guest"
#: RabbitMQ's user tags (any other tag is kept too, as RabbitMQ does)
KNOWN_TAGS = ("administrator", "monitoring", "policymaker", "management", "impersonator")
FULL_ACCESS = (".*", ".*", ".*")
FILE_NAME = "access.json"
FILE_FORMAT = "warrenmq-access"


class AccessError(ValueError):
    """A change the model refuses (unknown user, bad expression...); the text says why."""


@dataclass
class UserRecord:
    name: str
    #: None: the user cannot log in with a password
    password_hash: str | None
    hashing_algorithm: str = PBKDF2_SHA256
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Permission:
    configure: str
    write: str
    read: str

    def __post_init__(self) -> None:
        for kind in PERMISSION_KINDS:
            compile_permission(getattr(self, kind), kind)

    @cached_property
    def _compiled(self) -> dict[str, re.Pattern[str]]:
        return {kind: compile_permission(getattr(self, kind), kind) for kind in PERMISSION_KINDS}

    def allows(self, kind: Kind, name: str) -> bool:
        return self._compiled[kind].search(name) is not None


TopicKind = Literal["write", "read"]
TOPIC_KINDS: tuple[TopicKind, ...] = ("write", "read")
#: the exchange type whose routing keys topic permissions apply to (RabbitMQ: topic only)
TOPIC_EXCHANGE_TYPE = "topic"


@dataclass(frozen=True)
class TopicPermission:
    write: str
    read: str

    def __post_init__(self) -> None:
        for kind in TOPIC_KINDS:
            compile_permission(self._expanded(getattr(self, kind), {}), kind)

    @staticmethod
    def _expanded(expression: str, variables: dict[str, str]) -> str:
        for name, value in variables.items():
            expression = expression.replace("{" + name + "}", value)
        return expression

    def allows(self, kind: TopicKind, routing_key: str, variables: dict[str, str]) -> bool:
        """``routing_key`` matches the ``kind`` expression, variables replaced (unescaped, as
        RabbitMQ replaces them); an expression that does not compile then allows nothing."""
        expression = self._expanded(getattr(self, kind), variables)
        try:
            return compile_permission(expression, kind).search(routing_key) is not None
        except AccessError:
            return False


def compile_permission(expression: str, kind: str = "permission") -> re.Pattern[str]:
    """The compiled expression (``""`` is ``^$``); ``AccessError`` naming ``kind`` if bad."""
    if not isinstance(expression, str):
        raise AccessError(f"{kind}: expected a regular expression (a string), got {expression!r}")
    try:
        return re.compile(expression or "^$")
    except re.error as exc:
        raise AccessError(f"{kind}: invalid regular expression {expression!r}: {exc}") from None


def resource_name(resource: str, name: str) -> str:
    """The name a permission is checked against (the default exchange is ``amq.default``)."""
    if resource == "exchange" and name == "":
        return DEFAULT_EXCHANGE_NAME
    return name


@dataclass
class Access:
    """Users, virtual hosts (name to description) and permissions by (user, vhost)."""

    users: dict[str, UserRecord] = field(default_factory=dict)
    vhosts: dict[str, str] = field(default_factory=dict)
    permissions: dict[tuple[str, str], Permission] = field(default_factory=dict)
    #: topic permissions by (user, vhost, exchange)
    topic_permissions: dict[tuple[str, str, str], TopicPermission] = field(default_factory=dict)

    @classmethod
    def default(cls) -> Access:
        """What a fresh RabbitMQ has: vhost ``/`` and ``guest``/``guest`` with full access."""
        access = cls(vhosts={DEFAULT_VHOST: "Default virtual host"})
        access.users[DEFAULT_USER] = UserRecord(
            DEFAULT_USER, DEFAULT_GUEST_HASH, PBKDF2_SHA256, ("administrator",)
        )
        access.permissions[(DEFAULT_USER, DEFAULT_VHOST)] = Permission(*FULL_ACCESS)
        return access

    def copy(self) -> Access:
        return Access(
            {name: UserRecord(**vars(user)) for name, user in self.users.items()},
            dict(self.vhosts),
            dict(self.permissions),
            dict(self.topic_permissions),
        )

    def merged(self, other: Access) -> Access:
        """This model with ``other``'s users, vhosts and permissions added over it."""
        result = self.copy()
        result.users.update({name: UserRecord(**vars(u)) for name, u in other.users.items()})
        result.vhosts.update(other.vhosts)
        result.permissions.update(other.permissions)
        result.topic_permissions.update(other.topic_permissions)
        return result

    # -- users ----------------------------------------------------------------------------

    def user(self, name: str) -> UserRecord:
        record = self.users.get(name)
        if record is None:
            raise AccessError(f"user '{name}' does not exist")
        return record

    def add_user(
        self,
        name: str,
        password: str | None = None,
        tags: tuple[str, ...] = (),
        *,
        password_hash: str | None = None,
        hashing_algorithm: str = PBKDF2_SHA256,
    ) -> UserRecord:
        """Add a user with a password (hashed here) or an existing hash; never both."""
        if not name:
            raise AccessError("a user name cannot be empty")
        if name in self.users:
            raise AccessError(f"user '{name}' already exists")
        record = UserRecord(name, None, hashing_algorithm, tuple(tags))
        self.users[name] = record
        if password is not None and password_hash is not None:
            raise AccessError("give a password or a password hash, not both")
        if password is not None:
            self.set_password(name, password)
        elif password_hash is not None:
            self.set_password_hash(name, password_hash, hashing_algorithm)
        return record

    def set_password(self, name: str, password: str) -> None:
        record = self.user(name)
        record.password_hash, record.hashing_algorithm = hash_password(password), PBKDF2_SHA256

    def set_password_hash(self, name: str, password_hash: str, algorithm: str) -> None:
        record = self.user(name)
        try:
            check_hash(password_hash, algorithm)
        except ValueError as exc:
            raise AccessError(f"user '{name}': {exc}") from None
        record.password_hash, record.hashing_algorithm = password_hash, algorithm

    def clear_password(self, name: str) -> None:
        self.user(name).password_hash = None

    def set_tags(self, name: str, tags: tuple[str, ...]) -> None:
        self.user(name).tags = tuple(tags)

    def delete_user(self, name: str) -> None:
        self.user(name)
        del self.users[name]
        for key in [key for key in self.permissions if key[0] == name]:
            del self.permissions[key]
        for topic_key in [key for key in self.topic_permissions if key[0] == name]:
            del self.topic_permissions[topic_key]

    # -- virtual hosts --------------------------------------------------------------------

    def add_vhost(self, name: str, description: str = "") -> None:
        if not name:
            raise AccessError("a virtual host name cannot be empty")
        if name in self.vhosts:
            raise AccessError(f"vhost '{name}' already exists")
        self.vhosts[name] = description

    def delete_vhost(self, name: str) -> None:
        if name not in self.vhosts:
            raise AccessError(f"vhost '{name}' does not exist")
        if name == DEFAULT_VHOST:
            raise AccessError(f"the default vhost '{DEFAULT_VHOST}' cannot be deleted")
        del self.vhosts[name]
        for key in [key for key in self.permissions if key[1] == name]:
            del self.permissions[key]
        for topic_key in [key for key in self.topic_permissions if key[1] == name]:
            del self.topic_permissions[topic_key]

    # -- permissions ----------------------------------------------------------------------

    def set_permissions(self, user: str, vhost: str, configure: str, write: str, read: str) -> None:
        self.user(user)
        if vhost not in self.vhosts:
            raise AccessError(f"vhost '{vhost}' does not exist")
        self.permissions[(user, vhost)] = Permission(configure, write, read)

    def clear_permissions(self, user: str, vhost: str) -> None:
        self.user(user)
        if self.permissions.pop((user, vhost), None) is None:
            raise AccessError(f"user '{user}' has no permissions in vhost '{vhost}'")

    def permission(self, user: str, vhost: str) -> Permission | None:
        return self.permissions.get((user, vhost))

    def set_topic_permissions(
        self, user: str, vhost: str, exchange: str, write: str, read: str
    ) -> None:
        """As ``rabbitmqctl set_topic_permissions``, replacing the user's earlier grant on
        that exchange."""
        self.user(user)
        if vhost not in self.vhosts:
            raise AccessError(f"vhost '{vhost}' does not exist")
        if not exchange:
            raise AccessError("topic permissions need an exchange name")
        self.topic_permissions[(user, vhost, exchange)] = TopicPermission(write, read)

    def clear_topic_permissions(self, user: str, vhost: str, exchange: str | None = None) -> None:
        """Remove the user's topic permissions in ``vhost``: on ``exchange``, or on all."""
        self.user(user)
        keys = [
            key
            for key in self.topic_permissions
            if key[:2] == (user, vhost) and exchange in (None, key[2])
        ]
        if not keys:
            on = "" if exchange is None else f" on exchange '{exchange}'"
            raise AccessError(f"user '{user}' has no topic permissions{on} in vhost '{vhost}'")
        for key in keys:
            del self.topic_permissions[key]

    # -- checks ---------------------------------------------------------------------------

    def check_vhost(self, user: str, vhost: str) -> None:
        """530 NOT_ALLOWED unless ``user`` holds a permission in ``vhost`` (RabbitMQ's text)."""
        if (user, vhost) not in self.permissions:
            raise NotAllowed(f"access to vhost '{vhost}' refused for user '{user}'")

    def check(self, user: str, vhost: str, kind: Kind, resource: str, name: str) -> None:
        """403 ACCESS_REFUSED naming the permission, the resource and the user, in the
        words of RabbitMQ (3.11 and later; 3.10 left out the permission's name)."""
        name = resource_name(resource, name)
        permission = self.permissions.get((user, vhost))
        if permission is None or not permission.allows(kind, name):
            raise AccessRefused(
                f"{kind} access to {resource} '{name}' in vhost '{vhost}' refused for user '{user}'"
            )

    def topic_permission(self, user: str, vhost: str, exchange: str) -> TopicPermission | None:
        """The grant that limits ``user``'s routing keys on ``exchange`` (None: any key)."""
        if not self.topic_permissions:  # the usual case: one truth test
            return None
        return self.topic_permissions.get((user, vhost, exchange))

    def check_topic(
        self,
        user: str,
        vhost: str,
        kind: TopicKind,
        exchange: str,
        routing_key: str,
        variables: dict[str, str] | None = None,
    ) -> None:
        """403 ACCESS_REFUSED unless ``user`` may ``kind`` (write: publish, read: bind) with
        ``routing_key`` on the topic exchange ``exchange``, in the words of RabbitMQ (3.11 and
        later; 3.10 left out the permission's name). ``variables`` beyond ``username`` and
        ``vhost``: ``client_id`` for MQTT."""
        permission = self.topic_permission(user, vhost, exchange)
        if permission is None:
            return
        values = {"username": user, "vhost": vhost, **(variables or {})}
        if not permission.allows(kind, routing_key, values):
            raise AccessRefused(
                f"{kind} access to topic '{routing_key}' in exchange '{exchange}' in vhost "
                f"'{vhost}' refused for user '{user}'"
            )

    # -- JSON (the access file; the same lists as RabbitMQ's definitions) ---------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FILE_FORMAT,
            "version": 1,
            "users": [
                {
                    "name": u.name,
                    "password_hash": u.password_hash or "",
                    "hashing_algorithm": u.hashing_algorithm,
                    "tags": list(u.tags),
                }
                for u in self.users.values()
            ],
            "vhosts": [
                {"name": name, "description": description}
                for name, description in self.vhosts.items()
            ],
            "permissions": [
                {
                    "user": user,
                    "vhost": vhost,
                    "configure": p.configure,
                    "write": p.write,
                    "read": p.read,
                }
                for (user, vhost), p in self.permissions.items()
            ],
            "topic_permissions": [
                {
                    "user": user,
                    "vhost": vhost,
                    "exchange": exchange,
                    "write": t.write,
                    "read": t.read,
                }
                for (user, vhost, exchange), t in self.topic_permissions.items()
            ],
        }


class AccessFile:
    """``access.json`` in the data directory: loaded whole, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> AccessFile:
        return cls(Path(data_dir) / FILE_NAME)

    def stamp(self) -> tuple[int, int, int] | None:
        """(mtime, size, inode), or None if there is no file: a cheap 'did it change'."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def changed(self) -> bool:
        return self.stamp() != self._stamp

    def load(self) -> Access | None:
        """The model in the file, or None if there is none (``ConfigError`` if it is bad)."""
        from .access_config import access_from_definitions

        stamp = self.stamp()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._stamp = None
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.path}: not valid JSON: {exc}") from None
        access = access_from_definitions(data, source=str(self.path))
        self._stamp = stamp
        return access

    def load_or_default(self) -> Access:
        access = self.load()
        return Access.default() if access is None else access

    def save(self, access: Access) -> None:
        """Write a new file beside the old one, flush it to disk, then swap it in."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp makes it mode 0600
                json.dump(access.to_json(), out, indent=2)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._stamp = self.stamp()

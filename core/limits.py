"""Per-vhost and per-user limits, as RabbitMQ's ``set_vhost_limits`` and ``set_user_limits``.

The limits live in the core so that every protocol applies the same ones: a connection counts
against its vhost and its user once it is open (AMQP's ``connection.open``), and a session (an
AMQP channel) counts against its user. The refusals use RabbitMQ's reply codes and texts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, Self, TypeVar

from .errors import NotAllowed, PreconditionFailed


class LimitsError(ValueError):
    """Limits that are not: an unknown limit name, or a value that is not an integer."""


#: the largest max_message_size RabbitMQ allows (512 MiB)
MAX_MESSAGE_SIZE = 512 * 1024 * 1024

#: the limit names RabbitMQ uses, mapped to field names
_VHOST_KEYS = {"max-connections": "max_connections", "max-queues": "max_queues"}
_USER_KEYS = {"max-connections": "max_connections", "max-channels": "max_channels"}


def _normalise(value: int | None, what: str) -> int | None:
    """None or a negative number means no limit (RabbitMQ's ``-1``); 0 refuses everything."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitsError(f"{what} must be an integer, got {value!r}")
    return None if value < 0 else value


class _Limits:
    _keys: dict[str, str] = {}

    def __post_init__(self) -> None:
        for spec in fields(self):  # type: ignore[arg-type]
            name = spec.name
            object.__setattr__(self, name, _normalise(getattr(self, name), name))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Self:
        """From RabbitMQ's JSON form, ``{"max-connections": 10, ...}`` (underscores also do)."""
        return cls().updated(values)

    def as_json(self) -> dict[str, int]:
        """The limits that are set, in RabbitMQ's JSON form (``{"max-connections": 10}``)."""
        values = {key: getattr(self, name) for key, name in self._keys.items()}
        return {key: value for key, value in values.items() if value is not None}

    def updated(self, values: Mapping[str, Any]) -> Self:
        """These limits with ``values`` (RabbitMQ's JSON form) over them, limit by limit."""
        known = self._keys
        chosen: dict[str, Any] = {}
        for key, value in values.items():
            field_name = known.get(key) or known.get(key.replace("_", "-"))
            if field_name is None:
                raise LimitsError(f"unknown limit '{key}' (known: {', '.join(sorted(known))})")
            chosen[field_name] = value
        return replace(self, **chosen)  # type: ignore[type-var]


@dataclass(frozen=True)
class VhostLimits(_Limits):
    """Limits of one virtual host; None is no limit, 0 allows none."""

    #: connections open in the vhost at once
    max_connections: int | None = None
    #: queues in the vhost (direct reply-to pseudo-queues do not count)
    max_queues: int | None = None

    _keys = _VHOST_KEYS


@dataclass(frozen=True)
class UserLimits(_Limits):
    """Limits of one user over all its connections; None is no limit, 0 allows none."""

    #: connections the user has open at once
    max_connections: int | None = None
    #: channels (sessions) open at once over all the user's connections
    max_channels: int | None = None

    _keys = _USER_KEYS


class CountedConnection(Protocol):
    """What the tracker needs of a connection: how many sessions (channels) it has open."""

    def session_count(self) -> int: ...


class LimitTracker:
    """Counts open connections per vhost and per user, and refuses what goes over a limit."""

    def __init__(
        self,
        vhost_limits: Mapping[str, VhostLimits | Mapping[str, Any]] | None = None,
        user_limits: Mapping[str, UserLimits | Mapping[str, Any]] | None = None,
    ) -> None:
        #: limits by vhost name; changes apply to the next connection.open or queue.declare
        self.vhost_limits: dict[str, VhostLimits] = {
            name: _limits(VhostLimits, value) for name, value in (vhost_limits or {}).items()
        }
        #: limits by user name; changes apply to the next connection.open or channel.open
        self.user_limits: dict[str, UserLimits] = {
            name: _limits(UserLimits, value) for name, value in (user_limits or {}).items()
        }
        self._by_vhost: dict[str, set[CountedConnection]] = {}
        self._by_user: dict[str, set[CountedConnection]] = {}
        self._where: dict[CountedConnection, tuple[str, str]] = {}

    def open_connection(self, connection: CountedConnection, user: str, vhost: str) -> None:
        """Count ``connection`` against ``vhost`` and ``user``, or raise NotAllowed (530)."""
        vhost_limit = self.vhost_limits.get(vhost, _NO_VHOST_LIMITS).max_connections
        if vhost_limit is not None and len(self._by_vhost.get(vhost, ())) >= vhost_limit:
            raise NotAllowed(
                f"access to vhost '{vhost}' refused for user '{user}': "
                f"connection limit ({vhost_limit}) is reached"
            )
        user_limit = self.user_limits.get(user, _NO_USER_LIMITS).max_connections
        if user_limit is not None and len(self._by_user.get(user, ())) >= user_limit:
            raise NotAllowed(
                f"connection refused for user '{user}': "
                f"user connection limit ({user_limit}) is reached"
            )
        self.connection_closed(connection)
        self._by_vhost.setdefault(vhost, set()).add(connection)
        self._by_user.setdefault(user, set()).add(connection)
        self._where[connection] = (user, vhost)

    def connection_closed(self, connection: CountedConnection) -> None:
        """Stop counting ``connection`` (safe to call more than once, or for one not counted)."""
        where = self._where.pop(connection, None)
        if where is None:
            return
        user, vhost = where
        for table, key in ((self._by_user, user), (self._by_vhost, vhost)):
            members = table.get(key)
            if members is not None:
                members.discard(connection)
                if not members:
                    del table[key]

    def check_new_session(self, user: str) -> None:
        """Before a session opens: NotAllowed (530) if the user has its most channels open."""
        limit = self.user_limits.get(user, _NO_USER_LIMITS).max_channels
        if limit is None:
            return
        if sum(c.session_count() for c in self._by_user.get(user, ())) >= limit:
            raise NotAllowed(
                f"number of channels opened for user '{user}' has reached "
                f"the maximum allowed user limit of ({limit})"
            )

    def check_new_queue(self, vhost: str, queue: str, queue_count: int) -> None:
        """Before a queue is created: PreconditionFailed (406) at the vhost's queue limit."""
        limit = self.vhost_limits.get(vhost, _NO_VHOST_LIMITS).max_queues
        if limit is not None and queue_count >= limit:
            raise PreconditionFailed(
                f"cannot declare queue '{queue}': queue limit in vhost '{vhost}' ({limit}) "
                "is reached"
            )

    def connection_count(self, *, vhost: str | None = None, user: str | None = None) -> int:
        """Open connections counted in ``vhost`` or of ``user`` (for management and tests)."""
        if vhost is not None:
            return len(self._by_vhost.get(vhost, ()))
        if user is not None:
            return len(self._by_user.get(user, ()))
        return len(self._where)


L = TypeVar("L", VhostLimits, UserLimits)


def _limits(kind: type[L], value: L | Mapping[str, Any]) -> L:
    """Limits given as such, or in RabbitMQ's JSON form (``{"max-connections": 10}``)."""
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise LimitsError(f"expected {kind.__name__} or a mapping of limits, got {value!r}")
    return kind.from_mapping(value)


def with_overrides(
    table: Mapping[str, L | Mapping[str, Any]],
    overrides: Iterable[tuple[str, str, int]],
    kind: type[L],
) -> dict[str, L]:
    """``table`` (limits by vhost or user name) with ``(name, limit, value)`` over it, as
    ``--vhost-limit /:max-queues=10`` gives them: other limits of that name are kept."""
    result = {name: _limits(kind, value) for name, value in table.items()}
    for name, key, value in overrides:
        result[name] = result.get(name, kind()).updated({key: value})
    return result


_NO_VHOST_LIMITS = VhostLimits()
_NO_USER_LIMITS = UserLimits()

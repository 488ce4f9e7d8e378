"""Who may call the API: HTTP basic auth with the broker's users, and RabbitMQ's user tags.

As RabbitMQ's management plugin: a user needs one of the tags ``management``,
``policymaker``, ``monitoring`` or ``administrator`` to use the API at all; ``management``
users see the virtual hosts they hold a permission in and their own connections;
``monitoring`` users see every virtual host, connection and node; ``administrator`` users
may also manage users, permissions and definitions, and close anyone's connection. Whatever
the tags, declaring, deleting, publishing and getting go by the user's permissions. A refusal
is a 401 with RabbitMQ's ``{"error": "not_authorised", "reason": ...}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING

from warrenmq.auth import LoginRefused, LoginResult, User
from warrenmq.errors import AccessRefused, NotAllowed

if TYPE_CHECKING:
    from warrenmq.access import Kind
    from warrenmq.broker import Broker

MANAGEMENT_TAGS = frozenset({"management", "policymaker", "monitoring", "administrator"})
MONITORING_TAGS = frozenset({"monitoring", "administrator"})
REALM = 'Basic realm="warrenmq management"'


class ApiError(Exception):
    """An error answered as RabbitMQ's JSON ``{"error": ..., "reason": ...}``."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


def not_authorised(reason: str) -> ApiError:
    return ApiError(401, "not_authorised", reason)


def not_found(reason: str = "Not Found") -> ApiError:
    return ApiError(404, "Object Not Found", reason)


def bad_request(reason: str) -> ApiError:
    return ApiError(400, "bad_request", reason)


@dataclass(frozen=True)
class Caller:
    """The logged-in user of one request and what the tags let them see."""

    broker: Broker
    user: User

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def is_administrator(self) -> bool:
        return "administrator" in self.user.tags

    @property
    def is_monitor(self) -> bool:
        return not MONITORING_TAGS.isdisjoint(self.user.tags)

    def require_administrator(self) -> None:
        if not self.is_administrator:
            raise not_authorised("Not administrator user")

    def require_monitor(self) -> None:
        if not self.is_monitor:
            raise not_authorised("Not monitor user")

    def can_open(self, vhost: str) -> bool:
        return (self.name, vhost) in self.broker.access.permissions

    def visible_vhosts(self) -> list[str]:
        """Virtual hosts whose contents the lists show: all for monitoring users and
        administrators, those with a permission for the others."""
        names = sorted(self.broker.vhosts)
        if self.is_monitor:
            return names
        return [name for name in names if self.can_open(name)]

    def sees_connection(self, user: str | None) -> bool:
        return self.is_monitor or user == self.name

    def require_vhost(self, vhost: str) -> None:
        """404 for an unknown vhost, 401 without access to it (as RabbitMQ)."""
        if vhost not in self.broker.vhosts:
            raise not_found()
        try:
            self.broker.access.check_vhost(self.name, vhost)
        except NotAllowed:
            raise not_authorised("User not authorised to access virtual host") from None

    def require(self, vhost: str, kind: Kind, resource: str, name: str) -> None:
        """The permission ``kind`` on a resource, or 401 naming it."""
        try:
            self.broker.access.check(self.name, vhost, kind, resource, name)
        except AccessRefused as refused:
            raise not_authorised(refused.text) from None


def credentials(header: str | None) -> tuple[str, str] | None:
    """User and password of a basic ``Authorization`` header, None if absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


async def login(broker: Broker, username: str, password: str, peer_host: str | None) -> User:
    """The broker's login (its password check off the event loop, its throttling of failing
    addresses, its cache of verified passwords); 401 if refused or not a management user."""
    future: asyncio.Future[LoginResult] = asyncio.get_running_loop().create_future()

    def done(result: LoginResult) -> None:
        if not future.done():
            future.set_result(result)

    broker.login(username, password, peer_host, done)
    result = await future
    if isinstance(result, LoginRefused):
        raise ApiError(401, "not_authorized", "Login failed")  # (sic: RabbitMQ's spelling here)
    if MANAGEMENT_TAGS.isdisjoint(result.tags):
        raise not_authorised("Not management user")
    return result

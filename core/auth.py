"""Authentication: users and the backends that check them.

The default backend is the broker's own user table: ``guest``/``guest``, allowed only from
loopback, as RabbitMQ ships. Plugins add backends through ``warrenmq_register_auth_backends``.
"""

from __future__ import annotations

import hmac
import ipaddress
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True)
class User:
    name: str
    tags: tuple[str, ...] = ()


@dataclass
class UserRecord:
    name: str
    password: str
    tags: tuple[str, ...] = ()
    loopback_only: bool = False


def is_loopback(host: str | None) -> bool:
    if host is None:
        return True  # in-process and unix-socket peers
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class LoginRefused(Exception):
    """A refused login with the reason, for the broker's log (clients are told no more than
    that the login was refused, as in RabbitMQ). A backend may raise it instead of returning
    None, which is logged as invalid credentials."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AuthBackend(ABC):
    name: ClassVar[str]

    @abstractmethod
    def authenticate(self, username: str, password: str, peer_host: str | None) -> User | None:
        """The user if the credentials are good for this peer, else None (or LoginRefused)."""


@dataclass
class UserDatabase(AuthBackend):
    """Users kept in the broker's settings (and later its config file)."""

    name: ClassVar[str] = "internal"
    users: dict[str, UserRecord] = field(default_factory=dict)

    @classmethod
    def with_default_guest(cls) -> UserDatabase:
        return cls({"guest": UserRecord("guest", "guest", ("administrator",), loopback_only=True)})

    def authenticate(self, username: str, password: str, peer_host: str | None) -> User | None:
        record = self.users.get(username)
        if record is None or not hmac.compare_digest(record.password.encode(), password.encode()):
            return None
        if record.loopback_only and not is_loopback(peer_host):
            raise LoginRefused(f"user '{username}' can only connect via localhost")
        return User(record.name, record.tags)

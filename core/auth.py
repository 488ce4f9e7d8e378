"""Authentication: who may log in, from where, and how fast after failures.

The broker's own user table (``UserDatabase``, over the ``Access`` model) checks salted
password hashes; ``guest`` (RabbitMQ's ``loopback_users``) may log in from loopback addresses
only. Plugins add backends through ``warrenmq_register_auth_backends``; users they let in are
authorized by the same permission table.

``Logins`` is what a protocol engine calls: it verifies an expensive hash in a worker thread
(PBKDF2 takes ~0.2 s, which must not stall the event loop), and ``LoginThrottle`` holds back
the attempts of an address that failed recently, without blocking anyone else. The result
reaches the engine through a callback, at once or on a later turn of the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .access import Access, UserRecord
from .passwords import (
    DEFAULT_GUEST_HASH,
    PBKDF2_SHA256,
    is_expensive,
    remember_verified,
    verified_before,
    verify_password,
)

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("warrenmq.auth")

#: the SASL mechanisms the AMQP engine knows (RabbitMQ's, with rabbitmq_auth_mechanism_ssl)
AUTH_MECHANISMS = ("PLAIN", "AMQPLAIN", "EXTERNAL")

__all__ = [
    "AUTH_MECHANISMS",
    "AuthBackend",
    "LoginRefused",
    "LoginThrottle",
    "Logins",
    "User",
    "UserDatabase",
    "UserRecord",
    "is_loopback",
]


@dataclass(frozen=True)
class User:
    name: str
    tags: tuple[str, ...] = ()


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

    def __init__(self, reason: str, bad_credentials: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        #: False: the credentials were good but the user may not log in so (from afar, say);
        #: MQTT answers 5 (not authorized) then, and 4 (bad user name or password) otherwise
        self.bad_credentials = bad_credentials


class AuthBackend(ABC):
    name: ClassVar[str]

    @abstractmethod
    def authenticate(self, username: str, password: str, peer_host: str | None) -> User | None:
        """The user if the credentials are good for this peer, else None (or LoginRefused)."""


class UserDatabase(AuthBackend):
    """The broker's own users (``Access.users``), with RabbitMQ's loopback-only users."""

    name: ClassVar[str] = "internal"

    def __init__(
        self, access: Access | None = None, loopback_users: Collection[str] = ("guest",)
    ) -> None:
        self.access = access if access is not None else Access.default()
        self.loopback_users = frozenset(loopback_users)

    @classmethod
    def with_default_guest(cls) -> UserDatabase:
        return cls(Access.default())

    def lookup(self, username: str) -> UserRecord | None:
        return self.access.users.get(username)

    def decide(
        self, record: UserRecord | None, username: str, verified: bool, peer_host: str | None
    ) -> User:
        """The user, or ``LoginRefused`` saying why (in RabbitMQ's words, then ours)."""
        if record is None:
            raise LoginRefused(f"user '{username}' - invalid credentials (no such user)")
        if record.password_hash is None:
            raise LoginRefused(f"user '{username}' - invalid credentials (user has no password)")
        if not verified:
            raise LoginRefused(f"user '{username}' - invalid credentials (wrong password)")
        return self.admit(record, peer_host)

    def admit(self, record: UserRecord, peer_host: str | None) -> User:
        """The user whose identity is established, unless it may not come from ``peer_host``."""
        username = record.name
        if username in self.loopback_users and not is_loopback(peer_host):
            raise LoginRefused(f"user '{username}' can only connect via localhost", False)
        return User(record.name, record.tags)

    def verify(self, record: UserRecord | None, password: str) -> bool:
        if record is None or record.password_hash is None:
            return False
        if verified_before(password, record.password_hash):
            return True
        ok = verify_password(password, record.password_hash, record.hashing_algorithm)
        if ok:
            remember_verified(password, record.password_hash)
        return ok

    def authenticate(self, username: str, password: str, peer_host: str | None) -> User | None:
        """The synchronous check (for embedding and plugins); the broker uses ``Logins``."""
        record = self.lookup(username)
        try:
            return self.decide(record, username, self.verify(record, password), peer_host)
        except LoginRefused as refused:
            if "invalid credentials" in refused.reason:
                return None
            raise


class LoginThrottle:
    """Slows down an address whose logins failed recently.

    After ``free`` failures, each further attempt from that address waits ``base`` seconds,
    doubling with every failure up to ``maximum``; attempts from one address are spaced by
    that delay, so opening many connections at once does not multiply the guessing rate. A
    success from the address, or ``forget_after`` seconds without a failure, clears it. At
    most ``max_addresses`` addresses are remembered (the least recent go first).
    """

    def __init__(
        self,
        base: float = 0.25,
        maximum: float = 5.0,
        free: int = 2,
        forget_after: float = 300.0,
        max_addresses: int = 10_000,
    ) -> None:
        self.base = base
        self.maximum = maximum
        self.free = free
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        #: address -> [failures, time of the last failure, earliest time of the next attempt]
        self._entries: OrderedDict[str, list[float]] = OrderedDict()

    def failures(self, address: str) -> int:
        entry = self._entries.get(address)
        return int(entry[0]) if entry else 0

    def delay_for(self, failures: int) -> float:
        if failures < self.free or self.base <= 0:
            return 0.0
        return min(self.base * 2 ** (failures - self.free), self.maximum)

    def wait(self, address: str, now: float) -> float:
        """Seconds the next attempt from ``address`` must wait before it is checked."""
        entry = self._entries.get(address)
        if entry is None:
            return 0.0
        if now - entry[1] > self.forget_after:
            del self._entries[address]
            return 0.0
        delay = self.delay_for(int(entry[0]))
        if not delay:
            return 0.0
        start = max(now, entry[2])
        entry[2] = start + delay
        return min(start + delay - now, self.maximum)

    def failed(self, address: str, now: float) -> int:
        """Count a failure; returns the address's recent failures."""
        entry = self._entries.get(address)
        if entry is None or now - entry[1] > self.forget_after:
            entry = self._entries[address] = [0, now, now]
        entry[0] += 1
        entry[1] = now
        self._entries.move_to_end(address)
        while len(self._entries) > self.max_addresses:
            self._entries.popitem(last=False)
        return int(entry[0])

    def succeeded(self, address: str) -> None:
        self._entries.pop(address, None)


LoginResult = User | LoginRefused


class Logins:
    """The broker's login service for protocol engines (see the module's docstring)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        settings = broker.settings
        self.throttle = LoginThrottle(
            base=settings.login_failure_delay, maximum=settings.login_failure_max_delay
        )

    def login(
        self,
        username: str,
        password: str | None,
        peer_host: str | None,
        done: Callable[[LoginResult], None],
    ) -> None:
        """Check the credentials and call ``done`` with the ``User`` or a ``LoginRefused``,
        at once or later on the event loop's thread (never from another thread).

        ``password`` None: the transport proved who the client is (a client certificate that
        the TLS handshake verified, RabbitMQ's EXTERNAL); the user must exist, and the
        loopback rule and the slow-down of failing addresses apply as to a password."""
        if password is None:
            self._login_proven(username, peer_host, done)
            return
        broker = self.broker
        broker.refresh_access()
        users = broker.users
        record = users.lookup(username)
        address = peer_host or "local"
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (an engine driven by hand): no waiting
            loop = None
        wait = self.throttle.wait(address, time.monotonic()) if loop is not None else 0.0
        # the hash to check: an unknown user (or one without a password) is checked against a
        # decoy and refused whatever the result, so that it takes as long as a wrong password
        # and the timing does not tell which user names exist
        decoy = record is None or record.password_hash is None
        stored, algorithm = (
            (DEFAULT_GUEST_HASH, PBKDF2_SHA256)
            if decoy
            else (record.password_hash or "", record.hashing_algorithm)  # type: ignore[union-attr]
        )
        slow = is_expensive(algorithm) and (decoy or not verified_before(password, stored))

        def finish(verified: bool | None) -> None:
            if verified is None:
                verified = users.verify(record, password)
            elif verified and record is not None and record.password_hash is not None:
                remember_verified(password, record.password_hash)
            try:
                result: LoginResult = self._decide(record, username, password, verified, peer_host)
            except Exception as exc:  # a plugin backend's bug: refuse, and say so in the log
                log.exception("authentication of user '%s' failed", username)
                result = LoginRefused(f"user '{username}' - authentication failed: {exc}")
            if isinstance(result, LoginRefused):
                self._failed(address)
            else:
                self.throttle.succeeded(address)
            done(result)

        if loop is None or (not slow and not wait):
            finish(None)
            return

        def verify_off_loop() -> None:
            if not slow:
                finish(None)
                return
            future = loop.run_in_executor(None, verify_password, password, stored, algorithm)

            def verified(future: asyncio.Future[bool]) -> None:
                error = future.exception()
                if error is not None:
                    log.error("verifying the password of user '%s' failed: %s", username, error)
                finish(bool(not decoy and not error and future.result()))

            future.add_done_callback(verified)

        if wait:
            loop.call_later(wait, verify_off_loop)
        else:
            verify_off_loop()

    def _login_proven(
        self, username: str, peer_host: str | None, done: Callable[[LoginResult], None]
    ) -> None:
        self.broker.refresh_access()
        users = self.broker.users
        address = peer_host or "local"

        def finish() -> None:
            record = users.lookup(username)
            result: LoginResult
            if record is None:
                result = LoginRefused(f"user '{username}' - invalid credentials (no such user)")
            else:
                try:
                    result = users.admit(record, peer_host)
                except LoginRefused as refused:
                    result = refused
            if isinstance(result, LoginRefused):
                self._failed(address)
            else:
                self.throttle.succeeded(address)
            done(result)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            finish()
            return
        wait = self.throttle.wait(address, time.monotonic())
        if wait:
            loop.call_later(wait, finish)
        else:
            finish()

    def _decide(
        self,
        record: UserRecord | None,
        username: str,
        password: str,
        verified: bool,
        peer_host: str | None,
    ) -> LoginResult:
        try:
            return self.broker.users.decide(record, username, verified, peer_host)
        except LoginRefused as refused:
            if "invalid credentials" not in refused.reason:
                return refused
            internal = refused
        for _, backend_class in self.broker.auth_backends.items():
            try:
                user = backend_class().authenticate(username, password, peer_host)  # type: ignore[call-arg]
            except LoginRefused as refused:
                return refused
            if user is not None:
                return user
        return internal

    def _failed(self, address: str) -> None:
        throttle = self.throttle
        failures = throttle.failed(address, time.monotonic())
        delay = throttle.delay_for(failures)
        if delay and failures == throttle.free:
            log.warning(
                "%d failed logins from %s: its next attempts wait %.2f s and more",
                failures,
                address,
                delay,
            )

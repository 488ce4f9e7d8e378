"""Users, vhosts and permissions for tests, on warrenmq (its access file) or on RabbitMQ (its
management HTTP API), so that the permission tests run unchanged against both.

``WARRENMQ_TEST_EXTERNAL_MANAGEMENT`` (default ``http://HOST:15672``, guest/guest) is where the
RabbitMQ's management API is, when ``WARRENMQ_TEST_EXTERNAL`` points at one.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pika
from conftest import BrokerAddress
from pika.exceptions import AMQPError

from warrenmq.access import AccessFile
from warrenmq.passwords import PBKDF2_SHA256, hash_password

#: PBKDF2 iterations for test users: the scheme is the same, the cost is not the point here
TEST_ITERATIONS = 1_000


class LocalAdmin:
    """Edits a warrenmq data directory's access file, as the ``warrenmq`` commands do."""

    def __init__(self, data_dir: Path) -> None:
        self.file = AccessFile.in_data_dir(data_dir)

    def _edit(self, change: object) -> None:
        access = self.file.load_or_default()
        change(access)  # type: ignore[operator]
        self.file.save(access)

    def add_vhost(self, name: str) -> None:
        self._edit(lambda access: access.add_vhost(name))

    def delete_vhost(self, name: str) -> None:
        self._edit(lambda access: access.delete_vhost(name))

    def add_user(self, name: str, password: str, tags: tuple[str, ...] = ()) -> None:
        self._edit(
            lambda access: access.add_user(
                name,
                tags=tags,
                password_hash=hash_password(password, TEST_ITERATIONS),
                hashing_algorithm=PBKDF2_SHA256,
            )
        )

    def delete_user(self, name: str) -> None:
        self._edit(lambda access: access.delete_user(name))

    def set_permissions(self, user: str, vhost: str, configure: str, write: str, read: str) -> None:
        self._edit(lambda access: access.set_permissions(user, vhost, configure, write, read))

    def clear_permissions(self, user: str, vhost: str) -> None:
        self._edit(lambda access: access.clear_permissions(user, vhost))

    def set_topic_permissions(
        self, user: str, vhost: str, exchange: str, write: str, read: str
    ) -> None:
        self._edit(lambda access: access.set_topic_permissions(user, vhost, exchange, write, read))


class RabbitAdmin:
    """The same operations through RabbitMQ's management HTTP API."""

    def __init__(self, url: str, user: str = "guest", password: str = "guest") -> None:
        self.url = url.rstrip("/") + "/api"
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _call(self, method: str, path: str, body: object | None = None) -> None:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": self.auth, "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    @staticmethod
    def _q(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    def add_vhost(self, name: str) -> None:
        self._call("PUT", f"/vhosts/{self._q(name)}", {})

    def delete_vhost(self, name: str) -> None:
        self._call("DELETE", f"/vhosts/{self._q(name)}")

    def add_user(self, name: str, password: str, tags: tuple[str, ...] = ()) -> None:
        self._call("PUT", f"/users/{self._q(name)}", {"password": password, "tags": ",".join(tags)})

    def delete_user(self, name: str) -> None:
        self._call("DELETE", f"/users/{self._q(name)}")

    def set_permissions(self, user: str, vhost: str, configure: str, write: str, read: str) -> None:
        self._call(
            "PUT",
            f"/permissions/{self._q(vhost)}/{self._q(user)}",
            {"configure": configure, "write": write, "read": read},
        )

    def clear_permissions(self, user: str, vhost: str) -> None:
        self._call("DELETE", f"/permissions/{self._q(vhost)}/{self._q(user)}")

    def set_topic_permissions(
        self, user: str, vhost: str, exchange: str, write: str, read: str
    ) -> None:
        self._call(
            "PUT",
            f"/topic-permissions/{self._q(vhost)}/{self._q(user)}",
            {"exchange": exchange, "write": write, "read": read},
        )


Admin = LocalAdmin | RabbitAdmin


def external_admin(broker: BrokerAddress) -> RabbitAdmin:
    url = os.environ.get("WARRENMQ_TEST_EXTERNAL_MANAGEMENT", f"http://{broker.host}:15672")
    return RabbitAdmin(url)


@dataclass
class Tenant:
    """A vhost and a user of its own for one test, so tests never see each other's grants."""

    broker: BrokerAddress
    admin: Admin
    vhost: str = field(default_factory=lambda: f"vh-{uuid.uuid4().hex[:10]}")
    user: str = field(default_factory=lambda: f"user-{uuid.uuid4().hex[:10]}")
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    opened: list[pika.BlockingConnection] = field(default_factory=list)

    def grant(self, configure: str = "", write: str = "", read: str = "") -> None:
        self.admin.set_permissions(self.user, self.vhost, configure, write, read)

    def grant_topic(self, exchange: str, write: str, read: str) -> None:
        self.admin.set_topic_permissions(self.user, self.vhost, exchange, write, read)

    def parameters(self, vhost: str | None = None) -> pika.ConnectionParameters:
        return pika.ConnectionParameters(
            self.broker.host,
            self.broker.port,
            self.vhost if vhost is None else vhost,
            pika.PlainCredentials(self.user, self.password),
            connection_attempts=1,
            socket_timeout=5,
            stack_timeout=5,
            blocked_connection_timeout=5,
        )

    def connect(self, vhost: str | None = None) -> pika.BlockingConnection:
        connection = pika.BlockingConnection(self.parameters(vhost))
        self.opened.append(connection)
        return connection

    def channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        return self.connect().channel()

    def refused(self, kind: str, resource: str, name: str) -> str:
        """The 403 text RabbitMQ gives (3.11 and later name the permission; 3.10 does not)."""
        prefix = "" if self.broker.external else f"{kind} "
        return (
            f"ACCESS_REFUSED - {prefix}access to {resource} '{name}' in vhost '{self.vhost}' "
            f"refused for user '{self.user}'"
        )

    def topic_refused(self, kind: str, routing_key: str, exchange: str) -> str:
        """The 403 text of a topic permission's refusal (3.10 without the permission's name)."""
        prefix = "" if self.broker.external else f"{kind} "
        return (
            f"ACCESS_REFUSED - {prefix}access to topic '{routing_key}' in exchange '{exchange}' "
            f"in vhost '{self.vhost}' refused for user '{self.user}'"
        )


@contextmanager
def tenant(broker: BrokerAddress, admin: Admin) -> Iterator[Tenant]:
    created = Tenant(broker, admin)
    admin.add_vhost(created.vhost)
    admin.add_user(created.user, created.password)
    try:
        yield created
    finally:
        for connection in created.opened:
            if connection.is_open:
                with suppress(AMQPError):  # already closing by the broker's hand
                    connection.close()
        admin.delete_user(created.user)
        admin.delete_vhost(created.vhost)

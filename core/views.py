"""Read-only, protocol-neutral snapshots of what a broker holds, for management and tests.

Each is a frozen dataclass made on request (``Broker.connection_views()``, ``VirtualHost.*_views()``,
``Queue.view()``, ``ProtocolConnection.view()``); nothing here is live or costs anything on the
hot path beyond the integer counters the objects keep anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class QueueView:
    name: str
    vhost: str
    type: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: dict[str, Any]
    dispatch: str
    messages_ready: int
    messages_unacknowledged: int
    message_bytes_ready: int
    message_bytes_unacknowledged: int
    consumers: int
    published: int
    delivered: int
    redelivered: int
    acknowledged: int
    expired: int
    dead_lettered: int
    dropped: int
    rejected_publishes: int
    #: ready messages whose bodies wait on disk, past the queue's memory budget (RabbitMQ's
    #: ``messages_paged_out``), and their body bytes; counted in ``messages_ready`` too
    messages_paged_out: int = 0
    message_bytes_paged_out: int = 0
    #: the name of the policy that applies, if any
    policy: str | None = None

    @property
    def messages(self) -> int:
        return self.messages_ready + self.messages_unacknowledged


@dataclass(frozen=True)
class ConsumerView:
    tag: str
    queue: str
    vhost: str
    #: False for consumers that settle on delivery (AMQP no-ack)
    acks: bool
    exclusive: bool
    priority: int
    prefetch: int
    unacked: int
    #: False for a waiting consumer of a single-active-consumer queue
    active: bool
    has_credit: bool


@dataclass(frozen=True)
class SessionView:
    """An AMQP channel, an MQTT session."""

    number: int
    prefetch: int
    global_prefetch: int
    unacked: int
    consumers: list[ConsumerView]
    confirm: bool = False
    transactional: bool = False
    paused: bool = False


@dataclass(frozen=True)
class ConnectionView:
    name: str
    protocol: str
    transport: str
    peer_host: str | None
    peer_port: int | None
    user: str | None
    vhost: str | None
    #: seconds since the epoch
    connected_at: float
    client: dict[str, Any]
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    blocked: bool
    sessions: list[SessionView] = field(default_factory=list)


@dataclass(frozen=True)
class ExchangeView:
    name: str
    vhost: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any]
    #: the name of the policy that applies, if any
    policy: str | None = None


@dataclass(frozen=True)
class BindingView:
    vhost: str
    source: str
    destination: str
    #: "queue" or "exchange"
    destination_kind: str
    routing_key: str
    arguments: dict[str, Any]

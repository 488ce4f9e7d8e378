"""Interfaces between transports (sockets) and protocol engines (sans-IO state machines).

A transport accepts byte streams; for each it asks a protocol for a ``ProtocolConnection`` and
shuttles bytes: ``receive_data`` in, ``data_to_send`` out. Engines never touch sockets, so the
same engine runs over TCP and WebSocket and is tested by feeding bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .tls import TLSOptions, TLSPeer

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from .broker import Broker
    from .views import ConnectionView


class ProtocolConnection(ABC):
    """One client connection's protocol state machine."""

    #: a callable the transport installs; the engine calls it when it has output that did not
    #: come from ``receive_data`` (a delivery caused by another connection, a heartbeat)
    wakeup: Callable[[], None] | None = None
    #: installed by the transport: bytes waiting in its write buffer (for memory accounting)
    transport_buffer: Callable[[], int] | None = None
    #: set by the engine when the deadline ``tick`` would return has changed (a heartbeat was
    #: negotiated, a close started); the transport calls ``tick`` again and clears it
    timers_changed: bool = False
    #: set by a TLS transport before it feeds any data: the handshake's outcome, the client
    #: certificate included (``TLSPeer.from_handshake``); None on a plain connection
    tls: TLSPeer | None = None

    @abstractmethod
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side."""

    @abstractmethod
    def data_to_send(self) -> bytes | bytearray:
        """Take all pending output (possibly empty). The caller owns the returned buffer."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once the engine is done: flush ``data_to_send`` then close the socket."""

    @abstractmethod
    def connection_lost(self) -> None:
        """The byte stream is gone (or being closed): release everything the session holds."""

    def tick(self, now: float) -> float | None:
        """Run timers (heartbeats). Returns the next monotonic time to call again, or None."""
        return None

    def shutdown(self, reason: str) -> None:
        """The broker is stopping: start a graceful close."""

    #: the transport stops reading while this is True (a publisher blocked by a resource
    #: alarm) and resumes when it turns False; re-checked after every read and flush
    reading_paused: bool = False

    def resource_alarm(self, alarms: frozenset[str]) -> None:
        """The broker's resource alarms changed: ``alarms`` are those in force ("memory",
        "disk"). Block publishing while there is any, unblock when none is left. By default
        calls ``memory_alarm`` with whether any is on, for an engine with no reason to give."""
        self.memory_alarm(bool(alarms))

    def memory_alarm(self, active: bool) -> None:
        """A resource alarm (memory or disk) went on, or the last one off: block or unblock
        publishing. Called by the default ``resource_alarm`` only."""

    def view(self) -> ConnectionView | None:
        """A snapshot for management: peer, user, sessions, counters (None: not shown)."""
        return None

    def session_count(self) -> int:
        """Sessions (AMQP channels) open on this connection, for the per-user channel limit."""
        return 0

    def buffered_bytes(self) -> int:
        """Bytes held for this connection (output, partial input), for the memory alarm."""
        return 0

    def pause_writing(self) -> None:
        """The peer is not reading fast enough: stop producing deliveries."""

    def resume_writing(self) -> None:
        """The peer caught up: deliveries may flow again."""


class Protocol(ABC):
    """A protocol: makes engines for new connections."""

    name: ClassVar[str]
    #: the port a listener of this protocol uses by default, and over TLS
    default_port: ClassVar[int] = 0
    default_tls_port: ClassVar[int] = 0
    #: WebSocket subprotocols (``Sec-WebSocket-Protocol``) that carry this protocol; none:
    #: not offered over WebSocket
    websocket_subprotocols: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def create_connection(
        self, broker: Broker, peer: tuple[str, int] | None, *, transport_name: str
    ) -> ProtocolConnection: ...


@dataclass(frozen=True)
class ListenerSpec:
    """One listener: which transport, which protocol, where, and TLS if ``tls`` is set."""

    transport: str
    protocol: str
    host: str
    port: int
    options: dict[str, Any] = field(default_factory=dict)
    tls: TLSOptions | None = None


class Transport(ABC):
    """A listener implementation (TCP, WebSocket, ...)."""

    name: ClassVar[str]
    #: the port a listener of this transport uses by default; 0: its protocol's
    default_port: ClassVar[int] = 0

    @abstractmethod
    async def serve(
        self, broker: Broker, spec: ListenerSpec, *, task_status: TaskStatus[Any]
    ) -> None:
        """Listen until cancelled; report the bound (host, port) with ``task_status.started``.

        On cancellation: stop accepting, ask every connection to ``shutdown``, give them the
        broker's grace period to flush, then close them.
        """

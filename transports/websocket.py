"""The WebSocket transport: the same protocol engines as raw TCP, carried in WebSocket binary
messages (RFC 6455), with the `websockets` library's sans-IO layer doing the HTTP upgrade and
the framing. The connection's subprotocol picks the engine: a protocol plugin names the
subprotocols it answers to in ``Protocol.websocket_subprotocols`` (``mqtt`` and ``mqttv3.1``
for MQTT, as RabbitMQ's Web-MQTT; ``amqp`` for AMQP 0-9-1).

Messages form a byte stream: one message may hold several packets or frames of the engine's
protocol, or part of one (as MQTT over WebSocket specifies), and each flush of an engine's
output goes out as one binary message. Flushing, timers and back-pressure are the shared
driver's (``driver.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskStatus
from websockets.exceptions import NegotiationError
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from warrenmq import Broker, ListenerSpec, Transport, hookimpl
from warrenmq.errors import PluginError

from .driver import Link, Listener

log = logging.getLogger("warrenmq.websocket")
#: the websockets library's own per-connection log ("connection open"), kept quiet
_frames_log = logging.getLogger("warrenmq.websocket.frames")
_frames_log.setLevel(logging.WARNING)

#: RabbitMQ's Web-MQTT path and port
DEFAULT_PATH = "/ws"
DEFAULT_PORT = 15675
#: largest message accepted before the engine is chosen (the handshake has its own limits)
HANDSHAKE_MAX_SIZE = 64 * 1024
#: close codes (RFC 6455 section 7.4.1)
NORMAL_CLOSURE = 1000
UNSUPPORTED_DATA = 1003

_BINARY, _CONTINUATION, _TEXT, _CLOSE = Opcode.BINARY, Opcode.CONT, Opcode.TEXT, Opcode.CLOSE


class WebSocketLink(Link):
    """One WebSocket connection: the opening handshake, then the chosen engine's stream."""

    listener: WebSocketListener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.protocol_name: str | None = None
        self.ws = ServerProtocol(
            # the library binds this to the ServerProtocol: a plain function, not a method
            select_subprotocol=lambda ws, offered: Subprotocol(self._select_subprotocol(offered)),
            max_size=HANDSHAKE_MAX_SIZE,
            logger=_frames_log,
        )
        self._write = self._send_binary
        timeout = self.listener.broker.settings.handshake_timeout
        self._handshake_timer: asyncio.TimerHandle | None = self.listener.loop.call_later(
            timeout, self._handshake_expired
        )

    def buffered(self) -> int:
        return super().buffered() + len(self.ws.reader.buffer)

    # -- the opening handshake ----------------------------------------------------------

    def _select_subprotocol(self, offered: Sequence[str]) -> str:
        """The first subprotocol the client offers that a protocol of this listener speaks;
        ``NegotiationError`` (HTTP 400) if none."""
        known = self.listener.subprotocols
        for name in offered:
            if name in known:
                self.protocol_name = known[name]
                return name
        raise NegotiationError(
            f"no supported subprotocol (offered: {', '.join(offered) or 'none'}; "
            f"this endpoint speaks: {', '.join(known)})"
        )

    def _handshake(self, events: list[Any]) -> None:
        ws = self.ws
        request = next((event for event in events if isinstance(event, Request)), None)
        if request is None:
            self._pump()  # a malformed request: the library answered it
            return
        path = urlsplit(request.path).path
        if path != self.listener.path:
            response = ws.reject(
                404, f"no WebSocket endpoint at {path}: try {self.listener.path}\n"
            )
        else:
            response = ws.accept(request)
        ws.send_response(response)
        self._pump()
        if response.status_code != 101:
            reason = ws.handshake_exc or f"path {path}"
            log.info("refused a WebSocket connection from %s: %s", self.peer(), reason)
            return
        self._cancel_handshake_timer()
        assert self.protocol_name is not None
        # the parser reads the limit per frame: ``max_message_size`` in recent releases of
        # websockets, ``max_size`` in older ones (14.x); the attribute it does not read is unused
        limit = self.listener.max_message_size(self.protocol_name)
        ws.max_message_size = limit
        ws.max_size = limit  # type: ignore[attr-defined]
        self.attach(self.protocol_name, self.listener.transport_name)
        self._deliver([event for event in events if event is not request])

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.engine is None and self.transport is not None:
            log.info("closing WebSocket connection from %s: handshake timeout", self.peer())
            self.transport.abort()

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    # -- input ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        ws = self.ws
        try:
            ws.receive_data(data)
        except EOFError:  # input after the closing handshake
            return
        events = ws.events_received()
        if self.engine is None:
            self._handshake(events)
        else:
            self._deliver(events)

    def _deliver(self, events: list[Any]) -> None:
        """Hand the binary messages' bytes to the engine, in one piece per read; a close (by
        the peer or after bad framing) reaches the engine as the end of its stream."""
        ws = self.ws
        payload = []
        for frame in events:
            opcode = frame.opcode
            if opcode is _BINARY or opcode is _CONTINUATION:
                payload.append(frame.data)
            elif opcode is _TEXT:
                log.info("closing WebSocket connection from %s: a text message", self.peer())
                ws.fail(UNSUPPORTED_DATA, "binary messages only")
                break
        if payload:
            self.receive(payload[0] if len(payload) == 1 else b"".join(payload))
        self._pump()
        if ws.state is not State.OPEN:
            self.receive(b"")  # the peer closed, or its framing was bad

    def eof_received(self) -> bool:
        self.ws.receive_eof()
        if self.engine is not None:
            self.receive(b"")
        self._pump()
        return False

    # -- output -----------------------------------------------------------------------------

    def _send_binary(self, data: bytes | bytearray) -> None:
        ws = self.ws
        if ws.state is State.OPEN:
            ws.send_binary(data)
            self._pump()

    def _pump(self) -> None:
        """Write what the WebSocket layer has to send; close the socket at its end."""
        transport = self.transport
        if transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif not transport.is_closing():
                self.closing = True
                transport.close()

    def _close(self) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_close(NORMAL_CLOSURE)
        self._pump()  # a close frame (ours, or the answer to the peer's) goes out first
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_handshake_timer()
        super().connection_lost(exc)


class WebSocketListener(Listener):
    def __init__(self, broker: Broker, spec: ListenerSpec, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(broker, spec, loop)
        self.path = spec.options.get("path", DEFAULT_PATH)
        self.transport_name = "ws" if spec.tls is None else "wss"
        #: subprotocol -> protocol name, in the order they are preferred
        self.subprotocols: dict[str, str] = {}
        names = spec.options.get("protocols") or sorted(
            (
                name
                for name, protocol in broker.protocols.items()
                if protocol.websocket_subprotocols
            ),
            key=lambda name: name != "mqtt",  # mqtt first, as RabbitMQ's Web-MQTT
        )
        for name in names:
            for subprotocol in broker.protocol(name).websocket_subprotocols:
                self.subprotocols.setdefault(subprotocol, name)
        if not self.subprotocols:
            raise PluginError(
                f"no protocol of {', '.join(names) or 'those loaded'} has a WebSocket subprotocol"
            )

    def max_message_size(self, protocol: str) -> int:
        """Largest WebSocket message taken from a client of ``protocol``: its largest packet
        (or message and frame) with room to spare; the engine enforces its own limits."""
        settings = self.broker.settings
        if protocol == "mqtt":
            return settings.mqtt_max_packet_size + 64 * 1024
        return settings.max_message_size + 2 * settings.frame_max


class WebSocketTransport(Transport):
    name = "websocket"
    default_port = DEFAULT_PORT

    async def serve(
        self,
        broker: Broker,
        spec: ListenerSpec,
        *,
        task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        context = spec.tls.server_context() if spec.tls is not None else None
        listener = WebSocketListener(broker, spec, asyncio.get_running_loop())
        host, port = await listener.serve(lambda: WebSocketLink(listener), context)
        log.info(
            "WebSocket endpoint %s://%s:%d%s: subprotocols %s",
            listener.transport_name,
            host,
            port,
            listener.path,
            ", ".join(listener.subprotocols),
        )
        task_status.started((host, port))
        await listener.run()


@hookimpl
def warrenmq_register_transports(registry: Any) -> None:
    registry.add(WebSocketTransport)

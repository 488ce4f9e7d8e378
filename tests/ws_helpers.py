"""WebSocket test clients on the `websockets` library's sans-IO client over a plain socket, so
that a test decides when to read (and can stop reading): a raw WebSocket, and the raw AMQP
client of ``raw_amqp`` carried in binary messages of the ``amqp`` subprotocol."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, field

from raw_amqp import ConnectionClosedByPeer, RawAMQP
from websockets.client import ClientProtocol
from websockets.frames import Close, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

TIMEOUT = 10.0


class RawWebSocket:
    """One WebSocket connection. ``status`` is the handshake's HTTP status (101: open),
    ``subprotocol`` what the server chose, ``body`` a refusal's text; ``received`` gathers
    the binary messages' bytes, ``close`` is the server's close frame once it came."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/ws",
        subprotocols: tuple[str, ...] = ("amqp",),
        context: ssl.SSLContext | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        scheme = "wss" if context is not None else "ws"
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.timeout = timeout
        self.ws = ClientProtocol(
            parse_uri(f"{scheme}://{host}:{port}{path}"),
            subprotocols=list(subprotocols) or None,
            max_size=None,
        )
        self.received = bytearray()
        self.close: Close | None = None
        self.eof = False
        self.ws.send_request(self.ws.connect())
        self._write()
        deadline = time.monotonic() + timeout
        response: Response | None = None
        while response is None:
            for event in self._read(deadline):
                if isinstance(event, Response):
                    response = event
            if response is None and self.eof:
                raise ConnectionClosedByPeer("closed during the handshake")
        self.status = response.status_code
        self.body = (response.body or b"").decode(errors="replace")
        self.subprotocol = response.headers.get("Sec-WebSocket-Protocol")

    def _write(self) -> None:
        for chunk in self.ws.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def _read(self, deadline: float) -> list[object]:
        """One read from the socket; returns the events it completed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("nothing from the server within the deadline")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if data:
            self.ws.receive_data(data)
        else:
            self.eof = True
            self.ws.receive_eof()
        events = self.ws.events_received()
        for event in events:
            opcode = getattr(event, "opcode", None)
            if opcode in (Opcode.BINARY, Opcode.CONT):
                self.received += event.data  # type: ignore[attr-defined]
            elif opcode is Opcode.CLOSE:
                self.close = Close.parse(event.data)  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            self._write()
        return events

    def fill(self, deadline: float) -> None:
        """Read once; ``ConnectionClosedByPeer`` if the server closed."""
        if self.eof:
            raise ConnectionClosedByPeer("server closed the connection", bytes(self.received))
        try:
            self._read(deadline)
        except TimeoutError:
            raise TimeoutError("no complete frame within the deadline") from None
        if self.eof and not self.received:
            raise ConnectionClosedByPeer("server closed the connection")

    def send_binary(self, data: bytes) -> None:
        if self.ws.state is not State.OPEN:  # as a socket the server closed
            raise BrokenPipeError("the WebSocket is closing or closed")
        self.ws.send_binary(data)
        self._write()

    def send_text(self, text: str) -> None:
        self.ws.send_text(text.encode())
        self._write()

    def wait_closed(self, timeout: float = TIMEOUT) -> Close | None:
        """Read until the server closes the socket; its close frame, if it sent one."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._read(deadline)
        return self.close

    def shut(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass
class AMQPOverWebSocket(RawAMQP):
    """``RawAMQP`` whose bytes travel in binary messages of the ``amqp`` subprotocol."""

    path: str = "/ws"
    context: ssl.SSLContext | None = None
    link: RawWebSocket = field(init=False)

    def __post_init__(self) -> None:
        self.link = RawWebSocket(
            self.host, self.port, self.path, ("amqp",), self.context, self.timeout
        )
        assert self.link.status == 101, (self.link.status, self.link.body)
        self.sock = self.link.sock

    def send(self, data: bytes) -> None:
        self.link.send_binary(data)

    def _fill(self, deadline: float) -> None:
        link = self.link
        if not link.received:
            link.fill(deadline)
        self.buffer += link.received
        link.received.clear()

"""What every stream transport does for its protocol engines, whatever carries the bytes (raw
TCP, WebSocket): coalesced output, the engine's timers, back-pressure both ways, and the
listener's lifetime. A transport subclasses ``Link`` for how bytes come in and go out.

asyncio ``Protocol`` callbacks are the cheapest socket layer measured (anyio byte streams
cost ~7% more per message); anyio still owns the listener's lifetime. Output is coalesced:
after each read, the connection that read and every connection it produced deliveries for
are written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import ssl
import time
from collections.abc import Callable
from typing import cast

import anyio

from warrenmq import Broker, ListenerSpec, ProtocolConnection
from warrenmq.tls import TLS_HANDSHAKE_TIMEOUT, TLSPeer

log = logging.getLogger("warrenmq.tcp")

WRITE_HIGH_WATER = 4 * 1024 * 1024
WRITE_LOW_WATER = 1024 * 1024
#: seconds between hangup checks of a client that is not being read
HANGUP_CHECK_INTERVAL = 1.0
_HANGUP_EVENTS = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR


class Flusher:
    """Connections with pending output, written at the end of the current read."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[Link] = []
        self.reading = False
        self.scheduled = False

    def add(self, link: Link) -> None:
        if link.queued:
            return
        link.queued = True
        self.pending.append(link)
        if not self.reading and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every pending link. ``Link.flush`` never raises: a link whose engine fails is
        closed on its own, and the links after it are still written."""
        self.scheduled = False
        pending = self.pending
        while pending:
            self.pending = []
            for link in pending:
                link.queued = False
                link.flush()
            pending = self.pending


class Link(asyncio.Protocol):
    """One connection: socket events in, engine output out.

    A subclass attaches the engine (``attach``) when it knows the protocol (at once for raw
    TCP, after the opening handshake for WebSocket), sets ``_write`` to what takes the
    engine's output, and may override ``_close`` (how the connection ends once the engine is
    done). ``receive`` feeds the engine inside a read, so that the output it causes on this
    and other connections is written once, after it.
    """

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.engine: ProtocolConnection | None = None
        self.transport: asyncio.Transport | None = None
        self.queued = False
        self.closing = False
        #: the engine raised; the connection is being aborted and the engine is not called again
        self.failed = False
        self.reading_paused = False
        self._timer: asyncio.TimerHandle | None = None
        #: takes the engine's output (``transport.write`` for raw TCP)
        self._write: Callable[[bytes | bytearray], None] = _unset

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, but has its methods
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        self.listener.links.add(self)

    def peer(self) -> tuple[str, int] | None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return (peer[0], peer[1]) if peer else None

    def attach(self, protocol_name: str, transport_name: str) -> ProtocolConnection:
        """Make the engine of ``protocol_name`` for this connection and start its timers."""
        assert self.transport is not None
        listener = self.listener
        engine = listener.broker.protocol(protocol_name).create_connection(
            listener.broker, self.peer(), transport_name=transport_name
        )
        self.engine = engine
        tls = listener.spec.tls
        if tls is not None:  # asyncio calls connection_made after the TLS handshake
            engine.tls = TLSPeer.from_handshake(self.transport.get_extra_info("ssl_object"), tls)
        engine.wakeup = self._wakeup
        engine.transport_buffer = self.buffered
        log.debug("%s connection from %s", protocol_name, self.peer())
        self._schedule_tick()
        return engine

    def buffered(self) -> int:
        """Bytes this connection holds below the engine (for memory accounting)."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _wakeup(self) -> None:
        self.listener.flusher.add(self)

    def receive(self, data: bytes) -> None:
        """Feed ``data`` to the engine and write what it produced, here and elsewhere."""
        engine = self.engine
        if engine is None:
            return
        flusher = self.listener.flusher
        flusher.reading = True
        try:
            engine.receive_data(data)
        except Exception:
            self._fail("reading")
        finally:
            flusher.reading = False
        self.flush()
        if flusher.pending:
            flusher.flush()
        if engine.timers_changed:
            engine.timers_changed = False
            self._schedule_tick()

    #: raw bytes go straight to the engine (no extra call per read); a framing transport
    #: overrides ``data_received`` and calls ``receive`` with each message's payload
    data_received = receive

    def eof_received(self) -> bool:
        if self.engine is not None:
            self.engine.receive_data(b"")
            self.flush()
        return False

    def flush(self) -> None:
        """Write the engine's output and apply its state; if the engine raises, close this
        connection only (see ``_fail``)."""
        try:
            self._flush()
        except Exception:
            self._fail("writing")
            return
        engine = self.engine
        if engine is not None and engine.timers_changed and not self.listener.flusher.reading:
            # output that did not come from a read (a login answered later, a close the
            # broker started) may come with a new deadline
            engine.timers_changed = False
            self._schedule_tick()

    def _fail(self, where: str) -> None:
        """The engine raised while ``where``: log it once, abort this connection."""
        if self.failed:
            return
        self.failed = True
        log.exception(
            "connection from %s: protocol engine failed while %s; closing it", self.peer(), where
        )
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        engine, transport = self.engine, self.transport
        if engine is None or transport is None or transport.is_closing() or self.failed:
            return
        data = engine.data_to_send()
        if data:
            self._write(data)
        if engine.reading_paused != self.reading_paused:
            self.reading_paused = engine.reading_paused
            if self.reading_paused:
                transport.pause_reading()
                self._watch_hangup()
            else:
                transport.resume_reading()
        if engine.closed and not self.closing:
            self.closing = True
            self._close()

    def _close(self) -> None:
        """The engine is done and its output written: end the connection."""
        assert self.transport is not None
        self.transport.close()

    def _watch_hangup(self) -> None:
        """While we do not read a client, its going away would go unnoticed (no EOF is read):
        poll the socket for a hangup now and then, and release the connection if it went."""
        if not self.reading_paused or self.closing or self.transport is None:
            return
        if _peer_hung_up(self.transport):
            log.info("a client that was not being read went away")
            self.transport.abort()
            return
        self.listener.loop.call_later(HANGUP_CHECK_INTERVAL, self._watch_hangup)

    def pause_writing(self) -> None:
        if self.engine is not None:
            self.engine.pause_writing()

    def resume_writing(self) -> None:
        if self.engine is not None:
            self.engine.resume_writing()
            self.listener.flusher.flush()

    def _schedule_tick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        engine = self.engine
        if engine is None or self.transport is None:
            return
        deadline = engine.tick(time.monotonic())
        self.flush()
        if deadline is not None and not self.closing:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = self.listener.loop.call_later(delay, self._schedule_tick)

    def shutdown(self) -> None:
        """The broker is stopping: ask the engine to close gracefully (a link without an
        engine yet is aborted)."""
        if self.engine is not None:
            self.engine.shutdown("shutdown")
            self.flush()
            self._schedule_tick()
        elif self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.engine is not None:
            self.engine.connection_lost()
        self.listener.links.discard(self)
        if not self.listener.links:
            self.listener.all_closed.set()


def _unset(data: bytes | bytearray) -> None:
    raise RuntimeError("the link has no output yet")


def _peer_hung_up(transport: asyncio.Transport) -> bool:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock.fileno(), _HANGUP_EVENTS)
        return any(events & _HANGUP_EVENTS for _, events in poller.poll(0))
    except (OSError, ValueError):
        return True


class Listener:
    """A listening socket's connections, and their shared flusher."""

    def __init__(self, broker: Broker, spec: ListenerSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.broker = broker
        self.spec = spec
        self.loop = loop
        self.links: set[Link] = set()
        self.flusher = Flusher(loop)
        self.all_closed = asyncio.Event()

    async def serve(
        self, make_link: Callable[[], Link], context: ssl.SSLContext | None
    ) -> tuple[str, int]:
        """Listen; returns the bound address. Cancel ``run`` to stop."""
        spec = self.spec
        try:
            self.server = await self.loop.create_server(
                make_link,
                spec.host,
                spec.port,
                reuse_address=True,
                backlog=1024,
                ssl=context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if context is not None else None,
            )
        except OSError as exc:
            raise listen_error(exc, spec) from exc
        self.address: tuple[str, int] = self.server.sockets[0].getsockname()[:2]
        return self.address

    async def run(self) -> None:
        """Serve until cancelled; then stop accepting, ask every connection to shut down, give
        them the broker's grace period, and abort those left."""
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                self.server.close()
                if self.links:
                    host, port = self.address
                    log.info("closing %d connection(s) on %s:%d", len(self.links), host, port)
                    self.all_closed.clear()
                    for link in list(self.links):
                        link.shutdown()
                    with anyio.move_on_after(self.broker.settings.shutdown_grace):
                        while self.links:
                            await self.all_closed.wait()
                            self.all_closed.clear()
                    for link in list(self.links):
                        if link.transport is not None:
                            link.transport.abort()


def listen_error(exc: OSError, spec: ListenerSpec) -> OSError:
    """``exc`` (same errno) saying which address could not be listened on, and why."""
    if exc.errno is not None and exc.errno > 0:
        reason = os.strerror(exc.errno)  # asyncio's text differs between its loops
    else:  # e.g. socket.gaierror, whose errno is negative
        reason = exc.strerror or str(exc)
    return OSError(exc.errno, f"cannot listen on {spec.host}:{spec.port}: {reason}")

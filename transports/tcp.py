"""The TCP transport: asyncio protocol objects feeding a sans-IO engine per connection.

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
import time
from typing import Any, cast

import anyio
from anyio.abc import TaskStatus

from warrenmq import Broker, ListenerSpec, Protocol, ProtocolConnection, Transport, hookimpl
from warrenmq.tls import TLS_HANDSHAKE_TIMEOUT, TLSOptions, TLSPeer

log = logging.getLogger("warrenmq.tcp")

WRITE_HIGH_WATER = 4 * 1024 * 1024
WRITE_LOW_WATER = 1024 * 1024
#: seconds between hangup checks of a client that is not being read
HANGUP_CHECK_INTERVAL = 1.0
_HANGUP_EVENTS = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR


class _Flusher:
    """Connections with pending output, written at the end of the current read."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[_Link] = []
        self.reading = False
        self.scheduled = False

    def add(self, link: _Link) -> None:
        if link.queued:
            return
        link.queued = True
        self.pending.append(link)
        if not self.reading and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every pending link. ``_Link.flush`` never raises: a link whose engine fails is
        closed on its own, and the links after it are still written."""
        self.scheduled = False
        pending = self.pending
        while pending:
            self.pending = []
            for link in pending:
                link.queued = False
                link.flush()
            pending = self.pending


class _Link(asyncio.Protocol):
    """One TCP connection: socket events in, engine output out."""

    def __init__(self, listener: _Listener) -> None:
        self.listener = listener
        self.engine: ProtocolConnection | None = None
        self.transport: asyncio.Transport | None = None
        self.queued = False
        self.closing = False
        #: the engine raised; the connection is being aborted and the engine is not called again
        self.failed = False
        self.reading_paused = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, but has its methods
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        listener = self.listener
        self.engine = listener.protocol.create_connection(
            listener.broker, (peer[0], peer[1]) if peer else None, transport_name=listener.name
        )
        if listener.tls is not None:  # asyncio calls connection_made after the handshake
            self.engine.tls = TLSPeer.from_handshake(
                transport.get_extra_info("ssl_object"), listener.tls
            )
        self.engine.wakeup = self._wakeup
        self.engine.transport_buffer = self.transport.get_write_buffer_size
        listener.links.add(self)
        log.debug("connection from %s", peer)
        self._schedule_tick()

    def _wakeup(self) -> None:
        self.listener.flusher.add(self)

    def data_received(self, data: bytes) -> None:
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
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.exception(
            "connection from %s: protocol engine failed while %s; closing it", peer, where
        )
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        engine, transport = self.engine, self.transport
        if engine is None or transport is None or transport.is_closing() or self.failed:
            return
        data = engine.data_to_send()
        if data:
            transport.write(data)
        if engine.reading_paused != self.reading_paused:
            self.reading_paused = engine.reading_paused
            if self.reading_paused:
                transport.pause_reading()
                self._watch_hangup()
            else:
                transport.resume_reading()
        if engine.closed and not self.closing:
            self.closing = True
            transport.close()

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
        if self.engine is not None:
            self.engine.shutdown("shutdown")
            self.flush()
            self._schedule_tick()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.engine is not None:
            self.engine.connection_lost()
        self.listener.links.discard(self)
        if not self.listener.links:
            self.listener.all_closed.set()


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


class _Listener:
    def __init__(
        self,
        broker: Broker,
        protocol: Protocol,
        loop: asyncio.AbstractEventLoop,
        name: str = "tcp",
        tls: TLSOptions | None = None,
    ) -> None:
        self.broker = broker
        self.tls = tls
        self.protocol = protocol
        self.loop = loop
        #: the transport's name as connections show it ("tcp", or "tls" over TLS)
        self.name = name
        self.links: set[_Link] = set()
        self.flusher = _Flusher(loop)
        self.all_closed = asyncio.Event()


class TCPTransport(Transport):
    name = "tcp"

    async def serve(
        self,
        broker: Broker,
        spec: ListenerSpec,
        *,
        task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        loop = asyncio.get_running_loop()
        context = spec.tls.server_context() if spec.tls is not None else None
        listener = _Listener(
            broker,
            broker.protocol(spec.protocol),
            loop,
            "tcp" if context is None else "tls",
            spec.tls,
        )
        try:
            server = await loop.create_server(
                lambda: _Link(listener),
                spec.host,
                spec.port,
                reuse_address=True,
                backlog=1024,
                ssl=context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if context is not None else None,
            )
        except OSError as exc:
            raise _listen_error(exc, spec) from exc
        host, port = server.sockets[0].getsockname()[:2]
        task_status.started((host, port))
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                server.close()
                if listener.links:
                    log.info("closing %d connection(s) on %s:%d", len(listener.links), host, port)
                    listener.all_closed.clear()
                    for link in list(listener.links):
                        link.shutdown()
                    with anyio.move_on_after(broker.settings.shutdown_grace):
                        while listener.links:
                            await listener.all_closed.wait()
                            listener.all_closed.clear()
                    for link in list(listener.links):
                        if link.transport is not None:
                            link.transport.abort()


def _listen_error(exc: OSError, spec: ListenerSpec) -> OSError:
    """``exc`` (same errno) saying which address could not be listened on, and why."""
    if exc.errno is not None and exc.errno > 0:
        reason = os.strerror(exc.errno)  # asyncio's text differs between its loops
    else:  # e.g. socket.gaierror, whose errno is negative
        reason = exc.strerror or str(exc)
    return OSError(exc.errno, f"cannot listen on {spec.host}:{spec.port}: {reason}")


@hookimpl
def warrenmq_register_transports(registry: Any) -> None:
    registry.add(TCPTransport)

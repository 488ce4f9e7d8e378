"""The management listener: uvicorn serving the API on the broker's own event loop.

uvicorn's ``Server.serve`` runs as a task of the broker's task group; the socket is bound
here first, so a port in use stops start-up with the broker's usual message and port 0 tells
the port it got. uvicorn's own signal handling is left out (the broker handles signals), and
when the broker stops, the server is asked to exit and gets a shielded moment to close its
connections cleanly instead of being cancelled mid-response.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn

if TYPE_CHECKING:
    from collections.abc import Generator

log = logging.getLogger("warrenmq.management")

#: seconds open HTTP requests get to finish when the broker stops
SHUTDOWN_GRACE = 2
#: connections waiting to be accepted
BACKLOG = 128


class _Server(uvicorn.Server):
    def capture_signals(self) -> Generator[None, None, None]:  # type: ignore[override]
        """The broker handles SIGINT and SIGTERM; uvicorn must not take them over."""
        from contextlib import nullcontext

        return nullcontext()  # type: ignore[return-value]


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(error.errno, f"management API on {host}:{port}: {error.strerror}") from None
    sock.setblocking(False)
    return sock


def listen(host: str, port: int) -> socket.socket:
    """The listening socket (bound here so that a port in use stops the broker's start)."""
    sock = bind(host, port)
    sock.listen(BACKLOG)
    return sock


async def serve_http(app: Any, sock: socket.socket) -> None:
    """Serve ``app`` on the listening ``sock`` until cancelled, then shut down cleanly."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
        server_header=False,
        backlog=BACKLOG,
    )
    server = _Server(config)

    async def run() -> None:
        try:
            with anyio.CancelScope(shield=True):  # stopped by should_exit, not cancellation
                await server.serve(sockets=[sock])
        finally:
            sock.close()

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        try:
            await anyio.sleep_forever()
        finally:
            server.should_exit = True

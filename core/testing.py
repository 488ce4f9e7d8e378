"""Run a broker in a background thread, for tests and embedding (``running_broker()``)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from .broker import Broker, Settings


@dataclass
class RunningBroker:
    broker: Broker
    host: str
    port: int
    _stop: Any = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"


@contextmanager
def running_broker(
    settings: Settings | None = None, plugins: Iterable[Any] = (), timeout: float = 10.0
) -> Iterator[RunningBroker]:
    """A broker on an ephemeral loopback port, served from its own thread and event loop."""
    if settings is None:
        settings = Settings(host="127.0.0.1", amqp_port=0)
    broker = Broker(settings, plugins)
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        async with anyio.create_task_group() as group:
            state["cancel"] = group.cancel_scope.cancel
            state["token"] = anyio.lowlevel.current_token()
            try:
                state["listeners"] = await group.start(broker.serve)
            finally:
                started.set()

    def run() -> None:
        try:
            anyio.run(main, backend="asyncio", backend_options=_backend_options())
        except BaseException as exc:  # reported to the caller below
            state["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="warrenmq-broker", daemon=True)
    thread.start()
    if not started.wait(timeout) or "error" in state:
        raise RuntimeError(f"broker did not start: {state.get('error')!r}")
    info = state["listeners"][0]
    try:
        yield RunningBroker(broker, info.host, info.port)
    finally:
        anyio.from_thread.run_sync(state["cancel"], token=state["token"])
        thread.join(timeout)


def _backend_options() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}

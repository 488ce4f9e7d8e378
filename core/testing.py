"""Run a broker in a background thread, for tests and embedding (``running_broker()``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from .broker import Broker, Settings

T = TypeVar("T")


@dataclass
class RunningBroker:
    broker: Broker
    host: str
    port: int
    _token: Any = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    def address(self, protocol: str) -> tuple[str, int]:
        """(host, port) of the first listener for ``protocol`` ("amqp", "mqtt", and
        "management" for the management plugin's HTTP listener); KeyError if none."""
        for info in self.broker.listeners:
            if info.spec.protocol == protocol:
                return info.host, info.port
        raise KeyError(f"no {protocol} listener")

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` in the broker's thread (the broker is not thread-safe), for
        example ``running.call(running.broker.set_policy, policy)``; returns its result."""
        return anyio.from_thread.run_sync(function, *args, token=self._token)


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
            state["listeners"] = await group.start(broker.serve)
            started.set()

    def run() -> None:
        try:
            anyio.run(main, backend="asyncio", backend_options=_backend_options())
        except BaseException as exc:  # reported to the caller below
            state["error"] = exc
        finally:
            started.set()  # only now is "error" (or "listeners") there to read

    thread = threading.Thread(target=run, name="warrenmq-broker", daemon=True)
    thread.start()
    if not started.wait(timeout):
        raise RuntimeError(f"broker did not start within {timeout} s")
    if "error" in state:
        raise _start_error(state["error"])
    info = state["listeners"][0]
    try:
        yield RunningBroker(broker, info.host, info.port, state["token"])
    finally:
        anyio.from_thread.run_sync(state["cancel"], token=state["token"])
        thread.join(timeout)


def _start_error(error: BaseException) -> Exception:
    """What stopped the broker from starting (an ``OSError`` naming the address it could not
    listen on, a ``PluginError``, ...), out of the task groups' exception groups."""
    causes = _leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    first = causes[0]
    for other in causes[1:]:
        first.add_note(f"also: {type(other).__name__}: {other}")
    if isinstance(first, Exception):
        return first
    failure = RuntimeError(f"broker did not start: {type(first).__name__}: {first}")
    failure.__cause__ = first
    return failure


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside (nested) task-group exception groups."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _backend_options() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}

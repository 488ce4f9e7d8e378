"""The fanout exchange type: every bound destination gets every message."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from warrenmq import Binding, Exchange, ExchangeType, Message, Router, hookimpl


class FanoutRouter(Router):
    __slots__ = ("_targets", "_snapshot")

    def __init__(self) -> None:
        self._targets: dict[Any, int] = {}
        #: the destinations as a tuple, rebuilt on each binding change (route hands it out)
        self._snapshot: tuple[Any, ...] = ()

    def add_binding(self, binding: Binding) -> None:
        self._targets[binding.destination] = self._targets.get(binding.destination, 0) + 1
        self._snapshot = tuple(self._targets)

    def remove_bindings(self, bindings: Iterable[Binding]) -> None:
        for binding in bindings:
            count = self._targets.get(binding.destination, 0)
            if count > 1:
                self._targets[binding.destination] = count - 1
            else:
                self._targets.pop(binding.destination, None)
        self._snapshot = tuple(self._targets)

    def route(self, message: Message) -> Collection[Any]:
        return self._snapshot

    def close(self) -> None:
        self._targets.clear()
        self._snapshot = ()


class FanoutExchange(ExchangeType):
    name = "fanout"

    @classmethod
    def create_router(cls, exchange: Exchange) -> Router:
        return FanoutRouter()


@hookimpl
def warrenmq_register_exchange_types(registry: Any) -> None:
    registry.add(FanoutExchange)

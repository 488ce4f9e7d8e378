"""The direct exchange type: a message goes to bindings whose key equals its routing key."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from warrenmq import Binding, Exchange, ExchangeType, Message, Router

from ._targets import add_target, remove_target


class DirectRouter(Router):
    __slots__ = ("_index", "_snapshots")

    def __init__(self) -> None:
        #: routing key -> {destination: number of bindings}
        self._index: dict[str, dict[Any, int]] = {}
        #: routing key -> its destinations as a tuple (what route hands out, never live)
        self._snapshots: dict[str, tuple[Any, ...]] = {}

    def _refresh(self, key: str) -> None:
        targets = self._index.get(key)
        if targets:
            self._snapshots[key] = tuple(targets)
        else:
            self._snapshots.pop(key, None)

    def add_binding(self, binding: Binding) -> None:
        add_target(self._index, binding.routing_key, binding.destination)
        self._refresh(binding.routing_key)

    def remove_bindings(self, bindings: Iterable[Binding]) -> None:
        for binding in bindings:
            remove_target(self._index, binding.routing_key, binding.destination)
            self._refresh(binding.routing_key)

    def route(self, message: Message) -> Collection[Any]:
        return self._snapshots.get(message.routing_key, ())

    def close(self) -> None:
        self._index.clear()
        self._snapshots.clear()


class DirectExchange(ExchangeType):
    name = "direct"

    @classmethod
    def create_router(cls, exchange: Exchange) -> Router:
        return DirectRouter()


def warrenmq_register_exchange_types(registry: Any) -> None:
    registry.add(DirectExchange)

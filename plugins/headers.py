"""The headers exchange type: match message headers against binding arguments.

``x-match`` is ``all`` (default) or ``any``; the ``-with-x`` variants also compare arguments
whose names start with ``x-``. A binding argument with no value (void) matches on presence.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from warrenmq import Binding, Exchange, ExchangeType, Message, PreconditionFailed, Router, hookimpl

MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


def _mode(binding: Binding) -> str:
    mode = binding.arguments.get("x-match", "all")
    return mode.decode() if isinstance(mode, bytes) else mode


def _conditions(binding: Binding, mode: str) -> list[tuple[str, Any]]:
    with_x = mode.endswith("-with-x")
    return [
        (key, value)
        for key, value in binding.arguments.items()
        if key != "x-match" and (with_x or not key.startswith("x-"))
    ]


class HeadersRouter(Router):
    __slots__ = ("_bindings",)

    def __init__(self) -> None:
        #: binding -> (match all?, conditions)
        self._bindings: dict[Binding, tuple[bool, list[tuple[str, Any]]]] = {}

    def add_binding(self, binding: Binding) -> None:
        mode = _mode(binding)
        self._bindings[binding] = (mode.startswith("all"), _conditions(binding, mode))

    def remove_bindings(self, bindings: Iterable[Binding]) -> None:
        for binding in bindings:
            self._bindings.pop(binding, None)

    def route(self, message: Message) -> Collection[Any]:
        if not self._bindings:
            return ()
        headers = message.headers
        out: dict[Any, None] = {}
        for binding, (match_all, conditions) in self._bindings.items():
            if binding.destination in out:
                continue
            if _matches(headers, match_all, conditions):
                out[binding.destination] = None
        return out.keys()

    def close(self) -> None:
        self._bindings.clear()


_MISSING = object()


def _type_class(value: Any) -> type:
    """Values match only within a type class, as in RabbitMQ: integers of any width are one
    class, floats another, and booleans are not integers."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, bytes | bytearray | str):
        return str
    return type(value)


def _matches(headers: dict[str, Any], match_all: bool, conditions: list[tuple[str, Any]]) -> bool:
    for key, expected in conditions:
        actual = headers.get(key, _MISSING)
        hit = actual is not _MISSING and (
            expected is None
            or (_type_class(actual) == _type_class(expected) and actual == expected)
        )
        if match_all and not hit:
            return False
        if not match_all and hit:
            return True
    return match_all


class HeadersExchange(ExchangeType):
    name = "headers"

    @classmethod
    def validate_binding(cls, binding: Binding) -> None:
        mode = _mode(binding)
        if mode not in MATCH_MODES:
            raise PreconditionFailed(
                f"Invalid x-match field value {mode!r}; "
                "expected all, any, all-with-x, or any-with-x"
            )

    @classmethod
    def create_router(cls, exchange: Exchange) -> Router:
        return HeadersRouter()


@hookimpl
def warrenmq_register_exchange_types(registry: Any) -> None:
    registry.add(HeadersExchange)

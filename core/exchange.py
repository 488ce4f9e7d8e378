"""Exchanges, bindings and the exchange-type interface that plugins implement.

An exchange type is a factory of routers. A router keeps its own index of the exchange's
bindings (a dict for direct, a trie for topic) so that routing never scans every binding;
it is told of each bind and unbind, in the spirit of RabbitMQ's ``rabbit_exchange_type``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from mypy_extensions import mypyc_attr

from .message import Message
from .policy import Policy, exchange_arguments

if TYPE_CHECKING:
    from .queue import Queue
    from .vhost import VirtualHost


def arguments_key(arguments: Mapping[str, Any]) -> str:
    """A hashable identity for binding arguments (two bindings differ if their args do)."""
    return repr(sorted(arguments.items())) if arguments else ""


class Binding:
    """A route from an exchange (``source``) to a queue or another exchange."""

    __slots__ = ("source", "destination", "routing_key", "arguments", "key")

    def __init__(
        self,
        source: Exchange,
        destination: Queue | Exchange,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.source = source
        self.destination = destination
        self.routing_key = routing_key
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.key = (
            destination.kind,
            destination.name,
            routing_key,
            arguments_key(self.arguments),
        )

    def __repr__(self) -> str:
        return (
            f"Binding({self.source.name!r} -> {self.destination.kind} "
            f"{self.destination.name!r}, key={self.routing_key!r})"
        )


@mypyc_attr(allow_interpreted_subclasses=True)
class Router(ABC):
    """Routes messages for one exchange. Told of every binding change."""

    @abstractmethod
    def add_binding(self, binding: Binding) -> None: ...

    @abstractmethod
    def remove_bindings(self, bindings: Iterable[Binding]) -> None: ...

    @abstractmethod
    def route(self, message: Message) -> Collection[Queue | Exchange]:
        """The destinations for ``message``, each at most once.

        Never a live view of the router's index: a delivery made while the caller iterates
        may change bindings (an auto-delete queue losing its last consumer). Keep immutable
        snapshots (tuples) updated on bind/unbind, so routing copies nothing.
        """

    def close(self) -> None:
        """The exchange is gone; drop any index."""


@mypyc_attr(allow_interpreted_subclasses=True)
class ExchangeType(ABC):
    """A kind of exchange, supplied by a plugin through ``warrenmq_register_exchange_types``."""

    #: the type name clients give in exchange.declare (``direct``, ``x-consistent-hash``...)
    name: ClassVar[str]

    @classmethod
    def validate(cls, arguments: Mapping[str, Any]) -> None:
        """Check exchange arguments before declaring; raise ``PreconditionFailed``."""

    @classmethod
    def validate_binding(cls, binding: Binding) -> None:
        """Check a binding before it is added; raise ``PreconditionFailed``."""

    @classmethod
    @abstractmethod
    def create_router(cls, exchange: Exchange) -> Router: ...


class Exchange:
    """A named exchange in a virtual host."""

    kind = "exchange"

    __slots__ = (
        "name",
        "type_name",
        "durable",
        "auto_delete",
        "internal",
        "arguments",
        "router",
        "bindings",
        "incoming",
        "exchange_destinations",
        "alternate",
        "vhost",
        "policy",
    )

    def __init__(
        self,
        vhost: VirtualHost,
        name: str,
        exchange_type: type[ExchangeType],
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.type_name = exchange_type.name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments: dict[str, Any] = dict(arguments or {})
        #: bindings with this exchange as source, by identity
        self.bindings: dict[tuple[str, str, str, str], Binding] = {}
        #: bindings with this exchange as destination
        self.incoming: set[Binding] = set()
        #: how many outgoing bindings lead to exchanges (0: routing needs no graph walk)
        self.exchange_destinations = 0
        #: the policy that applies to this exchange (``VirtualHost.apply_policies`` sets it)
        self.policy: Policy | None = None
        #: where unroutable messages go (RabbitMQ's alternate-exchange argument or policy)
        self.alternate: str | None = None
        self._configure(self.arguments)
        self.router = exchange_type.create_router(self)

    def apply_policy(self, policy: Policy | None) -> None:
        """``policy`` now applies (None: none does): re-read the effective arguments."""
        self.policy = policy
        self._configure(exchange_arguments(self.arguments, policy))

    def _configure(self, arguments: Mapping[str, Any]) -> None:
        alternate = arguments.get("alternate-exchange")
        if isinstance(alternate, bytes):
            alternate = alternate.decode(errors="replace")
        self.alternate = alternate if isinstance(alternate, str) else None

    def __repr__(self) -> str:
        return f"Exchange({self.name!r}, type={self.type_name!r})"

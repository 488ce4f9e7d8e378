"""The ``x-consistent-hash`` exchange type, as RabbitMQ's rabbitmq_consistent_hash_exchange.

Each message goes to exactly one of the bound queues, chosen by a hash of its routing key (or of
the header named by the exchange argument ``hash-header``, or of the property named by
``hash-property``). The binding key is the queue's weight, a positive integer: a queue bound
with ``"2"`` gets about twice the keys of one bound with ``"1"``. Two bindings to one queue add
their weights.

How: the hash space is cut into ``SLOTS`` slots, and each slot belongs to the destination that
wins it by weighted rendezvous hashing (the lowest ``-ln(u) / weight``, where ``u`` is a hash of
the destination's name and the slot). Routing is then one hash and one list lookup. Adding a
queue moves only the slots it wins, about its share, all of them to the new queue; removing one
moves only its own slots. The slots depend on the destinations' names and weights only, not on
the order of binding, so a key goes to the same queue after a restart (RabbitMQ's ring does
not promise that).
"""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from warrenmq import Binding, Exchange, ExchangeType, Message, PreconditionFailed, Router, hookimpl

#: log2 of the number of slots: 16,384 slots give each queue its share within about 2%
SLOT_BITS = 14
SLOTS = 1 << SLOT_BITS
#: the properties RabbitMQ's plugin can hash on
PROPERTIES = ("message_id", "correlation_id", "timestamp")

_MASK = (1 << 64) - 1
_WEIGHT = re.compile(r"[+-]?[0-9]+")


def _seed(destination: Any) -> int:
    """A 64-bit number for a queue or exchange, from its kind and name (stable across runs)."""
    name = f"{destination.kind}\0{destination.name}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big")


def _scores(seed: int, slots: Iterable[int], weight: int) -> Iterator[tuple[int, float]]:
    """(slot, score) for one destination: ``-ln(u) / weight``, ``u`` uniform in (0, 1) from a
    splitmix64 hash of the seed and the slot. The lowest score wins the slot."""
    for slot in slots:
        z = (seed + (slot + 1) * 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        z ^= z >> 31
        yield slot, -math.log(((z >> 11) + 0.5) / 9007199254740992.0) / weight


def _slot(data: bytes) -> int:
    """The slot of a hashed value: crc32, spread by a multiplicative (Fibonacci) hash."""
    return ((zlib.crc32(data) * 0x9E3779B1) & 0xFFFFFFFF) >> (32 - SLOT_BITS)


def _as_bytes(value: Any) -> bytes:
    """A header or property value as the bytes to hash; a missing one hashes as empty, so
    every message without it goes to the same queue (as in RabbitMQ)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


def weight_of(binding: Binding) -> int:
    """The binding key as a weight, or 406 PRECONDITION_FAILED (RabbitMQ's wording)."""
    key = binding.routing_key
    if not _WEIGHT.fullmatch(key):
        raise PreconditionFailed(f"The binding key must be an integer: '{key}'")
    weight = int(key)
    if weight < 1:
        raise PreconditionFailed("The binding key must be greater than 0")
    return weight


class ConsistentHashRouter(Router):
    def __init__(self, hash_header: str | None, hash_property: str | None) -> None:
        self._header = hash_header
        self._property = hash_property
        #: destination -> its total weight (the sum of its bindings' weights)
        self._weights: dict[Any, int] = {}
        self._seeds: dict[Any, int] = {}
        #: destination -> the tuple route() hands out for it (never a live view)
        self._routes: dict[Any, tuple[Any, ...]] = {}
        #: slot -> the winning destination's route, and its score
        self._owners: list[tuple[Any, ...]] = []
        self._best: list[float] = []

    # -- bindings ---------------------------------------------------------------------------

    def add_binding(self, binding: Binding) -> None:
        destination = binding.destination
        weight = self._weights.get(destination, 0) + weight_of(binding)
        self._weights[destination] = weight
        if destination not in self._routes:
            self._routes[destination] = (destination,)
            self._seeds[destination] = _seed(destination)
        route, seed = self._routes[destination], self._seeds[destination]
        if not self._owners:
            self._owners = [route] * SLOTS
            self._best = [score for _, score in _scores(seed, range(SLOTS), weight)]
            return
        owners, best = self._owners, self._best
        for slot, score in _scores(seed, range(SLOTS), weight):
            if score < best[slot]:  # a heavier weight only lowers its scores
                best[slot] = score
                owners[slot] = route

    def remove_bindings(self, bindings: Iterable[Binding]) -> None:
        for binding in bindings:
            destination = binding.destination
            weight = self._weights.get(destination, 0) - weight_of(binding)
            route = self._routes.get(destination)
            if route is None:
                continue
            if weight > 0:
                self._weights[destination] = weight
            else:
                del self._weights[destination], self._routes[destination]
                del self._seeds[destination]
            # only the slots it owned can change hands: the others' winners are unchanged
            self._reassign([slot for slot, owner in enumerate(self._owners) if owner is route])

    def _reassign(self, slots: list[int]) -> None:
        if not self._weights:
            self._owners, self._best = [], []
            return
        owners, best = self._owners, self._best
        for slot in slots:
            best[slot] = math.inf
        for destination, weight in self._weights.items():
            route = self._routes[destination]
            for slot, score in _scores(self._seeds[destination], slots, weight):
                if score < best[slot]:
                    best[slot] = score
                    owners[slot] = route

    # -- routing ----------------------------------------------------------------------------

    def route(self, message: Message) -> Collection[Any]:
        owners = self._owners
        if not owners:
            return ()
        if self._header is not None:
            data = _as_bytes(message.headers.get(self._header))
        elif self._property is not None:
            data = _as_bytes(getattr(message.properties, self._property))
        else:
            data = message.routing_key.encode("utf-8", "surrogatepass")
        return owners[_slot(data)]

    def close(self) -> None:
        self._weights.clear()
        self._routes.clear()
        self._seeds.clear()
        self._owners, self._best = [], []


def _text_argument(arguments: Mapping[str, Any], name: str) -> str | None:
    value = arguments.get(name)
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise PreconditionFailed(f"Invalid argument '{name}': must be a string")
    return value


class ConsistentHashExchange(ExchangeType):
    name = "x-consistent-hash"

    @classmethod
    def validate(cls, arguments: Mapping[str, Any]) -> None:
        header = _text_argument(arguments, "hash-header")
        prop = _text_argument(arguments, "hash-property")
        if header is not None and prop is not None:
            raise PreconditionFailed("hash-header and hash-property are mutually exclusive")
        if prop is not None and prop not in PROPERTIES:
            raise PreconditionFailed(f"Unsupported property: {prop}")

    @classmethod
    def validate_binding(cls, binding: Binding) -> None:
        weight_of(binding)

    @classmethod
    def create_router(cls, exchange: Exchange) -> Router:
        arguments = exchange.arguments
        return ConsistentHashRouter(
            _text_argument(arguments, "hash-header"), _text_argument(arguments, "hash-property")
        )


@hookimpl
def warrenmq_register_exchange_types(registry: Any) -> None:
    registry.add(ConsistentHashExchange)

"""The message the broker moves, in no protocol's format.

A ``Message`` is a routing key, a body shared by every queue the message reaches, and neutral
``Properties`` decoded only when something reads them. The publishing protocol's own encoding of
the properties (for AMQP, the content-header bytes) is kept beside them together with the codec
that reads it, so a delivery in the same protocol is a byte copy; a delivery in another protocol
converts once and caches the result. The model is RabbitMQ's message container (``mc.erl``).

Nothing here knows a wire format: codecs live with their protocols and plug in through
``PropertiesCodec``.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from mypy_extensions import mypyc_attr

_ids = itertools.count(1)


@dataclass(slots=True, eq=True)
class Properties:
    """A message's properties, as every protocol can express them (all optional)."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] | None = None
    #: 2 = persistent, 1 = transient
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    #: per-message TTL in milliseconds, as a decimal string (AMQP's representation)
    expiration: str | None = None
    message_id: str | None = None
    #: seconds since the epoch
    timestamp: int | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None

    def copy(self) -> Properties:
        """A copy whose headers can be changed without touching this one's."""
        return Properties(
            self.content_type,
            self.content_encoding,
            dict(self.headers) if self.headers is not None else None,
            self.delivery_mode,
            self.priority,
            self.correlation_id,
            self.reply_to,
            self.expiration,
            self.message_id,
            self.timestamp,
            self.type,
            self.user_id,
            self.app_id,
            self.cluster_id,
        )


@mypyc_attr(allow_interpreted_subclasses=True)
class PropertiesCodec(ABC):
    """A protocol's encoding of ``Properties`` (registered by the protocol, not the core)."""

    #: a short name for logs and for the message's cache of encodings
    name: ClassVar[str] = "?"

    @abstractmethod
    def decode(self, encoded: bytes) -> Properties:
        """Read properties from this protocol's encoding; raise ``BrokerError`` if malformed."""

    @abstractmethod
    def encode(self, properties: Properties, body_size: int) -> bytes:
        """This protocol's encoding of ``properties`` for a body of ``body_size`` bytes."""

    def delivery_mode(self, encoded: bytes) -> int | None:
        """The delivery mode alone (a durable queue asks it per message): override with
        something cheaper than decoding everything."""
        return self.decode(encoded).delivery_mode

    def priority(self, encoded: bytes) -> int | None:
        """The priority alone (a priority queue asks it per message): override likewise."""
        return self.decode(encoded).priority


#: codecs by name, so that a store can read back the encoding it kept
CODECS: dict[str, PropertiesCodec] = {}


def register_codec(codec: PropertiesCodec) -> None:
    """Make ``codec`` known by its name (a protocol does this when it is loaded)."""
    CODECS.setdefault(codec.name, codec)


class Rare:
    """What few messages have (a TTL of their own, an id, encodings for other protocols): one
    field of the message, None for most, instead of three (a smaller message: 96 bytes in
    the pure build, where ten fields took 112)."""

    __slots__ = ("ttl", "id", "encodings")

    def __init__(self) -> None:
        self.ttl: int | None = None
        self.id = 0
        self.encodings: dict[PropertiesCodec, bytes] | None = None


class Message:
    """One published message; shared by every queue it reaches, so never mutated after routing
    (but for a queue that swaps its encoded properties for an equal object, to keep one copy).

    Per-queue state (redelivered, delivery count, expiry) lives in the queue's own entries.
    """

    __slots__ = (
        "exchange",
        "routing_key",
        "body",
        "encoded",
        "codec",
        "route_bytes",
        "_properties",
        "rare",
    )

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties | None = None,
        encoded: bytes | None = None,
        codec: PropertiesCodec | None = None,
        route_bytes: bytes | None = None,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        #: the publishing protocol's encoding of the properties, read by ``codec``
        self.encoded = encoded
        self.codec = codec
        #: a delivering protocol's cached encoding of exchange and routing key
        self.route_bytes = route_bytes
        #: what few messages have (None: no TTL of its own, no id, no other encodings)
        self.rare: Rare | None = None
        if properties is None and encoded is None:
            properties = Properties()
        self._properties = properties

    def _extra(self) -> Rare:
        rare = self.rare
        if rare is None:
            rare = self.rare = Rare()
        return rare

    @property
    def ttl(self) -> int | None:
        """Per-message time to live in milliseconds (from ``expiration``), None if unset."""
        rare = self.rare
        return rare.ttl if rare is not None else None

    @ttl.setter
    def ttl(self, value: int | None) -> None:
        self._extra().ttl = value

    @property
    def id(self) -> int:
        """A broker-wide identity, for stores and logs (given on first use)."""
        rare = self._extra()
        if not rare.id:
            rare.id = next(_ids)
        return rare.id

    @property
    def properties(self) -> Properties:
        """The decoded properties (decoded once, on first use). Treat as read-only."""
        props = self._properties
        if props is None:
            assert self.codec is not None and self.encoded is not None
            props = self._properties = self.codec.decode(self.encoded)
        return props

    def encoded_for(self, codec: PropertiesCodec) -> bytes:
        """The properties in ``codec``'s encoding: the original bytes, or a cached conversion."""
        if codec is self.codec and self.encoded is not None:
            return self.encoded
        rare = self._extra()
        cache = rare.encodings
        if cache is None:
            cache = rare.encodings = {}
        encoded = cache.get(codec)
        if encoded is None:
            encoded = cache[codec] = codec.encode(self.properties, len(self.body))
        return encoded

    def with_properties(self, properties: Properties) -> None:
        """Replace the properties before the message is routed (drops the cached encodings)."""
        self._properties = properties
        self.encoded = None
        self.codec = None
        self._extra().encodings = None

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.headers or {}

    @property
    def persistent(self) -> bool:
        """Delivery mode 2, read without decoding every property when possible."""
        props = self._properties
        if props is None:
            assert self.codec is not None and self.encoded is not None
            return self.codec.delivery_mode(self.encoded) == 2
        return props.delivery_mode == 2

    @property
    def priority(self) -> int | None:
        """The priority property, read without decoding every property when possible."""
        props = self._properties
        if props is None:
            assert self.codec is not None and self.encoded is not None
            return self.codec.priority(self.encoded)
        return props.priority

    def __repr__(self) -> str:
        return (
            f"Message(id={self.id}, exchange={self.exchange!r}, "
            f"routing_key={self.routing_key!r}, body_size={len(self.body)})"
        )

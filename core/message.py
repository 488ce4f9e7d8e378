"""The message the broker moves: routing data, raw AMQP content header, body.

Properties stay as the content-header bytes the publisher sent; they are decoded only when
something asks for a field (the headers exchange, TTL, user-id checks, protocol conversion).
The broker mostly moves bytes, and deliveries reuse those bytes as they are.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import commands
from pamqp.header import ContentHeader

_BASIC_CLASS = 60
_HEADER_PREFIX = struct.Struct(">HHQ")


def short_string(value: str) -> bytes:
    """An AMQP shortstr: one length byte then UTF-8."""
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError("short string longer than 255 bytes")
    return bytes((len(raw),)) + raw


class Message:
    """One published message; shared by every queue it is routed to (do not mutate)."""

    __slots__ = (
        "exchange",
        "routing_key",
        "header",
        "body",
        "route_bytes",
        "redelivered",
        "expires_at",
        "_properties",
    )

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        header: bytes,
        body: bytes,
        route_bytes: bytes | None = None,
        redelivered: bool = False,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        #: the AMQP content header payload: class, weight, body size, flags, properties
        self.header = header
        self.body = body
        #: exchange and routing key as two AMQP short strings, as deliveries carry them
        self.route_bytes = route_bytes
        self.redelivered = redelivered
        #: time.monotonic() after which the message is dropped; 0.0 = never (per-message TTL)
        self.expires_at = 0.0
        self._properties: commands.Basic.Properties | None = None

    @classmethod
    def build(
        cls,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: commands.Basic.Properties | None = None,
    ) -> Message:
        """A message made by the broker or another protocol rather than an AMQP publisher."""
        header = ContentHeader(0, len(body), properties or commands.Basic.Properties()).marshal()
        return cls(exchange, routing_key, header, body)

    @property
    def body_size(self) -> int:
        return len(self.body)

    @property
    def properties(self) -> commands.Basic.Properties:
        """The decoded basic properties (decoded once, on first use)."""
        props = self._properties
        if props is None:
            content = ContentHeader()
            content.unmarshal(self.header)
            props = self._properties = content.properties
        return props

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.headers or {}

    @property
    def persistent(self) -> bool:
        return self.properties.delivery_mode == 2

    def encoded_route(self) -> bytes:
        route = self.route_bytes
        if route is None:
            route = self.route_bytes = short_string(self.exchange) + short_string(self.routing_key)
        return route

    def as_redelivered(self) -> Message:
        """A copy flagged redelivered, for requeueing in one queue without touching others."""
        if self.redelivered:
            return self
        copy = Message(
            self.exchange, self.routing_key, self.header, self.body, self.route_bytes, True
        )
        copy._properties = self._properties
        copy.expires_at = self.expires_at
        return copy

    def __repr__(self) -> str:
        return (
            f"Message(exchange={self.exchange!r}, routing_key={self.routing_key!r}, "
            f"body_size={len(self.body)})"
        )

"""The ``x-delayed-message`` exchange type, as RabbitMQ's rabbitmq_delayed_message_exchange.

Declare the exchange with the argument ``x-delayed-type`` naming the routing type underneath
(``direct``, ``topic``, ``x-consistent-hash``...). A message published with a header ``x-delay``
(milliseconds, above 0) is held and routed when it falls due, through the underlying type's
router, to the queues bound at that time; it is then delivered with ``x-delay`` set to minus
the delay, as RabbitMQ does. A message without ``x-delay``, or with 0 or less, is routed at once.

Better than RabbitMQ's community plugin:

- no upper limit on the delay (RabbitMQ's routes a delay above 2^32 - 1 ms at once);
- no drift under load: one heap per exchange and one broker timer armed for its earliest
  message (``schedule.py``), instead of a timer per message;
- persistent messages held by a durable exchange survive a restart, in the broker's store
  (``open_log``), confirmed once it has them on disk.

``mandatory``: a delayed message is accepted when published (no ``basic.return``), and one that
matches no binding when it falls due is dropped: there is nobody to return it to any more.
RabbitMQ's plugin returns every delayed mandatory message at once with 312 NO_ROUTE, although
it delivers it later.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal
from typing import Any

from warrenmq import (
    Binding,
    Exchange,
    ExchangeType,
    Message,
    PreconditionFailed,
    Router,
    hookimpl,
)
from warrenmq.errors import CommandInvalid
from warrenmq.failures import log_failure
from warrenmq.queue import READY, StoredEntry
from warrenmq.queue_arguments import message_ttl
from warrenmq.store import MessageLog

from .schedule import Held, Schedule, log

TYPE_NAME = "x-delayed-message"
#: the names of this plugin's logs in the store: the prefix, then the exchange's name
LOG_PREFIX = f"{TYPE_NAME}/"

_INTEGER = re.compile(r"[+-]?[0-9]+")


def delay_of(message: Message) -> int | None:
    """The ``x-delay`` header in milliseconds if it delays the message, else None.

    As RabbitMQ: integers, and also decimal strings and floats (truncated); anything else
    (or 0 or less) routes the message at once.
    """
    value = message.headers.get("x-delay")
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        if not _INTEGER.fullmatch(value.strip()):
            return None
        value = int(value)
    elif isinstance(value, float | Decimal):
        if not math.isfinite(value):
            return None
        value = math.trunc(value)
    if not isinstance(value, int) or value <= 0:
        return None
    return value


def _released(held: Held) -> Message:
    """The message as consumers get it: ``x-delay`` swapped for minus the delay (RabbitMQ's
    mark of a delayed message). A new ``Message``: the original may be shared with queues
    that an exchange-to-exchange binding reached at once."""
    original = held.message
    properties = original.properties.copy()
    properties.headers = {**(properties.headers or {}), "x-delay": -held.delay}
    message = Message(original.exchange, original.routing_key, original.body, properties)
    message.ttl = original.ttl
    return message


def open_log(exchange: Exchange) -> MessageLog | None:
    """Where a durable exchange keeps its persistent held messages across a restart: a log of
    the broker's store, written with the store's other writes and fsynced before the publish
    is confirmed. None (nothing kept): a transient exchange, or a store that keeps no
    messages (``--store memory``)."""
    if not exchange.durable:
        return None
    store = exchange.vhost.broker.store
    return store.extension_log(exchange.vhost.name, LOG_PREFIX + exchange.name)


def _recovered(log: MessageLog) -> list[StoredEntry]:
    """What the log kept. Each entry's ``expires_at`` is the message's due time: the log keeps
    it as a wall-clock time and gives it back on ``time.monotonic()``, past if overdue."""
    entries = log.recovered()
    for entry in entries:
        expiration = entry.message.properties.expiration
        if expiration is not None:  # the per-message TTL, which the log does not keep
            entry.message.ttl = message_ttl(expiration)
    return entries


class _Hold:
    """What ``route`` returns for a message to delay: the core hands it the message as it
    would to a queue (``publish``), and the publish counts as routed."""

    kind = "queue"

    def __init__(self, router: DelayedRouter) -> None:
        self._router = router
        self.name = f"{router.exchange.name} (delayed messages)"

    def publish(self, message: Message) -> bool:
        self._router.hold(message)
        return True


class DelayedRouter(Router):
    def __init__(self, exchange: Exchange, inner_type: type[ExchangeType]) -> None:
        self.exchange = exchange
        self.inner_type = inner_type
        self.inner = inner_type.create_router(exchange)
        self._hold = (_Hold(self),)
        self._releasing: Message | None = None
        self._routed: tuple[Message | None, int] = (None, 0)
        broker = exchange.vhost.broker
        self.schedule = Schedule(broker.timers, self._release, exchange.name)
        # held messages count against the memory alarm, as messages in queues do
        broker.memory_sources.append(self._held_bytes)
        self._ids = 0
        self.log = open_log(exchange)
        recovered = _recovered(self.log) if self.log is not None else []
        if recovered:
            # wait for a binding: the exchange is back, its bindings may not be yet
            self.schedule.paused = True
            now_wall, now = time.time(), time.monotonic()
            for entry in recovered:
                self._ids += 1
                message, due = entry.message, entry.expires_at
                delay = delay_of(message) or 0
                held = Held(self._ids, now_wall + (due - now), message, delay, stored=entry)
                self.schedule.add(held, due)
            log.info(
                "exchange '%s' in vhost '%s': %d delayed messages back from the store",
                exchange.name,
                exchange.vhost.name,
                len(recovered),
            )

    # -- bindings go to the underlying type's router -------------------------------------------

    def add_binding(self, binding: Binding) -> None:
        self.inner.add_binding(binding)
        self.schedule.resume()

    def remove_bindings(self, bindings: Iterable[Binding]) -> None:
        self.inner.remove_bindings(bindings)

    # -- routing ------------------------------------------------------------------------------

    def route(self, message: Message) -> Collection[Any]:
        if message is self._releasing:
            return self.inner.route(message)
        delay = delay_of(message)
        if delay is None:
            return self.inner.route(message)
        self._routed = (message, delay)  # for hold(), which the core calls next
        return self._hold

    def hold(self, message: Message) -> None:
        routed, delay = self._routed
        self._routed = (None, 0)
        if routed is not message:  # not from route() just before (never, today)
            delay = delay_of(message) or 0
        due = time.monotonic() + delay / 1000
        self._ids += 1
        held = Held(self._ids, time.time() + delay / 1000, message, delay)
        if self.log is not None and message.persistent:
            # the due time goes where the log keeps a deadline; the store counts the write,
            # so the publish is confirmed after the fsync that covers it
            held.stored = StoredEntry(message, 0, due, READY)
            self.log.append(held.stored)
        self.schedule.add(held, due)

    def _release(self, held: Held) -> None:
        """Route a message that fell due, as if it were published now (alternate exchange and
        exchange-to-exchange bindings included)."""
        message = _released(held)
        vhost = self.exchange.vhost
        if vhost.exchanges.get(self.exchange.name) is self.exchange:
            self._releasing = message
            try:
                queues = vhost.route(self.exchange, message)
            finally:
                self._releasing = None
            for queue in queues:
                try:
                    queue.publish(message)
                except Exception as exc:  # that queue's bug; the others still get it
                    log_failure(log, f"queue '{queue.name}' failed to take a message", exc)
        if held.stored is not None and self.log is not None:
            # after the queues took it: a crash in between releases it again, never loses it
            self.log.remove(held.stored)

    def log_summary(self) -> None:
        lateness, held = self.schedule.lateness, self.schedule.held()
        kept = sum(1 for h in held if h.stored is not None)
        log.info(
            "exchange '%s' in vhost '%s': released %d delayed messages, late by "
            "p50 %d ms, p90 %d ms, p99 %d ms, max %.1f ms; %d held (%d kept for the restart)",
            self.exchange.name,
            self.exchange.vhost.name,
            lateness.released,
            lateness.quantile_ms(0.5),
            lateness.quantile_ms(0.9),
            lateness.quantile_ms(0.99),
            lateness.max_seconds * 1000,
            len(held),
            kept,
        )

    def _held_bytes(self) -> int:
        return self.schedule.held_bytes

    def close(self) -> None:
        """The exchange was deleted: its held messages go with it, as in RabbitMQ."""
        vhost = self.exchange.vhost
        vhost.broker.memory_sources.remove(self._held_bytes)
        self.schedule.close()
        if self.log is not None:
            vhost.broker.store.delete_extension_log(vhost.name, LOG_PREFIX + self.exchange.name)
            self.log = None
        self.inner.close()


def _delayed_type(arguments: Mapping[str, Any]) -> str:
    value = arguments.get("x-delayed-type")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or not value:
        raise PreconditionFailed(
            "Invalid argument, 'x-delayed-type' must be an existing exchange type"
        )
    if value == TYPE_NAME:
        raise PreconditionFailed(
            f"Invalid argument, '{TYPE_NAME}' can't be used for 'x-delayed-type'"
        )
    return value


class DelayedMessageExchange(ExchangeType):
    name = TYPE_NAME

    @classmethod
    def validate(cls, arguments: Mapping[str, Any]) -> None:
        _delayed_type(arguments)  # that the type exists is checked in create_router

    @classmethod
    def validate_binding(cls, binding: Binding) -> None:
        router = binding.source.router
        assert isinstance(router, DelayedRouter)
        router.inner_type.validate_binding(binding)

    @classmethod
    def create_router(cls, exchange: Exchange) -> Router:
        type_name = _delayed_type(exchange.arguments)
        inner_type = exchange.vhost.broker.exchange_types.get(type_name)
        if inner_type is None:
            raise CommandInvalid(f"unknown exchange type '{type_name}'")
        inner_type.validate(exchange.arguments)
        return DelayedRouter(exchange, inner_type)


@hookimpl
def warrenmq_register_exchange_types(registry: Any) -> None:
    registry.add(DelayedMessageExchange)


@hookimpl
def warrenmq_shutdown(broker: Any) -> None:
    """Log how late each delayed exchange released its messages (the store keeps the rest)."""
    for vhost in broker.vhosts.values():
        for exchange in vhost.exchanges.values():
            if isinstance(exchange.router, DelayedRouter):
                exchange.router.log_summary()

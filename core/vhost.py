"""A virtual host: its exchanges, queues and bindings, with RabbitMQ's rules for each.

Every protocol goes through these methods, so the rules (reserved names, equivalence checks,
exclusive ownership, auto-delete) live in one place.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from .errors import (
    AccessRefused,
    BrokerError,
    CommandInvalid,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)
from .exchange import Binding, Exchange
from .failures import log_failure
from .message import Message
from .policy import EXCHANGES, QUEUES, Policy, choose
from .queue import Queue
from .queue_arguments import argument_text, field_type, validate_queue_arguments
from .views import BindingView, ExchangeView, QueueView

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("warrenmq.vhost")

# -- what became of a publish (``VirtualHost.publish``) ---------------------------------------

#: every queue it reached took it
ROUTED: Final = 0
#: no queue matched (a mandatory publish is returned)
UNROUTABLE: Final = 1
#: some queue refused it (a length limit with reject-publish): the publisher gets a nack
REFUSED: Final = 2

#: the prefix of direct reply-to pseudo-queue names (RabbitMQ's ``amq.rabbitmq.reply-to``)
REPLY_TO_PREFIX: Final = "amq.rabbitmq.reply-to."

#: exchanges every virtual host has, as in RabbitMQ
STANDARD_EXCHANGES = (
    ("", "direct"),
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)

#: exchange arguments compared on redeclaration, as in RabbitMQ
EXCHANGE_EQUIVALENCE_ARGUMENTS = ("alternate-exchange",)

#: queue arguments compared on redeclaration (RabbitMQ's list plus ours)
EQUIVALENCE_ARGUMENTS = (
    "x-dispatch",
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def server_generated_name(prefix: str) -> str:
    """``amq.gen-...`` / ``amq.ctag-...``: a prefix and 128 random bits, URL-safe base64."""
    return prefix + base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


class VirtualHost:
    """Exchanges and queues of one virtual host (``/`` by default)."""

    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        #: state a protocol keeps per virtual host
        self.extensions: dict[str, Any] = {}
        #: direct reply-to pseudo-queues by name (not in ``queues``: never declared or bound)
        self.reply_queues: dict[str, Queue] = {}
        #: policies by name (``set_policy``)
        self.policies: dict[str, Policy] = {}
        for exchange_name, type_name in STANDARD_EXCHANGES:
            self._create_exchange(exchange_name, type_name, durable=True)
        self.default_exchange = self.exchanges[""]

    def _where(self) -> str:
        return f"in vhost '{self.name}'"

    # -- exchanges ------------------------------------------------------------------------

    def _create_exchange(
        self,
        name: str,
        type_name: str,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Exchange:
        exchange_type = self.broker.exchange_types.get(type_name)
        if exchange_type is None:
            raise CommandInvalid(f"unknown exchange type '{type_name}'")
        exchange_type.validate(arguments or {})
        exchange = Exchange(self, name, exchange_type, durable, auto_delete, internal, arguments)
        self.exchanges[name] = exchange
        if name and not name.startswith("amq."):  # not the standard ones of every vhost
            log.debug("exchange '%s' (%s) declared in vhost '%s'", name, type_name, self.name)
        if self.policies and name:
            exchange.apply_policy(choose(self.policies.values(), EXCHANGES, name))
        if durable and not name.startswith("amq.") and name:
            self.broker.store.save_exchange(exchange)
        return exchange

    def get_exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"no exchange '{name}' {self._where()}")
        return exchange

    def declare_exchange(
        self,
        name: str,
        type_name: str,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Exchange:
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        if passive:
            return self.get_exchange(name)
        existing = self.exchanges.get(name)
        if existing is None:
            if name.startswith("amq."):
                raise AccessRefused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
            return self._create_exchange(name, type_name, durable, auto_delete, internal, arguments)
        self._check_exchange_equivalence(
            existing, type_name, durable, auto_delete, internal, arguments or {}
        )
        return existing

    def _check_exchange_equivalence(
        self,
        exchange: Exchange,
        type_name: str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: Mapping[str, Any],
    ) -> None:
        where = f"for exchange '{exchange.name}' {self._where()}"
        if type_name != exchange.type_name:
            if type_name not in self.broker.exchange_types:
                raise CommandInvalid(f"unknown exchange type '{type_name}'")
            raise PreconditionFailed(
                f"inequivalent arg 'type' {where}: "
                f"received '{type_name}' but current is '{exchange.type_name}'"
            )
        for arg, received, current in (
            ("durable", durable, exchange.durable),
            ("auto_delete", auto_delete, exchange.auto_delete),
            ("internal", internal, exchange.internal),
        ):
            if received != current:
                raise PreconditionFailed(
                    f"inequivalent arg '{arg}' {where}: "
                    f"received '{_flag(received)}' but current is '{_flag(current)}'"
                )
        for arg in EXCHANGE_EQUIVALENCE_ARGUMENTS:
            received_value, current_value = arguments.get(arg), exchange.arguments.get(arg)
            if received_value != current_value:
                raise PreconditionFailed(
                    f"inequivalent arg '{arg}' {where}: "
                    f"{_difference(received_value, current_value)}"
                )

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        if name == "" or name.startswith("amq."):
            raise AccessRefused(
                "operation not permitted on the default exchange"
                if name == ""
                else f"exchange name '{name}' contains reserved prefix 'amq.*'"
            )
        exchange = self.exchanges.get(name)
        if exchange is None:
            return  # idempotent, as in RabbitMQ
        if if_unused and exchange.bindings:
            raise PreconditionFailed(f"exchange '{name}' {self._where()} in use")
        self._remove_exchange(exchange)

    def _remove_exchange(self, exchange: Exchange) -> None:
        del self.exchanges[exchange.name]
        log.debug("exchange '%s' deleted from vhost '%s'", exchange.name, self.name)
        if exchange.durable:
            self.broker.store.delete_exchange(exchange)
        for binding in list(exchange.bindings.values()):
            self._drop_binding(binding, cascade=False)
        for binding in list(exchange.incoming):
            self._drop_binding(binding)
        exchange.router.close()

    # -- bindings -------------------------------------------------------------------------

    def _bindable_source(self, name: str) -> Exchange:
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        return self.get_exchange(name)

    def bind(
        self,
        destination: Queue | Exchange,
        source_name: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        source = self._bindable_source(source_name)
        binding = Binding(source, destination, routing_key, arguments)
        if binding.key in source.bindings:
            return
        self.broker.exchange_types[source.type_name].validate_binding(binding)
        source.bindings[binding.key] = binding
        destination.incoming.add(binding)
        if isinstance(destination, Exchange):
            source.exchange_destinations += 1
        source.router.add_binding(binding)
        if _persisted(source) and _persisted(destination):
            self.broker.store.save_binding(binding)

    def unbind(
        self,
        destination: Queue | Exchange | None,
        source_name: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
        owner: object | None = None,
    ) -> None:
        """Remove a binding. As in RabbitMQ, unbinding is idempotent: a missing source,
        destination (None) or binding is fine; only the default exchange is refused, and a
        binding of another connection's exclusive queue is locked."""
        if source_name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        source = self.exchanges.get(source_name)
        if source is None or destination is None:
            return
        binding = source.bindings.get(Binding(source, destination, routing_key, arguments).key)
        if binding is None:
            return
        if isinstance(destination, Queue):
            holder = destination.exclusive_owner
            if holder is not None and holder is not owner:
                raise self._locked(destination.name)
        self._drop_binding(binding)

    def unbind_queue(
        self,
        queue_name: str,
        source_name: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
        owner: object | None = None,
    ) -> None:
        """``unbind`` by queue name (a queue that is gone has no bindings left to remove)."""
        self.unbind(self.queues.get(queue_name), source_name, routing_key, arguments, owner)

    def unbind_exchange(
        self,
        destination_name: str,
        source_name: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """``unbind`` of an exchange-to-exchange binding, by destination name."""
        self.unbind(self.exchanges.get(destination_name), source_name, routing_key, arguments)

    def _drop_binding(self, binding: Binding, cascade: bool = True) -> None:
        source = binding.source
        if source.bindings.pop(binding.key, None) is None:
            return
        binding.destination.incoming.discard(binding)
        if isinstance(binding.destination, Exchange):
            source.exchange_destinations -= 1
        source.router.remove_bindings((binding,))
        if (
            _persisted(source)
            and _persisted(binding.destination)
            and source is not self.default_exchange
        ):
            self.broker.store.delete_binding(binding)
        if (
            cascade
            and source.auto_delete
            and not source.bindings
            and self.exchanges.get(source.name) is source
        ):
            self._remove_exchange(source)

    # -- queues ---------------------------------------------------------------------------

    def get_queue(self, name: str, owner: object | None = None) -> Queue:
        """The queue ``name``, checking exclusive ownership against ``owner``."""
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(f"no queue '{name}' {self._where()}")
        if queue.exclusive_owner is not None and queue.exclusive_owner is not owner:
            raise self._locked(name)
        return queue

    def _locked(self, name: str) -> ResourceLocked:
        return ResourceLocked(
            f"cannot obtain exclusive access to locked queue '{name}' {self._where()}. "
            "It could be originally declared on another connection or the exclusive "
            "property value does not match that of the original declaration."
        )

    def declare_queue(
        self,
        name: str,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        owner: object | None = None,
        generated: bool = False,
    ) -> Queue:
        """Declare a queue (an empty name gets one made up; ``generated``: the caller made
        ``name`` up with ``server_generated_name``, to check permissions on it first)."""
        if passive:
            queue = self.get_queue(name, owner)
            queue.touch()  # a passive declare is a use, as in RabbitMQ (x-expires)
            return queue
        if not name:
            name = server_generated_name("amq.gen-")
        elif name.startswith("amq.") and not generated:
            raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        arguments = dict(arguments or {})
        existing = self.queues.get(name)
        if existing is not None:
            self.get_queue(name, owner)  # exclusive check
            if (existing.exclusive_owner is not None) != exclusive:
                raise self._locked(name)
            self._check_queue_equivalence(existing, durable, exclusive, auto_delete, arguments)
            existing.touch()
            return existing
        self.broker.limits.check_new_queue(self.name, name, len(self.queues))
        validate_queue_arguments(arguments, name, self.name, self.broker.queue_types.names())
        queue_class = self._queue_type_for(name, arguments)
        policy_class = self._policy_for(name, arguments)
        queue = queue_class(
            self,
            name,
            policy_class,
            durable=durable,
            exclusive_owner=owner if exclusive else None,
            auto_delete=auto_delete,
            arguments=arguments,
        )
        self.queues[name] = queue
        if self.policies:
            policy = choose(self.policies.values(), QUEUES, name)
            if policy is not None:
                queue.apply_policy(policy)
        if _persisted(queue):
            store = self.broker.store
            store.save_queue(queue)
            message_log = store.message_log(queue)
            if message_log is not None:
                queue.attach_log(message_log)
        self._bind_default(queue)
        queue.touch()
        log.debug(
            "queue '%s' declared in vhost '%s' (%s%s%s)", name, self.name,
            "durable" if durable else "transient", ", exclusive" if exclusive else "",
            ", auto-delete" if auto_delete else "",
        )  # fmt: skip
        return queue

    def _queue_type_for(self, name: str, arguments: Mapping[str, Any]) -> Any:
        wanted = argument_text(arguments, "x-queue-type") or "classic"
        queue_class = self.broker.queue_types.get(wanted)
        if queue_class is None:
            known = ", ".join(sorted(self.broker.queue_types.names()))
            raise PreconditionFailed(
                f"invalid arg 'x-queue-type' for queue '{name}' {self._where()}: "
                f"unknown queue type '{wanted}' (known: {known})"
            )
        return queue_class

    def open_reply_queue(self) -> Queue:
        """A direct reply-to pseudo-queue with a fresh name (see ``REPLY_TO_PREFIX``)."""
        name = server_generated_name(REPLY_TO_PREFIX)
        broker = self.broker
        queue: Queue = broker.queue_types["classic"](
            self, name, broker.dispatch_policies[broker.settings.default_dispatch]
        )
        self.reply_queues[name] = queue
        return queue

    def close_reply_queue(self, queue: Queue) -> None:
        if self.reply_queues.pop(queue.name, None) is not None:
            queue.deleted = True
            queue.delete()

    def _bind_default(self, queue: Queue) -> None:
        binding = Binding(self.default_exchange, queue, queue.name)
        self.default_exchange.bindings[binding.key] = binding
        queue.incoming.add(binding)
        self.default_exchange.router.add_binding(binding)

    def _policy_for(self, name: str, arguments: Mapping[str, Any]) -> Any:
        policies = self.broker.dispatch_policies
        wanted = arguments.get("x-dispatch", self.broker.settings.default_dispatch)
        if isinstance(wanted, bytes):
            wanted = wanted.decode(errors="replace")
        policy_class = policies.get(wanted) if isinstance(wanted, str) else None
        if policy_class is None:
            known = ", ".join(sorted(policies.names()))
            raise PreconditionFailed(
                f"invalid arg 'x-dispatch' for queue '{name}' {self._where()}: "
                f"unknown dispatch policy {wanted!r} (known: {known})"
            )
        return policy_class

    def _check_queue_equivalence(
        self,
        queue: Queue,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any],
    ) -> None:
        where = f"for queue '{queue.name}' {self._where()}"
        checks = [("auto_delete", auto_delete, queue.auto_delete)]
        if queue.exclusive_owner is None:  # RabbitMQ does not compare durability of these
            checks.insert(0, ("durable", durable, queue.durable))
        for arg, received, current in checks:
            if received != current:
                raise PreconditionFailed(
                    f"inequivalent arg '{arg}' {where}: "
                    f"received '{_flag(received)}' but current is '{_flag(current)}'"
                )
        for arg in EQUIVALENCE_ARGUMENTS:
            received_value = arguments.get(arg)
            current_value = queue.arguments.get(arg)
            if arg == "x-queue-type":  # absent means the default type
                received_value = argument_text(arguments, arg) or "classic"
                current_value = argument_text(queue.arguments, arg) or "classic"
            if received_value != current_value:
                raise PreconditionFailed(
                    f"inequivalent arg '{arg}' {where}: "
                    f"{_difference(received_value, current_value)}"
                )

    def delete_queue(
        self,
        name: str,
        if_unused: bool = False,
        if_empty: bool = False,
        owner: object | None = None,
    ) -> int:
        """Delete a queue; returns how many ready messages it held. Missing queues are fine."""
        if name not in self.queues:
            return 0
        queue = self.get_queue(name, owner)
        if if_unused and queue.consumers:
            raise PreconditionFailed(f"queue '{name}' {self._where()} in use")
        if if_empty and queue.ready_count:
            raise PreconditionFailed(f"queue '{name}' {self._where()} not empty")
        return self.remove_queue(queue)

    def remove_queue(self, queue: Queue) -> int:
        """Drop ``queue`` unconditionally: cancel its consumers, remove its bindings."""
        if queue.deleted:
            return 0
        queue.deleted = True
        self.queues.pop(queue.name, None)
        log.debug("queue '%s' deleted from vhost '%s'", queue.name, self.name)
        if _persisted(queue):
            self.broker.store.delete_queue(queue)
        count = queue.delete()
        consumers = list(queue.consumers)
        for consumer in consumers:
            queue.remove_consumer(consumer)
        for consumer in consumers:
            consumer.cancelled_by_broker(queue)
        for binding in list(queue.incoming):
            self._drop_binding(binding)
        return count

    def purge_queue(self, name: str, owner: object | None = None) -> int:
        return self.get_queue(name, owner).purge()

    def connection_closed(self, owner: object) -> None:
        """Exclusive queues go with the connection that declared them."""
        for queue in [q for q in self.queues.values() if q.exclusive_owner is owner]:
            self.remove_queue(queue)

    # -- policies ----------------------------------------------------------------------

    def set_policy(self, policy: Policy) -> None:
        """Add or replace a policy, and apply the policies again to every queue and exchange."""
        self.policies[policy.name] = policy
        self.apply_policies()

    def clear_policy(self, name: str) -> bool:
        """Remove a policy (False if there was none); what it set reverts at once."""
        if self.policies.pop(name, None) is None:
            return False
        self.apply_policies()
        return True

    def apply_policies(self) -> None:
        """Give each queue and exchange the policy that now applies to it, where it changed."""
        policies = list(self.policies.values())
        for exchange in list(self.exchanges.values()):
            if exchange.name:
                policy = choose(policies, EXCHANGES, exchange.name)
                if policy is not exchange.policy:
                    exchange.apply_policy(policy)
        for queue in list(self.queues.values()):
            policy = choose(policies, QUEUES, queue.name)
            if policy is not queue.policy:
                try:
                    queue.apply_policy(policy)
                except Exception as exc:  # a queue type's bug must not stop the others
                    log_failure(log, f"queue '{queue.name}' failed to apply a policy", exc)

    # -- views -------------------------------------------------------------------------

    def queue_views(self) -> list[QueueView]:
        return [queue.view() for queue in self.queues.values()]

    def exchange_views(self) -> list[ExchangeView]:
        return [
            ExchangeView(
                name=x.name,
                vhost=self.name,
                type=x.type_name,
                durable=x.durable,
                auto_delete=x.auto_delete,
                internal=x.internal,
                arguments=dict(x.arguments),
                policy=x.policy.name if x.policy is not None else None,
            )
            for x in self.exchanges.values()
        ]

    def binding_views(self) -> list[BindingView]:
        return [
            BindingView(
                vhost=self.name,
                source=binding.source.name,
                destination=binding.destination.name,
                destination_kind=binding.destination.kind,
                routing_key=binding.routing_key,
                arguments=dict(binding.arguments),
            )
            for exchange in self.exchanges.values()
            for binding in exchange.bindings.values()
        ]

    # -- publishing --------------------------------------------------------------------

    def publish(self, exchange_name: str, message: Message, also_keys: Sequence[str] = ()) -> int:
        """Route ``message`` from the exchange named ``exchange_name`` into its queues.

        ``also_keys`` are more routing keys to route by (RabbitMQ's sender-selected
        distribution, the CC and BCC headers); each queue still gets the message once.
        Returns ``ROUTED``, ``UNROUTABLE`` or ``REFUSED``; raises 404 for a missing exchange
        and 403 for an internal one. A queue or plugin that fails is logged and skipped: the
        other queues still get the message.
        """
        exchange = self.exchanges.get(exchange_name)
        if exchange is None:
            raise NotFound(f"no exchange '{exchange_name}' {self._where()}")
        if exchange.internal:
            raise AccessRefused(
                f"cannot publish to internal exchange '{exchange_name}' {self._where()}"
            )
        queues: Collection[Queue]
        try:
            # the router's answer holds only queues unless the exchange routes to exchanges
            queues = exchange.router.route(message)  # type: ignore[assignment]
            if exchange.exchange_destinations or (not queues and exchange.alternate is not None):
                queues = self.route(exchange, message)
            if also_keys:
                queues = self._route_keys(exchange, message, queues, also_keys)
        except BrokerError:
            raise  # the message itself is bad (undecodable properties): the client's error
        except Exception as exc:  # a plugin's bug: the publish is refused, nothing else
            log_failure(log, f"routing through exchange '{exchange_name}' failed", exc)
            return REFUSED
        if not queues:
            if exchange is self.default_exchange and self.reply_queues:
                reply_queue = self.reply_queues.get(message.routing_key)
                if reply_queue is not None:
                    reply_queue.publish(message)
                    return ROUTED
            return UNROUTABLE
        outcome = ROUTED
        # Any, not Queue: a router may answer with an object that only has publish() and name
        # (the delayed-message example does), which a compiled loop over Queues would refuse
        targets: Collection[Any] = queues
        for queue in targets:
            try:
                if not queue.publish(message):
                    outcome = REFUSED
            except Exception as exc:
                log_failure(log, f"queue '{queue.name}' failed to take a message", exc)
                outcome = REFUSED
        return outcome

    def _route_keys(
        self,
        exchange: Exchange,
        message: Message,
        queues: Collection[Queue],
        keys: Sequence[str],
    ) -> Collection[Queue]:
        found: dict[Queue, None] = dict.fromkeys(queues)
        for key in keys:
            probe = Message(message.exchange, key, message.body, message.properties)
            found.update(dict.fromkeys(self.route(exchange, probe)))
        return found.keys()

    # -- routing ------------------------------------------------------------------------

    def route(self, exchange: Exchange, message: Message) -> Collection[Queue]:
        """The queues ``message`` reaches from ``exchange``.

        Follows exchange-to-exchange bindings; every exchange visited whose own route is empty
        passes the message to its ``alternate-exchange``, as RabbitMQ does. Each exchange is
        visited at most once, so binding cycles and alternate-exchange loops end.
        """
        destinations = exchange.router.route(message)
        if not exchange.exchange_destinations and (destinations or exchange.alternate is None):
            return destinations  # type: ignore[return-value]
        queues: dict[Queue, None] = {}
        seen = {exchange}
        pending: list[tuple[Exchange, Collection[Any]]] = [(exchange, destinations)]
        while pending:
            current, results = pending.pop()
            if not results:
                alternate = self.exchanges.get(current.alternate) if current.alternate else None
                if alternate is not None and alternate not in seen:
                    seen.add(alternate)
                    pending.append((alternate, alternate.router.route(message)))
                continue
            for destination in results:
                if isinstance(destination, Exchange):
                    if destination not in seen:
                        seen.add(destination)
                        pending.append((destination, destination.router.route(message)))
                else:
                    queues[destination] = None
        return queues.keys()


def _persisted(thing: Queue | Exchange) -> bool:
    """Durable and not exclusive: what the store keeps across restarts."""
    if isinstance(thing, Queue):
        return thing.durable and thing.exclusive_owner is None
    return thing.durable


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"'{_flag(value)}'"
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return f"'{value}'"


def _difference(received: Any, current: Any) -> str:
    """RabbitMQ's wording: values compared, or a value against none with its field type."""

    def typed(value: Any) -> str:
        shown = value.decode(errors="replace") if isinstance(value, bytes) else value
        if isinstance(value, bool):
            shown = _flag(value)
        return f"the value '{shown}' of type '{field_type(value)}'"

    if received is None:
        return f"received none but current is {typed(current)}"
    if current is None:
        return f"received {typed(received)} but current is none"
    return f"received {_show(received)} but current is {_show(current)}"

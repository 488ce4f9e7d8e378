"""Queues: a FIFO of ready messages, the consumers it feeds and its dispatch policy.

Unacknowledged messages are held by the sessions that received them (they know the delivery
tags); a session hands them back with ``requeue`` or settles them with ``settle``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import AccessRefused
from .message import Message

if TYPE_CHECKING:
    from .consumer import Consumer
    from .dispatch import DispatchPolicy
    from .exchange import Binding
    from .vhost import VirtualHost


class Queue:
    """A named queue in a virtual host."""

    kind = "queue"

    __slots__ = (
        "name",
        "vhost",
        "durable",
        "exclusive_owner",
        "auto_delete",
        "arguments",
        "ready",
        "policy",
        "consumers",
        "exclusive_consumer",
        "incoming",
        "had_consumer",
        "deleted",
        "__weakref__",
    )

    def __init__(
        self,
        vhost: VirtualHost,
        name: str,
        policy_class: type[DispatchPolicy],
        durable: bool = False,
        exclusive_owner: object | None = None,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        #: the connection that declared an exclusive queue, else None
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.ready: deque[Message] = deque()
        self.policy = policy_class(self)
        #: the policy's consumer list (shared, not copied)
        self.consumers = self.policy.consumers
        self.exclusive_consumer: Consumer | None = None
        #: bindings with this queue as destination
        self.incoming: set[Binding] = set()
        self.had_consumer = False
        self.deleted = False

    # -- the hot path ---------------------------------------------------------------------

    def publish(self, message: Message) -> None:
        """Hand ``message`` straight to a consumer with credit, or keep it in order."""
        if not self.ready:
            consumer = self.policy.select()
            if consumer is not None:
                consumer.deliver(self, message)
                return
        if message.expires_at and message.expires_at <= time.monotonic():
            self.settle(message)  # TTL 0: only an immediate delivery would have taken it
            return
        self.ready.append(message)

    def dispatch(self) -> None:
        """Deliver ready messages while some consumer has credit."""
        ready = self.ready
        select = self.policy.select
        while ready:
            consumer = select()
            if consumer is None:
                return
            message = self.get()
            if message is not None:
                consumer.deliver(self, message)

    def settle(self, message: Message) -> None:
        """A delivered message was acknowledged (or dropped): it is no longer owed."""

    def requeue(self, messages: Iterable[Message]) -> None:
        """Put unsettled messages back at the head, in their original order, as redelivered."""
        if self.deleted:
            return
        returned = [m.as_redelivered() for m in messages]
        self.ready.extendleft(reversed(returned))
        self.dispatch()

    # -- consumers ------------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        if self.exclusive_consumer is not None or (consumer.exclusive and self.consumers):
            raise AccessRefused(
                f"queue '{self.name}' in vhost '{self.vhost.name}' in exclusive use"
            )
        if consumer.exclusive:
            self.exclusive_consumer = consumer
        self.policy.add(consumer)
        self.had_consumer = True
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        """Forget ``consumer``; an auto-delete queue goes with its last consumer."""
        if consumer not in self.consumers:
            return
        self.policy.remove(consumer)
        if self.exclusive_consumer is consumer:
            self.exclusive_consumer = None
        if self.auto_delete and not self.consumers and not self.deleted:
            self.vhost.delete_queue(self.name, owner=self.exclusive_owner)

    # -- management -----------------------------------------------------------------------

    def get(self) -> Message | None:
        """Take the next ready message (basic.get), dropping expired ones on the way."""
        ready = self.ready
        while ready:
            message = ready.popleft()
            if message.expires_at and message.expires_at <= time.monotonic():
                self.settle(message)
                continue
            return message
        return None

    def purge(self) -> int:
        count = len(self.ready)
        self.ready.clear()
        return count

    @property
    def message_count(self) -> int:
        return len(self.ready)

    @property
    def consumer_count(self) -> int:
        return len(self.consumers)

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, ready={len(self.ready)}, consumers={len(self.consumers)})"
